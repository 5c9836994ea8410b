"""Shared fixtures: one real random-init ViT per input size, apps over temp models dirs, synthetic ROIs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from litestar.testing import TestClient

from service.app import create_app
from service.features import FeatureExtractor
from service.inspection import InspectionService
from service.logs import configure_logging
from service.settings import Settings

TEST_INPUT_SIZE = 224


def synthetic_roi(width: int, height: int, seed: int, defect: tuple[int, int, int] | None = None) -> np.ndarray:
    """A cast-iron-like BGR crop: concentric machining marks, grain noise, mild lighting jitter.

    ``defect`` = (x, y, half_size): a dark square with a bright rim, far outside what OK crops show.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width / 2 + rng.uniform(-3, 3), height / 2 + rng.uniform(-3, 3)
    radius = np.hypot(xx - cx, yy - cy)
    marks = 18 * np.sin(radius * 0.9 + rng.uniform(0, np.pi))
    light = rng.uniform(-8, 8) * (xx / max(width, 1) - 0.5)
    grey = 120 + marks + light + rng.normal(0, 6, size=(height, width))
    image = np.clip(np.stack([grey * 0.97, grey, grey * 1.02], axis=-1), 0, 255).astype(np.uint8)
    if defect is not None:
        x, y, half = defect
        cv2.rectangle(image, (x - half, y - half), (x + half, y + half), (25, 25, 25), thickness=-1)
        cv2.rectangle(image, (x - half, y - half), (x + half, y + half), (250, 250, 250), thickness=2)
    return image


def png_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="session")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(input_size=TEST_INPUT_SIZE, weights="random", device="cpu")


@pytest.fixture(scope="session")
def extractor_112() -> FeatureExtractor:
    """The CLI tests' backbone (input 112). The log handler binds stderr once, before a CliRunner swaps it."""
    configure_logging("WARNING")
    return FeatureExtractor(input_size=112, weights="random", device="cpu")


def make_settings(models_dir: Path, **env: str) -> Settings:
    base = {
        "BDI_MODELS_DIR": str(models_dir),
        "BDI_INPUT_SIZE": str(TEST_INPUT_SIZE),
        "BDI_WEIGHTS": "random",
        "BDI_DEVICE": "cpu",
        "BDI_LOG_LEVEL": "INFO",
    }
    return Settings.load({**base, **env})


AppFactory = Callable[..., TestClient[Any]]


@pytest.fixture
def make_client(tmp_path: Path, extractor: FeatureExtractor) -> Iterator[AppFactory]:
    """``make_client(models_dir=None, **BDI_env)`` -> a TestClient over a real app (shared ViT)."""
    clients: list[TestClient[Any]] = []

    def factory(models_dir: Path | None = None, extractor_: FeatureExtractor | None = None, **env: str) -> TestClient[Any]:
        settings = make_settings(models_dir or tmp_path / "models", **env)
        service = InspectionService(settings, extractor=extractor_ or extractor)
        client = TestClient(create_app(settings, service), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)
        client.app.state.service.close()


@pytest.fixture
def client(make_client: AppFactory) -> TestClient[Any]:
    return make_client()


def fit(client: TestClient[Any], role: str, roi: str, images: list[np.ndarray], mm_per_px: str = "0.2", **fields: str):
    files = [("images", (f"ok_{i}.png", png_bytes(img), "image/png")) for i, img in enumerate(images)]
    return client.post("/fit_ok", data={"role_id": role, "roi_id": roi, "mm_per_px": mm_per_px, **fields}, files=files)


def infer(client: TestClient[Any], role: str, roi: str, image: np.ndarray | bytes, mm_per_px: str = "0.2",
          filename: str = "roi.png", **fields: str):
    data = image if isinstance(image, bytes) else png_bytes(image)
    return client.post(
        "/infer",
        data={"role_id": role, "roi_id": roi, "mm_per_px": mm_per_px, **fields},
        files={"image": (filename, data, "image/png")},
    )
