"""Inspection records: one registry row per answered /infer, and the kept images beside the models.

The core builds an ``InspectionRecord``; ``RecordWriter.submit`` only puts it on a bounded queue, so
recording never slows or fails an inspection. One background thread drains the queue in batches
(images first, as temp file + rename, then one INSERT of the batch) and prunes by age and size every
``PRUNE_INTERVAL_S``. What can be lost: the queue (at most ``BDI_RECORD_QUEUE_SIZE`` records) when the
process dies; a batch the database refuses (locked past its busy timeout, unavailable, disk full); new
records while the queue is full; what is still queued when ``close`` gives up after ``CLOSE_TIMEOUT_S``. Each
loss is logged (once per kind and minute) and counted (``bdi_record_write_failures_total``); whatever one batch
or prune raises, the thread goes on with the next, so the writer resumes by itself when the disk has space
again or the database is back.

Images: ``<models_dir>/@records/YYYY/MM/DD/<id>.<png|jpg|bmp|tif>`` (the uploaded bytes, so their sha256
is the record's ``image_sha256``) and ``<id>.heatmap.png``, fsynced before their record commits. Reads page
newest first on the keyset (created_at, id): a row is never returned twice. But a record is stamped when it is
answered and inserted later, so one stamped before a page was read can arrive after it: to follow new records
without missing one, use ``RecordStore.follow`` (by write sequence ``seq``, increasing in commit order).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import logging
import os
import queue
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, true, update

from ..errors import BadRequest, InsufficientStorage
from ..metrics import Metrics
from .files import RECORDS_DIR, _fsync_dir, write_durably
from .registry.engine import hold_for_transaction, unavailable_as_503
from .registry.tables import InspectionRow, InspectionSequence

logger = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 60.0
BATCH_SIZE = 500
QUEUED_IMAGE_BYTES = 256 * 2**20
"""Most bytes of images waiting in the queue: past it a record is queued without its images (counted as an image
failure), so a stalled registry can't fill the memory with uploads."""
EXPORT_CHUNK = 2000
CLOSE_TIMEOUT_S = 10.0
"""Longest ``close`` waits for the queue to be written (inside the server's shutdown); the rest is counted lost."""
_LOG_EVERY_S = 10.0
_FAILURE_LOG_EVERY_S = 60.0
_TABLE = InspectionRow.__table__
_SEQUENCE = InspectionSequence.__table__
PRUNE_LOCK = "records-prune"
PARTIAL = ".partial"
"""Suffix of a kept image while it is written (then renamed): not the model store's temp prefix, whose
leftovers mean an interrupted model write; a crash's leftovers go with their day folder past the retention."""
_IMAGE_TYPES = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpg"), (b"BM", "bmp"), (b"II*\x00", "tif"), (b"MM\x00*", "tif"))


def utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime; a naive one is taken as UTC (SQLite hands them back naive)."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def iso(value: dt.datetime) -> str:
    return utc(value).isoformat(timespec="microseconds").replace("+00:00", "Z")


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ISO_START = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_FORM = "an ISO 8601 time (2026-12-01T08:00:00Z; without an offset, UTC)"
_AGE_FORM = "an age before now (7d, 12h, 30m, 2w)"
MOMENT_FORMS = f"{_ISO_FORM} or {_AGE_FORM}"


