"""A fit killed with SIGKILL at any point leaves the previous version active, loadable and registered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.core import InspectionService, Upload
from service.pipeline import FeatureExtractor
from service.storage.files import MEMORY_FILE, sha256_file
from tests.support import make_settings, png_bytes, synthetic_roi

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")

FIT_FOREVER = """
import os, sys
from service.core import InspectionService, Upload
from service.settings import Settings
settings = Settings.load({"BDI_MODELS_DIR": sys.argv[1], "BDI_INPUT_SIZE": "112", "BDI_WEIGHTS": "random",
                          "BDI_DEVICE": "cpu", "BDI_KEEP_VERSIONS": "3", "BDI_LOG_LEVEL": "WARNING",
                          "BDI_DATABASE_URL": os.environ.get("BDI_DATABASE_URL", "")})
service = InspectionService(settings)
service.start()
image = open(sys.argv[2], "rb").read()
print("ready", flush=True)
while True:
    service.fit("R", "r", 0.2, [Upload("a.png", image)] * 2)
    service.calibrate("R", "r", [0.1, 0.2])
"""


@pytest.fixture(scope="module")
def small_extractor() -> FeatureExtractor:
    return FeatureExtractor(input_size=112, weights="random", device="cpu")


def _service(models_dir: Path, extractor: FeatureExtractor) -> InspectionService:
    service = InspectionService(make_settings(models_dir, BDI_INPUT_SIZE="112", BDI_KEEP_VERSIONS="3"), extractor)
    service.start()
    return service


@pytest.mark.parametrize(
    ("database_url", "delay"),
    [("sqlite", delay) for delay in (0.05, 0.3, 0.7, 1.1, 1.6)] + [("postgresql", delay) for delay in (0.3, 1.1)],
    indirect=["database_url"],
)
def test_sigkill_during_fits(tmp_path, small_extractor, database_url, delay):
    models_dir = tmp_path / "models"
    image = png_bytes(synthetic_roi(60, 50, 1))
    first = _service(models_dir, small_extractor)
    first.fit("R", "r", 0.2, [Upload("a.png", image)])
    first.close()
    (tmp_path / "a.png").write_bytes(image)

    child = subprocess.Popen([sys.executable, "-c", FIT_FOREVER, str(models_dir), str(tmp_path / "a.png")],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait(30)

    service = _service(models_dir, small_extractor)
    try:
        assert not list(models_dir.rglob(".tmp-*")), "leftovers of the killed write were not cleaned"
        state = service.registry.state("R", "r")
        folder = service.store.model_dir("R", "r")
        active = json.loads((folder / "active.json").read_text())["version"]
        assert state is not None and state.active_version == active
        on_disk = sorted(v.version for v in service.store.versions(folder))
        versions, _ = service.registry.history("R", "r")
        assert sorted(v.version for v in versions) == on_disk and active in on_disk
        manifest = service.store.version_files(folder, active).manifest
        assert sha256_file(folder / MEMORY_FILE) == manifest["memory_sha256"]
        result = service.infer("R", "r", 0.2, Upload("b.png", image))
        assert 0 <= result["score"] <= 2
    finally:
        service.close()
