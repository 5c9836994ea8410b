"""The records table under several writers: size prunes that overlap remove the excess once, and a client
that follows new records by their write sequence misses none, however late a record is written."""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text

from service.errors import BadRequest, InsufficientStorage
from service.metrics import Metrics
from service.storage import RecordStore, Registry
from service.storage.records import PendingRecord, RecordFilter, RecordWriter
from service.storage.registry.engine import unavailable_as_503
from service.storage.registry.tables import InspectionRow
from tests.support import both_registries, make_record

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)


def _host(tmp_path, database_url: str) -> tuple[Registry, RecordStore]:
    """One host (or worker): an engine of its own over the shared registry and models dir."""
    registry = Registry(database_url or f"sqlite:///{tmp_path / 'models' / 'registry.sqlite3'}", tmp_path / "models")
    registry.upgrade()
    return registry, RecordStore(registry.engine, tmp_path / "models")


def _kept(store: RecordStore) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).where(InspectionRow.image_bytes.is_not(None))).scalar_one()


@both_registries
def test_overlapping_size_prunes_remove_the_excess_once(tmp_path, database_url):
    """Both hosts read the kept total at the same moment (a barrier at the SUM): before, each removed the
    whole excess, 20 images instead of 10."""
    (one_registry, one), (other_registry, other) = _host(tmp_path, database_url), _host(tmp_path, database_url)
    one.insert([make_record(NOW + dt.timedelta(seconds=i), image_path=f"@records/{i}.png", image_bytes=100)
                for i in range(20)])
    both_summed = threading.Barrier(2)

    def meet_at_the_sum(_conn, _cursor, statement, *_args) -> None:
        if "sum(" in statement.lower() and "image_bytes" in statement:
            try:
                both_summed.wait(timeout=2)
            except threading.BrokenBarrierError:
                pass  # the other prune waits for the lock, as it should

    for store in (one, other):
        event.listen(store.engine, "before_cursor_execute", meet_at_the_sum)
    results: list[tuple[int, int]] = []
    threads = [threading.Thread(target=lambda store=store: results.append(store.prune(1000, 0, NOW)))
               for store in (one, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(images for _, images in results) == 10, results
    assert _kept(one) == 10
    one_registry.dispose()
    other_registry.dispose()


@both_registries
def test_following_by_write_sequence_misses_no_late_record(tmp_path, database_url):
    """A record stamped before the last one read but written after it (the writer's batches) is still
    returned to a client following by sequence; and while one writer's transaction is open, nothing written
    after it is visible, so the sequence a client saw never skips a row committed later."""
    (registry, store), (other_registry, other) = _host(tmp_path, database_url), _host(tmp_path, database_url)
    first = [make_record(NOW + dt.timedelta(seconds=i)) for i in range(3)]
    store.insert(first)
    seen, after = store.follow(RecordFilter(), 0, limit=10)
    assert [record.id for record in seen] == [record.id for record in first]

    late = make_record(NOW - dt.timedelta(minutes=5))  # stamped long before, written now
    store.insert([late])
    assert store.page(RecordFilter(since=NOW), 10)[0][-1].id == first[0].id  # by time it is behind the reader
    seen, after = store.follow(RecordFilter(), after, limit=10)
    assert [record.id for record in seen] == [late.id]
    assert store.follow(RecordFilter(), after, limit=10) == ([], after)

    # A writer holds its transaction open after taking its sequence numbers; another host writes meanwhile.
    paused, resume = threading.Event(), threading.Event()

    def hold_after_numbering(_conn, _cursor, statement, *_args) -> None:
        if "inspection_sequence" in statement and statement.lstrip().upper().startswith("UPDATE"):
            paused.set()
            resume.wait(timeout=30)

    event.listen(store.engine, "after_cursor_execute", hold_after_numbering)
    slow, fast = make_record(NOW + dt.timedelta(minutes=1)), make_record(NOW + dt.timedelta(minutes=2))
    slow_writer = threading.Thread(target=store.insert, args=([slow],))
    slow_writer.start()
    assert paused.wait(timeout=10)
    fast_writer = threading.Thread(target=other.insert, args=([fast],))
    fast_writer.start()
    fast_writer.join(timeout=1.5)
    assert other.follow(RecordFilter(), after, limit=10) == ([], after)  # neither is visible yet
    resume.set()
    slow_writer.join(timeout=30)
    fast_writer.join(timeout=30)
    event.remove(store.engine, "after_cursor_execute", hold_after_numbering)
    seen, after = other.follow(RecordFilter(), after, limit=10)
    assert [record.id for record in seen] == [slow.id, fast.id]

    # A filter that matches none of the new rows still moves the cursor past them.
    store.insert([make_record(NOW, role_id="Other")])
    seen, moved = store.follow(RecordFilter(role_id="R"), after, limit=10)
    assert seen == [] and moved == after + 1
    with pytest.raises(BadRequest, match="after_seq must be 0"):
        store.follow(RecordFilter(), -1, limit=10)
    registry.dispose()
    other_registry.dispose()


def test_kept_images_are_fsynced_before_their_record_commits(tmp_path, monkeypatch):
    """A power cut right after the commit must not leave a record that points to an image never on disk."""
    registry, store = _host(tmp_path, "")
    events: list[str] = []
    real_fsync, real_insert = os.fsync, store.insert

    def fsync(fd: int) -> None:
        events.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}")
        real_fsync(fd)

    def insert(records):
        events.append("commit")
        real_insert(records)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(store, "insert", insert)
    writer = RecordWriter(store, Metrics(), queue_size=4, max_bytes=10**9, retention_days=0)
    record = make_record(NOW)
    writer.submit(PendingRecord(record, image=b"\x89PNG fake", heatmap=b"\x89PNG heat"))
    assert writer.flush(timeout=10)
    writer.close()
    kept = store.get(record.id)
    assert kept is not None and kept.image_path is not None
    commit = events.index("commit")
    image, heatmap = (str(tmp_path / "models" / path) for path in (kept.image_path, kept.heatmap_path))
    synced = [event.split(" ", 1)[1] for event in events[:commit] if event.startswith("fsync ")]
    assert any(path.startswith(image) for path in synced) and any(path.startswith(heatmap) for path in synced)
    assert str(Path(image).parent) in synced  # the renames too
    registry.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_full_postgresql_disk_is_insufficient_storage_not_unavailable(tmp_path, database_url):
    """SQLSTATE 53100 (disk_full) is the same 507 as SQLite's full disk, not a 503 "retry later"."""
    registry, _ = _host(tmp_path, database_url)
    with pytest.raises(InsufficientStorage) as caught:
        with unavailable_as_503(registry.engine), registry.engine.connect() as connection:
            connection.execute(text(
                "DO $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
                "USING ERRCODE = '53100'; END $$"))
    assert caught.value.status_code == 507 and "the database server 127.0.0.1:5432" in caught.value.message
    registry.dispose()
