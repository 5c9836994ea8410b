"""Rules for the values every route takes (ids, mm_per_px), in a module of their own so that the admin
commands and the legacy import check them without importing the backbone's stack."""

from __future__ import annotations

import math
import unicodedata

from .errors import BadRequest

MAX_ID_LENGTH = 128
MAX_MM_PER_PX = 1e6
"""A kilometre per pixel: past it the areas in mm² (px x mm_per_px²) stop being finite JSON numbers."""
_FORBIDDEN_ID_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}  # controls (NUL included), surrogates, line breaks


def validate_id(field: str, value: str) -> str:
    """Ids are free text (any printable Unicode, 1..128 chars), case-sensitive, kept exactly."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{field} is empty; send the name of the {field.split('_')[0]} (1 to 128 characters).")
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"{field} has {len(value)} characters; use at most {MAX_ID_LENGTH}.")
    bad = next((c for c in value if unicodedata.category(c) in _FORBIDDEN_ID_CATEGORIES), None)
    if bad is not None:
        raise BadRequest(f"{field} contains the control character U+{ord(bad):04X}; use printable characters only.")
    return value


def validate_mm_per_px(value: float) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value <= MAX_MM_PER_PX:
        raise BadRequest(
            f"mm_per_px must be a finite number > 0 and at most {MAX_MM_PER_PX:g} (millimetres per pixel), got {value!r}."
        )
    return float(value)
