"""Upload decoding: the old backend's ``cv2.imdecode(..., IMREAD_COLOR)``, behind a pixel limit that is
checked from the file header before any pixel is decoded, so a decompression bomb costs nothing.

Pillow reads the header (``Image.open`` is lazy); OpenCV decodes. Pillow's own bomb check is switched
off process-wide (``MAX_IMAGE_PIXELS = None``) because ``BDI_MAX_IMAGE_PIXELS`` is the limit that
applies: Pillow's fixed ~89 M / ~179 M pixel warning/error would otherwise refuse images the setting
allows, or report them as unreadable instead of too large. Pillow never decodes pixels here.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from ..errors import BadRequest, PayloadTooLarge

Image.MAX_IMAGE_PIXELS = None

_FORMATS = "PNG/JPEG/BMP/TIFF"


def _unreadable(filename: str, reason: str) -> BadRequest:
    return BadRequest(
        f"File {filename!r} is not a readable image ({_FORMATS}): {reason}. "
        "Send a PNG, JPEG, BMP or TIFF file."
    )


def image_size_from_header(data: bytes, filename: str) -> tuple[int, int]:
    """(width, height) read from the header only; ``BadRequest`` when no image header is found."""
    if not data:
        raise _unreadable(filename, "the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception as exc:  # Pillow raises many types for garbage; all mean "not an image"
        raise _unreadable(filename, f"no image header found ({type(exc).__name__})") from None
    if width <= 0 or height <= 0:
        raise _unreadable(filename, f"the header claims a {width}x{height} image")
    return width, height


def image_format(data: bytes) -> str | None:
    """Pillow's name of the file's format (``PNG``, ``JPEG``, ``BMP``, ``TIFF``, ...) from its header; None
    when no header is recognised."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:  # noqa: BLE001 - Pillow raises many types for garbage; all mean "no known header"
        return None


def decode_image(data: bytes, filename: str, max_pixels: int) -> np.ndarray:
    """HxWx3 uint8 BGR exactly as the old backend decoded it (alpha dropped, grey -> 3 channels,
    16-bit -> 8-bit); only ``BadRequest`` or ``PayloadTooLarge`` escape, whatever the bytes."""
    width, height = image_size_from_header(data, filename)
    pixels = width * height
    if pixels > max_pixels:
        raise PayloadTooLarge(
            f"Image {filename!r} is {width}x{height} = {pixels:,} pixels, over the limit of "
            f"{max_pixels:,} pixels (BDI_MAX_IMAGE_PIXELS); send a smaller image or raise BDI_MAX_IMAGE_PIXELS."
        )
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except MemoryError:
        raise PayloadTooLarge(
            f"Image {filename!r} ({width}x{height}) does not fit in memory to decode; send a smaller image "
            "or lower BDI_MAX_IMAGE_PIXELS."
        ) from None
    except Exception as exc:  # cv2.error and friends: the decoder gave up on these bytes
        raise _unreadable(filename, f"the decoder failed ({type(exc).__name__})") from None
    if image is None or image.size == 0:
        raise _unreadable(filename, "the data is damaged, truncated or in an unsupported format")
    return image
