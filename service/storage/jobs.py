"""Jobs: long tasks (a replay) run off the request path, one registry row each, so that any host answers for
any job.

Why a table of our own and not a job library: the registry is SQLite on a cell PC and PostgreSQL on several hosts,
and the library litestar-fullstack uses (SAQ) queues in Redis or PostgreSQL only, with no SQLite backend; the other
Python job queues (Celery, RQ, Dramatiq, arq) need a broker the plant does not run. A job here only needs a row, a
lease and a reader who notices a dead lease, which the registry already gives on both databases.

The lease: the host that queued a job runs it and refreshes ``heartbeat_at`` of its unfinished jobs every
``heartbeat_s`` (BDI_JOB_HEARTBEAT_S). A job whose heartbeat is older than ``STALE_AFTER_BEATS`` beats is taken as
the job of a dead host: whoever reads it (``JobStore.get``, on any host) marks it ``failed`` with a sentence, in a
conditional UPDATE, so a live host's late heartbeat and a reader never both win. Times are the hosts' clocks
(UTC): their skew must stay well under the lease (NTP keeps it to milliseconds).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Engine, and_, insert, or_, select, update

from .records import InspectionRecord, iso, utc
from .registry.engine import unavailable_as_503
from .registry.tables import InspectionRow, Job

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
UNFINISHED = (QUEUED, RUNNING)
STALE_AFTER_BEATS = 6
"""A job is its host's as long as its heartbeat is younger than this many heartbeat intervals: five missed beats
(a registry slow for a moment misses one or two) before a reader declares the host dead."""
_TABLE = Job.__table__
_RECORDS = InspectionRow.__table__


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class JobInfo:
    """One job as ``GET /jobs/{id}`` shows it, plus whose it is and what it was asked."""

    job_id: str
    kind: str
    status: str
    done: int
    total: int
    recipe_id: str
    role_id: str
    roi_id: str
    params: dict[str, Any]
    host: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    result: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Any) -> JobInfo:
        def when(value: dt.datetime | None) -> dt.datetime | None:
            return utc(value) if value is not None else None

        return cls(row.id, row.kind, row.status, row.progress_done, row.progress_total, row.recipe_id, row.role_id,
                   row.roi_id, row.params or {}, row.host, utc(row.created_at), when(row.started_at),
                   when(row.finished_at), row.error, row.result)

    def as_dict(self) -> dict[str, Any]:
        """The contract's body of ``GET /jobs/{job_id}``."""
        return {
            "job_id": self.job_id, "kind": self.kind, "status": self.status,
            "progress": {"done": self.done, "total": self.total},
            "started_at": iso(self.started_at) if self.started_at else None,
            "finished_at": iso(self.finished_at) if self.finished_at else None,
            "error": self.error, "result": self.result,
        }


