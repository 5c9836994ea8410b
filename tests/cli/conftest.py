"""Fixtures of the CLI tests: a models dir fitted once per module, copied per test, and the session's backbone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.pipeline import FeatureExtractor
from tests.cli.support import CLI_INPUT_SIZE, ODD, PLAIN, bdi, make_service, uploads


@pytest.fixture(scope="module")
def fitted_template(tmp_path_factory: pytest.TempPathFactory, extractor_112: FeatureExtractor) -> Path:
    """Master1/inspection-1: versions 1 and 2, calibrated; Inspection/'Zona A/1': version 1, uncalibrated."""
    root = tmp_path_factory.mktemp("fitted") / "models"
    service = make_service(root, extractor_112)
    service.fit(*PLAIN, 0.2, uploads(0, 1, 2))
    service.fit(*PLAIN, 0.2, uploads(3, 4))
    service.calibrate(*PLAIN, [0.1, 0.2], [0.5])
    service.fit(*ODD, 0.2, uploads(5))
    service.close()
    return root


@pytest.fixture
def models_dir(tmp_path: Path, fitted_template: Path, database_url: str) -> Path:
    """A fresh copy of the fitted models dir (the registry stores paths relative to it); on PostgreSQL its
    registry is rebuilt from the copied files into the test's database."""
    root = Path(shutil.copytree(fitted_template, tmp_path / "models"))
    if database_url:
        for path in root.glob("registry.sqlite3*"):
            path.unlink()
        result = bdi(root, "models", "reindex")
        assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def shared_backbone(monkeypatch, extractor_112):
    """Commands that load the backbone get the session's (same settings: 112, random, cpu, fp32), not a new one."""

    def load(input_size: int, weights: str, device: str, precision: str) -> FeatureExtractor:
        assert (input_size, weights, device, precision) == (CLI_INPUT_SIZE, "random", "cpu", "fp32")
        return extractor_112

    monkeypatch.setattr("service.core.service.FeatureExtractor", load)
    monkeypatch.setattr("service.pipeline.features.FeatureExtractor", load)
