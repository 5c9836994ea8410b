"""The model write lock under faults: a writer never waits for a lock it already holds, and a writer whose
lock was lost (PostgreSQL: the lock's session died) changes nothing, on both registries."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from service.core import InspectionService, Upload
from service.errors import RegistryUnavailable, ServiceError
from service.storage import ModelStore
from tests.support import both_registries, make_settings, png_bytes, synthetic_roi

SIZE = (96, 80)
WAIT_S = 60  # far more than one append of two images takes here; a writer waiting for itself never ends


def uploads(seeds: range, prefix: str) -> list[Upload]:
    return [Upload(f"{prefix}{seed}.png", png_bytes(synthetic_roi(*SIZE, seed))) for seed in seeds]


def finishes(call: Callable[[], Any]) -> Any:
    """What ``call`` returns or raises, run in a thread; fails the test (instead of hanging it) after WAIT_S."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WAIT_S)
    assert not thread.is_alive(), f"still waiting after {WAIT_S} s: the writer waits for a lock it holds"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def open_service(models_dir, extractor_112) -> InspectionService:
    service = InspectionService(make_settings(models_dir, BDI_INPUT_SIZE="112", BDI_CORESET_RATE="0.1"),
                                extractor=extractor_112)
    service.start()
    return service


@both_registries
def test_append_to_a_memory_whose_file_is_gone_answers_a_sentence_instead_of_waiting_for_its_own_lock(
    database_url, tmp_path, extractor_112
):
    models_dir = tmp_path / "models"
    service = open_service(models_dir, extractor_112)
    service.fit("R", "roi", 0.2, uploads(range(6), "a"))
    state = service.model_state("R", "roi")
    service.close()
    memory = service.store.version_files(service.store.root / state.folder, state.active_version).memory_path
    memory.unlink()

    service = open_service(models_dir, extractor_112)  # a process that has not cached the memory
    try:
        with pytest.raises(ServiceError) as refused:
            finishes(lambda: service.append("R", "roi", 0.2, uploads(range(10, 12), "b")))
        assert refused.value.status_code == 409
        assert f"Version {state.active_version} of role_id=" in refused.value.message
        assert "memory.npz is missing" in refused.value.message and "bdi models verify" in refused.value.message
        assert service.model_state("R", "roi").active_version == state.active_version  # nothing was written
        refit = finishes(lambda: service.fit("R", "roi", 0.2, uploads(range(20, 26), "c")))  # the lock is free
        assert refit["coreset_size"] > 0 and service.model_state("R", "roi").active_version == state.active_version + 1
    finally:
        service.close()


def _terminate_the_advisory_lock_holder(database_url: str) -> None:
    """What a restart, a failover, idle_session_timeout or an operator's pg_terminate_backend does to the
    session that holds the model's advisory lock: it ends, and the server releases the lock."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            ended = connection.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )).scalars().all()
        assert ended == [True]
    finally:
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_writer_whose_lock_session_died_commits_nothing_and_undoes_its_files(
    database_url, tmp_path, extractor_112, monkeypatch
):
    models_dir = tmp_path / "models"
    service = open_service(models_dir, extractor_112)
    try:
        service.fit("R", "roi", 0.2, uploads(range(6), "a"))
        before = service.model_state("R", "roi")
        registered = sorted((v.folder, v.version, v.memory_sha256) for v in service.registry.registered_versions())
        folder = service.store.root / before.folder
        kept = sorted(path.name for path in (folder / "versions").iterdir())
        write_version = ModelStore.write_version

        def lose_the_lock_meanwhile(store, *args, **kwargs):
            files = write_version(store, *args, **kwargs)
            _terminate_the_advisory_lock_holder(database_url)  # the files are written, the rows not yet
            return files

        monkeypatch.setattr(ModelStore, "write_version", lose_the_lock_meanwhile)
        with pytest.raises(RegistryUnavailable) as refused:
            finishes(lambda: service.fit("R", "roi", 0.2, uploads(range(10, 16), "b")))
        assert refused.value.status_code == 503
        assert "write lock" in refused.value.message and "undone" in refused.value.message
        assert service.model_state("R", "roi") == before  # no registry change committed
        assert sorted((v.folder, v.version, v.memory_sha256) for v in service.registry.registered_versions()) == (
            registered)
        assert sorted(path.name for path in (folder / "versions").iterdir()) == kept  # the new version's files undone
        assert service.store.verify_folder(folder) == []

        monkeypatch.setattr(ModelStore, "write_version", write_version)
        second = finishes(lambda: service.fit("R", "roi", 0.2, uploads(range(20, 26), "c")))
        assert second["coreset_size"] > 0
        assert service.model_state("R", "roi").active_version == before.active_version + 1
        assert service.store.verify_folder(folder) == []
    finally:
        service.close()
