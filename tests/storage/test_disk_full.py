"""A full disk is a 507 with a sentence, and leaves the models dir as it was: the previous version served,
no half-written files, no empty model folders, the registry matching the files.

Two ways to fill a disk: a real small file system (tmpfs, where the machine lets the test mount one) and,
always, the store's one low-level write failing with ENOSPC at the N-th byte, as a full disk does.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

from service.storage.files import CALIB_FILE, HISTORY_FILE, TMP_PREFIX, VERSIONS_DIR
from tests.cli.support import bdi
from tests.support import FullDisk, fit, infer, synthetic_roi

ROLE, ROI = "Master1", "inspection-1"
SIZE = (60, 50)
PROBE = synthetic_roi(*SIZE, seed=99, defect=(30, 25, 5))


def images(n: int, first: int = 0) -> list:
    return [synthetic_roi(*SIZE, seed) for seed in range(first, first + n)]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``small_disk("8m")`` mounts a tmpfs of that size and returns its path; the test is skipped where the
    machine does not allow mounting. Request it before ``make_client``: apps close before it unmounts."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        path = tmp_path / f"disk-{len(mounts)}"
        path.mkdir()
        if os.name != "posix" or os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                 capture_output=True, text=True, check=False)
        if mounted.returncode != 0:
            pytest.skip(f"this machine does not allow mounting a tmpfs: {mounted.stderr.strip()}")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Write a filler file until the disk is full; returns it (delete it to give the space back)."""
    filler = path / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb", buffering=0) as handle:  # unbuffered: no remainder for close() to fail on
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def debris(models_dir: Path) -> list[Path]:
    return sorted(models_dir.rglob(f"{TMP_PREFIX}*"))


def versions(models_dir: Path, role: str = ROLE, roi: str = ROI) -> list[str]:
    return sorted(os.listdir(models_dir / role / roi / VERSIONS_DIR))


