"""The locks of a models dir: lock files with SQLite, PostgreSQL advisory locks with a database server.
Two Registry objects stand for two hosts: each has its own engine and connections."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest

from service.errors import RegistryUnavailable
from service.storage import FileLocks, ModelStore, Registry
from service.storage.locks import MIGRATIONS
from service.storage.registry.engine import AdvisoryLocks, lock_number
from tests.support import both_registries, free_port


def _host(tmp_path, database_url: str) -> Registry:
    return Registry(database_url or f"sqlite:///{tmp_path / 'models' / 'registry.sqlite3'}", tmp_path / "models")


def _order_of(first_lock, second_lock) -> list[str]:
    """What happens when a second holder asks while the first holds: it waits until the first lets go."""
    events: list[str] = []
    held = threading.Event()

    def first() -> None:
        with first_lock:
            held.set()
            time.sleep(0.3)  # long enough for the second to be waiting if it can't get in
            events.append("first released")

    def second() -> None:
        held.wait()
        with second_lock:
            events.append("second acquired")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return events


@both_registries
def test_a_model_lock_excludes_another_host_and_other_models_do_not_wait(tmp_path, database_url):
    one, other = _host(tmp_path, database_url), _host(tmp_path, database_url)
    (tmp_path / "models" / "R" / "a").mkdir(parents=True)
    (tmp_path / "models" / "R" / "b").mkdir(parents=True)
    expected = AdvisoryLocks if database_url else FileLocks
    assert isinstance(one.locks, expected)
    try:
        assert _order_of(one.locks.model("R/a"), other.locks.model("R/a")) == ["first released", "second acquired"]
        assert _order_of(one.locks.named(MIGRATIONS), other.locks.named(MIGRATIONS)) == [
            "first released", "second acquired"]
        assert _order_of(one.locks.model("R/a"), other.locks.model("R/b")) == ["second acquired", "first released"]
    finally:
        one.dispose()
        other.dispose()


@both_registries
def test_a_thread_asking_again_for_a_lock_it_holds_gets_it_at_once_and_holds_it_until_its_outer_block_ends(
    tmp_path, database_url
):
    one, other = _host(tmp_path, database_url), _host(tmp_path, database_url)
    (tmp_path / "models" / "R" / "a").mkdir(parents=True)

    @contextlib.contextmanager
    def taken_twice():
        with one.locks.model("R/a"):
            with one.locks.model("R/a"):  # a recovery step under the writer's lock (re-indexing the model)
                pass
            yield  # the inner block has ended: the outer one still holds the lock

    orders: list[list[str]] = []
    runner = threading.Thread(target=lambda: orders.append(_order_of(taken_twice(), other.locks.model("R/a"))),
                              daemon=True)
    try:
        runner.start()
        runner.join(30)
        assert not runner.is_alive(), "the holder waited for itself"
        assert orders == [["first released", "second acquired"]]
    finally:
        one.dispose()
        other.dispose()


def test_lock_numbers_are_stable_64_bit_and_distinct():
    assert lock_number("model:Master1/inspection-1") == lock_number("model:Master1/inspection-1")
    numbers = {lock_number(f"model:R/{i}") for i in range(1000)} | {lock_number(f"named:{MIGRATIONS}")}
    assert len(numbers) == 1001 and all(-(2**63) <= n < 2**63 for n in numbers)


@both_registries
def test_start_up_cleanup_waits_for_a_write_in_progress_on_another_host(tmp_path, database_url):
    """A restarting host removes leftovers of killed writes, never the temp folder of a live write."""
    writer, restarting = _host(tmp_path, database_url), _host(tmp_path, database_url)
    root = tmp_path / "models"
    store = ModelStore(root, locks=writer.locks)
    folder = store.model_dir("R", "r", create=True)
    versions = folder / "versions"
    versions.mkdir()
    fresh = root / ".tmp-being-created"  # another host creating a model folder right now
    fresh.mkdir()
    stale = root / ".tmp-killed-long-ago"
    stale.mkdir()
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    writing = threading.Event()

    def write() -> None:
        with store.locked(folder):
            (versions / ".tmp-in-progress").mkdir()
            writing.set()
            time.sleep(0.3)
            (versions / ".tmp-in-progress").rename(versions / "000001")

    thread = threading.Thread(target=write)
    thread.start()
    writing.wait()
    try:
        ModelStore(root, locks=restarting.locks).cleanup_leftovers()
    finally:
        thread.join()
        writer.dispose()
        restarting.dispose()
    assert (versions / "000001").is_dir()  # the write finished: its temp folder was not pulled away
    assert fresh.is_dir() and not stale.exists()


def test_an_unreachable_database_is_registry_unavailable_everywhere(tmp_path):
    registry = Registry(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing", tmp_path / "models")
    store = ModelStore(tmp_path / "models", locks=registry.locks)
    try:
        for attempt in (registry.upgrade, lambda: registry.state("R", "r"), registry.count_models,
                        lambda: store.locked(tmp_path / "models" / "R").__enter__()):
            with pytest.raises(RegistryUnavailable) as caught:
                attempt()
            assert caught.value.status_code == 503 and "the service recovers by itself" in caught.value.message
    finally:
        registry.dispose()
