"""Inspection: /infer's computation for one image (decode, features, anomaly map, score, regions) and its
record in the inspection records."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import logging
import time
from typing import Any

import numpy as np

from ..errors import BadRequest, NotFitted, ServiceError, TokenGridMismatch
from ..metrics import Metrics
from ..pipeline import (
    FeatureExtractor,
    Letterbox,
    MemoryIndex,
    MicroBatcher,
    anomaly_map,
    decode_image,
    find_regions,
    heatmap_png,
    image_score,
    parse_shape,
    shape_mask,
    stretched_scale,
    threshold_scale,
)
from ..settings import MODEL_NAME, Settings
from ..storage import (
    InspectionRecord,
    ModelState,
    ModelStore,
    PendingRecord,
    RecordWriter,
    Registry,
    check_mm_per_px,
    claim_mm_per_px,
    new_record_id,
)
from ..validation import validate_id, validate_mm_per_px
from .memory import ActiveMemories
from .request import LOGGER_NAME, RequestContext, Upload, about_model, checked_recipe
from .status import ModelStatus

logger = logging.getLogger(LOGGER_NAME)
RECORDED_REGION_KEYS = ("x", "y", "w", "h", "area_px", "area_mm2")
"""What a record keeps of each answered region: its box and area (the outline can be long and is not needed)."""
SIZE_TOLERANCE = 0.1
HEATMAP_SCALES = ("image", "threshold")
"""/infer's heatmap encodings: its own 1st..99th percentile (the default, what the GUIs show) or the model's
threshold-anchored scale."""
"""How far (a fraction of the training size) an image's width or height may differ before /infer warns."""


@dataclasses.dataclass(frozen=True)
class Inspection:
    """One inspection: the contract's answer plus what it was computed from."""

    response: dict[str, Any]
    image: np.ndarray  # the decoded BGR image
    anomaly_map: np.ndarray  # float32 (H, W), blurred, in the score's units
    mask: np.ndarray  # bool (H, W), the shape's pixels


