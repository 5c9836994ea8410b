"""The newer GUI's sample store operations: upload, list, read, delete samples and read their sidecars."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import NotFound, PayloadTooLarge
from ..settings import Settings
from ..storage import (
    MEDIA_TYPES,
    DatasetStore,
    Registry,
    StoredSample,
    normalize_label,
    prepare_upload,
    sample_name,
    store_samples,
)
from .request import LOGGER_NAME, RequestContext, Upload, checked_recipe

logger = logging.getLogger(LOGGER_NAME)


class DatasetSamples:
    def __init__(self, settings: Settings, store: DatasetStore, registry: Registry) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry

    def upload(
        self, label: str, role_id: str, roi_id: str, images: list[Upload], metas: list[str] | None = None,
        context: RequestContext = RequestContext(), *, recipe_id: str | None = None,
    ) -> dict[str, Any]:
        """Store OK or NG samples (decoded and checked first; one bad sample stores none)."""
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        label = normalize_label(label)
        if len(images) > self.settings.max_fit_images:
            raise PayloadTooLarge(
                f"{len(images)} images in one upload is over the limit of {self.settings.max_fit_images} "
                "(BDI_MAX_FIT_IMAGES); send fewer images per request."
            )
        samples = prepare_upload(
            label, [(upload.filename, upload.data) for upload in images], metas or [], self.settings.max_image_pixels
        )
        stored = store_samples(self.store, self.registry, recipe, role_id, roi_id, label, samples,
                               context.audit("dataset_upload"))
        logger.info("dataset upload recipe=%r role=%r roi=%r label=%s saved=%s already_stored=%s", recipe, role_id,
                    roi_id, label, stored.saved, stored.already_stored)
        if not metas:
            logger.warning("dataset upload recipe=%r role=%r roi=%r label=%s: %d sample(s) without metas (no mm_per_px, "
                           "no shape); stored with meta_missing in their sidecars", recipe, role_id, roi_id, label,
                           len(samples))
        return {"status": "ok", "saved": stored.saved, "already_stored": stored.already_stored}

    def contents(self, role_id: str, roi_id: str, *, recipe_id: str | None = None) -> dict[str, Any]:
        """The stored samples of (recipe, role, roi) per class, and which have a sidecar."""
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        folder = self.store.folder(recipe, role_id, roi_id)
        classes = {}
        for label in ("ok", "ng"):
            samples = self.store.samples(folder, label)
            classes[label] = {
                "count": len(samples),
                "files": [sample.name for sample in samples],
                "meta": {sample.name: sample.sidecar.is_file() for sample in samples},
            }
        return {"role_id": role_id, "roi_id": roi_id, "classes": classes}

    def _stored(
        self, role_id: str, roi_id: str, label: str, filename: str, recipe_id: str | None
    ) -> tuple[str, str, Path | None, StoredSample | None]:
        """(recipe, label, dataset folder, the sample or None) a file route names."""
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        label = normalize_label(label)
        folder = self.store.folder(recipe, role_id, roi_id)
        return recipe, label, folder, self.store.find(folder, label, filename)

    def file(
        self, role_id: str, roi_id: str, label: str, filename: str, *, recipe_id: str | None = None
    ) -> tuple[bytes, str]:
        """(bytes, media type) of a stored sample."""
        recipe, label, _, sample = self._stored(role_id, roi_id, label, filename, recipe_id)
        try:
            data = sample.path.read_bytes() if sample is not None else None
        except FileNotFoundError:  # deleted meanwhile
            data = None
        if sample is None or data is None:
            raise NotFound(
                f"file not found: no {label} sample {filename!r} for ({role_id}, {roi_id}) in recipe '{recipe}'; "
                "GET /datasets/list names the stored files."
            )
        return data, MEDIA_TYPES[sample.path.suffix.lower()]

    def delete(
        self, role_id: str, roi_id: str, label: str, filename: str, context: RequestContext = RequestContext(), *,
        recipe_id: str | None = None,
    ) -> dict[str, Any]:
        recipe, label, folder, sample = self._stored(role_id, roi_id, label, filename, recipe_id)
        deleted = self.store.delete(folder, sample)
        if deleted:
            self.registry.record(context.audit("dataset_delete", recipe_id=recipe, role_id=role_id, roi_id=roi_id,
                                               details={"label": label, "file": sample.name if sample else None}))
            logger.info("dataset delete recipe=%r role=%r roi=%r label=%s file=%s", recipe, role_id, roi_id, label,
                        sample.name if sample else None)
        return {"deleted": deleted, "filename": sample_name(filename)}

    def meta(
        self, role_id: str, roi_id: str, label: str, filename: str, *, recipe_id: str | None = None
    ) -> dict[str, Any]:
        recipe, label, _, sample = self._stored(role_id, roi_id, label, filename, recipe_id)
        meta = self.store.read_meta(sample) if sample is not None else None
        if meta is None:
            raise NotFound(
                f"meta not found: no sidecar of {label} sample {filename!r} for ({role_id}, {roi_id}) in recipe "
                f"'{recipe}'; GET /datasets/list says which samples have one."
            )
        return meta