class JobStore:
    """The jobs table: create, lease (heartbeat), progress, finish, and reads that fail dead leases."""

    def __init__(self, engine: Engine, heartbeat_s: float) -> None:
        self.engine = engine
        self._writer = engine.execution_options(sqlite_immediate=True)
        self.heartbeat_s = heartbeat_s

    @property
    def lease(self) -> dt.timedelta:
        return dt.timedelta(seconds=STALE_AFTER_BEATS * self.heartbeat_s)

    def create(self, kind: str, recipe_id: str, role_id: str, roi_id: str, params: dict[str, Any], host: str,
               created_by: str | None = None) -> JobInfo:
        """A queued job of ``host``, its lease started."""
        now = _now()
        values = {"id": uuid.uuid4().hex, "kind": kind, "status": QUEUED, "recipe_id": recipe_id, "role_id": role_id,
                  "roi_id": roi_id, "params": params, "progress_done": 0, "progress_total": 0, "host": host,
                  "heartbeat_at": now, "created_at": now, "created_by": created_by}
        with unavailable_as_503(self.engine), self._writer.begin() as connection:
            connection.execute(insert(_TABLE).values(**values))
        job = self.get(values["id"])
        assert job is not None
        return job

    def start(self, job_id: str, host: str) -> bool:
        """Queued -> running; False when the job is no longer this host's queued job (a reader failed it)."""
        now = _now()
        return self._change(job_id, host, (QUEUED,), status=RUNNING, started_at=now, heartbeat_at=now)

    def progress(self, job_id: str, host: str, done: int, total: int) -> bool:
        return self._change(job_id, host, (RUNNING,), progress_done=done, progress_total=total, heartbeat_at=_now())

    def finish(self, job_id: str, host: str, result: dict[str, Any], done: int, total: int) -> bool:
        return self._change(job_id, host, (RUNNING,), status=DONE, result=result, progress_done=done,
                            progress_total=total, finished_at=_now())

    def fail(self, job_id: str, host: str, error: str) -> bool:
        return self._change(job_id, host, UNFINISHED, status=FAILED, error=error, finished_at=_now())

    def beat(self, host: str) -> int:
        """Renew the lease of every unfinished job of ``host``; how many."""
        with unavailable_as_503(self.engine), self._writer.begin() as connection:
            return connection.execute(
                update(_TABLE).where(_TABLE.c.host == host, _TABLE.c.status.in_(UNFINISHED)).values(heartbeat_at=_now())
            ).rowcount

    def fail_all(self, host: str, error: str) -> int:
        """Fail every unfinished job of ``host`` (its service is closing); how many."""
        with unavailable_as_503(self.engine), self._writer.begin() as connection:
            return connection.execute(
                update(_TABLE).where(_TABLE.c.host == host, _TABLE.c.status.in_(UNFINISHED))
                .values(status=FAILED, error=error, finished_at=_now())
            ).rowcount

    def get(self, job_id: str) -> JobInfo | None:
        """The job; an unfinished one whose lease ran out is failed first, with a sentence naming its host."""
        row = self._row(job_id)
        if row is None:
            return None
        if row.status in UNFINISHED and row.heartbeat_at is not None and utc(row.heartbeat_at) < _now() - self.lease:
            error = (f"The host that ran this job ({row.host}) stopped renewing it: no heartbeat since "
                     f"{iso(utc(row.heartbeat_at))}, {STALE_AFTER_BEATS} x {self.heartbeat_s:g} s ago or more (the "
                     "process died or lost the registry). Start the job again.")
            with unavailable_as_503(self.engine), self._writer.begin() as connection:
                connection.execute(  # only if no heartbeat came meanwhile
                    update(_TABLE).where(_TABLE.c.id == job_id, _TABLE.c.status.in_(UNFINISHED),
                                         _TABLE.c.heartbeat_at <= row.heartbeat_at)
                    .values(status=FAILED, error=error, finished_at=_now())
                )
            row = self._row(job_id)
        return JobInfo.from_row(row) if row is not None else None

    def _row(self, job_id: str) -> Any:
        with unavailable_as_503(self.engine), self.engine.connect() as connection:
            return connection.execute(select(_TABLE).where(_TABLE.c.id == job_id)).first()

    def _change(self, job_id: str, host: str, statuses: tuple[str, ...], **values: Any) -> bool:
        with unavailable_as_503(self.engine), self._writer.begin() as connection:
            return connection.execute(
                update(_TABLE).where(and_(_TABLE.c.id == job_id, _TABLE.c.host == host,
                                          _TABLE.c.status.in_(statuses))).values(**values)
            ).rowcount == 1


def records_to_replay(engine: Engine, recipe_id: str, role_id: str, roi_id: str, last: int) -> list[InspectionRecord]:
    """What a replay scores: of the model's ``last`` newest records those whose image was kept, plus every reviewed
    record with a kept image; newest first, each once."""
    c = _RECORDS.c
    model = and_(c.recipe_id == recipe_id, c.role_id == role_id, c.roi_id == roi_id)
    newest = select(c.id).where(model).order_by(c.created_at.desc(), c.id.desc()).limit(last).subquery()
    query = (select(_RECORDS).where(model, c.image_path.is_not(None),
                                    or_(c.id.in_(select(newest.c.id)), c.review_outcome.is_not(None)))
             .order_by(c.created_at.desc(), c.id.desc()))
    with unavailable_as_503(engine), engine.connect() as connection:
        return [InspectionRecord.from_row(row) for row in connection.execute(query)]
