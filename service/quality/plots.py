"""Every figure of the project, drawn with matplotlib, and the colour scale of the report's overlays.

Figures are written to files by CLI commands on machines without a display, so this module never
imports ``pyplot``: each function builds a ``matplotlib.figure.Figure`` on the Agg canvas directly (no
GUI backend, no global figure state shared between threads) and returns it; ``save_png`` writes it.

To add a plot (``scores_over_time`` is one): take plain numbers (lists of floats, ``None`` for an
uncalibrated threshold), start from ``new_figure``, draw OK with ``OK_COLOUR``, NG with ``NG_COLOUR``,
samples the memory was fitted on with ``FITTED_COLOUR``, the threshold with ``threshold_line``, say in
the title what is plotted and on which samples, and return the Figure.

``HeatScale`` maps anomaly-map values to the colours of ``HEAT_COLOUR_MAP``; its ``colour_bar``
figure documents the same mapping, so an overlay and its legend can't disagree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from ..pipeline.heat import HEAT_COLOUR_MAP, THRESHOLD_POSITION, HeatColours

OK_COLOUR = "#2e8b57"
NG_COLOUR = "#d62728"
FITTED_COLOUR = "#7f7f7f"
UNCALIBRATED_COLOUR = "#b0b0b0"
REFERENCE_COLOUR = "#9467bd"
THRESHOLD_COLOUR = "#1f3c88"
DPI = 100


def new_figure(width: float = 8.0, height: float = 4.2) -> Figure:
    """An empty figure (inches at ``DPI``) on the Agg canvas, laid out so labels are never cut."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: Path) -> None:
    """Write ``figure`` as a PNG at ``DPI``."""
    figure.savefig(Path(path), format="png", dpi=DPI)


def threshold_line(axes: Axes, threshold: float | None, vertical: bool = True) -> None:
    """The threshold as a dashed line labelled with its value (for the legend); nothing when None."""
    if threshold is None:
        return
    draw = axes.axvline if vertical else axes.axhline
    draw(threshold, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.5, label=f"threshold {threshold:.4g}")


def score_histogram(
    ok_scores: Sequence[float], ng_scores: Sequence[float], threshold: float | None, *,
    fitted_ok_scores: Sequence[float] = (), title: str = "Image scores", bins: int = 30,
) -> Figure:
    """OK and NG score histograms on one axis (translucent, so overlaps show) with the threshold.

    ``fitted_ok_scores`` (OK samples the memory was fitted on) are drawn as a grey outline only, labelled
    as left out of the metrics: a memory scores its own images low, so they must not pass for new parts.
    """
    figure = new_figure()
    axes = figure.add_subplot()
    values = [*ok_scores, *ng_scores, *fitted_ok_scores, *([] if threshold is None else [threshold])]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = 0.05 * (high - low) or 0.05 * max(abs(high), 1e-3)
    edges = np.linspace(low - pad, high + pad, bins + 1)
    axes.hist(np.asarray(ok_scores, float), edges, color=OK_COLOUR, alpha=0.6, label=f"OK (n={len(ok_scores)})")
    axes.hist(np.asarray(ng_scores, float), edges, color=NG_COLOUR, alpha=0.6, label=f"NG (n={len(ng_scores)})")
    if len(fitted_ok_scores):
        axes.hist(np.asarray(fitted_ok_scores, float), edges, histtype="step", color=FITTED_COLOUR, linewidth=1.5,
                  label=f"OK fitted on, not in the metrics (n={len(fitted_ok_scores)})")
    threshold_line(axes, threshold)
    axes.set_xlim(edges[0], edges[-1])
    axes.set_xlabel("image score")
    axes.set_ylabel("samples")
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.set_title(title if threshold is not None else f"{title} (uncalibrated: no threshold)")
    axes.legend(loc="upper right", fontsize="small")
    return figure


def scores_over_time(
    times: Sequence[dt.datetime], scores: Sequence[float], decisions: Sequence[str | None], threshold: float, *,
    reference: float | None = None, reference_label: str = "calibration OK median", near_band: float = 0.10,
    title: str = "Scores over time",
) -> Figure:
    """Every inspection's score at its time (OK, NG, uncalibrated), the daily median of all scores, the
    threshold, the band ``near_band`` below it, and the calibration's reference level (``bdi models drift``)."""
    figure = new_figure(10.0, 4.5)
    axes = figure.add_subplot()
    for decision, label, colour, size in (("ok", "OK", OK_COLOUR, 12), ("ng", "NG", NG_COLOUR, 22),
                                          (None, "uncalibrated", UNCALIBRATED_COLOUR, 12)):
        picked = [(t, v) for t, v, d in zip(times, scores, decisions) if d == decision]
        if picked:
            axes.scatter([t for t, _ in picked], [v for _, v in picked], s=size, c=colour, alpha=0.65,
                         linewidths=0, label=f"{label} (n={len(picked)})")
    daily: dict[dt.date, list[float]] = {}
    for stamp, value in zip(times, scores):
        daily.setdefault(stamp.date(), []).append(value)
    if daily:
        days = sorted(daily)
        axes.plot([dt.datetime.combine(day, dt.time(12), dt.timezone.utc) for day in days],
                  [float(np.median(daily[day])) for day in days], color="black", marker="o", linewidth=1.5,
                  label="daily median")
    threshold_line(axes, threshold, vertical=False)
    axes.axhspan((1 - near_band) * threshold, threshold, color=NG_COLOUR, alpha=0.07,
                 label=f"within {near_band:.0%} below the threshold")
    if reference is not None:
        axes.axhline(reference, color=REFERENCE_COLOUR, linestyle=":", linewidth=1.5, label=reference_label)
    locator = AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes.set_ylabel("image score")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", fontsize="small", framealpha=0.9)
    return figure


class HeatScale(HeatColours):
    """``HeatColours`` with its legend: the ``colour_bar`` figure documents the same mapping, so an overlay and its
    legend can't disagree."""

    def colour_bar(self, title: str = "Overlay colours: anomaly-map value") -> Figure:
        """The scale as a horizontal colour bar with the threshold marked, for the report's legend."""
        figure = new_figure(8.0, 1.5)
        axes = figure.add_subplot()
        axes.imshow(np.linspace(0, 1, 512)[None, :], cmap=HEAT_COLOUR_MAP, vmin=0, vmax=1, aspect="auto",
                    extent=(0, 1, 0, 1))
        if self.threshold is None:
            ticks = np.linspace(self.low, self.high, 5)
        else:  # the two linear pieces, each with its own spacing
            ticks = np.r_[np.linspace(self.low, self.threshold, 4), np.linspace(self.threshold, self.high, 3)[1:]]
        axes.set_xticks(self.unit(ticks), [f"{v:.3g}" for v in ticks])
        axes.set_yticks([])
        if self.threshold is not None:
            axes.axvline(THRESHOLD_POSITION, color="white", linewidth=2)
            axes.axvline(THRESHOLD_POSITION, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.5)
            title += f"; threshold {self.threshold:.4g} and above: the top {1 - THRESHOLD_POSITION:.0%} of the colours"
        axes.set_title(title, fontsize="medium")
        return figure
