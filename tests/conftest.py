"""Shared fixtures: one real random-init ViT per input size, and apps over temp models dirs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from service.inspection import InspectionService
from service.logs import configure_logging
from service.pipeline import FeatureExtractor
from service.web import create_app
from tests.support import TEST_INPUT_SIZE, make_settings


@pytest.fixture(scope="session")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(input_size=TEST_INPUT_SIZE, weights="random", device="cpu")


@pytest.fixture(scope="session")
def extractor_112() -> FeatureExtractor:
    """The CLI tests' backbone (input 112). The log handler binds stderr once, before a CliRunner swaps it."""
    configure_logging("WARNING")
    return FeatureExtractor(input_size=112, weights="random", device="cpu")


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
