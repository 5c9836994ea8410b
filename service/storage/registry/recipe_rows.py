"""The registry's recipe rows: each named recipe's locked mm_per_px, mirrored from its recipe.json. A part of
``Registry`` (a mixin over its sessions), kept apart so the registry class stays one screenful of concerns."""

from __future__ import annotations

from sqlalchemy import delete, select

from ..artifacts import ModelStore
from ..files import utc_now
from .audit import AuditEvent, write_audit
from .tables import Recipe


class RecipeRows:
    """Read and rebuild the recipes table; ``Registry`` provides ``_read`` and ``_write``."""

    def recipe_mm_per_px(self, recipe_id: str) -> float | None:
        """A named recipe's locked mm_per_px; None while none is locked."""
        with self._read() as session, session.begin():
            return session.scalar(select(Recipe.mm_per_px).where(Recipe.recipe_id == recipe_id))

    def recipes(self) -> dict[str, float | None]:
        with self._read() as session, session.begin():
            return dict(session.execute(select(Recipe.recipe_id, Recipe.mm_per_px).order_by(Recipe.recipe_id)).all())

    def sync_recipe(
        self, recipe_id: str, mm_per_px: float | None, created_at: str, audit: AuditEvent | None = None
    ) -> None:
        """Make the row of one recipe say what its recipe.json says; ``audit``'s row (the value before and
        after in its details) commits with it."""
        with self._write() as session, session.begin():
            row = session.get(Recipe, recipe_id)
            before = row.mm_per_px if row is not None else None
            if row is None:
                session.add(Recipe(recipe_id=recipe_id, mm_per_px=mm_per_px, created_at=created_at))
            else:
                row.mm_per_px = mm_per_px
            if audit is not None:
                details = {**(audit.details or {}), "mm_per_px_before": before, "mm_per_px_after": mm_per_px}
                write_audit(session, audit.about(recipe_id=recipe_id, details=details))

    def sync_recipes(self, store: ModelStore) -> None:
        """The recipes table rebuilt from the recipes' files (start-up, reindex)."""
        on_disk = {recipe_id: store.read_recipe(folder) for recipe_id, folder in store.recipes()}
        with self._write() as session, session.begin():
            session.execute(delete(Recipe).where(Recipe.recipe_id.not_in(list(on_disk))))
        for recipe_id, payload in on_disk.items():
            mm_per_px = payload.get("mm_per_px")
            self.sync_recipe(
                recipe_id, float(mm_per_px) if isinstance(mm_per_px, (int, float)) else None,
                str(payload.get("created_at_utc") or utc_now()),
            )

