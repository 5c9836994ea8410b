"""PatchCore memory: k-center greedy coreset selection and the nearest-neighbour index over it.

The coreset keeps the rows that cover the patch set best (each pick is the row farthest from every
row picked so far), so a small memory still answers "how far is this patch from anything normal".
The index answers that question for all patches of an image in one search call.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable
from typing import NamedTuple

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
_RADIUS_SLACK = 1 + 1e-5  # "within the radius" allows float32 rounding: a radius and a distance measured apart


def coreset_size(n: int, rate: float) -> int:
    """``max(1, ceil(n * rate))``, capped at ``n``: the contract's ``coreset_size`` for ``n`` patches."""
    return min(n, max(1, math.ceil(n * rate)))


PROJECTION_DIM = 128
"""Dimensions of the seeded random projection the greedy measures distances on (PatchCore's d')."""


class Coreset(NamedTuple):
    """A k-center greedy selection and how well it covers the rows it was chosen from."""

    indices: np.ndarray
    """int64 rows picked, in pick order."""
    radius: float
    """Covering radius in the greedy's metric: the largest distance from a row to its nearest centre (a pick or
    one of the given ``centres``); 0 when every row was kept."""
    candidates: int
    """Rows that could be picked: all of them, or with ``centres`` those farther than ``radius`` from every one."""