def parse_moment(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """A point in time as the records' filters take it, over HTTP and in the CLI alike: an ISO 8601 time
    (no offset means UTC) or an age before ``now`` such as ``7d``. A bare number is refused rather than taken
    as a Unix time. ValueError with a sentence naming the accepted forms otherwise."""
    stripped = text.strip()
    if age := _AGE.fullmatch(stripped.lower()):
        start = now or dt.datetime.now(dt.timezone.utc)
        return start - dt.timedelta(seconds=float(age[1]) * _AGE_SECONDS[age[2]])
    if _ISO_START.match(stripped):
        try:
            moment = dt.datetime.fromisoformat(stripped.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            pass
        else:
            return moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment
    raise ValueError(f"{stripped!r} is neither {_ISO_FORM} nor {_AGE_FORM}")


@dataclasses.dataclass(frozen=True)
class InspectionRecord:
    """What one inspection decided and from what; the row's columns, in their order."""

    id: str
    created_at: dt.datetime
    recipe_id: str
    role_id: str
    roi_id: str
    version: int
    memory_sha256: str
    model: str
    weights_sha256: str | None
    calibration_id: str | None
    score: float
    threshold: float | None
    decision: str | None
    score_percentile: int
    n_regions: int
    largest_area_mm2: float
    total_area_mm2: float
    image_width: int
    image_height: int
    image_sha256: str
    shape_kind: str | None
    mm_per_px: float
    correlation_id: str | None
    client: str | None
    part_id: str | None
    source: str
    load_ms: float
    forward_ms: float
    total_ms: float
    image_path: str | None = None
    heatmap_path: str | None = None
    image_bytes: int | None = None
    seq: int | None = None  # given at insert
    warnings: list[str] | None = None
    heatmap_low: float | None = None
    heatmap_high: float | None = None
    shape: dict[str, Any] | None = None
    regions: list[dict[str, Any]] | None = None
    shadow_version: int | None = None
    shadow_score: float | None = None
    shadow_decision: str | None = None
    review_verdict: str | None = None
    review_outcome: str | None = None
    reviewed_at: dt.datetime | None = None
    reviewed_by: str | None = None
    threshold_distance: float | None = None  # |score / threshold - 1|: the review queue's order
    learned_version: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> InspectionRecord:
        values = dict(row._mapping)
        values["created_at"] = utc(values["created_at"])
        return cls(**values)

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the time as ISO 8601 UTC, the kept files as ``image_kept``, the current review as
        ``review`` (null: not reviewed)."""
        values = {name: getattr(self, name) for name in PUBLIC_FIELDS if name not in _COMPUTED}
        values["created_at"] = iso(self.created_at)
        values["image_kept"] = self.image_path is not None
        values["review"] = None if self.review_verdict is None else {
            "verdict": self.review_verdict, "outcome": self.review_outcome, "reviewer": self.reviewed_by,
            "reviewed_at": iso(self.reviewed_at) if self.reviewed_at is not None else None,
        }
        return values


FIELDS = [field.name for field in dataclasses.fields(InspectionRecord)]
_INTERNAL = ("image_path", "heatmap_path", "image_bytes", "seq", "threshold_distance")
# columns of migrations 0008/0009, shown by the API once the capabilities that fill them land
_NOT_YET_SHOWN = ("learned_version",)
_REVIEW_COLUMNS = ("review_verdict", "review_outcome", "reviewed_by", "reviewed_at")
_COMPUTED = ("image_kept", "review")
PUBLIC_FIELDS = [name for name in FIELDS if name not in _INTERNAL + _NOT_YET_SHOWN + _REVIEW_COLUMNS] + list(_COMPUTED)
"""The record as the API, ``bdi inspections`` and the exports show it: the kept files only as ``image_kept``, the
current review as one ``review`` object."""


@dataclasses.dataclass(frozen=True)
class PendingRecord:
    """A record on its way to the writer, with the files to keep (None: not kept)."""

    record: InspectionRecord
    image: bytes | None = None
    heatmap: bytes | None = None


@dataclasses.dataclass(frozen=True)
class RecordFilter:
    """Which records; every field None means any. ``decision`` "none" selects the uncalibrated ones."""

    recipe_id: str | None = None
    role_id: str | None = None
    roi_id: str | None = None
    decision: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    part_id: str | None = None
    version: int | None = None
    review: str | None = None  # "pending" (no review yet) or "reviewed"
    outcome: str | None = None  # the current review's outcome (storage.reviews.OUTCOMES)

    def clauses(self) -> list[Any]:
        c = _TABLE.c
        found = [column == value for column, value in (
            (c.recipe_id, self.recipe_id), (c.role_id, self.role_id), (c.roi_id, self.roi_id),
            (c.part_id, self.part_id), (c.version, self.version),
        ) if value is not None]
        if self.decision is not None:
            found.append(c.decision.is_(None) if self.decision == "none" else c.decision == self.decision)
        if self.since is not None:
            found.append(c.created_at >= utc(self.since))
        if self.until is not None:
            found.append(c.created_at < utc(self.until))
        if self.review is not None:
            found.append(c.review_verdict.is_(None) if self.review == "pending" else c.review_verdict.is_not(None))
        if self.outcome is not None:
            found.append(c.review_outcome == self.outcome)
        return found


def encode_cursor(record: InspectionRecord) -> str:
    return base64.urlsafe_b64encode(f"{iso(record.created_at)} {record.id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, record_id = text.split(" ")
        return utc(dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))), record_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(
            f"cursor {cursor[:40]!r} is not one this service made; pass back the next_cursor of the previous page "
            "unchanged, or leave it out for the first page."
        ) from None


def image_extension(data: bytes) -> str:
    return next((ext for magic, ext in _IMAGE_TYPES if data.startswith(magic)), "bin")


class RecordStore:
    """The records table and the kept files: writes (batched), pages, exports, pruning."""

    def __init__(self, engine: Engine, root: Path) -> None:
        self.engine = engine
        self._writer = engine.execution_options(sqlite_immediate=True)
        self.root = Path(root)
        self.images_dir = self.root / RECORDS_DIR

    # ---- writes -------------------------------------------------------------------------------
    def insert(self, records: list[InspectionRecord]) -> None:
        """One transaction, numbered from ``inspection_sequence`` in it: the counter's row lock (PostgreSQL) or
        the write lock (SQLite) is held from the numbering to the commit, so records commit in ``seq`` order."""
        if not records:
            return
        with self._writer.begin() as connection:
            last = connection.execute(
                update(_SEQUENCE).values(last_seq=_SEQUENCE.c.last_seq + len(records)).returning(_SEQUENCE.c.last_seq)
            ).scalar_one()
            first = last - len(records) + 1
            connection.execute(insert(_TABLE), [{**record.row(), "seq": first + n} for n, record in enumerate(records)])

    def keep_files(self, record: InspectionRecord, image: bytes, heatmap: bytes | None) -> InspectionRecord:
        """Write the upload (and heatmap) beside the models, each as temp file + rename; the record then
        points to them. On a failure nothing of this record stays."""
        day = self.images_dir / record.created_at.strftime("%Y/%m/%d")
        files = [(f"{record.id}.{image_extension(image)}", image)]
        if heatmap is not None:
            files.append((f"{record.id}.heatmap.png", heatmap))
        written: list[Path] = []
        try:
            day.mkdir(parents=True, exist_ok=True)
            for name, data in files:
                tmp = day / f"{name}{PARTIAL}"
                try:
                    with open(tmp, "wb") as handle:
                        write_durably(handle, data)
                    os.replace(tmp, day / name)
                finally:
                    tmp.unlink(missing_ok=True)
                written.append(day / name)
            _fsync_dir(day)  # the names too: a record never commits pointing to a file a power cut loses
        except OSError:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        relative = [path.relative_to(self.root).as_posix() for path in written]
        return dataclasses.replace(
            record, image_path=relative[0], heatmap_path=relative[1] if len(relative) > 1 else None,
            image_bytes=sum(len(data) for _, data in files),
        )

    def remove_files(self, *relative: str | None) -> None:
        for path in relative:
            if path:
                (self.root / path).unlink(missing_ok=True)

    # ---- reads --------------------------------------------------------------------------------
    def get(self, record_id: str) -> InspectionRecord | None:
        with unavailable_as_503(self.engine), self.engine.connect() as connection:
            row = connection.execute(select(_TABLE).where(_TABLE.c.id == record_id)).first()
        return InspectionRecord.from_row(row) if row is not None else None

    def page(
        self, where: RecordFilter, limit: int, cursor: str | None = None
    ) -> tuple[list[InspectionRecord], str | None]:
        """Up to ``limit`` records newest first, after ``cursor``; and the cursor of the next page (None: last)."""
        after = decode_cursor(cursor) if cursor else None
        rows = self._chunk(where, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1]) if more else None

    def iterate(self, where: RecordFilter, chunk: int = EXPORT_CHUNK) -> Iterator[InspectionRecord]:
        """Every matching record newest first, ``chunk`` rows in memory at a time (the export)."""
        after = None
        while True:
            rows = self._chunk(where, after, chunk)
            yield from rows
            if len(rows) < chunk:
                return
            after = (rows[-1].created_at, rows[-1].id)

    def _chunk(self, where: RecordFilter, after: tuple[dt.datetime, str] | None, limit: int) -> list[InspectionRecord]:
        c = _TABLE.c
        clauses = where.clauses()
        if after is not None:
            stamp, record_id = after
            clauses += [c.created_at <= stamp, or_(c.created_at < stamp, c.id < record_id)]
        query = select(_TABLE).where(and_(true(), *clauses)).order_by(c.created_at.desc(), c.id.desc()).limit(limit)
        with unavailable_as_503(self.engine), self.engine.connect() as connection:
            return [InspectionRecord.from_row(row) for row in connection.execute(query)]

    def follow(self, where: RecordFilter, after_seq: int, limit: int) -> tuple[list[InspectionRecord], int]:
        """The records matching ``where`` written after sequence number ``after_seq`` (0: from the first), oldest
        write first, at most ``limit``; and the ``after_seq`` to ask with next. None is ever skipped, however late
        it was written: records commit in ``seq`` order, so every ``seq`` up to the committed counter read first is
        visible to the query that follows it. Pruned records are gone from it as from every read."""
        if after_seq < 0:
            raise BadRequest(f"after_seq must be 0 or a sequence number this service returned, not {after_seq}.")
        c = _TABLE.c
        with unavailable_as_503(self.engine), self.engine.connect() as connection:
            committed = int(connection.execute(select(_SEQUENCE.c.last_seq)).scalar_one())
            query = (select(_TABLE).where(and_(true(), *where.clauses(), c.seq > after_seq, c.seq <= committed))
                     .order_by(c.seq).limit(limit))
            rows = [InspectionRecord.from_row(row) for row in connection.execute(query)]
        if len(rows) == limit:
            return rows, int(rows[-1].seq or after_seq)
        return rows, max(after_seq, committed)

    def count(self, where: RecordFilter) -> int:
        with unavailable_as_503(self.engine), self.engine.connect() as connection:
            query = select(func.count()).select_from(_TABLE).where(and_(true(), *where.clauses()))
            return int(connection.execute(query).scalar_one())

    def scores(self, where: RecordFilter) -> list[tuple[dt.datetime, float, str | None]]:
        """(time, score, decision) of the matching records, oldest first (drift)."""
        c = _TABLE.c
        query = (select(c.created_at, c.score, c.decision).where(and_(true(), *where.clauses()))
                 .order_by(c.created_at, c.id))
        with unavailable_as_503(self.engine), self.engine.connect() as connection:
            return [(utc(stamp), score, decision) for stamp, score, decision in connection.execute(query)]

    # ---- pruning ------------------------------------------------------------------------------
    def prune(self, max_bytes: int, retention_days: int, now: dt.datetime | None = None) -> tuple[int, int]:
        """Delete records older than ``retention_days`` (0: none), then the oldest kept images until they
        total at most ``max_bytes``. Rows change first, files follow, so a row never points to a deleted
        file after a crash. Returns (rows deleted, images deleted)."""
        now = utc(now or dt.datetime.now(dt.timezone.utc))
        c = _TABLE.c
        rows_deleted = images_deleted = 0
        if retention_days:
            cutoff = now - dt.timedelta(days=retention_days)
            while True:
                with self._writer.begin() as connection:
                    hold_for_transaction(connection, PRUNE_LOCK)
                    old = connection.execute(
                        select(c.id, c.image_path, c.heatmap_path).where(c.created_at < cutoff)
                        .order_by(c.created_at, c.id).limit(BATCH_SIZE)
                    ).all()
                    if old:
                        connection.execute(delete(_TABLE).where(c.id.in_([row.id for row in old])))
                for row in old:
                    self.remove_files(row.image_path, row.heatmap_path)
                rows_deleted += len(old)
                images_deleted += sum(row.image_path is not None for row in old)
                if len(old) < BATCH_SIZE:
                    break
            self._remove_days_before(cutoff.date())
        with self.engine.connect() as connection:  # a plain read first: no write lock taken while under the limit
            if self._kept_bytes(connection) <= max_bytes:
                return rows_deleted, images_deleted
        while True:
            with self._writer.begin() as connection:
                # The excess is read and removed in one transaction that excludes other prunes (other workers or
                # hosts): each one sees what the previous removed, so overlapping prunes remove it once.
                hold_for_transaction(connection, PRUNE_LOCK)
                total = self._kept_bytes(connection)
                if total <= max_bytes:
                    break
                kept = connection.execute(
                    select(c.id, c.image_path, c.heatmap_path, c.image_bytes).where(c.image_bytes.is_not(None))
                    .order_by(c.created_at, c.id).limit(BATCH_SIZE)
                ).all()
                dropped = []
                for row in kept:
                    if total <= max_bytes:
                        break
                    dropped.append(row)
                    total -= row.image_bytes
                if dropped:
                    connection.execute(
                        update(_TABLE).where(c.id.in_([row.id for row in dropped]))
                        .values(image_path=None, heatmap_path=None, image_bytes=None)
                    )
            for row in dropped:
                self.remove_files(row.image_path, row.heatmap_path)
            images_deleted += len(dropped)
            if not dropped:
                break
        return rows_deleted, images_deleted

    @staticmethod
    def _kept_bytes(connection: Connection) -> int:
        return int(connection.execute(select(func.coalesce(func.sum(_TABLE.c.image_bytes), 0))).scalar_one())

    def _remove_days_before(self, day: dt.date) -> None:
        """Day folders past the retention, with anything a crash left in them; then the month and year folders
        before it that are left empty (never a current one, which a writer may be about to use)."""
        for folder in sorted(self.images_dir.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]")):
            try:
                if dt.date(*map(int, folder.relative_to(self.images_dir).parts)) < day:
                    shutil.rmtree(folder, ignore_errors=True)
            except ValueError:
                continue
        for folder in sorted(self.images_dir.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]")):
            year, month = map(int, folder.relative_to(self.images_dir).parts)
            if (year, month) < (day.year, day.month) and not any(folder.iterdir()):
                folder.rmdir()
        for folder in sorted(self.images_dir.glob("[0-9][0-9][0-9][0-9]")):
            if int(folder.name) < day.year and not any(folder.iterdir()):
                folder.rmdir()


_STOP = object()


def _failure_reason(exc: BaseException) -> str:
    return "disk_full" if isinstance(exc, InsufficientStorage) else "database"


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class RecordWriter:
    """A bounded queue and one daemon thread that writes what is queued, in batches, and prunes."""

    def __init__(self, store: RecordStore, metrics: Metrics, queue_size: int, max_bytes: int,
                 retention_days: int) -> None:
        self.store = store
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.retention_days = retention_days
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stopping = threading.Event()
        self._stop_by = 0.0  # monotonic time past which the closing thread stops writing
        self._dropped = 0
        self._last_drop_log = 0.0
        self._last_failure_log: dict[str, float] = {}
        self._image_bytes = 0  # of the queued records; changed under self._lock

    def submit(self, pending: PendingRecord) -> None:
        """Queue a record; never blocks and never raises (a full queue drops it, logged and counted)."""
        self._start()
        size = len(pending.image or b"") + len(pending.heatmap or b"")
        with self._lock:
            if size and self._image_bytes + size > QUEUED_IMAGE_BYTES:
                self.metrics.record_failures.labels("image").inc()
                pending, size = PendingRecord(pending.record), 0
            self._image_bytes += size
        try:
            if self._closed:
                raise queue.Full
            self._queue.put_nowait(pending)
        except queue.Full:
            with self._lock:
                self._image_bytes -= size
            self.metrics.record_failures.labels("queue_full").inc()
            self._dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log >= _LOG_EVERY_S:
                logger.error("The inspection record queue is full (%d); dropped %d record(s) since the last "
                             "message: the registry is too slow or unavailable", self._queue.maxsize, self._dropped)
                self._dropped, self._last_drop_log = 0, now
            return
        self.metrics.record_queue.inc()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call is written; False on timeout."""
        self._start()
        if self._closed:
            return True  # closing wrote the queue
        done = threading.Event()
        self._queue.put(done, timeout=timeout)
        return done.wait(timeout)

    def prune(self) -> None:
        try:
            rows, images = self.store.prune(self.max_bytes, self.retention_days)
        except Exception as exc:  # noqa: BLE001 - a database down, locked or full, a file system refusing: next time
            self.metrics.record_failures.labels("prune").inc()
            self._log_failure("prune", "Pruning the inspection records failed (%s); retrying every %.0f s",
                              _first_line(exc), PRUNE_INTERVAL_S)
            return
        if rows or images:
            logger.info("Pruned %d inspection record(s) and %d kept image(s)", rows, images)

    def close(self) -> None:
        """Write what is queued, for at most ``CLOSE_TIMEOUT_S``, then stop the thread; what is left is counted
        and logged as lost. Never blocks longer, whatever the queue holds or the registry does."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._stop_by = time.monotonic() + CLOSE_TIMEOUT_S
        self._stopping.set()
        if thread is None:
            return
        try:
            self._queue.put_nowait(_STOP)  # wakes an idle thread; a full queue wakes it anyway
        except queue.Full:
            pass
        thread.join(CLOSE_TIMEOUT_S + 1.0)
        lost = self._drop_queued()  # the thread is stuck in a write past the timeout: its queue goes unwritten
        if thread.is_alive() or lost:
            logger.error("The inspection record writer did not finish within %.0f s at shutdown; %d queued "
                         "record(s) were not written", CLOSE_TIMEOUT_S, lost)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:  # first record: CLI commands that never infer pay nothing
                self._thread = threading.Thread(target=self._run, name="bdi-records", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        next_prune = 0.0
        while True:
            if self._stopping.is_set() and (self._queue.empty() or time.monotonic() >= self._stop_by):
                lost = self._drop_queued()
                if lost:
                    logger.error("Shutting down: %d queued inspection record(s) were not written in %.0f s",
                                 lost, CLOSE_TIMEOUT_S)
                return
            wait = 0.0 if self._stopping.is_set() else max(0.0, next_prune - time.monotonic())
            try:
                first = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                first = None
            items = [] if first is None else [first]
            while items and len(items) < BATCH_SIZE:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._handle(items)
            except Exception as exc:  # noqa: BLE001 - the thread outlives any one batch
                self.metrics.record_failures.labels("writer").inc()
                self._log_failure("writer", "The inspection record writer failed on a batch (%s); it goes on with "
                                  "the next", _first_line(exc))
            finally:
                for item in items:
                    if isinstance(item, threading.Event):
                        item.set()
            if not self._stopping.is_set() and time.monotonic() >= next_prune:
                self.prune()
                next_prune = time.monotonic() + PRUNE_INTERVAL_S

    def _handle(self, items: list[Any]) -> None:
        records = [item for item in items if isinstance(item, PendingRecord)]
        if records:
            self.metrics.record_queue.dec(len(records))
            with self._lock:
                self._image_bytes -= sum(len(item.image or b"") + len(item.heatmap or b"") for item in records)
            self._write(records)

    def _drop_queued(self) -> int:
        """Empty the queue without writing it: each record counted lost (``shutdown``), each flush released."""
        lost = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, PendingRecord):
                lost += 1
                self.metrics.record_queue.dec()
            elif isinstance(item, threading.Event):
                item.set()
        if lost:
            self.metrics.record_failures.labels("shutdown").inc(lost)
        return lost

    def _log_failure(self, kind: str, message: str, *args: Any) -> None:
        """Log a failure at most once a minute per kind: a full disk fails every batch, the log stays readable."""
        now = time.monotonic()
        if now - self._last_failure_log.get(kind, -_FAILURE_LOG_EVERY_S) >= _FAILURE_LOG_EVERY_S:
            self._last_failure_log[kind] = now
            logger.error(message, *args)

    def _write(self, batch: list[PendingRecord]) -> None:
        records = []
        for pending in batch:
            record = pending.record
            if pending.image is not None:
                try:
                    record = self.store.keep_files(record, pending.image, pending.heatmap)
                except OSError as exc:
                    self.metrics.record_failures.labels("image").inc()
                    self._log_failure("image", "The image of inspection %s was not kept (%s); its record is written "
                                      "without it", record.id, exc)
            records.append(record)
        try:
            self.store.insert(records)
        except Exception as exc:  # noqa: BLE001 - any failure here is audit data lost, never a failed inspection
            reason = _failure_reason(exc)
            self.metrics.record_failures.labels(reason).inc(len(records))
            self._log_failure(reason, "%d inspection record(s) were not written (%s)", len(records), _first_line(exc))
            for record in records:
                self.store.remove_files(record.image_path, record.heatmap_path)
            return
        self.metrics.records_written.inc(len(records))


def new_record_id() -> str:
    return uuid.uuid4().hex
