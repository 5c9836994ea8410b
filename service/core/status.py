"""Model state and service health: what /state and /health answer, and the registry's view of one model
the other parts start from."""

from __future__ import annotations

import os
import shutil
from typing import Any

from .. import __version__
from ..errors import RegistryUnavailable
from ..pipeline import FeatureExtractor, MicroBatcher
from ..settings import MODEL_NAME, Settings
from ..storage import ModelState, ModelStore, Registry
from ..validation import normalize_recipe
from .request import checked_recipe

MIN_FREE_DISK_BYTES = 256 * 1024 * 1024


class ModelStatus:
    def __init__(
        self, settings: Settings, extractor: FeatureExtractor, store: ModelStore, registry: Registry,
        batcher: MicroBatcher,
    ) -> None:
        self.settings = settings
        self.extractor = extractor
        self.store = store
        self.registry = registry
        self.batcher = batcher

    def model_state(self, role_id: str, roi_id: str, *, recipe_id: str | None = None) -> ModelState | None:
        """The registry's rows; a folder on disk the registry does not know is imported on first use."""
        return self.registry.state_or_import(self.store, role_id, roi_id, recipe_id=normalize_recipe(recipe_id))

    def state(self, role_id: str, roi_id: str, *, recipe_id: str | None = None) -> dict[str, Any]:
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        state = self.model_state(role_id, roi_id, recipe_id=recipe)
        fitted = state is not None and state.active is not None
        return {
            "status": "ok",
            "role_id": role_id,
            "roi_id": roi_id,
            "memory_fitted": fitted,
            "fitted": fitted,
            "calib_present": state is not None and state.calibration is not None,
            "token_shape": list(state.active.token_grid) if fitted else None,
            "version": state.active_version if fitted else None,
            "calib_source": state.calibration.source if state is not None and state.calibration else None,
            "calib_stale": state is not None and state.calib_stale,
        }

    def health(self) -> dict[str, Any]:
        problems = []
        models_dir = self.settings.models_dir
        if not os.access(models_dir, os.W_OK):
            problems.append(f"models dir {models_dir} is not writable")
        else:
            free = shutil.disk_usage(models_dir).free
            if free < MIN_FREE_DISK_BYTES:
                problems.append(f"only {free // (1024 * 1024)} MB free on the disk of {models_dir}")
        models = None
        try:
            models = self.registry.count_models()
        except RegistryUnavailable as exc:
            problems.append(f"registry database unavailable ({exc.reason}): requests that need it answer 503 until it "
                            "is back")
        except Exception as exc:  # noqa: BLE001 - any registry failure is reported, not raised
            problems.append(f"registry unreadable: {exc}")
        body: dict[str, Any] = {
            "status": "degraded" if problems else "ok",
            "device": self.extractor.device_name,
            "model": MODEL_NAME,
            "version": __version__,
            "weights": self.extractor.weights_source,
            "precision": self.extractor.precision,
            "input_size": self.settings.input_size,
            "token_shape": list(self.extractor.grid),
            "models": models,
            "infer_forwards": {str(size): count for size, count in self.batcher.forwards_by_size().items()},
        }
        if problems:
            body["problems"] = problems
        return body