def assert_verified(models_dir: Path, **env: str) -> None:
    result = bdi(models_dir, "models", "verify", "--json", **env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["problems"] == []


def assert_507(response, models_dir: Path, needs: bool = True) -> str:
    assert response.status_code == 507, response.text
    body = response.json()
    assert body["error"] == body["detail"]
    sentence = body["error"]
    assert "is full" in sentence and "BDI_KEEP_VERSIONS" in sentence and "bdi models delete" in sentence
    assert str(models_dir) in sentence
    assert ("needs " in sentence) == needs
    return sentence


def calibrate(client, ok_scores=(0.1, 0.2)):
    return client.post("/calibrate_ng", json={"role_id": ROLE, "roi_id": ROI, "ok_scores": list(ok_scores)})


@pytest.fixture
def app(make_client, extractor_112, tmp_path):
    """A fitted (versions 1 and 2, BDI_KEEP_VERSIONS=2) and calibrated model, input 112."""
    client = make_client(tmp_path / "models", extractor_=extractor_112, BDI_INPUT_SIZE="112", BDI_KEEP_VERSIONS="2")
    for first in (0, 2):
        assert fit(client, ROLE, ROI, images(2, first), memory_fit="true").status_code == 200
    assert calibrate(client).status_code == 200
    return client


def test_a_fit_that_runs_out_of_space_anywhere_changes_nothing(app, tmp_path, monkeypatch):
    models_dir = tmp_path / "models"
    before = infer(app, ROLE, ROI, PROBE).json()
    version_dir = models_dir / ROLE / ROI / VERSIONS_DIR / "000002"
    memory, index, manifest = (os.path.getsize(version_dir / name) for name in ("memory.npz", "index.faiss",
                                                                                  "version.json"))
    needs = f"the new memory version (memory.npz + index.faiss) needs {(memory + index + manifest) / 2**20:.1f} MB"
    disk = FullDisk(monkeypatch)
    # inside memory.npz, inside index.faiss, inside version.json, then at the pointer (active.json)
    for budget in (0, memory // 2, memory + index // 2, memory + index + manifest // 2, memory + index + manifest + 5):
        disk.allow(budget)
        assert needs in assert_507(fit(app, ROLE, ROI, images(2, 4), memory_fit="true"), models_dir)
        disk.allow(None)
        assert app.get("/state", params={"role_id": ROLE, "roi_id": ROI}).json()["version"] == 2
        assert infer(app, ROLE, ROI, PROBE).json() == before
        assert versions(models_dir) == ["000001", "000002"] and debris(models_dir) == []
    assert_verified(models_dir)


def test_a_failed_first_fit_leaves_no_model_behind(app, tmp_path, monkeypatch):
    models_dir = tmp_path / "models"
    disk = FullDisk(monkeypatch)
    for role, roi, budget in (("Fresh", "roi", 0), ("Fresh", "roi", 5000), (ROLE, "other", 0), (ROLE, "other", 5000)):
        disk.allow(budget)
        assert_507(fit(app, role, roi, images(2), memory_fit="true"), models_dir, needs=budget > 0)
        disk.allow(None)
        assert app.get("/state", params={"role_id": role, "roi_id": roi}).json()["memory_fitted"] is False
        assert app.app.state.service.registry.state(role, roi) is None
        assert sorted(os.listdir(models_dir / ROLE)) == ["id.json", ROI]
        assert not (models_dir / "Fresh").exists() and debris(models_dir) == []
    assert_verified(models_dir)
    assert fit(app, "Fresh", "roi", images(1)).status_code == 200  # the space is back: the same fit works


def test_a_calibration_that_runs_out_of_space_changes_nothing(app, tmp_path, monkeypatch):
    folder = tmp_path / "models" / ROLE / ROI
    history, calib = (folder / HISTORY_FILE).read_bytes(), (folder / CALIB_FILE).read_bytes()
    threshold = infer(app, ROLE, ROI, PROBE).json()["threshold"]
    line = len(history.splitlines()[-1]) + 1  # the next line is as long, give or take a digit
    disk = FullDisk(monkeypatch)
    for budget in (0, line // 2, line + 20):  # nothing written, half the history line, the line but not calib.json
        disk.allow(budget)
        assert_507(calibrate(app, (0.5, 0.6)), tmp_path / "models")
        assert (folder / HISTORY_FILE).read_bytes() == history and (folder / CALIB_FILE).read_bytes() == calib
    disk.allow(None)
    assert infer(app, ROLE, ROI, PROBE).json()["threshold"] == threshold
    assert debris(tmp_path / "models") == []
    assert_verified(tmp_path / "models")


def test_a_registry_that_refuses_the_rows_leaves_the_files_as_they_were(app, tmp_path):
    """The third fit prunes version 1 (BDI_KEEP_VERSIONS=2) before the registry refuses: it comes back."""
    models_dir = tmp_path / "models"
    engine = app.app.state.service.registry.engine

    def read_only(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA query_only=ON")

    event.listen(engine, "connect", read_only)
    engine.dispose()
    try:
        assert fit(app, ROLE, ROI, images(2, 4), memory_fit="true").status_code == 500
        assert calibrate(app, (0.5, 0.6)).status_code == 500
    finally:
        event.remove(engine, "connect", read_only)
        engine.dispose()
    assert versions(models_dir) == ["000001", "000002"] and debris(models_dir) == []
    assert app.get("/state", params={"role_id": ROLE, "roi_id": ROI}).json()["version"] == 2
    assert_verified(models_dir)


# ---- a real small file system ---------------------------------------------------------------------------------
def test_fits_on_a_small_file_system(small_disk, make_client, extractor_112):
    """Models dir on an 8 MB tmpfs: a fit of 5 images (2.8 MB with its index) fits, one of 10 does not."""
    disk = small_disk("8m")
    models_dir = disk / "models"
    client = make_client(models_dir, extractor_=extractor_112, BDI_INPUT_SIZE="112")
    assert fit(client, ROLE, ROI, images(5), memory_fit="true").status_code == 200
    assert calibrate(client).status_code == 200
    before = infer(client, ROLE, ROI, PROBE).json()

    sentence = assert_507(fit(client, ROLE, ROI, images(10), memory_fit="true"), models_dir)
    needed = float(re.search(r"needs ([0-9.]+) MB", sentence).group(1))
    assert needed == pytest.approx(10 * 64 * 1152 * 4 * 2 / 2**20, abs=0.1)  # 10 x 64 tokens x 1152 floats, twice
    assert_507(fit(client, "Fresh", "roi", images(10), memory_fit="true"), models_dir)
    assert not (models_dir / "Fresh").exists()
    assert client.get("/state", params={"role_id": "Fresh", "roi_id": "roi"}).json()["memory_fitted"] is False

    filler = fill(disk)
    assert_507(calibrate(client, (0.5, 0.6)), models_dir)
    filler.unlink()

    assert infer(client, ROLE, ROI, PROBE).json() == before
    assert versions(models_dir) == ["000001"] and debris(models_dir) == []
    assert_verified(models_dir)


def test_a_full_registry_disk(small_disk, make_client, extractor_112, tmp_path):
    """The registry's SQLite file on a full tmpfs of its own: SQLite's "database or disk is full" is a 507
    naming the registry, and the version and calibration files written before it are undone."""
    disk = small_disk("1m")
    url = f"sqlite:///{disk / 'registry.sqlite3'}"
    models_dir = tmp_path / "models"
    client = make_client(models_dir, extractor_=extractor_112, BDI_INPUT_SIZE="112", BDI_DATABASE_URL=url)
    assert fit(client, ROLE, ROI, images(2)).status_code == 200
    assert calibrate(client).status_code == 200
    history = (models_dir / ROLE / ROI / HISTORY_FILE).read_bytes()
    filler = fill(disk)

    for response in (fit(client, ROLE, ROI, images(2, 2)), calibrate(client, (0.5, 0.6))):
        assert response.status_code == 507, response.text
        assert "registry.sqlite3" in response.json()["error"] and str(disk) in response.json()["error"]
    filler.unlink()

    assert versions(models_dir) == ["000001"] and debris(models_dir) == []
    assert (models_dir / ROLE / ROI / HISTORY_FILE).read_bytes() == history
    assert_verified(models_dir, BDI_DATABASE_URL=url)


def test_lowering_keep_versions_frees_space_at_the_next_start(app, make_client, extractor_112, tmp_path):
    """What the 507 sentence advises: the extra old versions go when the service starts again."""
    models_dir = tmp_path / "models"
    assert versions(models_dir) == ["000001", "000002"]
    again = make_client(models_dir, extractor_=extractor_112, BDI_INPUT_SIZE="112", BDI_KEEP_VERSIONS="1")
    assert versions(models_dir) == ["000002"]
    assert again.get("/state", params={"role_id": ROLE, "roi_id": ROI}).json()["version"] == 2
    assert_verified(models_dir)
