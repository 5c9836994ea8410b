"""PatchCore memory: k-center greedy coreset selection and the nearest-neighbour index over it.

The coreset keeps the rows that cover the patch set best (each pick is the row farthest from every
row picked so far), so a small memory still answers "how far is this patch from anything normal".
The index answers that question for all patches of an image in one search call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np

try:
    import faiss
except ImportError:  # the scikit-learn fallback serves instead; DESIGN.md, "Stack"
    faiss = None

FAISS_AVAILABLE = faiss is not None
"""Whether ``import faiss`` worked; ``backend="auto"`` uses faiss exactly when it did."""

log = logging.getLogger(__name__)

_PROJECTION_CHUNK_ROWS = 16384
_ACTIVE_FRACTION = 8  # the greedy scans the farthest 1/8 of the rows between two re-levels
_RELEVEL_CHUNK_ELEMENTS = 1 << 20  # rows x max(picks, dim) per block when re-levelling (4 MiB)
_PROGRESS_EVERY = 256


def coreset_size(n: int, rate: float) -> int:
    """``max(1, ceil(n * rate))``, capped at ``n``: the contract's ``coreset_size`` for ``n`` patches."""
    return min(n, max(1, math.ceil(n * rate)))


def select_coreset(
    embeddings: np.ndarray,
    size: int,
    seed: int = 0,
    projection_dim: int | None = 128,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Indices (int64, in pick order) of ``size`` rows chosen by seeded k-center greedy.

    Distances are measured on a seeded Gaussian random projection to ``projection_dim`` dimensions
    (the PatchCore paper's speed-up) unless the rows are already that short or ``projection_dim`` is
    None; the indices always refer to the full rows. Same rows and seed give the same indices.
    ``progress(done, total)`` is called every few hundred picks and once at the end.
    """
    rows = np.asarray(embeddings)
    if rows.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, dim), got shape {rows.shape}")
    n = rows.shape[0]
    if size < 1:
        raise ValueError(f"coreset size must be >= 1, got {size}")
    if size >= n:
        if progress is not None:
            progress(n, n)
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    points = _search_space(rows, projection_dim, rng)
    return _k_center_greedy(points, size, int(rng.integers(n)), progress)


def _search_space(rows: np.ndarray, projection_dim: int | None, rng: np.random.Generator) -> np.ndarray:
    """float32 rows the greedy measures distances on: the rows themselves or their projection.

    The projection is computed in chunks so a float64 input never gets a full float32 copy.
    """
    n, dim = rows.shape
    if projection_dim is None or dim <= projection_dim:
        return np.ascontiguousarray(rows, dtype=np.float32)
    matrix = rng.standard_normal((dim, projection_dim), dtype=np.float32)
    matrix /= np.float32(math.sqrt(projection_dim))  # keeps expected distances (Johnson-Lindenstrauss)
    projected = np.empty((n, projection_dim), dtype=np.float32)
    for start in range(0, n, _PROJECTION_CHUNK_ROWS):
        chunk = rows[start : start + _PROJECTION_CHUNK_ROWS]
        np.matmul(chunk.astype(np.float32, copy=False), matrix, out=projected[start : start + len(chunk)])
    return projected


def _k_center_greedy(
    points: np.ndarray, size: int, first: int, progress: Callable[[int, int], None] | None
) -> np.ndarray:
    """Greedy farthest-point picks over ``points`` (float32, C-contiguous), starting at ``first``.

    ``min_sq`` holds each row's squared distance to its nearest pick (picked rows: -inf, so no row
    is picked twice). Only the "active" rows, those at least ``level`` away, are updated after each
    pick: the others can't be the farthest while some active row is at or above ``level``, because
    distances only shrink. When every active row has dropped below ``level``, the picks they missed
    are applied to the other rows in one matrix product and the active set is chosen again. The
    picks are the plain greedy's (up to float rounding; ties go to the lowest row index in both) at
    a fraction of its memory traffic: the active rows stay in cache.
    """
    n = len(points)
    sq_norms = np.einsum("ij,ij->i", points, points)
    min_sq = np.full(n, np.inf, dtype=np.float32)
    selected = np.empty(size, dtype=np.int64)
    selected[0] = first
    active = np.arange(n)
    active_points, active_sq, active_min = points, sq_norms, min_sq  # views of everything at first
    level = np.inf  # forces the first active set to be chosen right after the first pick
    synced = 0  # picks [0, synced) have been applied to every row
    distances = np.empty(n, dtype=np.float32)
    position = first  # where the latest pick sits in the active arrays
    for k in range(1, size):
        pick = selected[k - 1]
        dist = distances[: len(active)]
        np.matmul(active_points, points[pick], out=dist)
        dist *= -2
        dist += active_sq
        dist += sq_norms[pick]
        np.minimum(active_min, dist, out=active_min)
        active_min[position] = -np.inf
        position = int(np.argmax(active_min))
        if active_min[position] < level:
            min_sq[active] = active_min
            _apply_picks(points, sq_norms, min_sq, np.setdiff1d(np.arange(n), active), selected[synced:k])
            synced = k
            level = _active_level(min_sq)
            active = np.flatnonzero(min_sq >= level)
            active_points, active_sq, active_min = points[active], sq_norms[active], min_sq[active]
            position = int(np.argmax(active_min))
        selected[k] = active[position]
        if progress is not None and k % _PROGRESS_EVERY == 0:
            progress(k, size)
    if progress is not None:
        progress(size, size)
    return selected


def _apply_picks(
    points: np.ndarray, sq_norms: np.ndarray, min_sq: np.ndarray, rows: np.ndarray, picks: np.ndarray
) -> None:
    """Lower ``min_sq[rows]`` by the squared distances to ``picks``, in row chunks (bounded memory)."""
    centres = points[picks]
    centre_sq = sq_norms[picks]
    step = max(1, _RELEVEL_CHUNK_ELEMENTS // max(len(picks), points.shape[1]))
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        sq = points[chunk] @ centres.T
        sq *= -2
        sq += sq_norms[chunk, None]
        sq += centre_sq
        min_sq[chunk] = np.minimum(min_sq[chunk], sq.min(axis=1))


def _active_level(min_sq: np.ndarray) -> float:
    """The squared distance that the farthest ``1/_ACTIVE_FRACTION`` of the rows reach."""
    keep = max(1, len(min_sq) // _ACTIVE_FRACTION)
    return float(np.partition(min_sq, len(min_sq) - keep)[len(min_sq) - keep])


class MemoryIndex:
    """Exact L2 nearest-neighbour search over a memory bank (M, D float32).

    Made by ``build`` (from the memory) or ``from_bytes`` (from ``index.faiss``). ``backend``:
    ``"faiss"`` (``IndexFlatL2``), ``"sklearn"`` (brute ``NearestNeighbors``) or ``"auto"`` (faiss
    when it can be imported). Both give the same distances.
    """

    def __init__(self, memory: np.ndarray, backend: str, index) -> None:
        self.memory = memory
        self.backend = backend
        self._index = index

    @classmethod
    def build(cls, memory: np.ndarray, backend: str = "auto") -> MemoryIndex:
        """An index over the rows of ``memory``."""
        memory = _as_memory(memory)
        backend = _resolve_backend(backend)
        if backend == "faiss":
            index = faiss.IndexFlatL2(memory.shape[1])
            index.add(memory)
        else:
            from sklearn.neighbors import NearestNeighbors

            index = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(memory)
        return cls(memory, backend, index)

    @classmethod
    def from_bytes(cls, data: bytes | None, memory: np.ndarray, backend: str = "auto") -> MemoryIndex:
        """Restore a serialised faiss index (``index.faiss``) if it holds exactly ``memory``.

        The file is only a cache of the memory: when it is missing, unreadable, of another kind or
        holds other vectors, the index is rebuilt from ``memory`` (logged), never trusted.
        """
        memory = _as_memory(memory)
        if data is not None and _resolve_backend(backend) == "faiss":
            restored = _restore_flat_index(data, memory)
            if restored is not None:
                return cls(memory, "faiss", restored)
            log.warning("index.faiss does not match memory.npz; rebuilding the index from the memory")
        return cls.build(memory, backend)

    def to_bytes(self) -> bytes | None:
        """The ``index.faiss`` file's bytes, or None for the scikit-learn backend (it has no file)."""
        if self.backend != "faiss":
            return None
        return faiss.serialize_index(self._index).tobytes()

    @property
    def dim(self) -> int:
        return self.memory.shape[1]

    def nearest_distances(self, queries: np.ndarray) -> np.ndarray:
        """Euclidean distance (Q,) float32 of each query row to its nearest memory row, one search."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (Q, {self.dim}), got shape {queries.shape}")
        if self.backend == "faiss":
            squared, _ = self._index.search(queries, 1)
            return np.sqrt(np.maximum(squared[:, 0], 0)).astype(np.float32)
        distances, _ = self._index.kneighbors(queries)  # already sqrt(max(squared, 0))
        return distances[:, 0].astype(np.float32)


def _as_memory(memory: np.ndarray) -> np.ndarray:
    memory = np.ascontiguousarray(memory, dtype=np.float32)
    if memory.ndim != 2 or len(memory) == 0:
        raise ValueError(f"memory must be a non-empty (M, D) array, got shape {memory.shape}")
    return memory


def _resolve_backend(backend: str) -> str:
    if backend == "auto":
        return "faiss" if FAISS_AVAILABLE else "sklearn"
    if backend == "sklearn":
        return backend
    if backend == "faiss":
        if not FAISS_AVAILABLE:
            raise RuntimeError("faiss is not importable; use backend='sklearn' or 'auto'")
        return backend
    raise ValueError(f"unknown index backend {backend!r}; use 'auto', 'faiss' or 'sklearn'")


def _restore_flat_index(data: bytes, memory: np.ndarray):
    """The deserialised ``IndexFlatL2`` if it holds exactly ``memory``'s rows, else None."""
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError:
        return None
    if not isinstance(index, faiss.IndexFlatL2) or index.d != memory.shape[1] or index.ntotal != len(memory):
        return None
    if not np.array_equal(index.reconstruct_n(0, index.ntotal), memory):
        return None
    return index
