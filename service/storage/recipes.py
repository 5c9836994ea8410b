"""The mm_per_px lock of a named recipe (CONTRACT-GUI2.md, "Recipes"): the first mm_per_px a fit, an infer
or a dataset upload sends for a recipe is stored in its ``recipe.json`` (and the registry's ``recipes``
row); a later one that differs by more than 1e-6 relative is a 409. The default namespace has no lock:
old GUIs change mm/px freely.

Checking and claiming are two steps, so that a request checks every value it carries before it writes
anything, and claims the lock only right before its own write; a write that then fails releases a lock it
claimed (``release_mm_per_px``), so a failed request leaves no lock behind.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import BadRequest, Conflict
from ..validation import DEFAULT_RECIPE, validate_mm_per_px
from .artifacts import ModelStore
from .audit import AuditEvent
from .files import utc_now
from .registry import Registry

RELATIVE_TOLERANCE = 1e-6


def _mismatch(recipe_id: str, expected: float, got: float) -> Conflict | None:
    """The contract's sentence (CONTRACT-GUI2.md, word for word), then what to do about it."""
    if abs(got - expected) <= RELATIVE_TOLERANCE * abs(expected):
        return None
    return Conflict(
        f"mm_per_px mismatch for recipe '{recipe_id}': expected {expected}, got {got}. Send mm_per_px={expected} "
        f"(the recipe's locked scale); if the camera or lens changed, reset the lock with `bdi recipes set-mm-per-px "
        f"{recipe_id} {got}` (--force when models of the recipe were fitted at {expected}: refit them after)."
    )


def set_mm_per_px(
    store: ModelStore, registry: Registry, recipe_id: str, mm_per_px: float, force: bool = False,
    audit: AuditEvent | None = None,
) -> float | None:
    """Set a named recipe's locked mm/px (``bdi recipes set-mm-per-px``); the value it held before. Refused
    (409) while models of the recipe exist, which were all fitted at the lock's value, unless ``force``: their
    regions' areas in mm² would be computed at a scale they were not fitted at. ``audit`` (a
    ``recipe_mm_per_px`` event) commits with the registry's row."""
    if recipe_id == DEFAULT_RECIPE:
        raise BadRequest("The default namespace has no mm/px lock (old GUIs change mm/px freely); name a recipe.")
    validate_mm_per_px(mm_per_px)
    folder = store.namespace_dir(recipe_id, create=True)
    assert folder is not None
    with store.locked(folder):
        recorded = store.read_recipe(folder)
        before = recorded.get("mm_per_px") if isinstance(recorded.get("mm_per_px"), (int, float)) else None
        models = sum(1 for _ in registry.states(recipe_id))
        if before is not None and _mismatch(recipe_id, float(before), mm_per_px) is not None and models and not force:
            raise Conflict(
                f"{models} model(s) of recipe '{recipe_id}' were fitted at mm_per_px={before}; at {mm_per_px} their "
                "regions' areas (mm²) and area thresholds would be off. Refit them after the change and pass --force, "
                "or keep the lock."
            )
        created_at = str(recorded.get("created_at_utc") or utc_now())
        store.write_recipe(folder, {"recipe_id": recipe_id, "mm_per_px": float(mm_per_px), "created_at_utc": created_at,
                                    "locked_at_utc": utc_now()})
        registry.sync_recipe(recipe_id, float(mm_per_px), created_at, audit)
    return float(before) if before is not None else None


def check_mm_per_px(registry: Registry, recipe_id: str, values: Iterable[float]) -> None:
    """Raise the contract's 409 when any of ``values`` differs from the recipe's lock, or, with no lock yet,
    from the first of them (they would lock it). Writes nothing."""
    if recipe_id == DEFAULT_RECIPE:
        return
    expected = registry.recipe_mm_per_px(recipe_id)
    for value in values:
        if expected is None:
            expected = value
        elif (conflict := _mismatch(recipe_id, expected, value)) is not None:
            raise conflict


def claim_mm_per_px(
    store: ModelStore, registry: Registry, recipe_id: str, mm_per_px: float, audit: AuditEvent | None = None
) -> bool:
    """Lock ``mm_per_px`` for a named recipe that has none yet; 409 when the lock holds another value. True
    when this call locked it (for ``release_mm_per_px`` should the write it was claimed for fail); ``audit``
    (a ``recipe_mm_per_px`` event) is recorded with the lock when this call takes it."""
    if recipe_id == DEFAULT_RECIPE:
        return False
    expected = registry.recipe_mm_per_px(recipe_id)
    claimed = False
    if expected is None:
        folder = store.namespace_dir(recipe_id, create=True)
        assert folder is not None
        with store.locked(folder):  # two first requests of a new recipe: one locks, the other compares
            recorded = store.read_recipe(folder)
            if not isinstance(recorded.get("mm_per_px"), (int, float)):
                recorded = {
                    "recipe_id": recipe_id,
                    "mm_per_px": float(mm_per_px),
                    "created_at_utc": recorded.get("created_at_utc") or utc_now(),
                    "locked_at_utc": utc_now(),
                }
                store.write_recipe(folder, recorded)
                claimed = True
            expected = float(recorded["mm_per_px"])
            registry.sync_recipe(recipe_id, expected, str(recorded["created_at_utc"]), audit if claimed else None)
    if (conflict := _mismatch(recipe_id, expected, mm_per_px)) is not None:
        raise conflict
    return claimed


def release_mm_per_px(store: ModelStore, registry: Registry, recipe_id: str) -> None:
    """Undo a claim whose write failed: the recipe's mm/px unlocked again, unless a model of the recipe
    exists meanwhile (another request fitted it under that lock, which must then hold)."""
    folder = store.namespace_dir(recipe_id)
    if folder is None or any(True for _ in registry.states(recipe_id)):
        return
    with store.locked(folder):
        recorded = store.read_recipe(folder)
        created_at = str(recorded.get("created_at_utc") or utc_now())
        store.write_recipe(folder, {"recipe_id": recipe_id, "created_at_utc": created_at})
        registry.sync_recipe(recipe_id, None, created_at)
