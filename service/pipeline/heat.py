"""Anomaly-map values to colours on one scale, anchored at the threshold: the report's overlays (``quality``)
and the console's (``web``) colour a part the same way, so an OK part looks cool and an NG part hot on both."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps

from .anomaly import THRESHOLD_POSITION

HEAT_COLOUR_MAP = "inferno"  # perceptually uniform; holds no green or cyan, the overlays' outline colours


@dataclasses.dataclass(frozen=True)
class HeatColours:
    """Anomaly-map values to colours: linear from ``low`` (coolest) to ``high`` (hottest).

    With a ``threshold`` the scale is anchored there: ``low..threshold`` fills the colours below
    ``THRESHOLD_POSITION`` and ``threshold..high`` those above, so whatever reaches the threshold has
    the same colour in every overlay of a report, and a clean part looks cool next to a broken one.
    """

    low: float
    high: float
    threshold: float | None = None

    @classmethod
    def for_report(cls, lows: Sequence[float], highs: Sequence[float], threshold: float | None) -> HeatColours:
        """One scale for a whole report: the coolest ``lows`` to the hottest ``highs``, the threshold
        strictly inside."""
        low, high = (min(lows), max(highs)) if len(lows) else (0.0, 1.0)
        span = max(high - low, 1e-6)
        if threshold is not None:
            low, high = min(low, threshold - 0.05 * span), max(high, threshold + 0.05 * span)
        return cls(low, max(high, low + 1e-6), threshold)

    @classmethod
    def stretched(cls, values: np.ndarray) -> HeatColours:
        """One image's own scale: its 1st to 99th percentile (what the /infer heatmap PNG shows)."""
        low, high = (float(v) for v in np.percentile(values, [1, 99]))
        return cls(low, max(high, low + 1e-6))

    def unit(self, values: np.ndarray) -> np.ndarray:
        """``values`` as positions 0..1 on the colour map (clipped)."""
        values = np.asarray(values, np.float64)
        if self.threshold is None:
            unit = (values - self.low) / (self.high - self.low)
        else:
            below = (values - self.low) / (self.threshold - self.low) * THRESHOLD_POSITION
            above = THRESHOLD_POSITION + (values - self.threshold) / (self.high - self.threshold) * (
                1 - THRESHOLD_POSITION)
            unit = np.where(values < self.threshold, below, above)
        return np.clip(unit, 0.0, 1.0)

    def colours_bgr(self, values: np.ndarray) -> np.ndarray:
        """``values`` (any shape) as uint8 BGR colours of ``HEAT_COLOUR_MAP`` (shape + (3,)), for OpenCV."""
        rgb = colormaps[HEAT_COLOUR_MAP](self.unit(values), bytes=True)[..., :3]
        return np.ascontiguousarray(rgb[..., ::-1])
