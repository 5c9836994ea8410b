"""The inspection record writer keeps going through any failure of a batch (a full disk, a locked registry)
and never holds up the shutdown, whatever its queue holds."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time

from prometheus_client import generate_latest

from service.metrics import Metrics
from service.storage import RecordStore, Registry
from service.storage import records as records_module
from service.storage.records import PendingRecord, RecordWriter
from tests.storage import test_disk_full
from tests.support import make_record, metric_values

small_disk = test_disk_full.small_disk  # the fixture: a tmpfs of a given size
fill = test_disk_full.fill

NOW = dt.datetime.now(dt.timezone.utc)


def _failures(metrics: Metrics) -> dict[str, float]:
    return {dict(labels)["reason"]: value for (name, labels), value in
            metric_values(generate_latest(metrics.registry).decode()).items()
            if name == "bdi_record_write_failures_total"}


def _wait_for(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_the_writer_survives_a_full_registry_disk_and_resumes_when_space_returns(small_disk, tmp_path, monkeypatch,
                                                                                  caplog):
    """SQLite's disk-full (``InsufficientStorage``) in a prune used to end the ``bdi-records`` thread for good."""
    monkeypatch.setattr(records_module, "PRUNE_INTERVAL_S", 0.2)
    disk = small_disk("1m")
    registry = Registry(f"sqlite:///{disk / 'registry.sqlite3'}", tmp_path / "models")
    registry.upgrade()
    store = RecordStore(registry.engine, tmp_path / "models")
    store.insert([make_record(NOW - dt.timedelta(days=30, seconds=i)) for i in range(200)])
    metrics = Metrics()
    writer = RecordWriter(store, metrics, queue_size=8, max_bytes=10**9, retention_days=7)
    filler = fill(disk)
    try:
        writer.submit(PendingRecord(make_record(NOW)))  # starts the thread; its first prune hits the full disk
        assert writer.flush(timeout=10)
        time.sleep(0.5)  # a few more failed prunes
        failures = _failures(metrics)
        assert failures.get("disk_full", 0) >= 1 and failures.get("prune", 0) >= 2, failures
        pruning = [r for r in caplog.records if r.getMessage().startswith("Pruning the inspection records failed")]
        assert len(pruning) == 1  # once a minute per kind, however often it fails
        assert writer._thread is not None and writer._thread.is_alive()
    finally:
        filler.unlink()
    late = make_record(NOW)
    writer.submit(PendingRecord(late))
    assert writer.flush(timeout=10)
    assert store.get(late.id) is not None
    assert _wait_for(lambda: store.count(records_module.RecordFilter()) == 1)  # the old rows pruned at last
    writer.close()
    registry.dispose()


def test_close_returns_in_bounded_time_with_a_full_queue_behind_a_locked_registry(tmp_path, monkeypatch):
    """Another process holds the registry's write lock: the writer waits in its insert, the queue fills up;
    close() gives up after ``CLOSE_TIMEOUT_S`` and counts what it could not write."""
    monkeypatch.setattr(records_module, "CLOSE_TIMEOUT_S", 1.0)
    registry = Registry(f"sqlite:///{tmp_path / 'registry.sqlite3'}", tmp_path / "models")
    registry.upgrade()
    store = RecordStore(registry.engine, tmp_path / "models")
    metrics = Metrics()
    writer = RecordWriter(store, metrics, queue_size=4, max_bytes=10**9, retention_days=0)
    holder = sqlite3.connect(tmp_path / "registry.sqlite3", isolation_level=None)  # another process, as SQLite sees it
    holder.execute("BEGIN IMMEDIATE")
    try:
        writer.submit(PendingRecord(make_record(NOW)))
        assert _wait_for(lambda: writer._queue.empty())  # the thread took it and waits for the lock
        for _ in range(4):
            writer.submit(PendingRecord(make_record(NOW)))
        closing = threading.Thread(target=writer.close)
        started = time.monotonic()
        closing.start()
        closing.join(timeout=8)
        assert not closing.is_alive(), "close() blocked on the full queue"
        assert time.monotonic() - started < 5
        assert _failures(metrics).get("shutdown") == 4
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        registry.dispose()
