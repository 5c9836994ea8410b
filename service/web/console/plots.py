"""The console's two plots as inline SVG (no image request, crisp at any zoom, no JavaScript): a model's OK/NG
calibration scores with the threshold, and its recent scores over time. Colours are the project's plot palette
(OK green, NG red, threshold dark blue, as ``quality.plots`` draws them)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

import numpy as np

OK_COLOUR = "#2e8b57"
NG_COLOUR = "#d62728"
UNCALIBRATED_COLOUR = "#b0b0b0"
THRESHOLD_COLOUR = "#1f3c88"
WIDTH, HEIGHT, PAD = 640, 220, 36


def _frame(title: str, body: list[str], axis: str, x_range: tuple[float, float] | None = None) -> str:
    low, high = x_range or (None, None)
    ticks = [] if x_range is None else [
        f'<text x="{PAD}" y="{HEIGHT - PAD + 14}" text-anchor="middle">{low:.3g}</text>',
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 14}" text-anchor="middle">{high:.3g}</text>']
    return (f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
            f'<title>{escape(title)}</title><rect x="{PAD}" y="{PAD / 2}" width="{WIDTH - 2 * PAD}" '
            f'height="{HEIGHT - 1.5 * PAD}" fill="none" stroke="#999"/>' + "".join(body + ticks)
            + f'<text x="{WIDTH / 2}" y="{HEIGHT - 4}" text-anchor="middle">{escape(axis)}</text></svg>')


def score_histogram_svg(ok: Sequence[float], ng: Sequence[float], threshold: float | None, bins: int = 30) -> str:
    """OK and NG score histograms (translucent, overlaps show) with the threshold as a dashed line."""
    values = [*ok, *ng, *([] if threshold is None else [threshold])]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = 0.05 * (high - low) or 0.05 * max(abs(high), 1e-3)
    edges = np.linspace(low - pad, high + pad, bins + 1)
    counts = [np.histogram(np.asarray(scores, float), edges)[0] for scores in (ok, ng)]
    top = max(1, *(int(c.max()) for c in counts))
    span_x, span_y = WIDTH - 2 * PAD, HEIGHT - 1.5 * PAD
    bar = span_x / bins
    body = []
    for values_, colour, label in ((counts[0], OK_COLOUR, "OK"), (counts[1], NG_COLOUR, "NG")):
        for i, count in enumerate(values_):
            if count:
                h = span_y * count / top
                body.append(f'<rect class="bar-{label.lower()}" x="{PAD + i * bar:.1f}" y="{PAD / 2 + span_y - h:.1f}" '
                            f'width="{bar:.1f}" height="{h:.1f}" fill="{colour}" fill-opacity="0.6"/>')
    if threshold is not None:
        x = PAD + span_x * (threshold - edges[0]) / (edges[-1] - edges[0])
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD / 2}" y2="{HEIGHT - PAD}" stroke="{THRESHOLD_COLOUR}" '
                    f'stroke-dasharray="6 4" stroke-width="1.5"/><text x="{x + 4:.1f}" y="{PAD / 2 + 12}" '
                    f'fill="{THRESHOLD_COLOUR}">threshold {threshold:.4g}</text>')
    body.append(f'<text x="{WIDTH - PAD - 4}" y="{PAD / 2 + 12}" text-anchor="end"><tspan fill="{OK_COLOUR}">OK n='
                f'{len(ok)}</tspan> <tspan fill="{NG_COLOUR}">NG n={len(ng)}</tspan></text>')
    return _frame("Calibration scores: OK and NG with the threshold", body, "image score",
                  (float(edges[0]), float(edges[-1])))


def scores_over_time_svg(times: Sequence[dt.datetime], scores: Sequence[float], decisions: Sequence[str | None],
                         threshold: float) -> str:
    """Every recent inspection's score (y) at its time (x), coloured by decision, with the threshold."""
    if not times:
        return ""
    start, end = times[0].timestamp(), max(times[-1].timestamp(), times[0].timestamp() + 1)
    top = max(max(scores), threshold) * 1.05
    bottom = min(min(scores), threshold) * 0.95
    span_x, span_y = WIDTH - 2 * PAD, HEIGHT - 1.5 * PAD
    body = []
    colours = {"ok": OK_COLOUR, "ng": NG_COLOUR, None: UNCALIBRATED_COLOUR}
    for stamp, score, decision in zip(times, scores, decisions):
        x = PAD + span_x * (stamp.timestamp() - start) / (end - start)
        y = PAD / 2 + span_y * (top - score) / (top - bottom)
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colours.get(decision, UNCALIBRATED_COLOUR)}" '
                    'fill-opacity="0.7"/>')
    y = PAD / 2 + span_y * (top - threshold) / (top - bottom)
    body.append(f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{y:.1f}" y2="{y:.1f}" stroke="{THRESHOLD_COLOUR}" '
                f'stroke-dasharray="6 4"/><text x="{PAD + 4}" y="{y - 4:.1f}" fill="{THRESHOLD_COLOUR}">threshold '
                f'{threshold:.4g}</text>')
    first, last = times[0].strftime("%Y-%m-%d %H:%M"), times[-1].strftime("%Y-%m-%d %H:%M")
    return _frame("Scores over time", body, f"time ({first} to {last} UTC), score {bottom:.3g} to {top:.3g}")
