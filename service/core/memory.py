"""The memory banks the parts share: loaded once per process and version, kept in a small LRU cache."""

from __future__ import annotations

import collections
import logging
import threading
from pathlib import Path
from typing import Any

from ..errors import Conflict, NotFitted, NotFound
from ..metrics import Metrics
from ..pipeline import FeatureExtractor, MemoryIndex
from ..storage import ModelState, ModelStore, Registry
from ..storage.reading import LoadedMemory
from ..validation import DEFAULT_RECIPE
from .request import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)


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


class ActiveMemories:
    """The active memory of a model as a searchable index: from the cache, else loaded from its version."""

    def __init__(
        self, cache: MemoryCache, store: ModelStore, registry: Registry, extractor: FeatureExtractor, metrics: Metrics
    ) -> None:
        self.cache = cache
        self.store = store
        self.registry = registry
        self.extractor = extractor
        self.metrics = metrics

    @staticmethod
    def key(state: ModelState) -> tuple[Any, ...]:
        assert state.active is not None
        return (state.recipe_id, state.model_id, state.active_version, state.active.memory_sha256)

    def keep(self, state: ModelState, index: MemoryIndex) -> None:
        """Cache the index a fit or append just built for the version now active."""
        self.cache.put(self.key(state), index)

    def of_version(self, state: ModelState, version: int) -> MemoryIndex:
        """The memory of any kept ``version`` of the model (staged, retired or active), cached like the active
        one; 404 when the model has no such version on disk."""
        if version == state.active_version and state.active is not None:
            return self.index(state)
        try:
            manifest = self.store.version_files(self.store.root / state.folder, version).manifest
        except (OSError, ValueError):
            raise unknown_version(state, version) from None
        key = (state.recipe_id, state.model_id, version, manifest.get("memory_sha256"))
        index = self._cached(key)
        if index is not None:
            return index
        try:
            loaded = self.store.load_memory(self.store.root / state.folder, version)
        except (OSError, ValueError):  # pruned or removed since the manifest was read
            raise unknown_version(state, version) from None
        return self._indexed(key, state, version, loaded)

    def index(self, state: ModelState) -> MemoryIndex:
        key = self.key(state)
        index = self._cached(key)
        if index is not None:
            return index
        folder = self.store.root / state.folder
        try:
            loaded = self.store.load_memory(folder, state.active_version)
        except FileNotFoundError:
            # Pruned or removed by another process since the registry was read: re-index, re-ask.
            if self.registry.resync(self.store, folder) is None:
                raise NotFitted(state.role_id, state.roi_id, state.recipe_id) from None
            fresh = self.registry.state(state.role_id, state.roi_id, recipe_id=state.recipe_id)
            if fresh is None or fresh.active is None:
                raise NotFitted(state.role_id, state.roi_id, state.recipe_id) from None
            if self.key(fresh) == key:  # the folder still names this version: its file is gone, not replaced
                raise memory_file_missing(state, self.store.version_files(folder, state.active_version).memory_path)
            return self.index(fresh)
        assert state.active_version is not None
        return self._indexed(key, state, state.active_version, loaded)

    def _cached(self, key: tuple[Any, ...]) -> MemoryIndex | None:
        index = self.cache.get(key)
        if index is not None:
            self.metrics.cache_hits.inc()
        else:
            self.metrics.cache_misses.inc()
        return index

    def _indexed(self, key: tuple[Any, ...], state: ModelState, version: int, loaded: LoadedMemory) -> MemoryIndex:
        """The searchable index of a memory just loaded from ``version``'s files, cached under ``key``."""
        built_with = (loaded.metadata.get("extractor") or {}).get("weights_sha256")
        if built_with and built_with != self.extractor.fingerprint["weights_sha256"]:
            logger.warning(
                "The memory of recipe=%r role=%r roi=%r (version %d) was built with other backbone weights than the "
                "ones loaded now (%s); its scores are not comparable: refit it, or serve with the weights it was "
                "built with.",
                state.recipe_id, state.role_id, state.roi_id, version, self.extractor.weights_source,
            )
        if loaded.index_bytes is not None:
            index = MemoryIndex.from_bytes(loaded.index_bytes, loaded.embeddings)
        else:
            index = MemoryIndex.build(loaded.embeddings)
        self.cache.put(key, index)
        return index


def memory_file_missing(state: ModelState, path: Path) -> Conflict:
    """409: the registry and the version's manifest name a memory whose file is no longer on disk."""
    where = f" of recipe {state.recipe_id!r}" if state.recipe_id != DEFAULT_RECIPE else ""
    return Conflict(
        f"Version {state.active_version} of role_id={state.role_id!r}, roi_id={state.roi_id!r}{where} can't be "
        f"used: its memory.npz is missing ({path}). Run `bdi models verify` to see what else is damaged, then "
        "`bdi models rollback` to a version whose files are whole or refit the ROI; `bdi models reindex` makes "
        "the registry say what the folder holds."
    )


def unknown_version(state: ModelState, version: int) -> NotFound:
    """404: the model keeps no such version (never fitted, pruned, or another model's number)."""
    where = f" of recipe {state.recipe_id!r}" if state.recipe_id != DEFAULT_RECIPE else ""
    return NotFound(
        f"role_id={state.role_id!r}, roi_id={state.roi_id!r}{where} has no version {version}; "
        "GET /models/versions (or `bdi models versions`) lists the versions it keeps."
    )
