"""/fit_ok with append=true: a new version grown from the active one, its errors, and infers during it."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from service.storage.files import TMP_PREFIX, VERSIONS_DIR
from tests.support import FullDisk, both_registries, fit, infer, png_bytes, relit, synthetic_roi

ROLE, ROI = "Master1", "inspection-1"
A = [synthetic_roi(96, 80, seed) for seed in range(4)]
B = [relit(synthetic_roi(96, 80, seed)) for seed in range(50, 53)]  # a lighting change the memory never saw
PROBE_B = relit(synthetic_roi(96, 80, seed=60))
FORBIDDEN = ("already trained", "already exists", "ya entrenad", "memoria existente")  # the newer GUI: success


@pytest.fixture
def small(make_client, extractor_112):
    """A client at input 112 (8×8 tokens), coreset rate 0.25: memories of a few images that still cover them closely."""
    return make_client(extractor_=extractor_112, BDI_INPUT_SIZE="112", BDI_CORESET_RATE="0.25")


def append(client, images, role=ROLE, roi=ROI, **fields):
    return fit(client, role, roi, images, append="true", **fields)


def state(client, role=ROLE, roi=ROI):
    return client.get("/state", params={"role_id": role, "roi_id": roi}).json()


def manifests(client, role=ROLE, roi=ROI):
    service = client.app.state.service
    folder = service.store.model_dir(role, roi)
    return {files.version: files.manifest for files in service.store.versions(folder)}


@both_registries
def test_append_grows_a_new_version_and_marks_the_calibration_stale(small):
    fitted = fit(small, ROLE, ROI, A).json()
    assert "append" not in fitted  # an old GUI's fit answers exactly the contract's keys
    calibration = small.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.4, 0.5]}).json()
    before = infer(small, ROLE, ROI, PROBE_B).json()
    assert state(small)["calib_stale"] is False

    response = append(small, B)
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["n_embeddings", "coreset_size", "token_shape", "coreset_rate_requested",
                          "coreset_rate_applied", "append"]
    grown = body["append"]
    assert grown == {"version": 2, "parent_version": 1, "images": 3, "new_embeddings": 3 * 64,
                     "admitted": grown["admitted"], "added_rows": grown["added_rows"]}
    assert 0 < grown["added_rows"] <= grown["admitted"] <= 3 * 64
    assert body["n_embeddings"] == fitted["n_embeddings"] + 3 * 64
    assert body["coreset_size"] == fitted["coreset_size"] + grown["added_rows"]
    assert body["coreset_rate_requested"] == 0.25
    assert body["coreset_rate_applied"] == pytest.approx(body["coreset_size"] / body["n_embeddings"])

    manifest = manifests(small)[2]
    assert manifest["source"] == "append" and manifest["parent_version"] == 1 and manifest["ancestors"] == [1]
    assert manifest["append"]["images"] == [
        {"name": f"ok_{i}.png", "sha256": hashlib.sha256(png_bytes(image)).hexdigest()} for i, image in enumerate(B)
    ]
    assert manifest["covering_radius"] >= manifests(small)[1]["covering_radius"] > 0
    assert manifest["append"]["parent_radius_source"] == "recorded"

    now = state(small)
    assert now["version"] == 2 and now["calib_present"] is True and now["calib_stale"] is True
    after = infer(small, ROLE, ROI, PROBE_B).json()
    assert after["threshold"] == pytest.approx(calibration["threshold"])  # the calibration stays active
    assert after["score"] < before["score"]  # the lighting change is learnt

    small.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": [0.3]})
    assert state(small)["calib_stale"] is False
    assert append(small, [relit(A[0], by=-40)]).status_code == 200
    assert state(small)["calib_stale"] is True and manifests(small)[3]["ancestors"] == [2, 1]
    assert fit(small, ROLE, ROI, A[:2]).status_code == 200  # a refit starts a new chain
    assert state(small)["calib_stale"] is False and manifests(small)[4]["parent_version"] is None


def test_appending_the_fit_images_again_adds_nothing(small):
    fitted = fit(small, ROLE, ROI, A).json()
    body = append(small, A).json()
    assert body["append"]["admitted"] == 0 and body["append"]["added_rows"] == 0
    assert body["coreset_size"] == fitted["coreset_size"]


def test_memory_fit_keeps_every_new_patch(small):
    fit(small, ROLE, ROI, A[:1], memory_fit="true")
    body = append(small, B[:1]).json()
    assert body["coreset_size"] == body["n_embeddings"] == 2 * 64 and body["coreset_rate_requested"] == 1.0
    assert body["append"]["added_rows"] == 64
    fit(small, ROLE, "coreset", A[:1])
    body = append(small, B[:1], roi="coreset", memory_fit="true").json()
    assert body["append"]["added_rows"] == 64 and body["coreset_rate_requested"] == 1.0


def _no_new_version(client, versions=(1,)) -> None:
    folder = client.app.state.service.store.model_dir(ROLE, ROI)
    assert sorted(p.name for p in (folder / VERSIONS_DIR).iterdir()) == [f"{v:06d}" for v in versions]
    assert state(client)["version"] == max(versions)


def test_append_errors_refuse_everything_and_write_nothing(small, make_client, extractor, tmp_path):
    errors = []
    nothing = append(small, B)
    assert nothing.status_code == 400 and "fit first" in nothing.json()["error"]
    assert small.app.state.service.store.model_dir(ROLE, ROI) is None
    errors.append(nothing.json())

    fit(small, ROLE, ROI, A)
    bad = small.post("/fit_ok", data={"role_id": ROLE, "roi_id": ROI, "mm_per_px": "0.2", "append": "true"},
                     files=[("images", ("good.png", png_bytes(B[0]), "image/png")),
                            ("images", ("broken.png", b"not an image", "image/png"))])
    assert bad.status_code == 400 and "broken.png" in bad.json()["error"]
    _no_new_version(small)
    errors.append(bad.json())

    at_224 = make_client(tmp_path / "models", extractor_=extractor)  # same models dir, another input size
    grid = at_224.post("/fit_ok", data={"role_id": ROLE, "roi_id": ROI, "mm_per_px": "0.2", "append": "true"},
                       files=[("images", ("x.png", b"never decoded", "image/png"))])
    assert grid.status_code == 400
    assert grid.json()["error"].startswith("Token grid mismatch: got (16, 16), expected (8, 8)")
    _no_new_version(small)
    errors.append(grid.json())

    bounded = make_client(tmp_path / "models", extractor_=small.app.state.service.extractor, BDI_INPUT_SIZE="112",
                          BDI_MAX_MEMORY_ROWS="100")
    over = append(bounded, B[:1], memory_fit="true")
    assert over.status_code == 413 and "BDI_MAX_MEMORY_ROWS" in over.json()["error"]
    _no_new_version(small)
    errors.append(over.json())
    for body in errors:
        assert body["detail"] == body["error"]
        assert not any(phrase in body["error"].lower() for phrase in FORBIDDEN), body


def test_an_append_that_runs_out_of_space_changes_nothing(small, monkeypatch):
    fit(small, ROLE, ROI, A)
    before = infer(small, ROLE, ROI, PROBE_B).json()
    parent = small.app.state.service.store.model_dir(ROLE, ROI) / VERSIONS_DIR / "000001" / "memory.npz"
    disk = FullDisk(monkeypatch)
    for budget in (0, 2 * parent.stat().st_size):  # in the new memory.npz; in its index.faiss (as large)
        disk.allow(budget)
        response = append(small, B)
        disk.allow(None)
        assert response.status_code == 507 and "is full" in response.json()["error"], response.text
        _no_new_version(small)
        assert infer(small, ROLE, ROI, PROBE_B).json() == before
    assert not list(small.app.state.settings.models_dir.rglob(f"{TMP_PREFIX}*"))


def test_a_memory_of_other_backbone_weights_is_refused(small):
    """A version written as a fit with other weights would have written it (another checkpoint's sha256)."""
    fit(small, ROLE, ROI, A[:1])
    service = small.app.state.service
    folder = service.store.model_dir(ROLE, ROI)
    loaded = service.store.load_memory(folder, 1)
    other = {**loaded.metadata["extractor"], "weights": "/opt/other.pth", "weights_sha256": "f" * 64}
    with service.store.locked(folder):
        files = service.store.write_version(folder, loaded.embeddings, loaded.token_grid,
                                            {**loaded.metadata, "extractor": other}, loaded.index_bytes)
        service.registry.add_version(service.store, ROLE, ROI, folder, files)
    response = append(small, B[:1])
    assert response.status_code == 400
    assert response.json()["error"].startswith("Extractor mismatch: got weights random (")
    assert "expected /opt/other.pth (ffffffffffff)" in response.json()["error"]
    _no_new_version(small, versions=(1, 2))


def test_infers_during_an_append_see_the_old_or_the_new_memory_never_a_mix(small):
    fit(small, ROLE, ROI, A)
    old = infer(small, ROLE, ROI, PROBE_B).json()["score"]
    scores: list[float] = []
    errors: list[str] = []

    def infer_loop() -> None:
        for _ in range(4):
            response = infer(small, ROLE, ROI, PROBE_B)
            if response.status_code == 200:
                scores.append(response.json()["score"])
            else:
                errors.append(response.text)

    def append_once(images) -> None:
        response = append(small, images)
        if response.status_code != 200:
            errors.append(response.text)

    threads = [threading.Thread(target=infer_loop) for _ in range(3)]
    threads.append(threading.Thread(target=append_once, args=(B,)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    new = infer(small, ROLE, ROI, PROBE_B).json()["score"]
    assert new < old
    assert all(min(abs(score - old), abs(score - new)) < 1e-6 for score in scores), (old, new, scores)


@both_registries
def test_concurrent_appends_chain_one_after_the_other(small):
    fit(small, ROLE, ROI, A)
    results: list[dict] = []
    threads = [threading.Thread(target=lambda images=images: results.append(append(small, images).json()))
               for images in ([B[0], B[1]], [relit(A[1], by=-40)])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(result["append"]["version"] for result in results) == [2, 3]
    versions = manifests(small)
    assert versions[2]["parent_version"] == 1 and versions[3]["parent_version"] == 2
    assert versions[3]["ancestors"] == [2, 1]
    service = small.app.state.service
    folder = service.store.model_dir(ROLE, ROI)
    rows = {v: service.store.load_memory(folder, v).embeddings for v in (1, 2, 3)}
    np.testing.assert_array_equal(rows[3][: len(rows[2])], rows[2])  # v3 grew from v2, not from v1
    np.testing.assert_array_equal(rows[2][: len(rows[1])], rows[1])
