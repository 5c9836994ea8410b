"""Helpers the tests share (not fixtures): synthetic ROIs, PNG bytes, settings over a temp models dir,
the old GUI's two multipart requests and the newer GUI's requests as its .NET client writes them, synthetic
inspection records and parsed metrics."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np
import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, make_url, text

from service.settings import Settings
from service.storage import InspectionRecord, RecordStore, Registry
from service.storage import files as artifacts

TEST_INPUT_SIZE = 224
BACKENDS = ["sqlite", "postgresql"]
POSTGRES_SKIP = (
    "PostgreSQL registry tests need BDI_TEST_DATABASE_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
)
both_registries = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


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


def relit(image: np.ndarray, by: int = 45) -> np.ndarray:
    """The same crop under brighter light: a normal variation (a new lamp, a new casting batch) that a memory
    fitted without it scores as anomalous."""
    return np.clip(image.astype(np.int16) + by, 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def make_settings(models_dir: Path, **env: str) -> Settings:
    """The tests' settings over ``models_dir``; the registry is the test's (``database_url`` fixture)."""
    base = {
        "BDI_DATABASE_URL": os.environ.get("BDI_DATABASE_URL", ""),
        "BDI_MODELS_DIR": str(models_dir),
        "BDI_INPUT_SIZE": str(TEST_INPUT_SIZE),
        "BDI_WEIGHTS": "random",
        "BDI_DEVICE": "cpu",
        "BDI_LOG_LEVEL": "INFO",
    }
    return Settings.load({**base, **env})


def fit(client: TestClient[Any], role: str, roi: str, images: list[np.ndarray], mm_per_px: str = "0.2", **fields: str):
    files = [("images", (f"ok_{i}.png", png_bytes(img), "image/png")) for i, img in enumerate(images)]
    return client.post("/fit_ok", data={"role_id": role, "roi_id": roi, "mm_per_px": mm_per_px, **fields}, files=files)


def infer(client: TestClient[Any], role: str, roi: str, image: np.ndarray | bytes, mm_per_px: str = "0.2",
          filename: str = "roi.png", headers: dict[str, str] | None = None, **fields: str):
    data = image if isinstance(image, bytes) else png_bytes(image)
    return client.post(
        "/infer",
        data={"role_id": role, "roi_id": roi, "mm_per_px": mm_per_px, **fields},
        files={"image": (filename, data, "image/png")},
        headers=headers,
    )


class FullDisk:
    """Stands in for the store's one low-level write (``write_durably``): ``allow(n)`` lets n more bytes
    through, then a write fails with ENOSPC after writing the part that still fitted, as a full file system
    does; ``allow(None)`` gives the space back."""

    def __init__(self, monkeypatch: Any) -> None:
        self.real = artifacts.write_durably
        self.left: int | None = None
        monkeypatch.setattr(artifacts, "write_durably", self)

    def allow(self, n_bytes: int | None) -> None:
        self.left = n_bytes

    def __call__(self, handle: Any, data: bytes) -> None:
        if self.left is not None and len(data) > self.left:
            handle.write(data[: self.left])
            handle.flush()
            self.left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if self.left is not None:
            self.left -= len(data)
        self.real(handle, data)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def registry_down(client: TestClient[Any]) -> TestClient[Any]:
    """Put the app's service on a PostgreSQL registry that nobody answers (the database server is down):
    a real engine and real advisory locks whose connections are refused; the inspection records too."""
    service = client.app.state.service
    service.registry.dispose()
    service.registry = Registry(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/registry",
                                service.settings.models_dir)
    service.store.locks = service.registry.locks
    service.records = RecordStore(service.registry.engine, service.settings.models_dir)
    service.wire()
    return client


@contextlib.contextmanager
def temporary_database(server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of ``server_url`` (a URL of any database there, e.g.
    ``postgresql+psycopg://postgres@127.0.0.1:5432/test``); yields its URL and drops it afterwards, even
    while connections to it are still open."""
    name = f"bdi_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def forget_registry(models_dir: Path) -> None:
    """Lose the registry as a crash or an operator might: the SQLite files, or every table of the test's
    PostgreSQL database."""
    url = os.environ.get("BDI_DATABASE_URL", "")
    if not url:
        for path in models_dir.glob("registry.sqlite3*"):
            path.unlink()
        return
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
def dotnet_multipart(
    texts: list[tuple[str, str]], files: list[tuple[str, str, bytes]] = (), metas: list[dict[str, Any]] = ()
) -> tuple[bytes, dict[str, str]]:
    """A multipart body as .NET's ``MultipartFormDataContent`` writes it (the newer GUI's client): a quoted GUID
    boundary; text parts typed ``text/plain; charset=utf-8`` with unquoted names; each meta a part named ``metas``
    typed ``application/json``; file parts (name, filename, bytes) with ``filename`` and ``filename*``."""
    boundary = str(uuid.uuid4())
    body = b""

    def part(headers: str, content: bytes) -> bytes:
        return f"--{boundary}\r\n{headers}\r\n\r\n".encode() + content + b"\r\n"

    for name, value in texts:
        body += part(f"Content-Type: text/plain; charset=utf-8\r\nContent-Disposition: form-data; name={name}",
                     value.encode("utf-8"))
    for name, filename, data in files:
        ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_")
        disposition = f"form-data; name={name}; filename={ascii_name}; filename*=utf-8''{quote(filename)}"
        body += part(f"Content-Type: image/png\r\nContent-Disposition: {disposition}", data)
    for meta in metas:
        body += part("Content-Type: application/json\r\nContent-Disposition: form-data; name=metas",
                     json.dumps(meta).encode("utf-8"))
    body += f"--{boundary}--\r\n".encode()
    return body, {"content-type": f'multipart/form-data; boundary="{boundary}"'}


