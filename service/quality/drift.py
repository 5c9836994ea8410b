"""The drift plot of one model (``bdi models drift --plot``); the analysis itself is the core's (``core.drift``),
so the console can show the verdict without importing this wing (web and quality sit side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.drift import NEAR_BAND, DriftLimits, DriftSeries, analyse_drift

__all__ = ["DriftLimits", "analyse_drift", "plot_drift"]  # the analysis, re-exported where the CLI finds it


def plot_drift(series: DriftSeries, report: dict[str, Any], path: Path) -> None:
    """The scores of the window over time with the threshold and the calibration's level (``plots``)."""
    from .plots import save_png, scores_over_time

    stored = report["calibration"]["ok_scores_stored"]
    figure = scores_over_time(
        series.times, series.scores, series.decisions, series.threshold,
        reference=series.reference_median if np.isfinite(series.reference_median) else None,
        reference_label=f"calibration OK {'median' if stored else 'mean'}", near_band=NEAR_BAND,
        title=f"Recipe '{report['recipe_id']}': {report['role_id']} / {report['roi_id']}, version {report['version']}: "
              f"{report['verdict']}",
    )
    save_png(figure, path)
