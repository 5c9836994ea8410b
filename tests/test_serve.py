"""`bdi serve` as the README runs it: a real uvicorn process on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import png_bytes, synthetic_roi

BDI = str(Path(sys.executable).with_name("bdi"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BDI_", "BRAKEDISC_"))}
    env.update({"BDI_WEIGHTS": "random", "BDI_INPUT_SIZE": "112", "BDI_DEVICE": "cpu",
                "BDI_MODELS_DIR": str(tmp_path / "models"), "HOST": "0.0.0.0", **extra})
    return env


def test_bdi_serve_answers_the_gui_flow(tmp_path):
    port = _free_port()
    process = subprocess.Popen([BDI, "serve", "--port", str(port)], env=_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(f"{base}/health", headers={"X-Request-Id": "smoke-1"}, timeout=5)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "bdi serve did not answer within 120 s"
                time.sleep(0.5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.headers["x-request-id"] == "smoke-1"
        files = [("images", (f"{i}.png", png_bytes(synthetic_roi(64, 48, i)), "image/png")) for i in range(2)]
        fitted = httpx.post(f"{base}/fit_ok", data={"role_id": "R", "roi_id": "r", "mm_per_px": "0.2"}, files=files, timeout=60)
        assert fitted.status_code == 200 and fitted.json()["token_shape"] == [8, 8]
        inferred = httpx.post(f"{base}/infer", data={"role_id": "R", "roi_id": "r", "mm_per_px": "0.2"},
                              files={"image": ("x.png", png_bytes(synthetic_roi(64, 48, 7)), "image/png")}, timeout=60)
        assert inferred.status_code == 200 and inferred.json()["decision"] is None
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "[smoke-1]" in output  # the correlation id is on the log lines of that request
    assert "RANDOMLY INITIALISED" in output


@pytest.mark.parametrize("env, setting", [({"BDI_WEIGHTS": "/nonexistent/dinov2.pth"}, "BDI_WEIGHTS"),
                                          ({"BDI_INPUT_SIZE": "100"}, "BDI_INPUT_SIZE")])
def test_bdi_serve_refuses_to_start_and_names_the_setting(tmp_path, env, setting):
    result = subprocess.run([BDI, "serve", "--port", str(_free_port())], env=_env(tmp_path, **env),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert setting in result.stderr and "Traceback" not in result.stderr
