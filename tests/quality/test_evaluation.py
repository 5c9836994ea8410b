"""service/quality/evaluation.py: metrics against hand-computed values, and a synthetic set end to end
through a real InspectionService (random-init ViT) into a report folder whose headline leaves out the
samples the memory was fitted on."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from service.core import InspectionService, Upload
from service.pipeline import FeatureExtractor
from service.quality.datasets import load_dataset
from service.quality.evaluation import (
    BBOX_COLOUR,
    CONTOUR_COLOUR,
    TRUTH_COLOUR,
    auroc,
    evaluate,
    image_auroc,
    overlap_warning,
    pixel_auroc,
    pixel_levels,
    threshold_metrics,
)
from service.quality.plots import HEAT_COLOUR_MAP, HeatScale
from tests.support import make_settings
from tools import synth

ROLE, ROI = synth.DEFAULT_ROLE, "rect"
SEED, SIZE, SEVERITY = 2, 128, 2.0
N_FIT = 6


# ---- metrics --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ok", "ng", "expected"),
    [
        ([0.1, 0.2, 0.3], [0.4, 0.5], 1.0),
        ([0.4, 0.5], [0.1, 0.2, 0.3], 0.0),
        ([0.1, 0.4], [0.35, 0.8], 0.75),
        ([0.5], [0.5], 0.5),  # a tie counts half
        ([0.2, 0.5, 0.5], [0.5, 0.9], 5 / 6),  # 0.5 beats 0.2, ties two 0.5s (2 x 0.5); 0.9 beats all three
    ],
)
def test_image_auroc(ok, ng, expected):
    assert image_auroc(ok, ng) == pytest.approx(expected)


def test_image_auroc_needs_both_classes():
    assert image_auroc([0.1, 0.2], []) is None
    assert image_auroc([], [0.3]) is None


def test_auroc_counts_stand_for_repeated_values():
    # 0.1 carries 1 positive and 3 negatives, 0.5 carries 2 positives.
    assert auroc([0.1, 0.5], [1, 2], [3, 0]) == pytest.approx(image_auroc([0.1] * 3, [0.1, 0.5, 0.5]))
    assert auroc([0.1, 0.5], [1, 2], [3, 0]) == pytest.approx(7.5 / 9)


def test_pixel_auroc_pools_images_inside_their_masks():
    ng_scores = np.array([[0.0, 0.2], [0.9, 0.9]])
    ng_truth = np.array([[False, False], [True, True]])
    ok_scores = np.array([[0.5, 0.95], [0.1, 0.1]])
    everywhere = np.ones((2, 2), bool)
    outside_hot = np.array([[True, False], [True, True]])
    ng = pixel_levels(ng_scores, everywhere, ng_truth)
    assert pixel_auroc([ng, pixel_levels(ok_scores, outside_hot, None)]) == 1.0
    # The 0.95 OK pixel counts once it is inside the mask: each of the 2 positives loses 1 of 6 pairs.
    assert pixel_auroc([ng, pixel_levels(ok_scores, everywhere, None)]) == pytest.approx(10 / 12)
    assert pixel_auroc([pixel_levels(ok_scores, everywhere, None)]) is None  # no mask, no positives
    assert pixel_auroc([]) is None


def test_threshold_metrics_use_the_infer_rule():
    got = threshold_metrics([0.1, 0.5, 0.6], [0.4, 0.6, 0.9], 0.6)  # a score equal to the threshold is NG
    assert got["confusion"] == {"tn": 2, "fp": 1, "fn": 1, "tp": 2}
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))

    got = threshold_metrics([0.1, 0.2], [0.3, 0.9, 0.95, 0.99], 0.5)
    assert got["confusion"] == {"tn": 2, "fp": 0, "fn": 1, "tp": 3}
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((1.0, 0.75, 6 / 7))


def test_threshold_metrics_edge_cases():
    assert threshold_metrics([0.1], [0.9], None) == {"precision": None, "recall": None, "f1": None, "confusion": None}
    nothing_flagged = threshold_metrics([0.1], [0.2, 0.3], 1.0)
    assert (nothing_flagged["precision"], nothing_flagged["recall"], nothing_flagged["f1"]) == (None, 0.0, 0.0)
    only_ok = threshold_metrics([0.1, 0.7], [], 0.5)
    assert (only_ok["precision"], only_ok["recall"], only_ok["f1"]) == (0.0, None, 0.0)
    assert threshold_metrics([0.1], [], 0.5)["f1"] is None  # 0/0: nothing to find, nothing flagged


def test_precision_and_f1_are_not_measured_without_ok_samples():
    only_ng = threshold_metrics([], [0.3, 0.9], 0.5)
    assert (only_ng["precision"], only_ng["recall"], only_ng["f1"]) == (None, 0.5, None)


def test_overlapping_calibration_says_how_many_ng_samples_pass():
    overlapping = {"threshold": 0.612, "p99_ok": 0.6, "p5_ng": 0.58, "score_percentile": 99}
    warning = overlap_warning(overlapping, [0.55, 0.6, 0.611, 0.7])
    assert "3 of the 4 NG samples score below it and would pass as OK" in warning
    assert "5th percentile of NG 0.58 <= percentile 99 of OK 0.6" in warning
    separated = {"threshold": 0.65, "p99_ok": 0.6, "p5_ng": 0.7, "score_percentile": 99}
    assert overlap_warning(separated, [0.7, 0.9]) is None
    assert overlap_warning({**separated, "p5_ng": None}, []) is None


def test_outline_colours_are_not_in_the_heat_colour_map():
    """The red outline vanished on the red heatmap: outline colours must stand apart from every map colour."""
    every_colour = HeatScale(0.0, 1.0).colours_bgr(np.linspace(0, 1, 256)).astype(int)
    for colour in (CONTOUR_COLOUR, BBOX_COLOUR, TRUTH_COLOUR):
        assert np.abs(every_colour - np.array(colour)).sum(axis=1).min() > 150, (HEAT_COLOUR_MAP, colour)


# ---- end to end -------------------------------------------------------------------------------------
@pytest.fixture
def fitted(tmp_path: Path, extractor: FeatureExtractor):
    """A synthetic rect ROI: the first OK samples fitted (every patch kept), the rest unseen; and the NG ones."""
    synth.write_dataset(tmp_path / "data", seed=SEED, n_ok=N_FIT + 5, n_ng=5, size=SIZE, roi_kinds=(ROI,),
                        severity=SEVERITY)
    dataset = load_dataset(tmp_path / "data", ROLE, ROI)
    service = InspectionService(make_settings(tmp_path / "models"), extractor=extractor)
    service.start()
    fit = dataset.ok[:N_FIT]
    service.fit(ROLE, ROI, fit[0].mm_per_px, [Upload(s.path.name, s.path.read_bytes()) for s in fit], memory_fit=True)
    yield service, fit, dataset.ok[N_FIT:], dataset.ng
    service.close()


def test_synthetic_defects_rank_above_ok_and_the_report_is_complete(fitted, tmp_path: Path):
    service, fit, unseen, ng = fitted
    samples = unseen + ng
    seen = []
    raw = evaluate(service, ROLE, ROI, samples, tmp_path / "raw", progress=lambda *done_total: seen.append(done_total))
    assert seen == [(k, len(samples)) for k in range(1, len(samples) + 1)]
    assert (raw["n_ok"], raw["n_ng"], raw["n_ok_fitted"], raw["fitted_ok"]) == (5, 5, 0, None)
    assert all(raw[key] is None for key in ("threshold", "precision", "recall", "f1", "confusion"))
    assert all(item["predicted"] is None and item["n_regions"] == 0 for item in raw["items"])
    # Measured with the seeded random-init ViT at 224 on this set: image AUROC 1.0, pixel AUROC 0.85.
    assert raw["image_auroc"] >= 0.8
    assert raw["pixel_auroc"] >= 0.7
    readme = (tmp_path / "raw" / "README.md").read_text(encoding="utf-8")
    assert "## Highest-scoring OK samples" in readme and "## Lowest-scoring NG samples" in readme

    ok_scores = [item["score"] for item in raw["items"] if item["label"] == "ok"]
    ng_scores = [item["score"] for item in raw["items"] if item["label"] == "ng"]
    calibration = service.calibrate(ROLE, ROI, ok_scores, ng_scores, mm_per_px=samples[0].mm_per_px, area_mm2_thr=0.5)
    out = tmp_path / "report"
    summary = evaluate(service, ROLE, ROI, fit + samples, out, fitted={s.path for s in fit}, include_fitted=True)

    assert json.loads((out / "summary.json").read_text(encoding="utf-8")) == summary
    assert set(summary) >= {"n_ok", "n_ng", "image_auroc", "pixel_auroc", "threshold", "precision", "recall", "f1",
                            "confusion", "items", "headline", "mm_per_px", "overlay_scale"}
    # The headline is on the unseen samples only: the fitted ones change none of its figures.
    assert (summary["n_ok"], summary["n_ng"], summary["n_ok_fitted"]) == (5, 5, N_FIT)
    assert summary["image_auroc"] == raw["image_auroc"] and summary["pixel_auroc"] == raw["pixel_auroc"]
    assert summary["headline"].startswith("Figures on 5 OK and 5 NG sample(s) the memory was not fitted on.")
    apart = summary["fitted_ok"]
    assert (apart["n_ok"], apart["n_ng"]) == (N_FIT, 5)
    assert apart["image_auroc"] == 1.0  # every patch of theirs is in the memory: they score (nearly) 0
    assert sorted(i["file"] for i in summary["items"] if i["fitted"]) == sorted(str(s.path) for s in fit)
    assert summary["threshold"] == calibration["threshold"]
    confusion = summary["confusion"]
    assert confusion["tn"] + confusion["fp"] == 5 and confusion["fn"] + confusion["tp"] == 5
    assert summary["f1"] is not None and summary["recall"] == confusion["tp"] / 5
    for item in summary["items"]:
        assert set(item) >= {"file", "label", "score", "predicted", "n_regions", "fitted", "mm_per_px"}
        assert item["predicted"] == ("ng" if item["score"] >= summary["threshold"] else "ok")
    assert cv2.imread(str(out / "scores.png")) is not None and cv2.imread(str(out / "colour_scale.png")) is not None
    scale = summary["overlay_scale"]
    assert scale["mode"] == "report" and scale["low"] < scale["threshold"] == summary["threshold"] < scale["high"]

    readme = (out / "README.md").read_text(encoding="utf-8")
    assert summary["headline"] in readme
    mistakes, apart_text = readme.split("## OK samples the memory was fitted on (not in the figures above)")
    false_positives, false_negatives = mistakes.split("## False positives")[1].split("## False negatives")
    assert f"OK samples at or above the threshold ({confusion['fp']})" in false_positives
    assert f"NG samples below the threshold ({confusion['fn']})" in false_negatives
    for section, label, wrong in ((false_positives, "ok", "ng"), (false_negatives, "ng", "ok")):
        rows = [line.split(" | ")[0].removeprefix("| ") for line in section.splitlines() if line.startswith("| /")]
        listed = [i for i in summary["items"] if i["file"] in rows]
        assert len(listed) == len(rows) and all(i["label"] == label for i in listed)
        assert all(i["predicted"] == wrong and not i["fitted"] for i in listed)  # only real mistakes
        assert bool(listed) != ("None. The closest" in section)
    assert not any(str(s.path) in mistakes.split("## False positives")[1] for s in fit)
    assert "flatter the model" in apart_text

    drawn = 0
    for item in summary["items"]:
        sample = next(s for s in fit + samples if str(s.path) == item["file"])
        overlay = cv2.imread(str(out / item["overlay"]))
        height, width = cv2.imread(str(sample.path)).shape[:2]
        assert overlay.shape[1] == width and overlay.shape[0] > height  # the caption strip is below
        if sample.label == "ok":
            continue
        truth = cv2.dilate(cv2.imread(str(sample.mask), cv2.IMREAD_GRAYSCALE), np.ones((3, 3), np.uint8)) > 0
        assert (np.all(overlay[:height] == TRUTH_COLOUR, axis=2) & truth).any()  # the true defect outlined
        regions = service.infer(ROLE, ROI, sample.mm_per_px, Upload(sample.path.name, sample.path.read_bytes()),
                                sample.shape)["regions"]
        assert len(regions) == item["n_regions"]
        for region in regions:
            x, y, w, _ = region["bbox"]
            assert np.all(overlay[y, x : x + w] == BBOX_COLOUR, axis=1).any(), (sample.path.name, region["bbox"])
            drawn += 1
    assert drawn > 0


def test_without_unseen_ok_samples_the_headline_says_so(fitted, tmp_path: Path):
    service, fit, _unseen, ng = fitted
    service.calibrate(ROLE, ROI, [0.1, 0.2], None)
    out = tmp_path / "report"
    summary = evaluate(service, ROLE, ROI, fit + ng, out, fitted={s.path for s in fit}, overlay_scale="image")
    assert (summary["n_ok"], summary["n_ng"], summary["n_ok_fitted"], summary["fitted_ok"]) == (0, 5, N_FIT, None)
    assert "No unseen OK sample" in summary["headline"] and "left out (--include-fitted" in summary["headline"]
    assert summary["image_auroc"] is None and summary["precision"] is None and summary["f1"] is None
    assert [i["label"] for i in summary["items"]] == ["ng"] * 5  # the fitted ones were not even scored
    assert summary["overlay_scale"] == {"mode": "image"} and not (out / "colour_scale.png").exists()
    assert "No unseen OK sample" in (out / "README.md").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="no samples to evaluate"):
        evaluate(service, ROLE, ROI, fit, tmp_path / "none", fitted={s.path for s in fit})
