"""Jobs run off the request path: a registry row each (``storage.jobs``: why not a job library, the lease), run by
one worker thread of the process that queued them.

One job at a time per process (the next ones stay ``queued``), so a replay never takes more than one backbone
slot; its forwards go through the /infer batcher's background lane, which yields to /infer. A heartbeat thread
renews the lease of this host's unfinished jobs every BDI_JOB_HEARTBEAT_S; a process that dies stops renewing
them and the first reader after the lease fails them. ``close`` (the service shutting down) stops the running job
after its current image and fails it, and every queued one, with a sentence.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import BadRequest, NotFound, ServiceError
from ..storage.jobs import JobInfo, JobStore
from .records import RECORD_ID
from .request import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

CLOSE_WAIT_S = 30.0
"""Longest ``close`` waits for the running job to stop at its next image before failing it anyway."""


class JobStopped(Exception):
    """The job must stop: the service is closing, or the job is no longer this host's (a reader failed it)."""


Progress = Callable[[int, int], None]
"""``progress(done, total)``: the job's work reports after each item; raises ``JobStopped`` when it must stop."""
Work = Callable[[Progress], dict[str, Any]]
"""A job's work: runs with a progress callback and returns the job's result."""


def this_host() -> str:
    """Who runs a job: the machine and the process (a restarted process is another host: its old jobs' leases
    run out)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclasses.dataclass
class _Queued:
    job_id: str
    work: Work


class JobRunner:
    """Queue jobs of this process and run them one at a time in a worker thread; read any host's jobs."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.host = this_host()
        self._queue: collections.deque[_Queued] = collections.deque()
        self._ready = threading.Condition()
        self._closing = threading.Event()
        self._worker: threading.Thread | None = None
        self._beater: threading.Thread | None = None

    # ---- queue and read -------------------------------------------------------------------------------------
    def submit(self, kind: str, model: tuple[str, str, str], params: dict[str, Any], work: Work,
               created_by: str | None = None) -> JobInfo:
        """Queue a job of ``model`` (recipe, role, roi) on this host; it runs after the jobs queued before it."""
        with self._ready:
            if self._closing.is_set():
                raise ServiceError("The service is shutting down; start the job again once it is back.", 503)
            job = self.store.create(kind, *model, params=params, host=self.host, created_by=created_by)
            self._queue.append(_Queued(job.job_id, work))
            self._start_threads()
            self._ready.notify()
        return job

    def run_here(self, kind: str, model: tuple[str, str, str], params: dict[str, Any], work: Work,
                 on_progress: Progress | None = None, created_by: str | None = None) -> JobInfo:
        """Run a job in the calling thread (the CLI), recorded and leased like a queued one."""
        job = self.store.create(kind, *model, params=params, host=self.host, created_by=created_by)
        with self._ready:
            self._start_beater()
        self._run(_Queued(job.job_id, work), on_progress)
        return self.get(job.job_id)

    def get(self, job_id: str) -> JobInfo:
        """The job, as any host sees it (400 not a job id, 404 unknown id)."""
        if not RECORD_ID.fullmatch(job_id):  # job ids have the records' form: uuid4 hex
            raise BadRequest(f"{job_id[:64]!r} is not a job id (32 hexadecimal digits: the job_id POST /models/replay "
                             "answers).")
        job = self.store.get(job_id)
        if job is None:
            raise NotFound(f"No job has the id {job_id!r}; POST /models/replay answers the id of the job it starts.")
        return job

    # ---- life cycle -----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the running job after its current item, then fail it and every queued job with a sentence."""
        with self._ready:
            self._closing.set()
            self._queue.clear()
            self._ready.notify_all()
            worker, beater = self._worker, self._beater
        if worker is not None:
            worker.join(CLOSE_WAIT_S)
        if beater is not None:
            beater.join(CLOSE_WAIT_S)
        try:
            failed = self.store.fail_all(
                self.host, f"The service on {self.host} shut down before this job finished; start it again.")
        except Exception as exc:  # noqa: BLE001 - the registry is gone: the lease fails the jobs instead
            logger.warning("Could not mark this host's unfinished jobs failed at shutdown (%s); readers will "
                           "once their lease runs out", exc)
            return
        if failed:
            logger.warning("Shutting down: %d unfinished job(s) of this host marked failed", failed)

    def _start_threads(self) -> None:
        """Under ``_ready``: the worker and the heartbeat, started by the first job."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="bdi-jobs", daemon=True)
            self._worker.start()
        self._start_beater()

    def _start_beater(self) -> None:
        if self._beater is None:
            self._beater = threading.Thread(target=self._beat, name="bdi-jobs-heartbeat", daemon=True)
            self._beater.start()

    def _beat(self) -> None:
        while not self._closing.wait(self.store.heartbeat_s):
            try:
                self.store.beat(self.host)
            except Exception as exc:  # noqa: BLE001 - a registry hiccup costs one beat; the lease allows several
                logger.warning("Job heartbeat failed (%s); retrying in %g s", exc, self.store.heartbeat_s)

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closing.is_set():
                    self._ready.wait()
                if self._closing.is_set():
                    return
                queued = self._queue.popleft()
            self._run(queued, None)

    def _run(self, queued: _Queued, on_progress: Progress | None) -> None:
        """Run one job to ``done`` or ``failed``; never raises."""
        job_id, last_write = queued.job_id, 0.0
        done_total = [0, 0]

        def progress(done: int, total: int) -> None:
            nonlocal last_write
            if self._closing.is_set():
                raise JobStopped("the service is shutting down")
            done_total[:] = [done, total]
            now = time.monotonic()
            if done == total or now - last_write >= self.store.heartbeat_s / 2:
                last_write = now
                if not self.store.progress(job_id, self.host, done, total):
                    raise JobStopped("the job is no longer this host's")
            if on_progress is not None:
                on_progress(done, total)

        try:
            if not self.store.start(job_id, self.host):
                return
            result = queued.work(progress)
            if not self.store.finish(job_id, self.host, result, *done_total):
                logger.warning("Job %s finished after it was failed elsewhere (lease ran out); result dropped", job_id)
        except JobStopped as stop:
            logger.warning("Job %s stopped: %s", job_id, stop)
        except Exception as exc:  # noqa: BLE001 - any failure of the work is the job's error, never the worker's end
            if not isinstance(exc, ServiceError):
                logger.exception("Job %s failed", job_id)
            self._fail(job_id, _sentence(exc))

    def _fail(self, job_id: str, error: str) -> None:
        try:
            self.store.fail(job_id, self.host, error)
        except Exception as exc:  # noqa: BLE001 - the lease fails it instead
            logger.warning("Could not mark job %s failed (%s)", job_id, exc)


def _sentence(exc: BaseException) -> str:
    """The error a failed job shows: a service error's own sentence, else the exception's first line."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, ServiceError):
        return text
    return f"The job failed: {type(exc).__name__}: {text}" if text else f"The job failed: {type(exc).__name__}."
