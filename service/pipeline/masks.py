"""The optional ``shape`` of /infer: which pixels of the uploaded image are scored.

Pixel convention: pixel (row i, column j) covers the unit square [j, j+1) x [i, i+1) and belongs to
a shape when its centre (j + 0.5, i + 0.5) does. So a rect covers the columns whose centres lie in
[x, x + w) (for whole numbers: columns x .. x+w-1) and the default circle (centre W/2, H/2, radius
min(W, H)/2) is the inscribed circle, symmetric under left/right and up/down flips. A circle holds
the centres at distance <= r; an annulus is that circle minus the open disc of radius r_inner
(r_inner <= d <= r), so an annulus with r_inner = 0 is the circle.

A key the shape's kind does not take (``width`` for ``w``, a circle's ``cx`` on a rect) is refused: ignored,
it would leave the mask at its default, the whole image. The text is parsed before the image is decoded; defaults that need the image size (whole image,
centre, half the short side) are resolved by ``shape_mask``.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from ..errors import BadRequest

_KEYS = {"rect": ("x", "y", "w", "h"), "circle": ("cx", "cy", "r"), "annulus": ("cx", "cy", "r", "r_inner")}
_EXAMPLE = '{"kind": "circle", "cx": 256, "cy": 256, "r": 200}'
_TAKES = "the keys each kind takes (besides 'kind'): " + "; ".join(
    f"{kind}: {', '.join(keys)}" for kind, keys in _KEYS.items())
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
MAX_MAGNITUDE = 1e7
"""Largest absolute coordinate accepted: far beyond any image, small enough to stay exact."""

_CHUNK_ELEMENTS = 1 << 22  # pixels per block of distance computations (32 MiB of float64)


@dataclasses.dataclass(frozen=True)
class Shape:
    """A parsed shape in image pixels; a None field takes its image-size default in ``shape_mask``."""

    kind: str
    x: float | None = None
    y: float | None = None
    w: float | None = None
    h: float | None = None
    cx: float | None = None
    cy: float | None = None
    r: float | None = None
    r_inner: float | None = None

    def resolved(self, width: int, height: int) -> Shape:
        """The same shape with every default filled in for a ``width`` x ``height`` image (what the mask covers)."""
        if self.kind == "rect":
            return Shape("rect", x=_default(self.x, 0.0), y=_default(self.y, 0.0), w=_default(self.w, width),
                         h=_default(self.h, height))
        ring = {"r_inner": _default(self.r_inner, 0.0)} if self.kind == "annulus" else {}
        return Shape(self.kind, cx=_default(self.cx, width / 2), cy=_default(self.cy, height / 2),
                     r=_default(self.r, min(width, height) / 2), **ring)

    def as_dict(self) -> dict[str, float | str]:
        """The kind and the coordinates that are set, as /infer's ``shape`` field takes them."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}


def parse_shape(text: str | None) -> Shape | None:
    """The shape described by the JSON ``text``; None (whole image) for no text or blank text."""
    if text is None or not text.strip():
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError covers JSONDecodeError and 4300+-digit ints
        raise BadRequest(f"shape is not valid JSON ({str(exc):.80}); send e.g. {_EXAMPLE}.") from None
    if not isinstance(data, dict):
        raise BadRequest(f"shape must be a JSON object such as {_EXAMPLE}, not a JSON {_JSON_TYPES[type(data)]}.")
    kind = data.get("kind", "rect")
    if not isinstance(kind, str) or kind.strip().lower() not in _KEYS:
        raise BadRequest(f"shape kind {kind!r:.40} is unknown; use 'rect', 'circle' or 'annulus'.")
    kind = kind.strip().lower()
    unknown = sorted(key for key in data if key != "kind" and key not in _KEYS[kind])
    if unknown:
        raise BadRequest(f"shape has key(s) {', '.join(map(repr, unknown)):.120} that a {kind} does not take, so the "
                         f"mask would silently cover more than meant; {_TAKES}.")
    values = {key: _number(key, data[key]) for key in _KEYS[kind] if key in data}
    for side in ("w", "h"):
        if values.get(side, 1) <= 0:
            raise BadRequest(f"shape {side} must be > 0, got {values[side]}.")
    if values.get("r", 1) <= 0:
        raise BadRequest(f"shape radius r must be > 0, got {values['r']}.")
    if values.get("r_inner", 0) < 0:
        raise BadRequest(f"shape r_inner must be >= 0, got {values['r_inner']}.")
    if "r" in values and "r_inner" in values:
        _check_ring(values["r"], values["r_inner"])
    return Shape(kind, **values)


