"""Helpers of the CLI tests: run ``bdi`` in click's runner over a models dir, with the tests' settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner, Result

from service.cli import main
from service.core import InspectionService, Upload
from service.pipeline import FeatureExtractor
from service.settings import Settings
from tests.support import free_port, png_bytes, synthetic_roi

CLI_INPUT_SIZE = 112
BDI = str(Path(sys.executable).with_name("bdi"))
PLAIN = ("Master1", "inspection-1")
ODD = ("Inspection", "Zona A/1")  # hashed roi folder


def cli_env(models_dir: Path, **extra: str) -> dict[str, str]:
    """The tests' settings, on the test's registry (``database_url`` fixture) and nothing of the shell's."""
    env = {name: None for name in os.environ if name.startswith(("BDI_", "BRAKEDISC_"))}
    return {**env, "BDI_MODELS_DIR": str(models_dir), "BDI_INPUT_SIZE": str(CLI_INPUT_SIZE), "BDI_WEIGHTS": "random",
            "BDI_DEVICE": "cpu", "BDI_DATABASE_URL": os.environ.get("BDI_DATABASE_URL", ""), "COLUMNS": "250", **extra}


def bdi(models_dir: Path, *args: str, input: str | None = None, **env: str) -> Result:
    return CliRunner(env=cli_env(models_dir, **env)).invoke(main, list(args), input=input)


def make_service(models_dir: Path, extractor: FeatureExtractor) -> InspectionService:
    settings = Settings.load(cli_env(models_dir))
    service = InspectionService(settings, extractor=extractor)
    service.start()
    return service


def uploads(*seeds: int, size: tuple[int, int] = (60, 50)) -> list[Upload]:
    return [Upload(f"ok_{seed}.png", png_bytes(synthetic_roi(*size, seed))) for seed in seeds]


def as_json(result: Result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ---- `bdi serve` processes on loopback -----------------------------------------------------------
def serve_env(models_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a `bdi serve` process: the tests' settings and registry, nothing of the shell's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BDI_", "BRAKEDISC_"))}
    env.update({"BDI_WEIGHTS": "random", "BDI_INPUT_SIZE": str(CLI_INPUT_SIZE), "BDI_DEVICE": "cpu",
                "BDI_MODELS_DIR": str(models_dir), "BDI_DATABASE_URL": os.environ.get("BDI_DATABASE_URL", ""),
                "HOST": "0.0.0.0", **extra})
    return env


def start_serve(
    models_dir: Path, *args: str, port: int | None = None, log: Path | None = None, **env: str
) -> tuple[subprocess.Popen[str], str]:
    """`bdi serve` on a loopback port (a free one unless given). Its output is piped (read it after it
    ends), or appended to ``log`` for a server that lives long enough to fill a pipe."""
    port = port or free_port()
    output = open(log, "a") if log is not None else subprocess.PIPE  # noqa: SIM115 - the child holds it
    try:
        process = subprocess.Popen([BDI, "serve", "--port", str(port), *args], env=serve_env(models_dir, **env),
                                   stdout=output, stderr=subprocess.STDOUT, text=True)
    finally:
        if log is not None:
            output.close()
    return process, f"http://127.0.0.1:{port}"


def wait_healthy(process: subprocess.Popen[str], base: str, **headers: str) -> httpx.Response:
    deadline = time.monotonic() + 120
    while True:
        try:
            return httpx.get(f"{base}/health", headers=headers, timeout=5)
        except httpx.TransportError:
            assert process.poll() is None, process.stdout.read() if process.stdout else "bdi serve exited; see its log"
            assert time.monotonic() < deadline, "bdi serve did not answer within 120 s"
            time.sleep(0.5)
