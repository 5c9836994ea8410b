"""The console's pictures of one record, drawn on the server: the heatmap over the image on one colour scale
anchored at the model's threshold (``pipeline.heat``, the scale of ``bdi eval``'s overlays), the ROI's mask
outlined, the regions outlined with their areas; and small thumbnails for the lists."""

from __future__ import annotations

import json

import cv2
import numpy as np

from ...pipeline.heat import HeatColours
from ...pipeline.masks import parse_shape, shape_mask
from ...storage import InspectionRecord

HEAT_OPACITY = 0.5
MASK_COLOUR = (255, 255, 0)  # BGR cyan: not a colour of the heat map
REGION_COLOUR = (0, 255, 0)
THUMB_SIDE = 160


def model_scale(threshold: float) -> HeatColours:
    """The colours of every part of one model: half the threshold is the coolest, 1.5x the hottest, the
    threshold itself at ``THRESHOLD_POSITION``. Fixed per threshold, so two parts' overlays compare."""
    return HeatColours(0.5 * threshold, 1.5 * threshold, threshold)


def anchored(record: InspectionRecord) -> bool:
    """The record kept what the anchored scale needs: the threshold and the map values the PNG's 0 and 255 stand
    for (records made before the heatmap scale was recorded, and uncalibrated ones, show their own stretch)."""
    return record.threshold is not None and record.heatmap_low is not None and record.heatmap_high is not None


def _decode(data: bytes, flags: int) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise ValueError("a kept file is not a readable image")
    return image


def _png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("the overlay could not be encoded")
    return encoded.tobytes()


def overlay_png(record: InspectionRecord, image_bytes: bytes, heatmap_bytes: bytes) -> bytes:
    """The image with the heat map blended in (inside the ROI's mask), the mask's outline and the regions."""
    image = _decode(image_bytes, cv2.IMREAD_COLOR)
    height, width = image.shape[:2]
    heat = _decode(heatmap_bytes, cv2.IMREAD_GRAYSCALE).astype(np.float64) / 255.0
    if heat.shape != (height, width):
        heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
    if anchored(record):
        assert record.threshold is not None and record.heatmap_low is not None and record.heatmap_high is not None
        values = record.heatmap_low + heat * (record.heatmap_high - record.heatmap_low)
        colours = model_scale(record.threshold).colours_bgr(values)
    else:
        colours = HeatColours(0.0, 1.0).colours_bgr(heat)
    shape = parse_shape(json.dumps(record.shape)) if record.shape else None
    inside = shape_mask(shape, width, height)
    blended = image.copy()
    mixed = (1 - HEAT_OPACITY) * image[inside] + HEAT_OPACITY * colours[inside]
    blended[inside] = np.clip(mixed, 0, 255).astype(np.uint8)
    if shape is not None:
        outline, _ = cv2.findContours(inside.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(blended, outline, -1, MASK_COLOUR, 1, cv2.LINE_AA)
    for region in record.regions or []:  # a record keeps each region's box (x, y, w, h) and its areas
        x, y, w, h = (int(region.get(key, 0)) for key in ("x", "y", "w", "h"))
        cv2.rectangle(blended, (x, y), (x + max(w, 1) - 1, y + max(h, 1) - 1), REGION_COLOUR, 1)
        label = f"{region.get('area_mm2', 0):.1f} mm2"
        cv2.putText(blended, label, (x, y - 3 if y >= 12 else y + max(h, 1) + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.3,
                    REGION_COLOUR, 1, cv2.LINE_AA)
    return _png(blended)


def thumbnail_png(image_bytes: bytes) -> bytes:
    """The image shrunk to at most ``THUMB_SIDE`` pixels a side (never enlarged)."""
    image = _decode(image_bytes, cv2.IMREAD_COLOR)
    height, width = image.shape[:2]
    factor = min(1.0, THUMB_SIDE / max(height, width))
    if factor < 1:
        image = cv2.resize(image, (max(1, round(width * factor)), max(1, round(height * factor))),
                           interpolation=cv2.INTER_AREA)
    return _png(image)
