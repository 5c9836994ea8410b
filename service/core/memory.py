"""The memory banks the parts share: loaded once per process and version, kept in a small LRU cache."""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

from ..errors import NotFitted
from ..metrics import Metrics
from ..pipeline import FeatureExtractor, MemoryIndex
from ..storage import ModelState, ModelStore, Registry
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

    def index(self, state: ModelState) -> MemoryIndex:
        key = self.key(state)
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
            if fresh is None or fresh.active is None or self.key(fresh) == key:
                raise NotFitted(state.role_id, state.roi_id, state.recipe_id) from None
            return self.index(fresh)
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
