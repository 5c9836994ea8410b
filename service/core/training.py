"""Training: fit a memory from OK images, grow the active one with more (append), or fit from the stored
OK samples of a model (with a seeded holdout for calibration)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import BadRequest, ExtractorMismatch, PayloadTooLarge, TokenGridMismatch
from ..metrics import Metrics
from ..pipeline import (
    PROJECTION_DIM,
    FeatureExtractor,
    MemoryIndex,
    coreset_size,
    covering_radius_bound,
    decode_image,
    k_center_coreset,
)
from ..settings import Settings
from ..storage import (
    DatasetStore,
    ModelState,
    ModelStore,
    Registry,
    StoredSample,
    check_mm_per_px,
    claim_mm_per_px,
    samples_provenance,
    sha256_file,
    split_holdout,
    utc_now,
)
from ..storage.versions import ACTIVE, STAGED
from ..validation import DEFAULT_RECIPE, validate_mm_per_px
from .memory import ActiveMemories
from .request import LOGGER_NAME, RequestContext, Upload, about_model, checked_recipe
from .status import ModelStatus

logger = logging.getLogger(LOGGER_NAME)

CORESET_SEED = 0
HOLDOUT_SEED = 0
MAX_HOLDOUT = 0.9


def training_size(images: list[np.ndarray]) -> dict[str, int]:
    """The size of a fit's images, kept with the version so /infer can warn about an image of another size
    (the letterbox scales any size to the backbone's input, so the scores would not say so): the median width
    and height, which is the size when they all share one."""
    return {"train_width": int(np.median([image.shape[1] for image in images])),
            "train_height": int(np.median([image.shape[0] for image in images]))}


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


def written(version: int, activate: bool) -> dict[str, Any]:
    """The end of a fit's or an append's answer: the version it wrote and that version's status."""
    return {"version": version, "status": ACTIVE if activate else STAGED}


def checked_holdout(rate: float) -> float:
    """A holdout share from a request: 0 (fit every sample) up to 0.9 (keep at least some to fit)."""
    if not isinstance(rate, (int, float)) or not 0 <= rate <= MAX_HOLDOUT:
        raise BadRequest(f"holdout must be a number from 0 to {MAX_HOLDOUT} (the share of the stored OK samples kept out "
                         f"of the memory for calibration), got {rate!r}.")
    return float(rate)


def stored_name(sample: StoredSample) -> str:
    """A stored OK sample's name in a fit's provenance: its path under the dataset folder."""
    return f"ok/{sample.name}"


class Training:
    def __init__(
        self, settings: Settings, extractor: FeatureExtractor, store: ModelStore, registry: Registry,
        datasets: DatasetStore, memories: ActiveMemories, status: ModelStatus, metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.extractor = extractor
        self.store = store
        self.registry = registry
        self.datasets = datasets
        self.memories = memories
        self.status = status
        self.metrics = metrics

    # ---- fit ------------------------------------------------------------------------------------
    @about_model
    def fit(
        self, role_id: str, roi_id: str, mm_per_px: float, images: list[Upload], memory_fit: bool = False,
        context: RequestContext = RequestContext(), provenance: dict[str, Any] | None = None,
        progress: Callable[[int, int], None] | None = None, *, recipe_id: str | None = None, activate: bool = True,
    ) -> dict[str, Any]:
        """Build and activate a new memory version (``staged`` without ``activate``: /infer keeps the active one);
        ``provenance`` (the samples it was fitted on and those held out) is kept in the version's manifest so a
        later calibration can score the held-out samples. ``progress(done, total)`` after each batch of the
        feature extraction, the slow part. The answer ends with the new ``version`` and its ``status``."""
        recipe = checked_recipe(role_id, roi_id, recipe_id)
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
            **training_size(decoded),
            "created_at": utc_now(),
        }
        claim_mm_per_px(self.store, self.registry, recipe, mm_per_px, context.audit("recipe_mm_per_px"))
        with self.store.writing(role_id, roi_id, recipe_id=recipe) as folder:
            files = self.store.write_version(folder, memory, grid, metadata, index.to_bytes(), activate=activate)
            self.registry.add_version(self.store, role_id, roi_id, folder, files, recipe_id=recipe, activate=activate,
                                      audit=context.audit("fit", details={"images": len(images), "activate": activate}))
        state = self.registry.state(role_id, roi_id, recipe_id=recipe)
        if state is not None and state.active_version == files.version:
            self.memories.keep(state, index)
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
            **written(files.version, activate),
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
    @about_model
    def append(
        self, role_id: str, roi_id: str, mm_per_px: float, images: list[Upload], memory_fit: bool = False,
        context: RequestContext = RequestContext(), progress: Callable[[int, int], None] | None = None, *,
        recipe_id: str | None = None, activate: bool = True,
    ) -> dict[str, Any]:
        """Grow the active memory with these OK images into a new version whose parent is the active one
        (made active, or ``staged`` without ``activate``).

        The new patches are extracted once; only those farther from the memory than its covering radius
        are candidates, and the seeded k-center greedy picks among them, the memory's rows counting as
        already picked, until every new patch is as close to the memory as its old patches were (the
        radius) or as many rows as a fit keeps of that many patches are picked (every new patch is kept
        for a memory_fit memory or with ``memory_fit``). No earlier image is needed. The calibration stays
        active; /state says ``calib_stale`` until the next one. The answer has fit's keys for the grown
        memory (all patches it stands for, all its rows) plus ``append``. ``progress`` as for ``fit``.
        """
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        validate_mm_per_px(mm_per_px)
        check_mm_per_px(self.registry, recipe, [mm_per_px])
        self.check_appendable(self.status.model_state(role_id, roi_id, recipe_id=recipe), role_id, roi_id, recipe)
        started = time.perf_counter()
        decoded = self._decode_ok_images(images)
        features = self.extractor.extract(decoded, batch_size=self.settings.fit_batch_size, progress=progress)
        extracted = time.perf_counter()
        new = features.reshape(-1, features.shape[-1])
        claim_mm_per_px(self.store, self.registry, recipe, mm_per_px, context.audit("recipe_mm_per_px"))
        with self.store.writing(role_id, roi_id, recipe_id=recipe) as folder:
            # Under the lock: the parent is the version active now, not the one seen before extracting
            # (a model deleted meanwhile: "fit first", and writing() removes the folder it made again).
            state = self.registry.state(role_id, roi_id, recipe_id=recipe)
            self.check_appendable(state, role_id, roi_id, recipe)
            assert state is not None and state.active is not None
            parent = self.store.version_files(folder, state.active_version).manifest
            rows = self.memories.index(state).memory
            grown = self.grow(rows, new, parent, memory_fit)
            memory = np.concatenate([rows, grown.rows])
            if len(grown.rows) and len(memory) > self.settings.max_memory_rows:
                raise PayloadTooLarge(
                    f"This append would grow the memory of role_id={role_id!r}, roi_id={roi_id!r} to {len(memory)} "
                    f"rows, over the limit of {self.settings.max_memory_rows} (BDI_MAX_MEMORY_ROWS); refit the ROI "
                    "from a representative set of OK images (a fresh memory), or raise the limit."
                )
            index = MemoryIndex.build(memory)
            metadata = self.append_metadata(parent, state.active_version, images, new, grown, len(memory), mm_per_px)
            n_embeddings = metadata["n_embeddings"]
            files = self.store.write_version(folder, memory, self.extractor.grid, metadata, index.to_bytes(),
                                             source="append", activate=activate)
            self.registry.add_version(
                self.store, role_id, roi_id, folder, files, recipe_id=recipe, activate=activate,
                audit=context.audit("append", details={"images": len(images), "activate": activate}),
            )
        fresh = self.registry.state(role_id, roi_id, recipe_id=recipe)
        if fresh is not None and fresh.active_version == files.version:
            self.memories.keep(fresh, index)
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
            **written(files.version, activate),
        }

    def append_metadata(
        self, parent: dict[str, Any], parent_version: int, images: list[Upload], new: np.ndarray, grown: Growth,
        memory_rows: int, mm_per_px: float,
    ) -> dict[str, Any]:
        """The manifest's numbers of an appended version of ``memory_rows`` rows, from its parent's manifest."""
        n_embeddings = int(parent["n_embeddings"]) + len(new)
        added = [{"name": u.filename, "sha256": hashlib.sha256(u.data).hexdigest()} for u in images]
        dataset = parent.get("dataset")  # a CLI fit's provenance: its holdout is still unseen, ...
        if isinstance(dataset, dict) and dataset.get("fit_sha256") is not None:  # ... the appended images not
            dataset = {**dataset, "fit_sha256": [*dataset["fit_sha256"], *(image["sha256"] for image in added)]}
        return {
            "n_embeddings": n_embeddings,
            "n_images": len(images),
            "coreset_rate_requested": grown.rate,
            "coreset_rate_applied": memory_rows / n_embeddings,
            "coreset_seed": grown.seed,
            "projection_dim": grown.projection_dim,
            "covering_radius": grown.radius,
            "mm_per_px": mm_per_px,
            "extractor": self.extractor.fingerprint,
            "dataset": dataset,
            # the appended images are scored against the fit's size: they don't redefine it
            "train_width": parent.get("train_width"),
            "train_height": parent.get("train_height"),
            "parent_version": parent_version,
            "ancestors": [parent_version, *(parent.get("ancestors") or [])],
            "append": {
                "images": added,
                "new_embeddings": len(new),
                "admitted": grown.admitted,
                "added_rows": len(grown.rows),
                "parent_radius": grown.parent_radius,
                "parent_radius_source": grown.parent_radius_source,
            },
            "created_at": utc_now(),
        }

    def grow(self, rows: np.ndarray, new: np.ndarray, parent: dict[str, Any], memory_fit: bool) -> Growth:
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

    def check_appendable(self, state: ModelState | None, role_id: str, roi_id: str, recipe: str) -> None:
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
        context: RequestContext = RequestContext(), *, recipe_id: str | None = None, activate: bool = True,
        holdout: float | None = None,
    ) -> dict[str, Any]:
        """/fit_ok with ``use_dataset=true``: fit from the recipe's stored OK samples of (role, roi). A seeded
        share ``holdout`` of them (None: BDI_DATASET_HOLDOUT) stays out of the memory (recorded in the version),
        for /calibrate_dataset to take the OK threshold from. ``activate`` as for ``fit``. The answer adds
        ``dataset``: how many samples were fitted and held out."""
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        folder = self.datasets.folder(recipe, role_id, roi_id)
        stored = self.datasets.samples(folder, "ok")
        if not stored:
            raise BadRequest(
                f"No OK dataset samples found for ({role_id}, {roi_id}) in recipe '{recipe}'; upload OK samples first."
            )
        if len(stored) < self.settings.min_ok_samples:
            raise BadRequest(f"Insufficient OK samples: need at least {self.settings.min_ok_samples}, found {len(stored)}")
        assert folder is not None
        rate = self.settings.dataset_holdout if holdout is None else checked_holdout(holdout)
        fit_samples, held_out = split_holdout(stored, rate, HOLDOUT_SEED)
        uploads = [Upload(sample.name, sample.path.read_bytes()) for sample in fit_samples]
        provenance = samples_provenance(folder, fit_samples, held_out, rate, HOLDOUT_SEED, stored_name)
        answer = self.fit(role_id, roi_id, mm_per_px, uploads, memory_fit, context, provenance, recipe_id=recipe,
                          activate=activate)
        logger.info("fit from the dataset recipe=%r role=%r roi=%r stored=%d fitted=%d held_out=%d holdout=%.2f",
                    recipe, role_id, roi_id, len(stored), len(fit_samples), len(held_out), rate)
        return {**answer, "dataset": {"fitted": len(fit_samples), "held_out": len(held_out), "holdout": rate}}

    def append_dataset(
        self, role_id: str, roi_id: str, mm_per_px: float, memory_fit: bool = False,
        context: RequestContext = RequestContext(), *, recipe_id: str | None = None, activate: bool = True,
    ) -> dict[str, Any]:
        """/fit_ok with ``use_dataset=true`` and ``append=true``: grow the active memory with the stored OK samples
        it does not hold yet (neither fitted nor appended before, by content) and keeps out those its fit held out
        for calibration. 400 when there is none. The answer adds ``dataset`` as ``fit_dataset``'s."""
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        state = self.status.model_state(role_id, roi_id, recipe_id=recipe)
        self.check_appendable(state, role_id, roi_id, recipe)
        assert state is not None and state.active_version is not None
        stored = self.datasets.samples(self.datasets.folder(recipe, role_id, roi_id), "ok")
        fitted, held = self._samples_in_memory(state)
        digests = {sample.path: sha256_file(sample.path) for sample in stored}
        new = [sample for sample in stored if digests[sample.path] not in fitted | held]
        if not new:
            raise BadRequest(
                f"None of the {len(stored)} stored OK samples of ({role_id}, {roi_id}) in recipe '{recipe}' is new to "
                "the active memory (each was fitted, appended or held out for calibration before); upload new OK "
                "samples first, or fit from the dataset again (use_dataset=true without append)."
            )
        uploads = [Upload(sample.name, sample.path.read_bytes()) for sample in new]
        answer = self.append(role_id, roi_id, mm_per_px, uploads, memory_fit, context, recipe_id=recipe,
                             activate=activate)
        held_out = sum(digests[sample.path] in held for sample in stored)
        logger.info("append from the dataset recipe=%r role=%r roi=%r stored=%d appended=%d held_out=%d", recipe,
                    role_id, roi_id, len(stored), len(new), held_out)
        return {**answer, "dataset": {"fitted": len(new), "held_out": held_out, "holdout": None}}

    def _samples_in_memory(self, state: ModelState) -> tuple[set[str], set[str]]:
        """(sha256 of the images in the active memory, sha256 of the samples its fit held out), from the manifests
        of the active version and its ancestors: a dataset fit's provenance and every append's images."""
        folder = self.store.root / state.folder
        fitted: set[str] = set()
        held: set[str] = set()
        active = self.store.version_files(folder, state.active_version).manifest
        for number in [state.active_version, *(active.get("ancestors") or [])]:
            try:
                manifest = active if number == state.active_version else self.store.version_files(folder, number).manifest
            except (OSError, ValueError):  # an ancestor pruned: its appends are in the dataset provenance too
                continue
            dataset = manifest.get("dataset") or {}
            fitted.update(dataset.get("fit_sha256") or [])
            held.update(dataset.get("holdout_sha256") or [])
            fitted.update(image["sha256"] for image in (manifest.get("append") or {}).get("images") or [])
        return fitted, held - fitted
