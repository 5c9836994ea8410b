"""Learning from reviews: the kept images of a model's reviewed false rejects grow its active memory into a new
version (the append algorithm), staged unless asked otherwise, with a calibration proposed from every reviewed
record scored under that version."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

import cv2
import numpy as np

from ..errors import Conflict, PayloadTooLarge, ServiceError
from ..pipeline import FeatureExtractor, Letterbox, MemoryIndex, decode_image, image_score, parse_shape, shape_mask
from ..pipeline import calibrate as calibration_rule
from ..settings import Settings
from ..storage import ModelStore, Registry
from ..storage.reviewed import ReviewedRecord, reviewed_records
from ..storage.versions import ACTIVE, STAGED
from .inspection import Inspector
from .memory import ActiveMemories
from .request import LOGGER_NAME, RequestContext, Upload, about_model, checked_recipe
from .status import ModelStatus
from .training import Training
from .versions import calibration_entry

logger = logging.getLogger(LOGGER_NAME)

OK_OUTCOMES = ("confirmed_ok", "false_reject", "labelled_ok")
NG_OUTCOMES = ("confirmed_ng", "missed_defect", "labelled_ng")


@dataclasses.dataclass(frozen=True)
class Reviewed:
    """One reviewed record with its kept image decoded, the mask it was inspected in and its patch features."""

    record_id: str
    outcome: str
    learned_version: int | None
    upload: Upload
    image: np.ndarray
    mask: np.ndarray
    mm_per_px: float
    features: np.ndarray | None = None

    @property
    def to_learn(self) -> bool:
        return self.outcome == "false_reject" and self.learned_version is None


class Learning:
    def __init__(
        self, settings: Settings, extractor: FeatureExtractor, store: ModelStore, registry: Registry,
        memories: ActiveMemories, status: ModelStatus, training: Training, inspector: Inspector,
    ) -> None:
        self.settings = settings
        self.extractor = extractor
        self.store = store
        self.registry = registry
        self.memories = memories
        self.status = status
        self.training = training
        self.inspector = inspector

    @about_model
    def learn(
        self, role_id: str, roi_id: str, activate: bool = False, context: RequestContext = RequestContext(), *,
        recipe_id: str | None = None,
    ) -> dict[str, Any]:
        """Grow the active memory with the kept images of the reviewed false rejects not learned yet (only the
        patches inside the shape each was inspected in) into a new version, ``staged`` unless ``activate``,
        and propose its calibration from every reviewed record with a kept image, scored under it. 409 when
        there is no reviewed false reject with a kept image to learn from."""
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        state = self.status.model_state(role_id, roi_id, recipe_id=recipe)
        self.training.check_appendable(state, role_id, roi_id, recipe)
        started = time.perf_counter()
        reviewed, without_image = self._reviewed(recipe, role_id, roi_id)
        to_learn = [item for item in reviewed if item.to_learn]
        if not to_learn:
            raise self._nothing_to_learn(role_id, roi_id, without_image)
        if len(to_learn) > self.settings.max_fit_images:
            raise PayloadTooLarge(
                f"{len(to_learn)} false rejects to learn is over the limit of {self.settings.max_fit_images} images "
                "(BDI_MAX_FIT_IMAGES); raise the limit."
            )
        features = self.extractor.extract([item.image for item in reviewed], batch_size=self.settings.fit_batch_size)
        reviewed = [dataclasses.replace(item, features=rows) for item, rows in zip(reviewed, features)]
        with self.store.writing(role_id, roi_id, recipe_id=recipe) as folder:
            state = self.status.model_state(role_id, roi_id, recipe_id=recipe)
            self.training.check_appendable(state, role_id, roi_id, recipe)
            assert state is not None and state.active is not None
            # Under the lock: a learn that ran meanwhile (another request, another host) took its records already.
            unlearned = {row.id for row in reviewed_records(self.registry.engine, recipe, role_id, roi_id,
                                                            ("false_reject",)) if row.learned_version is None}
            to_learn = [item for item in reviewed if item.to_learn and item.record_id in unlearned]
            if not to_learn:
                raise self._nothing_to_learn(role_id, roi_id, without_image)
            new = np.concatenate([item.features[self._token_mask(item)] for item in to_learn])
            parent = self.store.version_files(folder, state.active_version).manifest
            rows = self.memories.index(state).memory
            grown = self.training.grow(rows, new, parent, memory_fit=False)
            memory = np.concatenate([rows, grown.rows])
            if len(memory) > self.settings.max_memory_rows:
                raise PayloadTooLarge(
                    f"Learning would grow the memory of role_id={role_id!r}, roi_id={roi_id!r} to {len(memory)} rows, "
                    f"over the limit of {self.settings.max_memory_rows} (BDI_MAX_MEMORY_ROWS); refit the ROI from a "
                    "representative set of OK images, or raise the limit."
                )
            index = MemoryIndex.build(memory)
            calibration, n_ok, n_ng = self._propose(index, reviewed, state.calibration.values if state.calibration
                                                    else None)
            mm_per_px = to_learn[0].mm_per_px
            metadata = self.training.append_metadata(parent, state.active_version, [i.upload for i in to_learn], new,
                                                     grown, len(memory), mm_per_px)
            used = [item.record_id for item in to_learn]
            metadata["learn"] = {"records": used, "n_ok": n_ok, "n_ng": n_ng}
            metadata["calibration"] = calibration
            files = self.store.write_version(folder, memory, self.extractor.grid, metadata, index.to_bytes(),
                                             source="learn", activate=activate)
            entry = None
            if activate and calibration is not None:
                entry = calibration_entry(calibration, files.version, context)
                self.store.write_calibration(folder, calibration, {k: v for k, v in entry.items() if k != "calibration"})
            self.registry.add_version(self.store, role_id, roi_id, folder, files, recipe_id=recipe,
                                      audit=context.audit("learn", details={"records": used}), activate=activate,
                                      learned=used, calibration=entry)
        fresh = self.status.model_state(role_id, roi_id, recipe_id=recipe)
        if fresh is not None and fresh.active_version == files.version:
            self.memories.keep(fresh, index)
        logger.info(
            "learn recipe=%r role=%r roi=%r records=%d reviewed=%d added=%d parent=%d version=%d activate=%s "
            "threshold=%s total=%.2fs",
            recipe, role_id, roi_id, len(used), len(reviewed), len(grown.rows), state.active_version, files.version,
            activate, calibration["threshold"] if calibration else None, time.perf_counter() - started,
        )
        return {
            "version": files.version,
            "parent_version": state.active_version,
            "status": ACTIVE if activate else STAGED,
            "images_used": len(to_learn),
            "records_used": used,
            "records_without_image": without_image,
            "rows_added": len(grown.rows),
            "calibration": None if calibration is None else {**calibration, "n_ok": n_ok, "n_ng": n_ng},
        }

    @staticmethod
    def _nothing_to_learn(role_id: str, roi_id: str, without_image: int) -> Conflict:
        return Conflict(
            f"role_id={role_id!r}, roi_id={roi_id!r} has no reviewed false reject with a kept image to learn "
            f"from ({without_image} without a kept image): review the NG decisions of OK parts first "
            '(POST /inspections/{id}/review with {"verdict": "ok"}, the records of GET /review/queue), keeping '
            "their images (BDI_RECORD_IMAGES=ng or all)."
        )

    def _reviewed(self, recipe: str, role_id: str, roi_id: str) -> tuple[list[Reviewed], int]:
        """The model's reviewed records whose kept image can be read (oldest first), and how many false rejects
        not learned yet have no (readable) kept image."""
        reviewed, without_image = [], 0
        for row in reviewed_records(self.registry.engine, recipe, role_id, roi_id, OK_OUTCOMES + NG_OUTCOMES):
            item = self._read(row) if row.image_path else None
            if item is not None:
                reviewed.append(item)
            elif row.outcome == "false_reject" and row.learned_version is None:
                without_image += 1
        return reviewed, without_image

    def _read(self, row: ReviewedRecord) -> Reviewed | None:
        """A reviewed record's kept image, decoded, and the mask of the shape it was inspected in."""
        assert row.image_path is not None
        try:
            data = (self.store.root / row.image_path).read_bytes()
            image = decode_image(data, row.id, self.settings.max_image_pixels)
            shape = parse_shape(json.dumps(row.shape)) if row.shape else None
            mask = shape_mask(shape, image.shape[1], image.shape[0])
        except (OSError, ServiceError) as exc:
            logger.warning("learn: the kept image of record %s can't be used (%s)", row.id,
                           exc.message if isinstance(exc, ServiceError) else exc)
            return None
        return Reviewed(row.id, row.outcome, row.learned_version, Upload(row.id, data), image, mask,
                        row.mm_per_px)

    def _token_mask(self, item: Reviewed) -> np.ndarray:
        """Which patches of the grid (row-major) lie at least partly inside the record's mask: only those were
        inspected, so only those are learned."""
        rows, cols = self.extractor.grid
        height, width = item.mask.shape
        box = Letterbox.fit(width, height, self.settings.input_size)
        canvas = np.zeros((box.size, box.size), dtype=np.uint8)
        canvas[box.y0:box.y0 + box.height, box.x0:box.x0 + box.width] = cv2.resize(
            item.mask.astype(np.uint8), (box.width, box.height), interpolation=cv2.INTER_NEAREST
        )
        cells = canvas.reshape(rows, box.size // rows, cols, box.size // cols)
        return cells.any(axis=(1, 3)).reshape(-1)

    def _propose(
        self, index: MemoryIndex, reviewed: list[Reviewed], active: dict[str, Any] | None
    ) -> tuple[dict[str, Any] | None, int, int]:
        """The threshold rule applied to the reviewed records scored under the new memory, with the active
        calibration's percentile, mm_per_px and area; (None, 0, n_ng) without an OK score."""
        active = active or {}
        percentile = active.get("score_percentile") or self.settings.score_percentile
        scores: dict[str, list[float]] = {"ok": [], "ng": []}
        for item in reviewed:
            assert item.features is not None
            amap = self.inspector.anomaly_map(index, item.features, item.image.shape[1], item.image.shape[0])
            scores["ok" if item.outcome in OK_OUTCOMES else "ng"].append(image_score(amap, item.mask, percentile))
        if not scores["ok"]:
            return None, 0, len(scores["ng"])
        area = active.get("area_mm2_thr")
        values = calibration_rule(
            scores["ok"], scores["ng"] or None, score_percentile=percentile,
            mm_per_px=active.get("mm_per_px") or reviewed[0].mm_per_px,
            area_mm2_thr=self.settings.area_mm2_thr if area is None else area,
        )
        return values, len(scores["ok"]), len(scores["ng"])

