"""Calibration: the OK/NG threshold of a model, from scores sent (/calibrate_ng) or from its stored samples
scored as /infer would (/calibrate_dataset), kept with its history."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import BadRequest, ServiceError, TokenGridMismatch
from ..pipeline import (
    FeatureExtractor,
    MemoryIndex,
    decode_image,
    image_score,
    parse_shape,
    percentile_value,
    shape_mask,
)
from ..pipeline import calibrate as calibration_rule
from ..settings import Settings
from ..storage import (
    DatasetStore,
    ModelState,
    ModelStore,
    Registry,
    StoredSample,
    fitted_by_content,
    sidecar_mm_per_px,
    sidecar_shape,
    utc_now,
)
from ..validation import DEFAULT_RECIPE, validate_mm_per_px
from .inspection import Inspector
from .memory import ActiveMemories
from .request import LOGGER_NAME, RequestContext, about_model, checked_recipe
from .status import ModelStatus
from .training import stored_name

logger = logging.getLogger(LOGGER_NAME)

DEFAULT_MM_PER_PX = 0.2  # /calibrate_ng's default, and /calibrate_dataset's for samples without one


class Calibration:
    def __init__(
        self, settings: Settings, extractor: FeatureExtractor, store: ModelStore, registry: Registry,
        datasets: DatasetStore, memories: ActiveMemories, status: ModelStatus, inspector: Inspector,
    ) -> None:
        self.settings = settings
        self.extractor = extractor
        self.store = store
        self.registry = registry
        self.datasets = datasets
        self.memories = memories
        self.status = status
        self.inspector = inspector

    # ---- calibrate ------------------------------------------------------------------------------
    @about_model
    def calibrate(
        self, role_id: str, roi_id: str, ok_scores: list[float], ng_scores: list[float] | None = None,
        mm_per_px: float = DEFAULT_MM_PER_PX, area_mm2_thr: float | None = None, score_percentile: int | None = None,
        context: RequestContext = RequestContext(), *, recipe_id: str | None = None,
    ) -> dict[str, Any]:
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        validate_mm_per_px(mm_per_px)
        values = calibration_rule(
            ok_scores, ng_scores,
            score_percentile=self.settings.score_percentile if score_percentile is None else score_percentile,
            mm_per_px=mm_per_px,
            area_mm2_thr=self.settings.area_mm2_thr if area_mm2_thr is None else area_mm2_thr,
        )
        self._save_calibration(recipe, role_id, roi_id, values, context, ok_scores, ng_scores)
        logger.info(
            "calibrate recipe=%r role=%r roi=%r n_ok=%d n_ng=%d threshold=%.6f percentile=%s",
            recipe, role_id, roi_id, len(ok_scores), len(ng_scores or []), values["threshold"],
            values["score_percentile"],
        )
        return values

    def _save_calibration(
        self, recipe: str, role_id: str, roi_id: str, values: dict[str, Any], context: RequestContext,
        ok_scores: list[float], ng_scores: list[float] | None,
    ) -> None:
        """calib.json and the history (files first), then the registry; ``context.source`` says who. The history
        entry keeps the scores (what drift compares recent OK scores with); calib.json the contract's keys only."""
        with self.store.writing(role_id, roi_id, recipe_id=recipe) as folder:
            entry = {
                "uid": uuid.uuid4().hex,
                "created_at": utc_now(),
                "source": context.source,
                "memory_version": self.store.active_version(folder),
                "correlation_id": context.correlation_id,
                "client": context.client,
                "ok_scores": [float(score) for score in ok_scores],
                "ng_scores": [float(score) for score in ng_scores or []],
            }
            self.store.write_calibration(folder, values, entry)
            self.registry.add_calibration(
                self.store, role_id, roi_id, folder, {**entry, "calibration": values}, recipe_id=recipe,
                audit=context.audit("calibrate", details={"source": context.source}),
            )

    def calibrate_dataset(
        self, role_id: str, roi_id: str, default_mm_per_px: float | None = None,
        score_percentile: int | None = None, area_mm2_thr: float | None = None, require_ng: bool = True,
        context: RequestContext = RequestContext(), *, recipe_id: str | None = None,
    ) -> dict[str, Any]:
        """/calibrate_dataset: score every stored sample of (recipe, role, roi) as /infer would (each inside its
        sidecar's shape; mm_per_px changes regions only, not the score) and apply the threshold rule; stored
        as the active calibration with source ``dataset``. Samples that can't be scored are skipped and
        counted. The forwards are batched (BDI_FIT_BATCH_SIZE images each), not queued behind /infer's."""
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        default_mm = validate_mm_per_px(DEFAULT_MM_PER_PX if default_mm_per_px is None else default_mm_per_px)
        percentile = percentile_value(self.settings.score_percentile if score_percentile is None else score_percentile)
        started = time.perf_counter()
        state = self.status.model_state(role_id, roi_id, recipe_id=recipe)
        if state is None or state.active is None:
            raise BadRequest("Memoria no encontrada. Ejecuta /fit_ok antes de /calibrate_dataset.")
        if state.active.token_grid != self.extractor.grid:
            raise TokenGridMismatch(got=self.extractor.grid, expected=state.active.token_grid)
        folder = self.datasets.folder(recipe, role_id, roi_id)
        ok, ng = self.datasets.samples(folder, "ok"), self.datasets.samples(folder, "ng")
        provenance = self._provenance(state)
        seen = fitted_on(ok, folder, provenance)
        unseen = [sample for sample in ok if sample.path not in seen]
        if provenance.get("holdout_files") and unseen:  # fitted with a holdout: the OK side from unseen samples only
            ok = unseen
        index = self.memories.index(state)
        scores, skipped, mm_values = self._score_stored(index, ok + ng, percentile)
        ok_scores = [scores[sample.path] for sample in ok if sample.path in scores]
        ng_scores = [scores[sample.path] for sample in ng if sample.path in scores]
        if not ok_scores:
            raise BadRequest("No valid OK samples for calibration.")
        if require_ng and not ng_scores:
            raise BadRequest("No NG samples available for calibration.")
        locked = self.registry.recipe_mm_per_px(recipe) if recipe != DEFAULT_RECIPE else None
        mm_per_px = locked or (max(set(mm_values), key=mm_values.count) if mm_values else default_mm)
        values = calibration_rule(
            ok_scores, ng_scores or None, score_percentile=percentile, mm_per_px=mm_per_px,
            area_mm2_thr=self.settings.area_mm2_thr if area_mm2_thr is None else area_mm2_thr,
        )
        self._save_calibration(recipe, role_id, roi_id, values, dataclasses.replace(context, source="dataset"),
                               ok_scores, ng_scores)
        biased = sum(sample.path in seen for sample in ok if sample.path in scores)
        warning = None
        if biased:
            warning = (
                f"{biased} of the {len(ok_scores)} OK samples scored were used to fit this memory: a memory scores its "
                "own images low, so this threshold is biased low. Set BDI_DATASET_HOLDOUT=0.3 and train again "
                "(use_dataset=true keeps 30% of the OK samples out of the memory; this calibration then takes the OK "
                "side from those), or upload fresh OK samples after training."
            )
            logger.warning("calibrate_dataset recipe=%r role=%r roi=%r: %s", recipe, role_id, roi_id, warning)
        logger.info(
            "calibrate_dataset recipe=%r role=%r roi=%r n_ok=%d n_ng=%d skipped=%d threshold=%.6f percentile=%d "
            "total=%.2fs (%.2f samples/s)",
            recipe, role_id, roi_id, len(ok_scores), len(ng_scores), len(skipped), values["threshold"], percentile,
            time.perf_counter() - started, len(scores) / max(time.perf_counter() - started, 1e-9),
        )
        answer = {
            "status": "ok",
            "threshold": values["threshold"],
            "score_percentile": values["score_percentile"],
            "area_mm2_thr": values["area_mm2_thr"],
            "n_ok": len(ok_scores),
            "n_ng": len(ng_scores),
            "n_skipped": len(skipped),
            "role_id": role_id,
            "roi_id": roi_id,
            "skipped": skipped,
        }
        if warning is not None:
            answer["warning"] = warning
        return answer

    def _score_stored(
        self, index: MemoryIndex, samples: list[StoredSample], percentile: int
    ) -> tuple[dict[Any, float], list[dict[str, str]], list[float]]:
        """(score per sample path, what was skipped and why, the sidecars' mm_per_px values), scored in
        batches of BDI_FIT_BATCH_SIZE through the same map and score as /infer."""
        scores: dict[Any, float] = {}
        skipped: list[dict[str, str]] = []
        mm_values: list[float] = []
        step = self.settings.fit_batch_size
        for start in range(0, len(samples), step):
            batch = []
            for sample in samples[start : start + step]:
                try:
                    meta = self.datasets.read_meta(sample) or {}
                    mm_per_px = sidecar_mm_per_px(meta)
                    shape = parse_shape(sidecar_shape(meta))
                    bgr = decode_image(sample.path.read_bytes(), sample.name, self.settings.max_image_pixels)
                    mask = shape_mask(shape, bgr.shape[1], bgr.shape[0])
                except (ServiceError, ValueError, OSError) as exc:
                    reason = exc.message if isinstance(exc, ServiceError) else f"its sidecar {exc}"
                    skipped.append({"label": sample.label, "filename": sample.name, "reason": reason})
                    continue
                if mm_per_px is not None:
                    mm_values.append(mm_per_px)
                batch.append((sample, bgr, mask))
            if not batch:
                continue
            features = self.extractor.extract([bgr for _, bgr, _ in batch], batch_size=step)
            for (sample, bgr, mask), rows in zip(batch, features):
                amap = self.inspector.anomaly_map(index, rows, bgr.shape[1], bgr.shape[0])
                scores[sample.path] = image_score(amap, mask, percentile)
        return scores, skipped, mm_values

    def _provenance(self, state: ModelState) -> dict[str, Any]:
        """What the active version recorded about the samples it was fitted on (empty for image fits)."""
        assert state.active_version is not None
        try:
            manifest = self.store.version_files(self.store.root / state.folder, state.active_version).manifest
        except (OSError, ValueError):
            return {}
        return manifest.get("dataset") or {}


def fitted_on(samples: list[StoredSample], folder: Path | None, provenance: dict[str, Any]) -> set[Path]:
    """The stored samples the active memory was fitted on, per its version's provenance: by content when it
    recorded sha256s (as `bdi fit` and /fit_ok use_dataset=true do), else by name under the same folder."""
    fitted = fitted_by_content(samples, provenance)
    if fitted is not None:
        return fitted
    if folder is None or provenance.get("dataset") != str(folder.resolve()):
        return set()
    names = set(provenance.get("fit_files") or [])
    return {sample.path for sample in samples if stored_name(sample) in names}
