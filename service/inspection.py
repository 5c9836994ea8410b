"""The inspection service: fit, calibrate, infer and state for one (recipe, role, roi), and the newer
GUI's dataset store (upload, list, read, delete samples; fit and calibrate from them).

One code path for the HTTP routes and the CLI. Routes parse and shape; everything that decides
anything happens here, and every failure a client can cause is a ``ServiceError`` (a 4xx).

Every method that names a model takes ``recipe_id`` (None: the default namespace, the one old clients
use); it is checked here (``validation.normalize_recipe``) and never falls through to another recipe.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as dt
import functools
import hashlib
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from . import __version__
from .errors import (
    BadRequest,
    ExtractorMismatch,
    NotFitted,
    NotFound,
    PayloadTooLarge,
    RegistryUnavailable,
    ServiceError,
    TokenGridMismatch,
)
from .logs import model_context
from .metrics import Metrics
from .pipeline import (
    PROJECTION_DIM,
    FeatureExtractor,
    Letterbox,
    MemoryIndex,
    MicroBatcher,
    anomaly_map,
    coreset_size,
    covering_radius_bound,
    decode_image,
    find_regions,
    heatmap_png,
    image_score,
    k_center_coreset,
    parse_shape,
    percentile_value,
    shape_mask,
)
from .pipeline import calibrate as calibration_rule
from .settings import MODEL_NAME, Settings
from .storage import (
    ADOPTED,
    ALREADY_MIGRATED,
    IMPORTED,
    MEDIA_TYPES,
    DatasetStore,
    InspectionRecord,
    MigrationAction,
    ModelState,
    PendingRecord,
    RecordFilter,
    RecordStore,
    RecordWriter,
    StoredSample,
    check_mm_per_px,
    claim_mm_per_px,
    fitted_by_content,
    migrate,
    new_record_id,
    normalize_label,
    open_storage,
    prepare_upload,
    sample_name,
    samples_provenance,
    sidecar_mm_per_px,
    sidecar_shape,
    split_holdout,
    store_samples,
    utc_now,
)
from .validation import DEFAULT_RECIPE, normalize_recipe, validate_id, validate_mm_per_px

logger = logging.getLogger(__name__)

CORESET_SEED = 0
HOLDOUT_SEED = 0
MAX_PAGE = 1000
RECORD_ID = re.compile(r"[0-9a-f]{32}")
MIN_FREE_DISK_BYTES = 256 * 1024 * 1024
DEFAULT_MM_PER_PX = 0.2  # /calibrate_ng's default, and /calibrate_dataset's for samples without one


@dataclasses.dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


@dataclasses.dataclass(frozen=True)
class Inspection:
    """One inspection: the contract's answer plus what it was computed from."""

    response: dict[str, Any]
    image: np.ndarray  # the decoded BGR image
    anomaly_map: np.ndarray  # float32 (H, W), blurred, in the score's units
    mask: np.ndarray  # bool (H, W), the shape's pixels


@dataclasses.dataclass(frozen=True)
class Growth:
    """What an append adds to a memory, and the numbers its version records."""

    rows: np.ndarray  # float32 rows added after the parent's
    rate: float  # coreset rate applied to the new patches
    seed: int  # the greedy's seed (its projection), the parent's
    projection_dim: int
    radius: float  # covering radius of the grown memory
    admitted: int  # new patches farther than the parent's radius from its rows
    parent_radius: float
    parent_radius_source: str  # "recorded" at the parent's fit or append, or "derived" from its rows


@dataclasses.dataclass(frozen=True)
class RequestContext:
    """Who asked: recorded with each calibration and inspection (audit) and in the logs. ``record``: this
    inspection goes into the records (every /infer; the CLI's scoring only with --record)."""

    correlation_id: str | None = None
    client: str | None = None
    source: str = "api"
    part_id: str | None = None
    record: bool = False


