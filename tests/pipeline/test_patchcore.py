"""Coreset selection (seeded k-center greedy) and the nearest-neighbour index with both backends."""

from __future__ import annotations

import importlib.util
import logging
import sys

import numpy as np
import pytest

from service.pipeline import patchcore
from service.pipeline.patchcore import (
    MemoryIndex,
    coreset_size,
    covering_radius_bound,
    k_center_coreset,
    select_coreset,
)

needs_faiss = pytest.mark.skipif(not patchcore.FAISS_AVAILABLE, reason="faiss is not installed")


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def covering_radius(rows: np.ndarray, picked: np.ndarray) -> float:
    """Largest distance from any row to its nearest picked row (what k-center greedy minimises)."""
    rows64 = rows.astype(np.float64)
    centres = rows64[picked]
    sq = (rows64**2).sum(1)[:, None] - 2 * rows64 @ centres.T + (centres**2).sum(1)[None, :]
    return float(np.sqrt(np.maximum(sq.min(axis=1), 0)).max())


def plain_greedy(rows: np.ndarray, size: int, first: int) -> np.ndarray:
    """Textbook k-center greedy in float64: every row's distance updated after every pick."""
    rows64 = rows.astype(np.float64)
    min_sq = np.full(len(rows), np.inf)
    picked = [first]
    for _ in range(size - 1):
        min_sq = np.minimum(min_sq, ((rows64 - rows64[picked[-1]]) ** 2).sum(1))
        min_sq[picked] = -np.inf
        picked.append(int(np.argmax(min_sq)))
    return np.array(picked)


@pytest.mark.parametrize(
    ("n", "rate", "expected"),
    [(100, 0.02, 2), (20480, 0.02, 410), (20480, 0.1, 2048), (10, 1.0, 10), (10, 2.0, 10), (1, 1e-6, 1), (7, 0.0, 1)],
)
def test_coreset_size(n: int, rate: float, expected: int) -> None:
    assert coreset_size(n, rate) == expected


def test_same_seed_same_picks_other_seed_other_picks() -> None:
    rows = unit_rows(3000, 256, seed=1)
    first = select_coreset(rows, 60, seed=0)
    assert first.dtype == np.int64 and len(first) == 60 and len(set(first.tolist())) == 60
    np.testing.assert_array_equal(select_coreset(rows, 60, seed=0), first)
    assert not np.array_equal(select_coreset(rows, 60, seed=1), first)


def test_size_at_least_n_keeps_every_row() -> None:
    rows = unit_rows(50, 16, seed=2)
    np.testing.assert_array_equal(select_coreset(rows, 50), np.arange(50))
    np.testing.assert_array_equal(select_coreset(rows, 80), np.arange(50))


@pytest.mark.parametrize("projection_dim", [128, None])
def test_one_pick_per_well_separated_cluster(projection_dim: int | None) -> None:
    rng = np.random.default_rng(3)
    k, per_cluster, dim = 7, 40, 384
    centres = rng.standard_normal((k, dim)) * 10
    labels = np.repeat(np.arange(k), per_cluster)
    rows = (centres[labels] + rng.standard_normal((k * per_cluster, dim)) * 0.05).astype(np.float32)
    picked = select_coreset(rows, k, seed=5, projection_dim=projection_dim)
    assert sorted(labels[picked].tolist()) == list(range(k))


def test_active_set_greedy_matches_plain_greedy() -> None:
    """Integer coordinates make every distance exact in float32, so even ties must match."""
    rows = np.random.default_rng(4).integers(0, 12, size=(4000, 6)).astype(np.float32)
    picked = select_coreset(rows, 400, seed=9, projection_dim=None)
    np.testing.assert_array_equal(picked, plain_greedy(rows, 400, int(picked[0])))


def test_projection_covers_nearly_as_well_as_exact_greedy() -> None:
    # Patch-like rows: clusters of different spread on the unit sphere.
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((60, 768))
    labels = rng.integers(0, 60, size=6000)
    spread = rng.uniform(0.2, 1.0, size=60)[labels, None]
    rows = (centres[labels] + spread * rng.standard_normal((6000, 768))).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    exact = covering_radius(rows, select_coreset(rows, 120, seed=0, projection_dim=None))
    projected = covering_radius(rows, select_coreset(rows, 120, seed=0, projection_dim=128))
    assert projected / exact < 1.05  # measured 1.020 here