def select_coreset(
    embeddings: np.ndarray,
    size: int,
    seed: int = 0,
    projection_dim: int | None = PROJECTION_DIM,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Indices (int64, in pick order) of ``size`` rows chosen by seeded k-center greedy (``k_center_coreset``)."""
    return k_center_coreset(embeddings, size, seed, projection_dim, progress).indices


def k_center_coreset(
    embeddings: np.ndarray,
    size: int,
    seed: int = 0,
    projection_dim: int | None = PROJECTION_DIM,
    progress: Callable[[int, int], None] | None = None,
    centres: np.ndarray | None = None,
    radius: float = 0.0,
) -> Coreset:
    """``size`` rows chosen by seeded k-center greedy, with the covering radius they reach.

    Distances are measured on a seeded Gaussian random projection to ``projection_dim`` dimensions
    (the PatchCore paper's speed-up) unless the rows are already that short or ``projection_dim`` is
    None; the indices always refer to the full rows. Same rows and seed give the same indices, and the
    same seed gives the same projection, so radii of selections with one seed are comparable.

    ``centres`` (rows already in a memory, an append) count as picked before the first pick: only rows
    farther than ``radius`` (the memory's own covering radius) from every centre are candidates, the
    first pick is the farthest of them, and picking stops when ``size`` are picked or every row is
    within ``radius`` (more picks would cover the new rows more densely than the memory covers its own:
    a refit spends them evenly). The radius returned covers every row, those left out included.
    ``progress(done, total)`` is called every few hundred picks and once at the end.
    """
    rows = np.asarray(embeddings)
    if rows.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, dim), got shape {rows.shape}")
    n, dim = rows.shape
    if size < 1:
        raise ValueError(f"coreset size must be >= 1, got {size}")
    rng = np.random.default_rng(seed)
    matrix = _projection(dim, projection_dim, rng)  # drawn first: a seed always gives the same projection
    if centres is None:
        if size >= n:
            return _keep_all(np.arange(n, dtype=np.int64), 0.0, progress)
        points = _project(rows, matrix)
        picks, reached = _k_center_greedy(points, size, int(rng.integers(n)), progress)
        return Coreset(picks, reached, n)
    centres = np.asarray(centres)
    if centres.ndim != 2 or centres.shape[1] != dim or len(centres) == 0:
        raise ValueError(f"centres must be a non-empty (m, {dim}) array, got shape {centres.shape}")
    points = _project(rows, matrix)
    centre_points = _project(centres, matrix)
    min_sq = np.full(n, np.inf, dtype=np.float32)
    _lower_min_sq(points, _sq_norms(points), min_sq, np.arange(n), centre_points, _sq_norms(centre_points))
    cover = radius * math.sqrt(_RADIUS_SLACK)
    candidates = np.flatnonzero(min_sq > np.float32(cover) ** 2)
    if size >= len(candidates):
        return _keep_all(candidates.astype(np.int64), float(radius), progress)
    picks, reached = _k_center_greedy(
        np.ascontiguousarray(points[candidates]), size, int(np.argmax(min_sq[candidates])), progress,
        min_sq[candidates], stop_at=cover,
    )
    return Coreset(candidates[picks], max(float(radius), reached), len(candidates))


def covering_radius_bound(memory: np.ndarray, seed: int = 0, projection_dim: int | None = PROJECTION_DIM) -> float:
    """An upper bound of the covering radius of a memory that k-center greedy chose, from its rows alone.

    Each greedy pick lies at least as far from the rows picked before it as the final covering radius
    (the farthest distance only shrinks from pick to pick), so the smallest distance between two rows of
    the memory, in the greedy's metric (same seed, same projection), is at least that radius; it is close
    to it, since the last pick lay at about that distance. For a memory chosen otherwise (an earlier
    backend) it is an estimate of the same scale. A single row gives no distance: 0.
    """
    rows = np.asarray(memory)
    if rows.ndim != 2 or len(rows) < 2:
        return 0.0
    points = _project(rows, _projection(rows.shape[1], projection_dim, np.random.default_rng(seed)))
    sq_norms = _sq_norms(points)
    n = len(points)
    smallest = np.inf
    step = max(1, _RELEVEL_CHUNK_ELEMENTS // max(n, points.shape[1]))
    for start in range(0, n, step):
        stop = min(n, start + step)
        sq = points[start:stop] @ points.T
        sq *= -2
        sq += sq_norms[start:stop, None]
        sq += sq_norms
        sq[np.arange(stop - start), np.arange(start, stop)] = np.inf  # a row's distance to itself
        smallest = min(smallest, float(sq.min()))
    return math.sqrt(max(smallest, 0.0))


def _keep_all(indices: np.ndarray, radius: float, progress: Callable[[int, int], None] | None) -> Coreset:
    if progress is not None:
        progress(len(indices), len(indices))
    return Coreset(indices, radius, len(indices))


def _projection(dim: int, projection_dim: int | None, rng: np.random.Generator) -> np.ndarray | None:
    """The seeded (dim, projection_dim) Gaussian matrix, or None when the rows are measured as they are."""
    if projection_dim is None or dim <= projection_dim:
        return None
    matrix = rng.standard_normal((dim, projection_dim), dtype=np.float32)
    matrix /= np.float32(math.sqrt(projection_dim))  # keeps expected distances (Johnson-Lindenstrauss)
    return matrix


def _project(rows: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    """float32 rows the greedy measures distances on: the rows themselves or their projection.

    The projection is computed in chunks so a float64 input never gets a full float32 copy.
    """
    if matrix is None:
        return np.ascontiguousarray(rows, dtype=np.float32)
    projected = np.empty((len(rows), matrix.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), _PROJECTION_CHUNK_ROWS):
        chunk = rows[start : start + _PROJECTION_CHUNK_ROWS]
        np.matmul(chunk.astype(np.float32, copy=False), matrix, out=projected[start : start + len(chunk)])
    return projected


def _sq_norms(points: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", points, points)


def _k_center_greedy(
    points: np.ndarray,
    size: int,
    first: int,
    progress: Callable[[int, int], None] | None,
    min_sq: np.ndarray | None = None,
    stop_at: float | None = None,
) -> tuple[np.ndarray, float]:
    """Greedy farthest-point picks over ``points`` (float32, C-contiguous), starting at ``first``, and the
    covering radius they reach.

    ``min_sq`` holds each row's squared distance to its nearest pick (picked rows: -inf, so no row
    is picked twice); given, it starts from the distances to centres chosen before. With ``stop_at``,
    picking stops early once the farthest row is within it. Only the "active" rows, those at least
    ``level`` away, are updated after each pick: the others can't be the farthest while some active
    row is at or above ``level``, because distances only shrink. When every active row has dropped
    below ``level``, the picks they missed are applied to the other rows in one matrix product and the
    active set is chosen again. The picks are the plain greedy's (up to float rounding; ties go to the
    lowest row index in both) at a fraction of its memory traffic: the active rows stay in cache. At
    the end the missed picks are applied once more, so the radius costs one re-level.
    """
    n = len(points)
    sq_norms = _sq_norms(points)
    min_sq = np.full(n, np.inf, dtype=np.float32) if min_sq is None else np.array(min_sq, dtype=np.float32)
    selected = np.empty(size, dtype=np.int64)
    selected[0] = first
    active = np.arange(n)
    active_points, active_sq, active_min = points, sq_norms, min_sq  # views of everything at first
    level = np.inf  # forces the first active set to be chosen right after the first pick
    synced = 0  # picks [0, synced) have been applied to every row
    distances = np.empty(n, dtype=np.float32)
    position = first  # where the latest pick sits in the active arrays
    stop_sq = -np.inf if stop_at is None else np.float32(stop_at) ** 2
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
        if active_min[position] <= stop_sq:  # the farthest row is covered as well as asked: stop early
            selected = selected[:k]
            break
        selected[k] = active[position]
        if progress is not None and k % _PROGRESS_EVERY == 0:
            progress(k, size)
    min_sq[active] = active_min
    _apply_picks(points, sq_norms, min_sq, np.setdiff1d(np.arange(n), active), selected[synced:])
    _apply_picks(points, sq_norms, min_sq, active, selected[-1:])
    if progress is not None:
        progress(size, size)
    return selected, math.sqrt(max(float(min_sq.max()), 0.0))


def _apply_picks(
    points: np.ndarray, sq_norms: np.ndarray, min_sq: np.ndarray, rows: np.ndarray, picks: np.ndarray
) -> None:
    """Lower ``min_sq[rows]`` by the squared distances to ``picks``."""
    _lower_min_sq(points, sq_norms, min_sq, rows, points[picks], sq_norms[picks])


def _lower_min_sq(
    points: np.ndarray, sq_norms: np.ndarray, min_sq: np.ndarray, rows: np.ndarray, centres: np.ndarray,
    centre_sq: np.ndarray,
) -> None:
    """Lower ``min_sq[rows]`` by the squared distances to ``centres``, in row chunks (bounded memory)."""
    if len(rows) == 0 or len(centres) == 0:
        return
    step = max(1, _RELEVEL_CHUNK_ELEMENTS // max(len(centres), points.shape[1]))
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


FLAT_INDEX_HEADER = struct.Struct("<4siqqq?iQ")
"""How faiss writes an ``IndexFlatL2`` before its vectors: "IxF2", dim, rows, two unused counts, is_trained,
metric (1: L2), number of floats that follow."""


def flat_index_problem(data: bytes, rows: int, dim: int) -> str | None:
    """Why ``data`` is not a serialised ``IndexFlatL2`` of ``rows`` vectors of ``dim``, from its length and
    header alone; None when it is. Every ``index.faiss`` read from disk or a bundle passes this before
    ``faiss.deserialize_index``, which trusts the file's length fields: 45 bytes can claim gigabytes."""
    expected = FLAT_INDEX_HEADER.size + rows * dim * 4
    if len(data) != expected:
        return (f"its index.faiss holds {len(data)} bytes, a flat index of {rows} vectors of dim {dim} holds "
                f"{expected}")
    kind, d, ntotal, _, _, trained, metric, floats = FLAT_INDEX_HEADER.unpack_from(data)
    if kind != b"IxF2" or metric != 1 or not trained:
        return "its index.faiss is not a flat L2 index"
    if (d, ntotal, floats) != (dim, rows, rows * dim):
        return (f"its index.faiss says {ntotal} vectors of dim {d} ({floats} floats), the memory holds {rows} of "
                f"dim {dim}")
    return None


def _restore_flat_index(data: bytes, memory: np.ndarray):
    """The deserialised ``IndexFlatL2`` if it holds exactly ``memory``'s rows, else None."""
    if flat_index_problem(data, *memory.shape) is not None:
        return None
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError:
        return None
    if not isinstance(index, faiss.IndexFlatL2) or index.d != memory.shape[1] or index.ntotal != len(memory):
        return None
    if not np.array_equal(index.reconstruct_n(0, index.ntotal), memory):
        return None
    return index