class MemoryCache:
    """Loaded memory banks per process, keyed by the registry's version: a refit elsewhere is a miss."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: collections.OrderedDict[tuple[Any, ...], MemoryIndex] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple[Any, ...]) -> MemoryIndex | None:
        with self._lock:
            index = self._items.get(key)
            if index is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return index

    def put(self, key: tuple[Any, ...], index: MemoryIndex) -> None:
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = index
            while len(self._items) > self.size:
                self._items.popitem(last=False)


F = TypeVar("F", bound=Callable[..., Any])


def _about_model(method: F) -> F:
    """Log lines written inside a method of (role_id, roi_id) carry the two ids (JSON log fields)."""

    @functools.wraps(method)
    def wrapper(self: Any, role_id: str, roi_id: str, *args: Any, **kwargs: Any) -> Any:
        with model_context(role_id, roi_id):
            return method(self, role_id, roi_id, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class InspectionService:
    def __init__(self, settings: Settings, extractor: FeatureExtractor | None = None) -> None:
        self.settings = settings
        self.extractor = extractor or FeatureExtractor(
            input_size=settings.input_size, weights=settings.weights, device=settings.device,
            precision=settings.precision,
        )
        if self.extractor.input_size != settings.input_size:
            raise ValueError("The extractor's input size differs from settings.input_size.")
        if self.extractor.precision != settings.precision:
            raise ValueError("The extractor's precision differs from settings.precision.")
        self.metrics = Metrics()
        self.store, self.registry = open_storage(settings)
        self.metrics.watch_engine(self.registry.engine)
        self.datasets = DatasetStore(self.store)
        self.cache = MemoryCache(settings.cache_size)
        batch = settings.infer_batch_size
        if batch == "auto":  # a CPU forward already keeps every core busy: batching gains nothing there
            batch = 1 if self.extractor.device.type == "cpu" else 8
        self.batcher = MicroBatcher(self.extractor, int(batch), on_forward=self.metrics.observe_forward)
        self.records = RecordStore(self.registry.engine, settings.models_dir)
        self.recorder = RecordWriter(
            self.records, self.metrics, settings.record_queue_size, int(settings.record_max_mb * 1024 * 1024),
            settings.record_retention_days,
        )

    # ---- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Migrate the registry, clean what killed writes left, import what earlier backends wrote, and
        index folders it does not know."""
        self.settings.models_dir.mkdir(parents=True, exist_ok=True)
        self.registry.upgrade()
        self.store.cleanup_leftovers()
        self.import_legacy()
        self.registry.sync_recipes(self.store)
        imported = sum(self.registry.resync(self.store, folder.path) is not None for folder in self.store.scan())
        removed = self.registry.remove_missing(self.store)
        logger.info(
            "Service ready: device=%s precision=%s infer_batch<=%d weights=%s input_size=%d grid=%s models_dir=%s "
            "registry=%s models=%d%s",
            self.extractor.device_name, self.extractor.precision, self.batcher.max_batch,
            self.extractor.weights_source, self.settings.input_size,
            self.extractor.grid, self.settings.models_dir.resolve(), self.registry.url, imported,
            f" (dropped {len(removed)} model(s) whose folders are gone)" if removed else "",
        )

    def import_legacy(self) -> list[MigrationAction]:
        """Import what earlier backends wrote (``bdi models migrate`` without options), so a GUI
        pointed at an old models dir works at once; legacy files stay where they are."""
        actions = migrate(self.store, self.registry, max_image_pixels=self.settings.max_image_pixels)
        for action in actions:
            if action.outcome != ALREADY_MIGRATED:
                level = logging.INFO if action.outcome in {IMPORTED, ADOPTED} else logging.WARNING
                logger.log(level, "Legacy model %s: %s", action.legacy.name, action.describe())
        return actions

    def close(self) -> None:
        self.batcher.close()
        self.recorder.close()
        self.metrics.close()
        self.registry.dispose()

    # ---- ids ------------------------------------------------------------------------------------
    @staticmethod
    def _ids(role_id: str, roi_id: str, recipe_id: str | None) -> str:
        """Check the ids; the recipe as stored ("default" for none)."""
        validate_id("role_id", role_id)
        validate_id("roi_id", roi_id)
        return normalize_recipe(recipe_id)

    # ---- fit ------------------------------------------------------------------------------------
    @_about_model
    def fit(
        self, role_id: str, roi_id: str, mm_per_px: float, images: list[Upload], memory_fit: bool = False,
        context: RequestContext = RequestContext(), provenance: dict[str, Any] | None = None,
        progress: Callable[[int, int], None] | None = None, *, recipe_id: str | None = None,
    ) -> dict[str, Any]:
        """Build and activate a new memory version; ``provenance`` (the samples it was fitted on and those
        held out) is kept in the version's manifest so a later calibration can score the held-out samples.
        ``progress(done, total)`` after each batch of the feature extraction, the slow part."""
        recipe = self._ids(role_id, roi_id, recipe_id)
        validate_mm_per_px(mm_per_px)
        check_mm_per_px(self.registry, recipe, [mm_per_px])
        started = time.perf_counter()
        decoded = self._decode_ok_images(images)
        features = self.extractor.extract(decoded, batch_size=self.settings.fit_batch_size, progress=progress)
        extracted = time.perf_counter()
        embeddings = features.reshape(-1, features.shape[-1])
        n_embeddings = int(embeddings.shape[0])
        rate = 1.0 if memory_fit else self.settings.coreset_rate
        size = coreset_size(n_embeddings, rate)
        selection = k_center_coreset(embeddings, size, seed=CORESET_SEED)
        memory = embeddings if size >= n_embeddings else embeddings[selection.indices]
        memory = np.ascontiguousarray(memory, dtype=np.float32)
        index = MemoryIndex.build(memory)
        selected = time.perf_counter()
        grid = self.extractor.grid
        metadata = {
            "n_embeddings": n_embeddings,
            "n_images": len(images),
            "coreset_rate_requested": rate,
            "coreset_rate_applied": memory.shape[0] / n_embeddings,
            "coreset_seed": CORESET_SEED,
            "projection_dim": PROJECTION_DIM,
            "covering_radius": selection.radius,
            "mm_per_px": mm_per_px,
            "extractor": self.extractor.fingerprint,
            "dataset": provenance,
            "created_at": utc_now(),
        }
        claim_mm_per_px(self.store, self.registry, recipe, mm_per_px)
        with self.store.writing(role_id, roi_id, recipe_id=recipe) as folder:
            files = self.store.write_version(folder, memory, grid, metadata, index.to_bytes())
            self.registry.add_version(self.store, role_id, roi_id, folder, files, recipe_id=recipe)
        state = self.registry.state(role_id, roi_id, recipe_id=recipe)
        if state is not None:
            self.cache.put(self._cache_key(state), index)
        self.metrics.fits.labels("fit").inc()
        self.metrics.fit_seconds.labels("fit").observe(time.perf_counter() - started)
        logger.info(
            "fit recipe=%r role=%r roi=%r images=%d patches=%d coreset=%d version=%d extract=%.2fs "
            "coreset+index=%.2fs write=%.2fs total=%.2fs",
            recipe, role_id, roi_id, len(images), n_embeddings, memory.shape[0], files.version,
            extracted - started, selected - extracted, time.perf_counter() - selected, time.perf_counter() - started,
        )
        return {
            "n_embeddings": n_embeddings,
            "coreset_size": int(memory.shape[0]),
            "token_shape": [grid[0], grid[1]],
            "coreset_rate_requested": rate,
            "coreset_rate_applied": memory.shape[0] / n_embeddings,
        }

    def _decode_ok_images(self, images: list[Upload]) -> list[np.ndarray]:
        """The OK images of a fit or an append, decoded; one that can't be read refuses them all."""
        if not images:
            raise BadRequest("No images were sent; attach 1 or more OK images as 'images'.")
        if len(images) > self.settings.max_fit_images:
            raise PayloadTooLarge(
                f"{len(images)} images in one fit is over the limit of {self.settings.max_fit_images} "
                "(BDI_MAX_FIT_IMAGES); send fewer images or raise the limit."
            )
        return [decode_image(u.data, u.filename, self.settings.max_image_pixels) for u in images]

    # ---- append ---------------------------------------------------------------------------------
    @_about_model
    def append(
        self, role_id: str, roi_id: str, mm_per_px: float, images: list[Upload], memory_fit: bool = False,
        context: RequestContext = RequestContext(), progress: Callable[[int, int], None] | None = None, *,
        recipe_id: str | None = None,
    ) -> dict[str, Any]:
        """Grow the active memory with these OK images into a new version whose parent is the active one.

        The new patches are extracted once; only those farther from the memory than its covering radius
        are candidates, and the seeded k-center greedy picks among them, the memory's rows counting as
        already picked, until every new patch is as close to the memory as its old patches were (the
        radius) or as many rows as a fit keeps of that many patches are picked (every new patch is kept
        for a memory_fit memory or with ``memory_fit``). No earlier image is needed. The calibration stays
        active; /state says ``calib_stale`` until the next one. The answer has fit's keys for the grown
        memory (all patches it stands for, all its rows) plus ``append``. ``progress`` as for ``fit``.
        """
        recipe = self._ids(role_id, roi_id, recipe_id)
        validate_mm_per_px(mm_per_px)
        check_mm_per_px(self.registry, recipe, [mm_per_px])
        self._check_appendable(self.model_state(role_id, roi_id, recipe_id=recipe), role_id, roi_id, recipe)
        started = time.perf_counter()
        decoded = self._decode_ok_images(images)
        features = self.extractor.extract(decoded, batch_size=self.settings.fit_batch_size, progress=progress)
        extracted = time.perf_counter()
        new = features.reshape(-1, features.shape[-1])
        claim_mm_per_px(self.store, self.registry, recipe, mm_per_px)
        with self.store.writing(role_id, roi_id, recipe_id=recipe) as folder:
            # Under the lock: the parent is the version active now, not the one seen before extracting
            # (a model deleted meanwhile: "fit first", and writing() removes the folder it made again).
            state = self.registry.state(role_id, roi_id, recipe_id=recipe)
            self._check_appendable(state, role_id, roi_id, recipe)
            assert state is not None and state.active is not None
            parent = self.store.version_files(folder, state.active_version).manifest
            rows = self._memory_index(state).memory
            grown = self._grow(rows, new, parent, memory_fit)
            memory = np.concatenate([rows, grown.rows])
            if len(grown.rows) and len(memory) > self.settings.max_memory_rows:
                raise PayloadTooLarge(
                    f"This append would grow the memory of role_id={role_id!r}, roi_id={roi_id!r} to {len(memory)} "
                    f"rows, over the limit of {self.settings.max_memory_rows} (BDI_MAX_MEMORY_ROWS); refit the ROI "
                    "from a representative set of OK images (a fresh memory), or raise the limit."
                )
            index = MemoryIndex.build(memory)
            n_embeddings = int(parent["n_embeddings"]) + len(new)
            added = [{"name": u.filename, "sha256": hashlib.sha256(u.data).hexdigest()} for u in images]
            dataset = parent.get("dataset")  # a CLI fit's provenance: its holdout is still unseen, ...
            if isinstance(dataset, dict) and dataset.get("fit_sha256") is not None:  # ... the appended images not
                dataset = {**dataset, "fit_sha256": [*dataset["fit_sha256"], *(image["sha256"] for image in added)]}
            metadata = {
                "n_embeddings": n_embeddings,
                "n_images": len(images),
                "coreset_rate_requested": grown.rate,
                "coreset_rate_applied": len(memory) / n_embeddings,
                "coreset_seed": grown.seed,
                "projection_dim": grown.projection_dim,
                "covering_radius": grown.radius,
                "mm_per_px": mm_per_px,
                "extractor": self.extractor.fingerprint,
                "dataset": dataset,
                "parent_version": state.active_version,
                "ancestors": [state.active_version, *(parent.get("ancestors") or [])],
                "append": {
                    "images": added,
                    "new_embeddings": len(new),
                    "admitted": grown.admitted,
                    "added_rows": len(memory) - len(rows),
                    "parent_radius": grown.parent_radius,
                    "parent_radius_source": grown.parent_radius_source,
                },
                "created_at": utc_now(),
            }
            files = self.store.write_version(folder, memory, self.extractor.grid, metadata, index.to_bytes(),
                                             source="append")
            self.registry.add_version(self.store, role_id, roi_id, folder, files, recipe_id=recipe)
        fresh = self.registry.state(role_id, roi_id, recipe_id=recipe)
        if fresh is not None and fresh.active_version == files.version:
            self.cache.put(self._cache_key(fresh), index)
        self.metrics.fits.labels("append").inc()
        self.metrics.fit_seconds.labels("append").observe(time.perf_counter() - started)
        logger.info(
            "append recipe=%r role=%r roi=%r images=%d patches=%d admitted=%d added=%d rows=%d parent=%d version=%d "
            "radius=%.4f (parent %.4f, %s) extract=%.2fs total=%.2fs",
            recipe, role_id, roi_id, len(images), len(new), grown.admitted, len(memory) - len(rows), len(memory),
            state.active_version, files.version, grown.radius, grown.parent_radius,
            grown.parent_radius_source, extracted - started, time.perf_counter() - started,
        )
        grid = self.extractor.grid
        return {
            "n_embeddings": n_embeddings,
            "coreset_size": int(memory.shape[0]),
            "token_shape": [grid[0], grid[1]],
            "coreset_rate_requested": grown.rate,
            "coreset_rate_applied": memory.shape[0] / n_embeddings,
            "append": {
                "version": files.version,
                "parent_version": state.active_version,
                "images": len(images),
                "new_embeddings": len(new),
                "admitted": grown.admitted,
                "added_rows": len(memory) - len(rows),
            },
        }

    def _grow(self, rows: np.ndarray, new: np.ndarray, parent: dict[str, Any], memory_fit: bool) -> Growth:
        """The rows an append adds to ``rows`` from the ``new`` patches, and the numbers the version records.

        The parent's radius is the one recorded at its fit or append; a version fitted before radii were
        recorded gets 0 when it kept every patch, else ``covering_radius_bound`` of its rows (an upper
        bound, close to the radius, for memories this service selected; see README, "Appending").
        """
        seed = parent.get("coreset_seed")
        seed = CORESET_SEED if seed is None else int(seed)
        projection_dim = parent.get("projection_dim") or PROJECTION_DIM
        parent_rate = parent.get("coreset_rate_requested")
        keep_all = memory_fit or parent_rate == 1.0
        rate = 1.0 if keep_all else float(parent_rate or self.settings.coreset_rate)
        radius, source = parent.get("covering_radius"), "recorded"
        if radius is None:
            source = "derived"
            radius = 0.0 if parent_rate == 1.0 else covering_radius_bound(rows, seed, projection_dim)
        if keep_all:
            added, reached, admitted = new, float(radius), len(new)
        else:
            selection = k_center_coreset(new, coreset_size(len(new), rate), seed=seed, projection_dim=projection_dim,
                                         centres=rows, radius=float(radius))
            added, reached, admitted = new[selection.indices], selection.radius, selection.candidates
        return Growth(np.ascontiguousarray(added, dtype=np.float32), rate, seed, int(projection_dim), reached,
                      admitted, float(radius), source)

    def _check_appendable(self, state: ModelState | None, role_id: str, roi_id: str, recipe: str) -> None:
        """An append needs a memory whose patches are comparable with this extractor's."""
        if state is None or state.active is None:
            raise self._nothing_to_append(role_id, roi_id, recipe)
        if state.active.token_grid != self.extractor.grid:
            raise TokenGridMismatch(got=self.extractor.grid, expected=state.active.token_grid)
        built_with = (state.active.extractor or {}).get("weights_sha256")
        running = self.extractor.fingerprint
        if built_with and built_with != running["weights_sha256"]:
            built_label = (state.active.extractor or {}).get("weights") or "?"
            raise ExtractorMismatch(got=f"{running['weights']} ({running['weights_sha256'][:12]})",
                                    expected=f"{built_label} ({built_with[:12]})")

    @staticmethod
    def _nothing_to_append(role_id: str, roi_id: str, recipe: str) -> BadRequest:
        where = f" in recipe {recipe!r}" if recipe != DEFAULT_RECIPE else ""
        return BadRequest(
            f"There is no memory for role_id={role_id!r}, roi_id={roi_id!r}{where} to append to; fit first: send the "
            "images to /fit_ok without append=true (or run `bdi fit` without --append)."
        )

    def fit_dataset(
        self, role_id: str, roi_id: str, mm_per_px: float, memory_fit: bool = False,
        context: RequestContext = RequestContext(), *, recipe_id: str | None = None,
    ) -> dict[str, Any]:
        """/fit_ok with ``use_dataset=true``: fit from the recipe's stored OK samples of (role, roi). With
        BDI_DATASET_HOLDOUT a seeded share of them stays out of the memory (recorded in the version), for
        /calibrate_dataset to take the OK threshold from."""
        recipe = self._ids(role_id, roi_id, recipe_id)
        folder = self.datasets.folder(recipe, role_id, roi_id)
        stored = self.datasets.samples(folder, "ok")
        if not stored:
            raise BadRequest(
                f"No OK dataset samples found for ({role_id}, {roi_id}) in recipe '{recipe}'; upload OK samples first."
            )
        if len(stored) < self.settings.min_ok_samples:
            raise BadRequest(f"Insufficient OK samples: need at least {self.settings.min_ok_samples}, found {len(stored)}")
        assert folder is not None
        fit_samples, held_out = split_holdout(stored, self.settings.dataset_holdout, HOLDOUT_SEED)
        uploads = [Upload(sample.name, sample.path.read_bytes()) for sample in fit_samples]
        provenance = samples_provenance(folder, fit_samples, held_out, self.settings.dataset_holdout, HOLDOUT_SEED,
                                        _stored_name)
        return self.fit(role_id, roi_id, mm_per_px, uploads, memory_fit, context, provenance, recipe_id=recipe)

    # ---- calibrate ------------------------------------------------------------------------------
    @_about_model
    def calibrate(
        self, role_id: str, roi_id: str, ok_scores: list[float], ng_scores: list[float] | None = None,
        mm_per_px: float = DEFAULT_MM_PER_PX, area_mm2_thr: float | None = None, score_percentile: int | None = None,
        context: RequestContext = RequestContext(), *, recipe_id: str | None = None,
    ) -> dict[str, Any]:
        recipe = self._ids(role_id, roi_id, recipe_id)
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
                self.store, role_id, roi_id, folder, {**entry, "calibration": values}, recipe_id=recipe
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
        recipe = self._ids(role_id, roi_id, recipe_id)
        default_mm = validate_mm_per_px(DEFAULT_MM_PER_PX if default_mm_per_px is None else default_mm_per_px)
        percentile = percentile_value(self.settings.score_percentile if score_percentile is None else score_percentile)
        started = time.perf_counter()
        state = self.model_state(role_id, roi_id, recipe_id=recipe)
        if state is None or state.active is None:
            raise BadRequest("Memoria no encontrada. Ejecuta /fit_ok antes de /calibrate_dataset.")
        if state.active.token_grid != self.extractor.grid:
            raise TokenGridMismatch(got=self.extractor.grid, expected=state.active.token_grid)
        folder = self.datasets.folder(recipe, role_id, roi_id)
        ok, ng = self.datasets.samples(folder, "ok"), self.datasets.samples(folder, "ng")
        provenance = self._provenance(state)
        seen = _fitted_on(ok, folder, provenance)
        unseen = [sample for sample in ok if sample.path not in seen]
        if provenance.get("holdout_files") and unseen:  # fitted with a holdout: the OK side from unseen samples only
            ok = unseen
        index = self._memory_index(state)
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
                amap = self._anomaly_map(index, rows, bgr.shape[1], bgr.shape[0])
                scores[sample.path] = image_score(amap, mask, percentile)
        return scores, skipped, mm_values

    # ---- infer ----------------------------------------------------------------------------------
    def infer(
        self, role_id: str, roi_id: str, mm_per_px: float, image: Upload, shape: str | None = None,
        context: RequestContext = RequestContext(), *, recipe_id: str | None = None, include_heatmap: bool = True,
        require_calibration: bool | None = None,
    ) -> dict[str, Any]:
        """The /infer answer (CONTRACT.md keys). An uncalibrated model is a 400 when ``require_calibration`` (None:
        BDI_REQUIRE_CALIBRATION); scoring samples to calibrate passes False."""
        required = self.settings.require_calibration if require_calibration is None else require_calibration
        return self.inspect(
            role_id, roi_id, mm_per_px, image, shape, context, recipe_id=recipe_id, include_heatmap=include_heatmap,
            require_calibration=required,
        ).response

    @_about_model
    def inspect(
        self, role_id: str, roi_id: str, mm_per_px: float, image: Upload, shape: str | None = None,
        context: RequestContext = RequestContext(), *, recipe_id: str | None = None, include_heatmap: bool = True,
        require_calibration: bool = False,
    ) -> Inspection:
        """/infer's whole computation, also handing back the decoded image, the raw map and the mask
        (evaluation needs them: the heatmap PNG is stretched per image). With ``context.record`` the
        inspection is queued for the records (never waited for, never failing the answer)."""
        recipe = self._ids(role_id, roi_id, recipe_id)
        validate_mm_per_px(mm_per_px)
        if context.part_id is not None:
            validate_id("part_id", context.part_id)
        check_mm_per_px(self.registry, recipe, [mm_per_px])
        parsed_shape = parse_shape(shape)
        started = time.perf_counter()
        state = self.model_state(role_id, roi_id, recipe_id=recipe)
        if state is None or state.active is None:
            raise NotFitted(role_id, roi_id, recipe)
        if state.active.token_grid != self.extractor.grid:
            raise TokenGridMismatch(got=self.extractor.grid, expected=state.active.token_grid)
        if require_calibration and state.calibration is None:
            raise BadRequest(f"calibration_missing: run a calibration for ({role_id}, {roi_id}) first")
        bgr = decode_image(image.data, image.filename, self.settings.max_image_pixels)
        height, width = bgr.shape[:2]
        mask = shape_mask(parsed_shape, width, height)
        claim_mm_per_px(self.store, self.registry, recipe, mm_per_px)
        index = self._memory_index(state)
        loaded = time.perf_counter()
        self.metrics.queue_depth.inc()
        try:
            features = self.batcher.extract(bgr)
        finally:
            self.metrics.queue_depth.dec()
        extracted = time.perf_counter()
        amap = self._anomaly_map(index, features, width, height)
        calibration = state.calibration.values if state.calibration is not None else None
        percentile = (calibration or {}).get("score_percentile") or self.settings.score_percentile
        score = image_score(amap, mask, percentile)
        threshold = calibration["threshold"] if calibration is not None else None
        regions: list[dict[str, Any]] = []
        if threshold is not None:
            area_thr = calibration.get("area_mm2_thr")
            area_thr = self.settings.area_mm2_thr if area_thr is None else area_thr
            regions = find_regions(amap, mask, threshold, mm_per_px, area_thr)
        decision = None if threshold is None else ("ng" if score >= threshold else "ok")
        recording = context.record and self.settings.record
        keep = recording and (self.settings.record_images == "all"
                              or (self.settings.record_images == "ng" and decision == "ng"))
        heatmap_bytes = heatmap_png(amap, mask) if include_heatmap or keep else None
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
        self.metrics.inspections.labels(recipe, role_id, roi_id, decision or "none").inc()
        if recording:
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
                source=context.source, load_ms=1000 * (loaded - started), forward_ms=1000 * (extracted - loaded),
                total_ms=1000 * (finished - started),
            )
            self.recorder.submit(PendingRecord(record, image.data if keep else None, heatmap_bytes if keep else None))
        return Inspection(response, bgr, amap, mask)

    def _anomaly_map(self, index: MemoryIndex, features: np.ndarray, width: int, height: int) -> np.ndarray:
        """The blurred anomaly map of one image's patch features, in its own pixels (shared by /infer and
        /calibrate_dataset, so both score alike)."""
        distances = index.nearest_distances(features)
        return anomaly_map(distances, self.extractor.grid, Letterbox.fit(width, height, self.settings.input_size))

    # ---- records --------------------------------------------------------------------------------
    def inspections(self, where: RecordFilter, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
        """One page of records, newest first: ``{"items": [...], "next_cursor": str | None}``."""
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be 1 to {MAX_PAGE}, got {limit}; page through more with next_cursor.")
        for name in ("role_id", "roi_id", "part_id"):
            if getattr(where, name) is not None:
                validate_id(name, getattr(where, name))
        if where.recipe_id is not None:
            where = dataclasses.replace(where, recipe_id=normalize_recipe(where.recipe_id))
        items, next_cursor = self.records.page(where, limit, cursor)
        return {"items": [item.as_dict() for item in items], "next_cursor": next_cursor}

    def inspection(self, record_id: str) -> InspectionRecord:
        if not RECORD_ID.fullmatch(record_id):
            raise BadRequest(f"{record_id[:64]!r} is not an inspection record id (32 hexadecimal digits: the id "
                             "GET /inspections lists).")
        record = self.records.get(record_id)
        if record is None:
            raise NotFound(f"There is no inspection record {record_id[:64]!r}; GET /inspections lists the kept ones "
                           f"(records older than BDI_RECORD_RETENTION_DAYS are deleted).")
        return record

    def inspection_file(self, record_id: str, kind: str) -> tuple[bytes, str]:
        """(bytes, media type) of a kept ``image`` or ``heatmap``; 404 with the reason when not kept."""
        record = self.inspection(record_id)
        path = record.image_path if kind == "image" else record.heatmap_path
        if path is None:
            raise NotFound(
                f"The {kind} of inspection {record_id} was not kept: images are kept per BDI_RECORD_IMAGES (now "
                f"{self.settings.record_images!r}: none, ng or all) and the oldest are deleted past BDI_RECORD_MAX_MB."
            )
        try:
            data = (self.settings.models_dir / path).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"The {kind} of inspection {record_id} is no longer on disk (pruned or removed by hand).") \
                from None
        return data, MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")

    # ---- state & health -------------------------------------------------------------------------
    def model_state(self, role_id: str, roi_id: str, *, recipe_id: str | None = None) -> ModelState | None:
        """The registry's rows; a folder on disk the registry does not know is imported on first use."""
        return self.registry.state_or_import(self.store, role_id, roi_id, recipe_id=normalize_recipe(recipe_id))

    def state(self, role_id: str, roi_id: str, *, recipe_id: str | None = None) -> dict[str, Any]:
        recipe = self._ids(role_id, roi_id, recipe_id)
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

    # ---- datasets -------------------------------------------------------------------------------
    def dataset_upload(
        self, label: str, role_id: str, roi_id: str, images: list[Upload], metas: list[str] | None = None,
        context: RequestContext = RequestContext(), *, recipe_id: str | None = None,
    ) -> dict[str, Any]:
        """Store OK or NG samples (decoded and checked first; one bad sample stores none)."""
        recipe = self._ids(role_id, roi_id, recipe_id)
        label = normalize_label(label)
        if len(images) > self.settings.max_fit_images:
            raise PayloadTooLarge(
                f"{len(images)} images in one upload is over the limit of {self.settings.max_fit_images} "
                "(BDI_MAX_FIT_IMAGES); send fewer images per request."
            )
        samples = prepare_upload(
            label, [(upload.filename, upload.data) for upload in images], metas or [], self.settings.max_image_pixels
        )
        saved = store_samples(self.datasets, self.registry, recipe, role_id, roi_id, label, samples)
        logger.info("dataset upload recipe=%r role=%r roi=%r label=%s saved=%s", recipe, role_id, roi_id, label, saved)
        return {"status": "ok", "saved": saved}

    def dataset_list(self, role_id: str, roi_id: str, *, recipe_id: str | None = None) -> dict[str, Any]:
        recipe = self._ids(role_id, roi_id, recipe_id)
        folder = self.datasets.folder(recipe, role_id, roi_id)
        classes = {}
        for label in ("ok", "ng"):
            samples = self.datasets.samples(folder, label)
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
        recipe = self._ids(role_id, roi_id, recipe_id)
        label = normalize_label(label)
        folder = self.datasets.folder(recipe, role_id, roi_id)
        return recipe, label, folder, self.datasets.find(folder, label, filename)

    def dataset_file(
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

    def dataset_delete(
        self, role_id: str, roi_id: str, label: str, filename: str, context: RequestContext = RequestContext(), *,
        recipe_id: str | None = None,
    ) -> dict[str, Any]:
        recipe, label, folder, sample = self._stored(role_id, roi_id, label, filename, recipe_id)
        deleted = self.datasets.delete(folder, sample)
        if deleted:
            logger.info("dataset delete recipe=%r role=%r roi=%r label=%s file=%s", recipe, role_id, roi_id, label,
                        sample.name if sample else None)
        return {"deleted": deleted, "filename": sample_name(filename)}

    def dataset_meta(
        self, role_id: str, roi_id: str, label: str, filename: str, *, recipe_id: str | None = None
    ) -> dict[str, Any]:
        recipe, label, _, sample = self._stored(role_id, roi_id, label, filename, recipe_id)
        meta = self.datasets.read_meta(sample) if sample is not None else None
        if meta is None:
            raise NotFound(
                f"meta not found: no sidecar of {label} sample {filename!r} for ({role_id}, {roi_id}) in recipe "
                f"'{recipe}'; GET /datasets/list says which samples have one."
            )
        return meta

    # ---- memory cache ---------------------------------------------------------------------------
    @staticmethod
    def _cache_key(state: ModelState) -> tuple[Any, ...]:
        assert state.active is not None
        return (state.recipe_id, state.model_id, state.active_version, state.active.memory_sha256)

    def _provenance(self, state: ModelState) -> dict[str, Any]:
        """What the active version recorded about the samples it was fitted on (empty for image fits)."""
        assert state.active_version is not None
        try:
            manifest = self.store.version_files(self.store.root / state.folder, state.active_version).manifest
        except (OSError, ValueError):
            return {}
        return manifest.get("dataset") or {}

    def _memory_index(self, state: ModelState) -> MemoryIndex:
        key = self._cache_key(state)
        index = self.cache.get(key)
        if index is not None:
            self.metrics.cache_hits.inc()
            return index
        self.metrics.cache_misses.inc()
        folder = self.store.root / state.folder
        try:
            loaded = self.store.load_memory(folder, state.active_version)
        except FileNotFoundError:
            # Pruned or removed by another process since the registry was read: re-index, re-ask.
            if self.registry.resync(self.store, folder) is None:
                raise NotFitted(state.role_id, state.roi_id, state.recipe_id) from None
            fresh = self.registry.state(state.role_id, state.roi_id, recipe_id=state.recipe_id)
            if fresh is None or fresh.active is None or self._cache_key(fresh) == key:
                raise NotFitted(state.role_id, state.roi_id, state.recipe_id) from None
            return self._memory_index(fresh)
        built_with = (loaded.metadata.get("extractor") or {}).get("weights_sha256")
        if built_with and built_with != self.extractor.fingerprint["weights_sha256"]:
            logger.warning(
                "The memory of recipe=%r role=%r roi=%r (version %d) was built with other backbone weights than the "
                "ones loaded now (%s); its scores are not comparable: refit it, or serve with the weights it was "
                "built with.",
                state.recipe_id, state.role_id, state.roi_id, state.active_version, self.extractor.weights_source,
            )
        if loaded.index_bytes is not None:
            index = MemoryIndex.from_bytes(loaded.index_bytes, loaded.embeddings)
        else:
            index = MemoryIndex.build(loaded.embeddings)
        self.cache.put(key, index)
        return index


def _stored_name(sample: StoredSample) -> str:
    """A stored OK sample's name in a fit's provenance: its path under the dataset folder."""
    return f"ok/{sample.name}"


def _fitted_on(samples: list[StoredSample], folder: Path | None, provenance: dict[str, Any]) -> set[Path]:
    """The stored samples the active memory was fitted on, per its version's provenance: by content when it
    recorded sha256s (as `bdi fit` and /fit_ok use_dataset=true do), else by name under the same folder."""
    fitted = fitted_by_content(samples, provenance)
    if fitted is not None:
        return fitted
    if folder is None or provenance.get("dataset") != str(folder.resolve()):
        return set()
    names = set(provenance.get("fit_files") or [])
    return {sample.path for sample in samples if _stored_name(sample) in names}
