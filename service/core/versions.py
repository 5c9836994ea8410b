"""Memory versions of a model: the list with their statuses (active, staged, retired), and activating one
(a staged version going live, or a rollback to a retired one)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from ..errors import Conflict, NotFound
from ..settings import Settings
from ..storage import ModelState, ModelStore, Registry, utc_now
from ..storage.versions import VersionFiles
from ..validation import DEFAULT_RECIPE
from .memory import unknown_version
from .request import LOGGER_NAME, RequestContext, about_model, checked_recipe
from .status import ModelStatus

logger = logging.getLogger(LOGGER_NAME)

ORIGINS = {"fit": "fit", "append": "append", "learn": "learn", "imported": "import", "migrated": "migrate"}
"""A version's ``source`` on disk -> its ``origin`` in the API."""


class Versions:
    def __init__(self, settings: Settings, store: ModelStore, registry: Registry, status: ModelStatus,
                 input_grid: tuple[int, int]) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.status = status
        self.input_grid = input_grid

    def known_model(self, role_id: str, roi_id: str, recipe: str) -> ModelState:
        """The model's registry rows; 404 when the model was never fitted."""
        state = self.status.model_state(role_id, roi_id, recipe_id=recipe)
        if state is None:
            where = f" in recipe {recipe!r}" if recipe != DEFAULT_RECIPE else ""
            raise NotFound(f"There is no model role_id={role_id!r}, roi_id={roi_id!r}{where}; fit it first with "
                           "/fit_ok.")
        return state

    @about_model
    def list(self, role_id: str, roi_id: str, *, recipe_id: str | None = None) -> dict[str, Any]:
        """Every kept version, newest first, with its status, origin, size, calibration and whether it shadows."""
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        state = self.known_model(role_id, roi_id, recipe)
        versions, calibrations = self.registry.history(role_id, roi_id, recipe_id=recipe)
        shadow = state.shadow.version if state.shadow is not None else None
        folder = self.store.root / state.folder
        items = []
        for info in versions:
            made_for = next((c for c in calibrations if c.memory_version == info.version), None)
            calibration = dict(made_for.values) if made_for is not None else self._proposed(folder, info.version)
            items.append({
                "version": info.version,
                "status": info.status,
                "parent_version": info.parent_version,
                "origin": ORIGINS.get(info.source, info.source),
                "rows": info.coreset_size,
                "created_at": info.created_at,
                "calibration": calibration,
                "shadow": info.version == shadow,
            })
        return {"items": items}

    def _proposed(self, folder: Any, version: int) -> dict[str, Any] | None:
        """The calibration a learned version proposes for itself (its manifest's), None for any other."""
        try:
            proposed = self.store.version_files(folder, version).manifest.get("calibration")
        except (OSError, ValueError):
            return None
        return proposed if isinstance(proposed, dict) else None

    @about_model
    def activate(
        self, role_id: str, roi_id: str, version: int, context: RequestContext = RequestContext(), *,
        recipe_id: str | None = None,
    ) -> dict[str, Any]:
        """Make a kept ``version`` the active one (the one active before is retired, still kept and activatable:
        a rollback). A version that proposes its own calibration (a learn's) brings it along as the active
        calibration, unless one was already made for it. 409 for a version of another token grid than the
        running extractor's; 404 for a version the model does not keep. Answers the new /state body."""
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        self.known_model(role_id, roi_id, recipe)
        with self.store.writing(role_id, roi_id, recipe_id=recipe) as folder:
            state = self.known_model(role_id, roi_id, recipe)  # under the lock: what is active now
            try:
                files = self.store.version_files(folder, version)
            except (OSError, ValueError):
                raise unknown_version(state, version) from None
            grid = (files.manifest.get("token_h"), files.manifest.get("token_w"))
            if grid != self.input_grid:
                raise Conflict(
                    f"Version {version} of role_id={role_id!r}, roi_id={roi_id!r} was fitted on a token grid of "
                    f"{grid[0]}×{grid[1]}, this service extracts {self.input_grid[0]}×{self.input_grid[1]} "
                    "(BDI_INPUT_SIZE): activating it would refuse every /infer. Serve at the input size it was "
                    "fitted at, or activate a version of this grid."
                )
            if version != state.active_version:
                entry = self._own_calibration(state, files, context)
                self.store.activate(folder, version)
                if entry is not None:
                    self.store.write_calibration(folder, entry["calibration"],
                                                 {k: v for k, v in entry.items() if k != "calibration"})
                self.registry.activate_version(self.store, role_id, roi_id, folder, version,
                                               context.audit("activate"), recipe_id=recipe, calibration=entry)
        logger.info("activate recipe=%r role=%r roi=%r version=%d (was %s)", recipe, role_id, roi_id, version,
                    state.active_version)
        return self.status.state(role_id, roi_id, recipe_id=recipe)

    def _own_calibration(
        self, state: ModelState, files: VersionFiles, context: RequestContext
    ) -> dict[str, Any] | None:
        """The history entry of the calibration a version proposes, when no calibration was made for it yet."""
        proposed = files.manifest.get("calibration")
        if not isinstance(proposed, dict):
            return None
        _, calibrations = self.registry.history(state.role_id, state.roi_id, recipe_id=state.recipe_id)
        if any(c.memory_version == files.version for c in calibrations):
            return None
        return calibration_entry(proposed, files.version, context)


def calibration_entry(values: dict[str, Any], version: int, context: RequestContext) -> dict[str, Any]:
    """A history.jsonl entry for a learned version's own calibration (source ``learn``)."""
    return {
        "uid": uuid.uuid4().hex,
        "created_at": utc_now(),
        "source": "learn",
        "memory_version": version,
        "correlation_id": context.correlation_id,
        "client": context.client,
        "calibration": values,
    }