def test_float64_input_gives_the_float32_picks() -> None:
    rows = unit_rows(1500, 200, seed=7)
    np.testing.assert_array_equal(select_coreset(rows.astype(np.float64), 40), select_coreset(rows, 40))


def test_progress_is_reported_sparsely_and_ends_at_total() -> None:
    calls: list[tuple[int, int]] = []
    select_coreset(unit_rows(3000, 64, seed=8), 600, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (600, 600)
    assert 2 <= len(calls) <= 5


def patch_like_rows(n: int, dim: int, seed: int, n_centres: int = 40) -> np.ndarray:
    """Clusters of different spread on the unit sphere, like patch embeddings."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(100).standard_normal((n_centres, dim))  # shared by every seed
    labels = rng.integers(0, n_centres, size=n)
    spread = np.random.default_rng(101).uniform(0.2, 1.0, size=n_centres)[labels, None]
    rows = (centres[labels] + spread * rng.standard_normal((n, dim))).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_radius_is_the_covering_radius_of_the_picks() -> None:
    rows = np.random.default_rng(4).integers(0, 12, size=(3000, 6)).astype(np.float32)
    selection = k_center_coreset(rows, 200, seed=9, projection_dim=None)
    assert selection.candidates == 3000
    np.testing.assert_array_equal(selection.indices, select_coreset(rows, 200, seed=9, projection_dim=None))
    assert selection.radius == pytest.approx(covering_radius(rows, selection.indices), rel=1e-5)
    assert k_center_coreset(rows, 3000).radius == 0.0  # every row kept


def test_projected_radius_is_measured_in_the_projection() -> None:
    rows = patch_like_rows(4000, 384, seed=1)
    selection = k_center_coreset(rows, 100, seed=0)
    projection = np.random.default_rng(0).standard_normal((384, 128), dtype=np.float32) / np.float32(np.sqrt(128))
    assert selection.radius == pytest.approx(covering_radius(rows @ projection, selection.indices), rel=1e-4)


def plain_greedy_from(rows: np.ndarray, centres: np.ndarray, radius: float, size: int) -> np.ndarray:
    """Textbook greedy in float64 with ``centres`` already chosen, over the rows farther than ``radius``,
    stopping after ``size`` picks or once every row is within ``radius``."""
    rows64, centres64 = rows.astype(np.float64), centres.astype(np.float64)
    min_sq = ((rows64[:, None, :] - centres64[None, :, :]) ** 2).sum(-1).min(axis=1)
    min_sq[min_sq <= radius**2] = -np.inf
    picked: list[int] = []
    while len(picked) < size and min_sq.max() > radius**2:
        picked.append(int(np.argmax(min_sq)))
        min_sq = np.minimum(min_sq, ((rows64 - rows64[picked[-1]]) ** 2).sum(1))
        min_sq[picked] = -np.inf
    return np.array(picked, dtype=np.int64)


def test_greedy_from_centres_matches_the_plain_greedy_and_stops_at_the_radius() -> None:
    """Integer coordinates: exact float32 distances, so every pick and the stop must match."""
    grid = np.random.default_rng(5).integers(0, 12, size=(2000, 4)).astype(np.float32)
    memory = grid[k_center_coreset(grid[grid[:, 0] < 6], 60, projection_dim=None).indices]  # covers half
    radius = 2.5
    new = np.random.default_rng(6).integers(0, 12, size=(1500, 4)).astype(np.float32)
    far = radius_over(new[:, None], memory, axis=1) > radius
    assert 0 < far.sum() < len(new)
    for size in (5, 400):
        selection = k_center_coreset(new, size, projection_dim=None, centres=memory, radius=radius)
        np.testing.assert_array_equal(selection.indices, plain_greedy_from(new, memory, radius, size))
        assert selection.candidates == int(far.sum()) and far[selection.indices].all()
        grown = np.concatenate([memory, new[selection.indices]])
        reached = float(radius_over(new[:, None], grown, axis=1).max())
        if size == 5:  # the budget ran out before every new row was within the radius
            assert len(selection.indices) == 5 and selection.radius == pytest.approx(reached) and reached > radius
        else:  # stopped early, under budget: every new row is within the radius
            assert len(selection.indices) < 400 and selection.radius == radius and reached <= radius


def radius_over(rows: np.ndarray, centres: np.ndarray, axis: int) -> np.ndarray:
    """Each row's distance to its nearest centre (rows shaped (n, 1, dim))."""
    return np.sqrt(((rows.astype(np.float64) - centres.astype(np.float64)) ** 2).sum(-1).min(axis=axis))


def test_rows_a_memory_covers_add_nothing_and_new_ones_are_picked() -> None:
    """Appending the fit's own patches admits none of them (same seed, same projection); patches of a cluster
    the memory never saw are admitted and covered."""
    fitted_rows = patch_like_rows(3000, 256, seed=2, n_centres=30)
    fit = k_center_coreset(fitted_rows, 120, seed=0)
    memory = fitted_rows[fit.indices]
    again = k_center_coreset(fitted_rows, 120, seed=0, centres=memory, radius=fit.radius)
    assert again.candidates == 0 and len(again.indices) == 0 and again.radius == fit.radius
    novel = unit_rows(200, 256, seed=3)  # far from every cluster of the fit
    grown = k_center_coreset(np.concatenate([fitted_rows[:500], novel]), 60, seed=0, centres=memory,
                             radius=fit.radius)
    assert grown.candidates == 200 and len(grown.indices) == 60
    assert (grown.indices >= 500).all()  # only the novel rows: the fit's own are covered already


def test_radius_bound_from_the_memory_alone_is_close_above_the_recorded_radius() -> None:
    rows = patch_like_rows(6000, 384, seed=7)
    for size in (60, 240):
        fit = k_center_coreset(rows, size, seed=0)
        bound = covering_radius_bound(rows[fit.indices], seed=0)
        assert fit.radius * (1 - 1e-4) <= bound <= 1.1 * fit.radius  # measured 1.0002 and 1.00005 here
    assert covering_radius_bound(rows[:1]) == 0.0


def test_centres_of_another_width_are_refused() -> None:
    with pytest.raises(ValueError, match="centres"):
        k_center_coreset(unit_rows(10, 8, seed=0), 2, centres=unit_rows(4, 6, seed=1))


def test_select_coreset_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        select_coreset(np.zeros(10, dtype=np.float32), 2)
    with pytest.raises(ValueError):
        select_coreset(unit_rows(10, 4, seed=0), 0)


# ---- index ---------------------------------------------------------------------------------------


def brute_distances(memory: np.ndarray, queries: np.ndarray) -> np.ndarray:
    diff = queries.astype(np.float64)[:, None, :] - memory.astype(np.float64)[None, :, :]
    return np.sqrt((diff**2).sum(-1).min(axis=1))


@pytest.fixture
def memory() -> np.ndarray:
    return unit_rows(400, 64, seed=10)


@pytest.fixture
def queries(memory: np.ndarray) -> np.ndarray:
    # half exact memory rows (distance 0, must not turn NaN), half new rows
    return np.concatenate([memory[:50], unit_rows(150, 64, seed=11)])


@pytest.mark.parametrize("backend", [pytest.param("faiss", marks=needs_faiss), "sklearn"])
def test_backend_distances_are_exact(backend: str, memory: np.ndarray, queries: np.ndarray) -> None:
    index = MemoryIndex.build(memory, backend=backend)
    distances = index.nearest_distances(queries)
    assert distances.dtype == np.float32 and distances.shape == (200,)
    assert np.isfinite(distances).all() and (distances >= 0).all()
    np.testing.assert_allclose(distances, brute_distances(memory, queries), rtol=1e-4, atol=2e-3)
    assert distances[:50].max() < 2e-3


@needs_faiss
def test_faiss_and_sklearn_agree(memory: np.ndarray, queries: np.ndarray) -> None:
    faiss_d = MemoryIndex.build(memory, backend="faiss").nearest_distances(queries)
    sklearn_d = MemoryIndex.build(memory, backend="sklearn").nearest_distances(queries)
    np.testing.assert_allclose(faiss_d, sklearn_d, rtol=1e-4, atol=2e-3)


@needs_faiss
def test_serialise_and_restore(memory: np.ndarray, queries: np.ndarray) -> None:
    built = MemoryIndex.build(memory, backend="faiss")
    data = built.to_bytes()
    assert isinstance(data, bytes) and data
    restored = MemoryIndex.from_bytes(data, memory)
    assert restored.backend == "faiss"
    np.testing.assert_array_equal(restored.nearest_distances(queries), built.nearest_distances(queries))
    # the sklearn backend has no file, and reads the memory instead of a faiss file
    assert MemoryIndex.build(memory, backend="sklearn").to_bytes() is None
    via_sklearn = MemoryIndex.from_bytes(data, memory, backend="sklearn")
    assert via_sklearn.backend == "sklearn"
    np.testing.assert_allclose(via_sklearn.nearest_distances(queries), built.nearest_distances(queries), atol=2e-3)
    assert MemoryIndex.from_bytes(None, memory).backend == "faiss"


@needs_faiss
@pytest.mark.parametrize("stale", ["fewer_rows", "other_dim", "other_rows", "garbage", "empty"])
def test_stale_index_file_is_rebuilt_from_memory(
    stale: str, memory: np.ndarray, queries: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    data = {
        "fewer_rows": MemoryIndex.build(memory[:-1]).to_bytes(),
        "other_dim": MemoryIndex.build(unit_rows(400, 32, seed=12)).to_bytes(),
        "other_rows": MemoryIndex.build(unit_rows(400, 64, seed=13)).to_bytes(),
        "garbage": b"not a faiss index at all",
        "empty": b"",
    }[stale]
    with caplog.at_level(logging.WARNING, logger="service.pipeline.patchcore"):
        index = MemoryIndex.from_bytes(data, memory)
    assert "rebuilding" in caplog.text
    np.testing.assert_allclose(index.nearest_distances(queries), brute_distances(memory, queries), atol=2e-3)


def test_fallback_when_faiss_flag_is_off(
    monkeypatch: pytest.MonkeyPatch, memory: np.ndarray, queries: np.ndarray
) -> None:
    monkeypatch.setattr(patchcore, "FAISS_AVAILABLE", False)
    index = MemoryIndex.build(memory)
    assert index.backend == "sklearn" and index.to_bytes() is None
    assert MemoryIndex.from_bytes(b"an index.faiss written elsewhere", memory).backend == "sklearn"
    np.testing.assert_allclose(index.nearest_distances(queries), brute_distances(memory, queries), atol=2e-3)
    with pytest.raises(RuntimeError, match="faiss"):
        MemoryIndex.build(memory, backend="faiss")


def test_module_works_when_faiss_import_fails(
    monkeypatch: pytest.MonkeyPatch, memory: np.ndarray, queries: np.ndarray
) -> None:
    """A separate copy of the module, imported while ``import faiss`` raises ImportError."""
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes ``import faiss`` raise ImportError
    spec = importlib.util.spec_from_file_location("patchcore_without_faiss", patchcore.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.FAISS_AVAILABLE is False
    index = module.MemoryIndex.from_bytes(None, memory)
    assert index.backend == "sklearn"
    np.testing.assert_allclose(index.nearest_distances(queries), brute_distances(memory, queries), atol=2e-3)


def test_index_rejects_bad_shapes(memory: np.ndarray) -> None:
    with pytest.raises(ValueError):
        MemoryIndex.build(np.zeros((0, 8), dtype=np.float32))
    with pytest.raises(ValueError):
        MemoryIndex.build(memory, backend="annoy")
    with pytest.raises(ValueError):
        MemoryIndex.build(memory, backend="sklearn").nearest_distances(np.zeros((3, 8), dtype=np.float32))
