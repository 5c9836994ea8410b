"""Letterbox geometry shared by the extractor (pasting the ROI on a square canvas) and the anomaly
map (cutting the padding back out so heatmaps and regions line up with non-square ROIs)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """Where an image of ``src_w`` x ``src_h`` lands on the ``size`` x ``size`` canvas."""

    size: int
    src_w: int
    src_h: int
    x0: int
    y0: int
    width: int
    height: int

    @classmethod
    def fit(cls, src_w: int, src_h: int, size: int) -> Letterbox:
        """The old extractor's rule: ``s = min(S/w, S/h)``, ``round(w*s), round(h*s)``, centred."""
        scale = min(size / src_w, size / src_h)
        width = max(1, min(size, round(src_w * scale)))
        height = max(1, min(size, round(src_h * scale)))
        return cls(size, src_w, src_h, (size - width) // 2, (size - height) // 2, width, height)