class NewerGui:
    """The newer GUI's requests: a new GUID X-Request-Id on each, X-Recipe-Id verbatim unless the layout is the
    default one, multipart as .NET writes it, JSON bodies for /calibrate_dataset."""

    def __init__(self, client: TestClient[Any], layout: str | None = None) -> None:
        self.client = client
        self.layout = layout
        self.last_request_id: str | None = None

    def headers(self) -> dict[str, str]:
        self.last_request_id = str(uuid.uuid4())
        headers = {"X-Request-Id": self.last_request_id}
        if self.layout:
            headers["X-Recipe-Id"] = self.layout
        return headers

    def form(self, path: str, texts: list[tuple[str, str]], files: list[tuple[str, str, bytes]] = (),
             metas: list[dict[str, Any]] = ()):
        body, headers = dotnet_multipart(texts, files, metas)
        return self.client.post(path, content=body, headers={**headers, **self.headers()})

    def upload(self, label: str, role: str, roi: str, images: list[tuple[str, bytes]], metas: list[dict[str, Any]] = ()):
        return self.form(f"/datasets/{label}/upload", [("role_id", role), ("roi_id", roi)],
                         [("images", name, data) for name, data in images], metas)

    def get(self, path: str, **params: str):
        return self.client.get(path, params=params, headers=self.headers())

    def delete(self, path: str, **params: str):
        return self.client.delete(path, params=params, headers=self.headers())

    def post_json(self, path: str, body: dict[str, Any]):
        return self.client.post(path, json=body, headers=self.headers())


def make_record(created_at: dt.datetime, **fields: Any) -> InspectionRecord:
    """An inspection record as the core would make it, for rows inserted straight into the registry."""
    values: dict[str, Any] = {
        "id": uuid.uuid4().hex, "created_at": created_at, "recipe_id": "default", "role_id": "R", "roi_id": "r",
        "version": 1, "memory_sha256": "0" * 64, "model": "vit_small_patch14_dinov2.lvd142m", "weights_sha256": None,
        "calibration_id": None, "score": 0.5, "threshold": 0.6, "decision": "ok", "score_percentile": 99,
        "n_regions": 0, "largest_area_mm2": 0.0, "total_area_mm2": 0.0, "image_width": 64, "image_height": 48,
        "image_sha256": "1" * 64, "shape_kind": None, "mm_per_px": 0.2, "correlation_id": None, "client": None,
        "part_id": None, "source": "api", "load_ms": 1.0, "forward_ms": 10.0, "total_ms": 12.0,
    }
    return InspectionRecord(**{**values, **fields})


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer, parsed by prometheus-client: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
