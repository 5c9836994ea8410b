"""Helpers of the CLI tests: run ``bdi`` in click's runner over a models dir, with the tests' settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner, Result

from service.cli import main
from service.inspection import InspectionService, Upload
from service.pipeline import FeatureExtractor
from service.settings import Settings
from tests.support import png_bytes, synthetic_roi

CLI_INPUT_SIZE = 112
PLAIN = ("Master1", "inspection-1")
ODD = ("Inspection", "Zona A/1")  # hashed roi folder


def cli_env(models_dir: Path, **extra: str) -> dict[str, str]:
    env = {name: None for name in os.environ if name.startswith(("BDI_", "BRAKEDISC_"))}
    return {**env, "BDI_MODELS_DIR": str(models_dir), "BDI_INPUT_SIZE": str(CLI_INPUT_SIZE), "BDI_WEIGHTS": "random",
            "BDI_DEVICE": "cpu", "COLUMNS": "250", **extra}


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
