"""Rules for the values every route takes (ids, mm_per_px), in a module of their own so that the admin
commands and the legacy import check them without importing the backbone's stack."""

from __future__ import annotations

import math
import re
import unicodedata

from .errors import BadRequest

MAX_ID_LENGTH = 128
MAX_MM_PER_PX = 1e6
"""A kilometre per pixel: past it the areas in mm² (px x mm_per_px²) stop being finite JSON numbers."""
_FORBIDDEN_ID_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}  # controls (NUL included), surrogates, line breaks

DEFAULT_RECIPE = "default"
"""The namespace of every client that names no recipe: the models old GUIs use, ``(role, roi)`` as ever."""
RESERVED_RECIPES = frozenset({"last"})  # the newer GUI's default layout name: never a recipe of its own
RECIPE_PATTERN = "[a-z0-9][a-z0-9_-]{0,63}"
_RECIPE = re.compile(RECIPE_PATTERN)


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


def normalize_recipe(value: str | None) -> str:
    """The recipe (namespace) a request names: ``strip().lower()`` of ``value``; None or blank is the default
    namespace. The sentences are the newer GUI's contract (CONTRACT-GUI2.md, "Recipes"), word for word."""
    if value is None or not value.strip():
        return DEFAULT_RECIPE
    recipe = value.strip().lower()
    if not _RECIPE.fullmatch(recipe):
        raise BadRequest(f"Invalid recipe_id '{value}'. Allowed: {RECIPE_PATTERN}.")
    if recipe in RESERVED_RECIPES:
        raise BadRequest(
            f"Invalid recipe_id '{value}': value is reserved. "
            "Use an explicit recipe name (e.g. 'default' or a real recipe id)."
        )
    return recipe
