"""The decision threshold from OK (and optionally NG) image scores: the old backend's rule, exactly.

``p_ok`` = percentile(ok, score_percentile), linear. No NG: threshold = p_ok. With NG: ``p_ng`` =
percentile(ng, 5); threshold = 1.02 * p_ok when the classes overlap (p_ng <= p_ok), else the
midpoint (p_ok + p_ng) / 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import BadRequest
from ..validation import validate_mm_per_px

OVERLAP_MARGIN = 1.02
MAX_SCORE = 1e6
"""Largest score magnitude taken: means and midpoints of the scores stay finite (JSON has no infinity)."""
NG_PERCENTILE = 5


def calibrate(
    ok_scores: Sequence[float],
    ng_scores: Sequence[float] | None,
    *,
    score_percentile: int,
    mm_per_px: float,
    area_mm2_thr: float,
) -> dict:
    """calib.json's content (and /calibrate_ng's answer), keys in the contract's order."""
    ok = _scores("ok_scores", ok_scores)
    if ok.size == 0:
        raise BadRequest("ok_scores is empty; send the scores of at least one OK image.")
    ng = _scores("ng_scores", ng_scores if ng_scores is not None else [])
    percentile = percentile_value(score_percentile)
    validate_mm_per_px(mm_per_px)
    if not math.isfinite(area_mm2_thr) or area_mm2_thr < 0:
        raise BadRequest(f"area_mm2_thr must be a finite number >= 0, got {area_mm2_thr}.")

    p_ok = float(np.percentile(ok, percentile))
    p_ng = float(np.percentile(ng, NG_PERCENTILE)) if ng.size else None
    if p_ng is None:
        threshold = p_ok
    elif p_ng <= p_ok:
        threshold = OVERLAP_MARGIN * p_ok
    else:
        threshold = (p_ok + p_ng) / 2
    return {
        "threshold": threshold,
        "ok_mean": float(ok.mean()),
        "ng_mean": float(ng.mean()) if ng.size else 0.0,
        "p99_ok": p_ok,
        "p5_ng": p_ng,
        "mm_per_px": float(mm_per_px),
        "area_mm2_thr": float(area_mm2_thr),
        "score_percentile": percentile,
    }


def _scores(name: str, values: Sequence[float]) -> np.ndarray:
    """The scores as a 1-D float64 array; anything that is not a finite number is refused."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a list of numbers.") from None
    if array.ndim != 1:
        raise BadRequest(f"{name} must be a flat list of numbers.")
    if not np.isfinite(array).all():
        raise BadRequest(f"{name} contains NaN or infinite values; send finite scores only.")
    if (np.abs(array) > MAX_SCORE).any():
        raise BadRequest(f"{name} must hold numbers within ±{MAX_SCORE:g} (/infer scores are 0..2); send the scores /infer gave.")
    return array


def percentile_value(value: int) -> int:
    """``score_percentile`` as an int in 1..100 (a whole float such as 99.0 is accepted)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not number.is_integer() or not 1 <= number <= 100:
        raise BadRequest(f"score_percentile must be a whole number in 1..100, got {value!r}.")
    return int(number)