class Inspector:
    def __init__(
        self, settings: Settings, extractor: FeatureExtractor, store: ModelStore, registry: Registry,
        memories: ActiveMemories, status: ModelStatus, batcher: MicroBatcher, recorder: RecordWriter,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.extractor = extractor
        self.store = store
        self.registry = registry
        self.memories = memories
        self.status = status
        self.batcher = batcher
        self.recorder = recorder
        self.metrics = metrics

    # ---- infer ----------------------------------------------------------------------------------
    def infer(
        self, role_id: str, roi_id: str, mm_per_px: float, image: Upload, shape: str | None = None,
        context: RequestContext = RequestContext(), *, recipe_id: str | None = None, include_heatmap: bool = True,
        require_calibration: bool | None = None, heatmap_scale: str = HEATMAP_SCALES[0],
    ) -> dict[str, Any]:
        """The /infer answer (CONTRACT.md keys). An uncalibrated model is a 400 when ``require_calibration`` (None:
        BDI_REQUIRE_CALIBRATION); scoring samples to calibrate passes False. ``heatmap_scale``: see ``inspect``."""
        required = self.settings.require_calibration if require_calibration is None else require_calibration
        return self.inspect(
            role_id, roi_id, mm_per_px, image, shape, context, recipe_id=recipe_id, include_heatmap=include_heatmap,
            require_calibration=required, heatmap_scale=heatmap_scale,
        ).response

    @about_model
    def inspect(
        self, role_id: str, roi_id: str, mm_per_px: float, image: Upload, shape: str | None = None,
        context: RequestContext = RequestContext(), *, recipe_id: str | None = None, include_heatmap: bool = True,
        require_calibration: bool = False, heatmap_scale: str = HEATMAP_SCALES[0],
    ) -> Inspection:
        """/infer's whole computation, also handing back the decoded image, the raw map and the mask
        (evaluation needs them: the heatmap PNG is stretched per image). With ``context.record`` the
        inspection is queued for the records (never waited for, never failing the answer)."""
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        validate_mm_per_px(mm_per_px)
        if context.part_id is not None:
            validate_id("part_id", context.part_id)
        check_mm_per_px(self.registry, recipe, [mm_per_px])
        parsed_shape = parse_shape(shape)
        started = time.perf_counter()
        state = self.status.model_state(role_id, roi_id, recipe_id=recipe)
        if state is None or state.active is None:
            raise NotFitted(role_id, roi_id, recipe)
        if state.active.token_grid != self.extractor.grid:
            raise TokenGridMismatch(got=self.extractor.grid, expected=state.active.token_grid)
        if require_calibration and state.calibration is None:
            raise BadRequest(f"calibration_missing: run a calibration for ({role_id}, {roi_id}) first")
        bgr = decode_image(image.data, image.filename, self.settings.max_image_pixels)
        height, width = bgr.shape[:2]
        mask = shape_mask(parsed_shape, width, height)
        warnings = self._size_warnings(state, width, height)
        claim_mm_per_px(self.store, self.registry, recipe, mm_per_px, context.audit("recipe_mm_per_px"))
        index = self.memories.index(state)
        loaded = time.perf_counter()
        self.metrics.queue_depth.inc()
        try:
            features = self.batcher.extract(bgr)
        finally:
            self.metrics.queue_depth.dec()
        extracted = time.perf_counter()
        amap = self.anomaly_map(index, features, width, height)
        score, threshold, percentile, regions = self._judge(amap, mask, state, mm_per_px)
        decision = None if threshold is None else ("ng" if score >= threshold else "ok")
        distance = abs(score / threshold - 1) if threshold is not None and threshold > 0 else None
        recording = context.record and self.settings.record
        keep = recording and self._keeps_image(decision, distance)
        scale = self._heatmap_scale(heatmap_scale, amap, mask, threshold)
        heatmap_bytes = heatmap_png(amap, mask, scale) if include_heatmap or keep else None
        heatmap = base64.b64encode(heatmap_bytes).decode("ascii") if include_heatmap else None
        finished = time.perf_counter()
        logger.info(
            "infer recipe=%r role=%r roi=%r image=%dx%d version=%d score=%.6f decision=%s regions=%d load=%.3fs "
            "extract=%.3fs total=%.3fs",
            recipe, role_id, roi_id, width, height, state.active_version, score, decision, len(regions),
            loaded - started, extracted - loaded, finished - started,
        )
        response = {
            "score": score,
            "threshold": threshold,
            "decision": decision,
            "token_shape": list(self.extractor.grid),
            "heatmap_png_base64": heatmap,
            "regions": regions,
        }
        if warnings:  # the web layer shows them to newer clients only
            response["warnings"] = warnings
        self.metrics.inspections.labels(recipe, role_id, roi_id, decision or "none").inc()
        if recording:
            shadow = self._shadow(state, features, mask, width, height)
            record = InspectionRecord(
                id=new_record_id(), created_at=dt.datetime.now(dt.timezone.utc), recipe_id=recipe,
                role_id=role_id, roi_id=roi_id, version=state.active_version, memory_sha256=state.active.memory_sha256,
                model=MODEL_NAME, weights_sha256=self.extractor.fingerprint.get("weights_sha256"),
                calibration_id=state.calibration.uid if state.calibration is not None else None,
                score=score, threshold=threshold, decision=decision, score_percentile=int(percentile),
                n_regions=len(regions), largest_area_mm2=max((r["area_mm2"] for r in regions), default=0.0),
                total_area_mm2=float(sum(r["area_mm2"] for r in regions)), image_width=width, image_height=height,
                image_sha256=hashlib.sha256(image.data).hexdigest(),
                shape_kind=parsed_shape.kind if parsed_shape is not None else None, mm_per_px=mm_per_px,
                correlation_id=context.correlation_id, client=context.client, part_id=context.part_id,
                warnings=warnings or None, heatmap_low=scale[0], heatmap_high=scale[1],
                source=context.source, load_ms=1000 * (loaded - started), forward_ms=1000 * (extracted - loaded),
                total_ms=1000 * (finished - started), threshold_distance=distance,
                regions=[{key: region[key] for key in RECORDED_REGION_KEYS} for region in regions],
                shape=parsed_shape.resolved(width, height).as_dict() if parsed_shape is not None else None,
                **shadow,
            )
            self.recorder.submit(PendingRecord(record, image.data if keep else None, heatmap_bytes if keep else None))
        return Inspection(response, bgr, amap, mask)

    def _keeps_image(self, decision: str | None, distance: float | None) -> bool:
        """BDI_RECORD_IMAGES: ``review`` keeps the NG decisions and the OK ones within BDI_RECORD_NEAR_MARGIN of
        the threshold (where a missed defect hides), ``ng`` the NG ones, ``all`` every one, ``none`` none."""
        mode = self.settings.record_images
        near = decision == "ok" and distance is not None and distance <= self.settings.record_near_margin
        return mode == "all" or (mode in ("ng", "review") and decision == "ng") or (mode == "review" and near)

    def _shadow(
        self, state: ModelState, features: np.ndarray, mask: np.ndarray, width: int, height: int
    ) -> dict[str, Any]:
        """The record fields of the model's shadow version scoring the same features (one more memory search, no
        second forward), under its own calibration (the newest made for it, else the one it proposes) if it has
        one, else the active one. Empty without a shadow; a shadow that can't be scored (pruned meanwhile) is logged
        and left out, never failing /infer."""
        shadow = state.shadow
        if shadow is None or shadow.version == state.active_version:
            return {}
        try:
            index = self.memories.of_version(state, shadow.version)
            amap = self.anomaly_map(index, features, width, height)
        except (ServiceError, OSError, ValueError) as exc:
            logger.warning("The shadow version %d of recipe=%r role=%r roi=%r was not scored: %s", shadow.version,
                           state.recipe_id, state.role_id, state.roi_id, exc)
            return {}
        own = self.proposed_calibration(state, shadow.version) if shadow.calibration is None else shadow.calibration.values
        values = own or (state.calibration.values if state.calibration is not None else {})
        score = image_score(amap, mask, values.get("score_percentile") or self.settings.score_percentile)
        threshold = values.get("threshold")
        decision = None if threshold is None else ("ng" if score >= threshold else "ok")
        return {"shadow_version": shadow.version, "shadow_score": score, "shadow_decision": decision}

    def proposed_calibration(self, state: ModelState, version: int) -> dict[str, Any] | None:
        """The calibration a version without one made for it proposes for itself (a learn's, in its manifest);
        shadow scoring and replay judge such a version by it."""
        try:
            proposed = self.store.version_files(self.store.root / state.folder, version).manifest.get("calibration")
        except (OSError, ValueError):
            return None
        return proposed if isinstance(proposed, dict) else None

    def _judge(
        self, amap: np.ndarray, mask: np.ndarray, state: ModelState, mm_per_px: float
    ) -> tuple[float, float | None, int, list[dict[str, Any]]]:
        """(score, threshold, percentile, regions) of one map under the model's calibration: no threshold and
        no regions while it has none."""
        calibration = state.calibration.values if state.calibration is not None else None
        percentile = (calibration or {}).get("score_percentile") or self.settings.score_percentile
        score = image_score(amap, mask, percentile)
        threshold = calibration["threshold"] if calibration is not None else None
        regions: list[dict[str, Any]] = []
        if threshold is not None:
            area_thr = calibration.get("area_mm2_thr")
            area_thr = self.settings.area_mm2_thr if area_thr is None else area_thr
            regions = find_regions(amap, mask, threshold, mm_per_px, area_thr)
        return score, threshold, percentile, regions

    @staticmethod
    def _heatmap_scale(
        kind: str, amap: np.ndarray, mask: np.ndarray, threshold: float | None
    ) -> tuple[float, float]:
        """The map values the heatmap's grey 0 and 255 stand for (recorded with the inspection): ``image``, the GUIs'
        encoding, each image stretched to its own percentiles; ``threshold``, one scale per model, comparable
        between images (the threshold at grey 178). 400 for ``threshold`` without a calibration."""
        if kind not in HEATMAP_SCALES:
            raise BadRequest(f"heatmap_scale must be one of {', '.join(HEATMAP_SCALES)}, got {kind!r:.40}.")
        if kind == "image":
            return stretched_scale(amap, mask)
        if threshold is None:
            raise BadRequest("heatmap_scale=threshold anchors the heatmap at the model's threshold, and this model is "
                             "not calibrated; calibrate it first, or leave heatmap_scale out (each image stretched).")
        return threshold_scale(threshold)

    def _size_warnings(self, state: ModelState, width: int, height: int) -> list[str]:
        """A warning (logged and counted too) when the image's size is not the training images' within
        SIZE_TOLERANCE: the letterbox scales any image onto the backbone's input, so a 1x1 PNG or a 600x150 crop
        against a 256x256 memory is scored without complaint, at another scale than the calibration saw."""
        active = state.active
        assert active is not None
        trained = (active.train_width, active.train_height)
        if None in trained or all(abs(got - want) <= SIZE_TOLERANCE * want
                                  for got, want in zip((width, height), trained)):
            return []
        warning = (f"image_size: the image is {width}x{height} px but version {state.active_version} was fitted on "
                   f"{trained[0]}x{trained[1]} px images; an image of another size or shape is scaled differently "
                   "onto the backbone's input, so its score is not comparable with the calibration. Crop the ROI as "
                   "for the training images, or refit on images of this size.")
        logger.warning("infer recipe=%r role=%r roi=%r: %s", state.recipe_id, state.role_id, state.roi_id, warning)
        self.metrics.inspection_warnings.labels(state.recipe_id, state.role_id, state.roi_id, "image_size").inc()
        return [warning]

    def anomaly_map(self, index: MemoryIndex, features: np.ndarray, width: int, height: int) -> np.ndarray:
        """The blurred anomaly map of one image's patch features, in its own pixels (shared by /infer and
        /calibrate_dataset, so both score alike)."""
        distances = index.nearest_distances(features)
        return anomaly_map(distances, self.extractor.grid, Letterbox.fit(width, height, self.settings.input_size))
