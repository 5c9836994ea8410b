"""Files and registry: restarts, a lost registry, killed writes, version bounds, grid checks."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from service.pipeline import FeatureExtractor, patchcore
from service.storage.artifacts import ModelStore
from service.storage.files import ACTIVE_FILE, MEMORY_FILE
from tests.support import both_registries, fit, forget_registry, infer, synthetic_roi

ROLE, ROI = "Inspection", "Zona A/1"
OK = [synthetic_roi(90, 70, seed) for seed in range(3)]
PROBE = synthetic_roi(90, 70, seed=99, defect=(40, 30, 6))


def _score(client, image=PROBE) -> float:
    response = infer(client, ROLE, ROI, image)
    assert response.status_code == 200, response.text
    return response.json()["score"]


@both_registries
def test_restart_serves_the_same_scores_and_calibration(make_client, tmp_path):
    first = make_client()
    assert fit(first, ROLE, ROI, OK).status_code == 200
    first.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.1, 0.2], "ng_scores": [0.9]})
    before = infer(first, ROLE, ROI, PROBE).json()

    again = make_client(tmp_path / "models")
    after = infer(again, ROLE, ROI, PROBE).json()
    assert after["score"] == pytest.approx(before["score"], abs=1e-6)
    assert after["threshold"] == pytest.approx(before["threshold"])
    assert after["heatmap_png_base64"] == before["heatmap_png_base64"]


@both_registries
def test_lost_registry_is_rebuilt_from_the_files(make_client, tmp_path):
    first = make_client()
    fit(first, ROLE, ROI, OK)
    fit(first, ROLE, ROI, OK[:2])
    first.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.3]})
    first.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.4]})
    score = _score(first)
    first.app.state.service.close()
    forget_registry(tmp_path / "models")

    rebuilt = make_client(tmp_path / "models")
    state = rebuilt.get("/state", params={"role_id": ROLE, "roi_id": ROI}).json()
    assert state["version"] == 2 and state["calib_present"] is True
    versions, calibrations = rebuilt.app.state.service.registry.history(ROLE, ROI)
    assert [v.version for v in versions] == [2, 1]
    assert [c.values["threshold"] for c in calibrations] == [pytest.approx(0.4), pytest.approx(0.3)]
    assert _score(rebuilt) == pytest.approx(score, abs=1e-6)


def test_folder_copied_in_by_hand_is_imported_on_first_use(make_client, tmp_path):
    source = make_client(tmp_path / "a")
    fit(source, ROLE, ROI, OK)
    score = _score(source)
    target = make_client(tmp_path / "b")
    import shutil

    for entry in (tmp_path / "a").iterdir():
        if entry.is_dir():
            shutil.copytree(entry, tmp_path / "b" / entry.name)
    assert target.get("/state", params={"role_id": ROLE, "roi_id": ROI}).json()["fitted"] is True
    assert _score(target) == pytest.approx(score, abs=1e-6)


def test_killed_writes_leave_the_previous_version_active_and_are_cleaned(make_client, tmp_path):
    client = make_client()
    fit(client, ROLE, ROI, OK)
    score = _score(client)
    store: ModelStore = client.app.state.service.store
    folder = store.model_dir(ROLE, ROI)
    # What a SIGKILL at each step of a second fit leaves behind:
    half_version = folder / "versions" / ".tmp-deadbeef"
    half_version.mkdir()
    (half_version / MEMORY_FILE).write_bytes(b"half a file")
    (folder / ".tmp-cafe-active.json").write_text('{"version": 7')
    (folder / ".tmp-0123-memory.npz").write_bytes(b"partial link")
    # ... and a canonical file replaced by junk (e.g. killed between pointer switch and refresh).
    (folder / MEMORY_FILE).unlink()
    (folder / MEMORY_FILE).write_bytes(b"junk")

    restarted = make_client(tmp_path / "models")
    assert not list((tmp_path / "models").rglob(".tmp-*"))
    assert json.loads((folder / ACTIVE_FILE).read_text())["version"] == 1
    with np.load(folder / MEMORY_FILE) as data:
        assert data["emb"].shape[1] == 1152
    assert _score(restarted) == pytest.approx(score, abs=1e-6)


@both_registries
def test_versions_are_bounded_and_the_active_one_is_kept(make_client):
    client = make_client(BDI_KEEP_VERSIONS="3")
    for seed in range(5):
        assert fit(client, ROLE, ROI, [synthetic_roi(40, 40, seed)]).status_code == 200
    folder = client.app.state.service.store.model_dir(ROLE, ROI)
    assert sorted(p.name for p in (folder / "versions").iterdir()) == ["000003", "000004", "000005"]
    versions, _ = client.app.state.service.registry.history(ROLE, ROI)
    assert [v.version for v in versions] == [5, 4, 3]
    assert client.get("/state", params={"role_id": ROLE, "roi_id": ROI}).json()["version"] == 5


@both_registries
def test_concurrent_fits_and_infers_on_one_roi(make_client):
    client = make_client()
    fit(client, ROLE, ROI, OK)
    errors: list[str] = []

    def infer_loop() -> None:
        for _ in range(4):
            response = infer(client, ROLE, ROI, PROBE)
            if response.status_code != 200:
                errors.append(response.text)

    def fit_once(seed: int) -> None:
        response = fit(client, ROLE, ROI, [synthetic_roi(90, 70, seed)])
        if response.status_code != 200:
            errors.append(response.text)

    threads = [threading.Thread(target=infer_loop) for _ in range(3)]
    threads += [threading.Thread(target=fit_once, args=(seed,)) for seed in (10, 11)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    versions, _ = client.app.state.service.registry.history(ROLE, ROI)
    assert [v.version for v in versions] == [3, 2, 1]
    assert client.get("/state", params={"role_id": ROLE, "roi_id": ROI}).json()["version"] == 3


def test_sklearn_fallback_gives_the_faiss_scores(make_client, tmp_path, monkeypatch):
    with_faiss = make_client(tmp_path / "faiss")
    fit(with_faiss, ROLE, ROI, OK)
    expected = _score(with_faiss)
    monkeypatch.setattr(patchcore, "FAISS_AVAILABLE", False)
    without = make_client(tmp_path / "sklearn")
    fit(without, ROLE, ROI, OK)
    folder = without.app.state.service.store.model_dir(ROLE, ROI)
    assert not (folder / "index.faiss").exists()
    assert _score(without) == pytest.approx(expected, abs=1e-5)
    # A memory written with faiss is served without it (the index file is just ignored).
    assert _score(make_client(tmp_path / "faiss")) == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_memory_fitted_at_448_served_at_224_is_a_grid_mismatch(make_client, tmp_path, extractor):
    big = FeatureExtractor(input_size=448, weights="random", device="cpu")
    at_448 = make_client(tmp_path / "models", extractor_=big, BDI_INPUT_SIZE="448")
    body = fit(at_448, ROLE, ROI, OK[:1]).json()
    assert body["token_shape"] == [32, 32]
    at_224 = make_client(tmp_path / "models")
    response = infer(at_224, ROLE, ROI, b"not even decoded")
    assert response.status_code == 400
    assert response.json()["error"].startswith("Token grid mismatch: got (16, 16), expected (32, 32)")