def shape_mask(shape: Shape | None, width: int, height: int) -> np.ndarray:
    """The (height, width) bool mask of ``shape`` on the image; BadRequest if it covers no pixel."""
    mask = np.zeros((height, width), dtype=bool)
    if shape is None:
        mask[:] = True
    elif shape.kind == "rect":
        rect = shape.resolved(width, height)
        assert rect.x is not None and rect.y is not None and rect.w is not None and rect.h is not None
        cols = _centres_in(rect.x, rect.x + rect.w, width, closed=False)
        rows = _centres_in(rect.y, rect.y + rect.h, height, closed=False)
        mask[rows, cols] = True
    else:
        _fill_disc(mask, shape.resolved(width, height))
    if not mask.any():
        raise BadRequest(
            f"shape covers no pixel of the {width}x{height} image; give its coordinates in the "
            "uploaded image's pixels."
        )
    return mask


def _fill_disc(mask: np.ndarray, shape: Shape) -> None:
    """Set the pixels of a resolved circle (or annulus), computing distances only inside its bounding box."""
    height, width = mask.shape
    assert shape.cx is not None and shape.cy is not None and shape.r is not None
    cx, cy, r = shape.cx, shape.cy, shape.r
    r_inner = _default(shape.r_inner, 0.0)
    _check_ring(r, r_inner)
    rows = _centres_in(cy - r, cy + r, height, closed=True)
    cols = _centres_in(cx - r, cx + r, width, closed=True)
    dx2 = ((np.arange(cols.start, cols.stop) + 0.5) - cx) ** 2
    step = max(1, _CHUNK_ELEMENTS // max(1, len(dx2)))
    for start in range(rows.start, rows.stop, step):
        stop = min(start + step, rows.stop)
        dy2 = ((np.arange(start, stop) + 0.5) - cy) ** 2
        d2 = dy2[:, None] + dx2[None, :]
        mask[start:stop, cols] = (d2 <= r * r) & (d2 >= r_inner * r_inner)


def _centres_in(low: float, high: float, size: int, *, closed: bool) -> slice:
    """Pixels 0..size-1 whose centre k + 0.5 lies in [low, high) (or [low, high] when ``closed``)."""
    first = math.ceil(low - 0.5)
    stop = math.floor(high - 0.5) + 1 if closed else math.ceil(high - 0.5)
    return slice(min(max(first, 0), size), min(max(stop, 0), size))


def _check_ring(r: float, r_inner: float) -> None:
    if r_inner >= r:
        raise BadRequest(f"shape r_inner ({r_inner}) must be smaller than r ({r}).")


def _default(value: float | None, default: float) -> float:
    return default if value is None else value


def _number(key: str, value: object) -> float:
    """A finite, sane float from a JSON number or numeric string; booleans and null are refused."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    finite = isinstance(number, int) or (isinstance(number, float) and math.isfinite(number))  # int: any size
    if isinstance(number, bool) or not finite:
        raise BadRequest(f"shape {key} must be a finite number, got {value!r:.40}.")
    if abs(number) > MAX_MAGNITUDE:
        limit = f"{MAX_MAGNITUDE:.0f}"
        raise BadRequest(f"shape {key} must be between -{limit} and {limit}, got {value!r:.40}.")
    return float(number)
