"""The threshold rule with hand-computed values for each branch, key order and validation."""

from __future__ import annotations

import json
import math

import pytest

from service.errors import BadRequest
from service.pipeline.calibration import calibrate

KEYS = ["threshold", "ok_mean", "ng_mean", "p99_ok", "p5_ng", "mm_per_px", "area_mm2_thr", "score_percentile"]
OK = [0.1, 0.2, 0.3, 0.4, 0.5]
# percentile 99 of OK, linear: position 0.99 * 4 = 3.96 -> 0.4 + 0.96 * 0.1 = 0.496
P99_OK = 0.496


def run(ok=OK, ng=None, percentile=99, mm_per_px=0.2, area=1.0) -> dict:
    return calibrate(ok, ng, score_percentile=percentile, mm_per_px=mm_per_px, area_mm2_thr=area)


@pytest.mark.parametrize("ng", [None, []])
def test_without_ng_the_threshold_is_the_ok_percentile(ng) -> None:
    result = run(ng=ng)
    assert list(result) == KEYS
    assert result["threshold"] == pytest.approx(P99_OK)
    assert result["p99_ok"] == pytest.approx(P99_OK)
    assert result["ok_mean"] == pytest.approx(0.3)
    assert result["ng_mean"] == 0.0 and result["p5_ng"] is None
    assert result["mm_per_px"] == 0.2 and result["area_mm2_thr"] == 1.0 and result["score_percentile"] == 99


def test_overlapping_ng_raises_the_ok_percentile_by_2_percent() -> None:
    # p5 of [0.45, 0.9]: 0.45 + 0.05 * 0.45 = 0.4725 <= 0.496
    result = run(ng=[0.45, 0.9])
    assert result["p5_ng"] == pytest.approx(0.4725)
    assert result["threshold"] == pytest.approx(1.02 * 0.496)
    assert result["ng_mean"] == pytest.approx(0.675)


def test_equal_percentiles_count_as_overlap() -> None:
    result = run(ok=[1.0], ng=[1.0, 1.0])
    assert result["threshold"] == pytest.approx(1.02)


def test_separated_ng_gives_the_midpoint() -> None:
    # p5 of [0.6, 0.8, 1.0]: position 0.05 * 2 = 0.1 -> 0.6 + 0.1 * 0.2 = 0.62
    result = run(ng=[0.6, 0.8, 1.0])
    assert result["p5_ng"] == pytest.approx(0.62)
    assert result["threshold"] == pytest.approx((0.496 + 0.62) / 2)
    assert result["ng_mean"] == pytest.approx(0.8)


def test_other_percentile_and_plain_json_types() -> None:
    result = run(ok=[0.0, 1.0, 2.0, 3.0], percentile=50.0, mm_per_px=1, area=0)
    assert result["p99_ok"] == pytest.approx(1.5) and result["threshold"] == pytest.approx(1.5)
    assert type(result["score_percentile"]) is int and result["score_percentile"] == 50
    assert all(type(result[k]) is float for k in KEYS if k not in ("p5_ng", "score_percentile"))
    assert json.loads(json.dumps(result)) == result


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"ok": []}, "ok_scores is empty"),
        ({"ok": [0.1, math.nan]}, "ok_scores"),
        ({"ok": [0.1, math.inf]}, "ok_scores"),
        ({"ng": [0.5, -math.inf]}, "ng_scores"),
        ({"ng": [math.nan]}, "ng_scores"),
        ({"ok": [0.1, "abc"]}, "ok_scores"),
        ({"ok": [[0.1, 0.2]]}, "ok_scores"),
        ({"percentile": 0}, "score_percentile"),
        ({"percentile": 101}, "score_percentile"),
        ({"percentile": 99.5}, "score_percentile"),
        ({"percentile": True}, "score_percentile"),
        ({"percentile": math.nan}, "score_percentile"),
        ({"mm_per_px": 0}, "mm_per_px"),
        ({"mm_per_px": -0.2}, "mm_per_px"),
        ({"mm_per_px": math.nan}, "mm_per_px"),
        ({"mm_per_px": math.inf}, "mm_per_px"),
        ({"area": -1.0}, "area_mm2_thr"),
        ({"area": math.nan}, "area_mm2_thr"),
        ({"area": math.inf}, "area_mm2_thr"),
    ],
)
def test_invalid_input_is_a_400_with_a_sentence(kwargs: dict, phrase: str) -> None:
    with pytest.raises(BadRequest) as caught:
        run(**kwargs)
    assert caught.value.status_code == 400
    assert phrase in caught.value.message and caught.value.message.endswith(".")
