"""Shared fixtures: one real random-init ViT per input size, apps over temp models dirs, and the
registry database of each test.

Registry backends: a test runs on SQLite and on PostgreSQL when marked ``@both_registries``
(``tests.support``: ``pytest.mark.parametrize("database_url", BACKENDS, indirect=True)``; ``make_client``
depends on ``database_url``, so its tests need nothing else). The ``database_url`` fixture is ""
for SQLite (the registry file in the models dir, the default) or a fresh PostgreSQL database on the
server named by ``BDI_TEST_DATABASE_URL``, dropped after the test; without that variable the PostgreSQL
cases skip. The URL is exported as ``BDI_DATABASE_URL`` for the test's duration, and every helper that
builds settings or an environment (``make_settings``, ``make_client``, ``tests.cli.support.bdi`` and
``serve_env``, the crash tests' child processes) passes it on, so nothing else in a test needs changing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from service.core import InspectionService
from service.logs import configure_logging
from service.pipeline import FeatureExtractor
from service.web import create_app
from tests.support import POSTGRES_SKIP, TEST_INPUT_SIZE, make_settings, temporary_database


@pytest.fixture(scope="session", autouse=True)
def _registry_of_the_tests_only() -> None:
    """A BDI_DATABASE_URL of the developer's shell must never reach a test's service."""
    os.environ.pop("BDI_DATABASE_URL", None)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The registry of this test: "" (SQLite, the default) or a PostgreSQL database of its own."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield ""
        return
    server = os.environ.get("BDI_TEST_DATABASE_URL", "")
    if not server:
        pytest.skip(POSTGRES_SKIP)
    with temporary_database(server) as url:
        monkeypatch.setenv("BDI_DATABASE_URL", url)
        yield url


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
def make_client(tmp_path: Path, extractor: FeatureExtractor, database_url: str) -> Iterator[AppFactory]:
    """``make_client(models_dir=None, **BDI_env)`` -> a TestClient over a real app (shared ViT), on the
    test's registry."""
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
