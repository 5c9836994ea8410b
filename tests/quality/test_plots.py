"""service/quality/plots.py: the figures render headless with matplotlib, and the overlays' colour scale is
anchored at the threshold."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import cv2
import numpy as np
import pytest
from matplotlib.figure import Figure

from service.quality.plots import THRESHOLD_POSITION, HeatScale, save_png, score_histogram, scores_over_time


@pytest.mark.parametrize(
    ("ok", "ng", "threshold", "fitted"),
    [([0.2, 0.3], [0.6], 0.45, []), ([0.5], [0.5], None, [0.1, 0.2]), ([], [], None, []), ([], [0.7], 0.5, [0.2])],
)
def test_score_histogram_draws_any_input(ok, ng, threshold, fitted, tmp_path: Path):
    figure = score_histogram(ok, ng, threshold, fitted_ok_scores=fitted)
    assert isinstance(figure, Figure)
    save_png(figure, tmp_path / "scores.png")
    image = cv2.imread(str(tmp_path / "scores.png"))
    assert image.shape == (420, 800, 3) and (image < 255).any()
    axes = figure.axes[0]
    labels = axes.get_legend_handles_labels()[1]
    assert labels[:2] == [f"OK (n={len(ok)})", f"NG (n={len(ng)})"]
    assert any("fitted on, not in the metrics" in label for label in labels) == bool(fitted)
    assert any(label.startswith("threshold") for label in labels) == (threshold is not None)
    assert ("uncalibrated" in axes.get_title()) == (threshold is None)


def test_report_scale_is_anchored_at_the_threshold():
    scale = HeatScale.for_report([0.30, 0.35], [0.70, 0.90], threshold=0.6)
    assert (scale.low, scale.high) == (0.30, 0.90)
    unit = scale.unit(np.array([0.30, 0.45, 0.6, 0.75, 0.90, 2.0]))
    assert unit == pytest.approx([0.0, THRESHOLD_POSITION / 2, THRESHOLD_POSITION, (1 + THRESHOLD_POSITION) / 2, 1, 1])
    # The threshold's colour is the same in every overlay of a report, and hotter than anything below it.
    colours = scale.colours_bgr(np.array([[0.6, 0.59], [0.61, 0.3]]))
    assert colours.shape == (2, 2, 3) and colours.dtype == np.uint8
    assert colours[0, 0].sum() > colours[0, 1].sum() > colours[1, 1].sum()
    # A threshold outside the data still sits strictly inside the scale.
    above = HeatScale.for_report([0.1], [0.2], threshold=0.5)
    assert above.low < 0.5 < above.high and above.unit(np.array(0.5)) == pytest.approx(THRESHOLD_POSITION)


def test_own_stretch_and_uncalibrated_scale_are_linear(tmp_path: Path):
    own = HeatScale.stretched(np.linspace(0.0, 1.0, 101))
    assert own.threshold is None and (own.low, own.high) == pytest.approx((0.01, 0.99))
    assert own.unit(np.array([0.01, 0.5, 0.99])) == pytest.approx([0.0, 0.5, 1.0])
    uncalibrated = HeatScale.for_report([0.2], [0.4], None)
    assert uncalibrated.unit(np.array(0.3)) == pytest.approx(0.5)
    for scale in (HeatScale.for_report([0.2], [0.8], 0.5), uncalibrated):
        save_png(scale.colour_bar(), tmp_path / "bar.png")
        assert cv2.imread(str(tmp_path / "bar.png")).shape == (150, 800, 3)


def test_scores_over_time_draws_each_decision_the_daily_median_and_the_references(tmp_path: Path):
    start = dt.datetime(2026, 12, 1, 6, tzinfo=dt.timezone.utc)
    times = [start + dt.timedelta(hours=3 * i) for i in range(30)]
    decisions = ["ok"] * 20 + ["ng"] * 6 + [None] * 4
    figure = scores_over_time(times, [0.4 + 0.005 * i for i in range(30)], decisions, 0.5, reference=0.41,
                              title="R / r, version 2: drifting")
    save_png(figure, tmp_path / "drift.png")
    assert cv2.imread(str(tmp_path / "drift.png")).shape == (450, 1000, 3)
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert labels[:4] == ["OK (n=20)", "NG (n=6)", "uncalibrated (n=4)", "daily median"]
    assert {"threshold 0.5", "calibration OK median"} <= set(labels)
    assert figure.axes[0].get_title() == "R / r, version 2: drifting"
    empty = scores_over_time([], [], [], 0.5)  # no inspections in the window: still a figure
    assert [label for label in empty.axes[0].get_legend_handles_labels()[1] if "(n=" in label] == []
