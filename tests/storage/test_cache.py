"""Memory banks are cached per process and keyed by the registry's version (issue: speed)."""

from __future__ import annotations

import logging

import pytest

from service.core import InspectionService, Upload
from service.pipeline import FeatureExtractor
from service.storage.artifacts import ModelStore
from tests.support import both_registries, fit, infer, make_settings, png_bytes, synthetic_roi

IMAGE = synthetic_roi(64, 48, 5)


@pytest.fixture
def loads(monkeypatch):
    """Counts the memory files read from disk."""
    calls: list[int] = []
    original = ModelStore.load_memory

    def counting(self, folder, version):
        calls.append(version)
        return original(self, folder, version)

    monkeypatch.setattr(ModelStore, "load_memory", counting)
    return calls


def test_second_infer_reads_nothing_from_disk(make_client, tmp_path, loads):
    fit(make_client(tmp_path / "models"), "R", "r", [synthetic_roi(64, 48, 1)])
    client = make_client(tmp_path / "models")  # a fresh process: nothing cached yet
    assert infer(client, "R", "r", IMAGE).status_code == 200
    assert infer(client, "R", "r", IMAGE).status_code == 200
    assert loads == [1]


@both_registries
def test_a_refit_by_another_worker_is_noticed_through_the_registry(tmp_path, extractor, loads, database_url):
    settings = make_settings(tmp_path / "models")
    worker_a, worker_b = InspectionService(settings, extractor), InspectionService(settings, extractor)
    for worker in (worker_a, worker_b):
        worker.start()
    try:
        worker_a.fit("R", "r", 0.2, [Upload("a.png", png_bytes(synthetic_roi(64, 48, 1)))])
        first = worker_b.infer("R", "r", 0.2, Upload("x.png", png_bytes(IMAGE)))["score"]
        worker_b.infer("R", "r", 0.2, Upload("x.png", png_bytes(IMAGE)))
        worker_a.fit("R", "r", 0.2, [Upload("b.png", png_bytes(synthetic_roi(64, 48, 9, defect=(30, 20, 8))))])
        second = worker_b.infer("R", "r", 0.2, Upload("x.png", png_bytes(IMAGE)))["score"]
        assert loads == [1, 2]  # worker B read each version once; A built both in memory
        assert second != pytest.approx(first)
    finally:
        worker_a.close()
        worker_b.close()


def test_the_cache_is_bounded(make_client, loads):
    client = make_client(BDI_CACHE_SIZE="2")
    for roi in ("a", "b", "c"):
        fit(client, "R", roi, [synthetic_roi(64, 48, 1)])
    service = client.app.state.service
    assert len(service.cache._items) == 2  # each fit primes the cache: 'a' was evicted by 'c'
    for roi in ("b", "c", "a", "c", "b"):  # hit, hit, miss (evicts b), hit, miss
        assert infer(client, "R", roi, IMAGE).status_code == 200
    assert len(service.cache._items) == 2
    assert loads == [1, 1]


def test_memory_built_with_other_weights_is_served_with_a_warning(tmp_path, extractor, caplog):
    other = FeatureExtractor(input_size=extractor.input_size, weights="random", device="cpu")
    settings = make_settings(tmp_path / "models")
    service = InspectionService(settings, extractor)
    service.start()
    service.fit("R", "r", 0.2, [Upload("a.png", png_bytes(synthetic_roi(64, 48, 1)))])
    service.close()
    object.__setattr__(other, "fingerprint", {**other.fingerprint, "weights_sha256": "0" * 64})
    serving = InspectionService(settings, other)
    serving.start()
    try:
        with caplog.at_level(logging.WARNING, logger="service.inspection"):
            serving.infer("R", "r", 0.2, Upload("x.png", png_bytes(IMAGE)))
        assert "other backbone weights" in caplog.text
    finally:
        serving.close()
