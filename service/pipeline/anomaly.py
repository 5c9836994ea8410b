"""From per-patch nearest distances to what /infer answers: the anomaly map in the uploaded image's
pixels, its score, the heatmap PNG and the defect regions.
"""

from __future__ import annotations

import cv2
import numpy as np

from .letterbox import Letterbox

_BLUR_KSIZE = (7, 7)
_BLUR_SIGMA = 1


def anomaly_map(distances: np.ndarray, grid: tuple[int, int], letterbox: Letterbox) -> np.ndarray:
    """The (src_h, src_w) float32 map, aligned pixel for pixel with the uploaded image.

    ONE bilinear resample from the token grid to the image: every resample blurs, and the old backend
    resampled once. When the image fills the whole canvas (every square ROI) that is exactly the old
    backend's ``cv2.resize``, so square ROIs keep the old scores bit for bit. Otherwise the token grid
    also covers the letterbox padding, so only the part under the pasted image is mapped (stretching
    the whole square misplaced regions on non-square ROIs), with exact coordinates: ``cv2.warpAffine``/
    ``remap`` would quantise them to 1/32 pixel.
    """
    rows, cols = grid
    tokens = np.asarray(distances, dtype=np.float32).reshape(rows, cols)
    box = letterbox
    if box.width == box.size and box.height == box.size:
        image = cv2.resize(tokens, (box.src_w, box.src_h), interpolation=cv2.INTER_LINEAR)
    else:
        low, high, frac = _bilinear_taps(box.src_h, box.y0, box.height, rows, box.size / rows)
        grid64 = tokens.astype(np.float64)
        along_y = (grid64[low] * (1 - frac)[:, None] + grid64[high] * frac[:, None]).astype(np.float32)
        low, high, frac = _bilinear_taps(box.src_w, box.x0, box.width, cols, box.size / cols)
        frac = frac.astype(np.float32)
        image = along_y[:, low] * (1 - frac) + along_y[:, high] * frac
    return cv2.GaussianBlur(image, _BLUR_KSIZE, _BLUR_SIGMA)


def _bilinear_taps(n_out: int, start: int, extent: int, n_tokens: int, token_size: float) -> tuple[np.ndarray, ...]:
    """Along one axis: for each output pixel the two tokens it lies between and the weight of the second.

    Output pixel ``j`` is canvas coordinate ``start + (j + 0.5) * extent / n_out``, which is token
    coordinate ``u / token_size - 0.5`` (token centres sit at half-token offsets, as in cv2's pixel
    convention); coordinates past the first or last centre take that token (cv2's replicated border).
    Computed in float64, so no coordinate is rounded (cv2's remap would round to 1/32 pixel).
    """
    canvas = start + (np.arange(n_out, dtype=np.float64) + 0.5) * (extent / n_out)
    coord = np.clip(canvas / token_size - 0.5, 0.0, n_tokens - 1)
    low = np.floor(coord).astype(np.intp)
    return low, np.minimum(low + 1, n_tokens - 1), coord - low


THRESHOLD_POSITION = 0.7
"""Where the threshold sits on a threshold-anchored scale (0 coolest, 1 hottest): heatmaps and report overlays."""


def image_score(amap: np.ndarray, mask: np.ndarray, percentile: float) -> float:
    """The ``percentile`` (linear interpolation) of the map inside the mask."""
    return float(np.percentile(_masked(amap, mask), percentile))


def stretched_scale(amap: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """The map values grey 0 and 255 stand for in the GUIs' heatmap: the mask's own 1st and 99th percentile, so
    every image uses all grey levels (an OK part looks as hot as an NG one; the scale says which is which)."""
    low, high = (float(v) for v in np.percentile(_masked(amap, mask), [1, 99]))
    return low, high


def threshold_scale(threshold: float) -> tuple[float, float]:
    """A scale comparable between images of one model: 0 is grey 0 and the threshold sits at grey
    ``THRESHOLD_POSITION * 255`` (178), as in ``bdi eval``'s overlays; values from threshold / 0.7 up are 255."""
    return 0.0, threshold / THRESHOLD_POSITION


def heatmap_png(amap: np.ndarray, mask: np.ndarray, scale: tuple[float, float] | None = None) -> bytes:
    """8-bit single-channel PNG of the map, linear from ``scale``'s low (grey 0) to its high (grey 255), clipped;
    None: ``stretched_scale`` (the mask's 1st..99th percentile).

    Pixels outside the mask are 0; a map that is flat inside the mask is all 0 (nothing stands out).
    """
    mask = _checked_mask(amap, mask)
    low, high = stretched_scale(amap, mask) if scale is None else scale
    scaled = np.zeros(amap.shape, dtype=np.uint8)
    if high > low:
        unit = np.clip((amap[mask] - low) / (high - low), 0.0, 1.0)
        scaled[mask] = (unit * 255).astype(np.uint8)
    ok, png = cv2.imencode(".png", scaled)
    if not ok:
        raise RuntimeError("OpenCV could not encode the heatmap as PNG")
    return png.tobytes()


def find_regions(
    amap: np.ndarray, mask: np.ndarray, threshold: float, mm_per_px: float, area_mm2_thr: float
) -> list[dict]:
    """Connected areas (8-connectivity) where the map >= threshold inside the mask, largest first.

    Areas below ``area_mm2_thr`` are dropped. ``area_px`` is the component's pixel count (a 1-px line
    has a real area); the outline is traced on the component's bounding box only, so a large image
    with many small spots stays fast. All coordinates are Python ints (JSON-ready).
    """
    hot = ((amap >= threshold) & _checked_mask(amap, mask)).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    areas_mm2 = stats[:, cv2.CC_STAT_AREA] * mm_per_px**2
    kept = np.flatnonzero(areas_mm2 >= area_mm2_thr)
    kept = kept[kept > 0]  # label 0 is the background
    kept = kept[np.argsort(-stats[kept, cv2.CC_STAT_AREA], kind="stable")]  # ties keep raster order
    regions = []
    for label in kept:
        x, y, w, h, area = (int(v) for v in stats[label, :5])
        regions.append(
            {
                "bbox": [x, y, w, h],
                "x": x,
                "y": y,
                "w": w,
                "h": h,
                "area_px": float(area),
                "area_mm2": float(areas_mm2[label]),
                "contour": _outline(labels[y : y + h, x : x + w] == label, (x, y)),
            }
        )
    return regions


def _outline(component: np.ndarray, offset: tuple[int, int]) -> list[list[int]]:
    """External outline of one component (its largest contour), in image coordinates."""
    contours, _ = cv2.findContours(
        component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=offset
    )
    largest = max(contours, key=lambda contour: (cv2.contourArea(contour), len(contour)))
    return [[int(px), int(py)] for px, py in largest.reshape(-1, 2)]


def _checked_mask(amap: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != amap.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the anomaly map's {amap.shape}")
    return mask


def _masked(amap: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The map's values inside the mask; an empty mask is a caller bug (shape_mask refuses those)."""
    values = amap[_checked_mask(amap, mask)]
    if values.size == 0:
        raise ValueError("the mask covers no pixel of the anomaly map")
    return values
