"""Micro-batching of /infer forwards: requests that arrive while the backbone is busy share its
next forward.

One worker thread runs every inference forward. Each time it is free it takes whatever has queued,
up to ``max_batch`` images, and runs them as one batch. A lone request never waits for company (no
time window), and concurrent requests share one forward. That pays on a GPU, where a batch-1 forward
leaves most of the device idle; on a 2-core CPU a batch of 4 at input 448 costs 0.88-1.04 of four
single forwards, so batching is off there by default, and the worker's one-forward-at-a-time still
keeps concurrent requests from oversubscribing the cores with their own torch threads.
Letterboxing runs in the caller's thread, so it overlaps with the forward of others. A batched row
equals the row the image gets alone (tests check it on CPU).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from .features import FeatureExtractor, preprocess

logger = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class _Job:
    """One image in a lane, and its features once forwarded."""

    tensor: np.ndarray  # preprocessed CHW float32
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    background: bool = False
    queued_at: float = dataclasses.field(default_factory=time.monotonic)
    features: np.ndarray | None = None
    error: BaseException | None = None

    def result(self) -> np.ndarray:
        """The image's features once its forward ran (the forward's error, raised here, otherwise)."""
        self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.features is not None
        return self.features


BACKGROUND_GAP = 2.0
"""A background forward (a replay's) starts only once no /infer forward ran for this many times the last forward's
time: a client that sends its next image after an answer (its upload, decoding and memory search take about one
forward on a 2-core CPU) finds the backbone free."""
BACKGROUND_MAX_WAIT = 6.0
"""...unless a background image has waited this many forward times: under a steady stream of /infer, about one
forward in four goes to the background, so a replay progresses while the median /infer waits for none."""


class MicroBatcher:
    """``extract(bgr)`` from any number of threads; forwards batched by one worker thread. ``extract_later(bgr,
    background=True)`` queues an image of a background task (a replay) in a second lane that yields to /infer: the
    worker takes it only when no /infer image waits, and only after the gap above (``BACKGROUND_GAP``,
    ``BACKGROUND_MAX_WAIT``); a background forward already running is not interrupted, so an /infer arriving then
    waits for it at most one forward."""

    def __init__(
        self, extractor: FeatureExtractor, max_batch: int, on_forward: Callable[[int, float], None] | None = None
    ) -> None:
        """``on_forward(batch size, seconds)`` is called after each forward (the core's metrics)."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.extractor = extractor
        self.max_batch = max_batch
        self.on_forward = on_forward
        self._batch_sizes: collections.Counter[int] = collections.Counter()  # size -> forwards run
        self._stats_lock = threading.Lock()
        self._lanes: tuple[collections.deque[_Job], collections.deque[_Job]] = (collections.deque(),
                                                                                collections.deque())
        self._ready = threading.Condition()  # guards the lanes, the worker's start and the closing flag
        self._worker: threading.Thread | None = None
        self._closed = False
        self._last_forward_s = 0.0
        self._foreground_done_at = 0.0  # monotonic end of the last /infer forward

    def extract(self, bgr: np.ndarray) -> np.ndarray:
        """(H*W, 1152) unit rows of one HxWx3 uint8 BGR image, as ``FeatureExtractor.extract`` gives."""
        return self.extract_later(bgr).result()

    def extract_later(self, bgr: np.ndarray, background: bool = False) -> _Job:
        """Queue one image and return at once; ``.result()`` waits for its features. Preparing the next image
        while this one's forward runs keeps the backbone busy (a replay)."""
        job = _Job(preprocess(bgr, self.extractor.input_size)[0], background=background)
        with self._ready:
            if self._closed:
                raise RuntimeError("the inference worker is closed (the service is shutting down)")
            if self._worker is None:  # started on first use: CLI commands that never infer pay nothing
                self._worker = threading.Thread(target=self._run, name="bdi-infer-forward", daemon=True)
                self._worker.start()
            self._lanes[background].append(job)
            self._ready.notify()
        return job

    def waiting(self) -> int:
        """Images queued and not yet taken by the worker, both lanes."""
        with self._ready:
            return len(self._lanes[0]) + len(self._lanes[1])

    def forwards_by_size(self) -> dict[int, int]:
        """How many forwards ran at each batch size, smallest first."""
        with self._stats_lock:
            return dict(sorted(self._batch_sizes.items()))

    def close(self) -> None:
        """Finish the queued jobs, then stop the worker; later ``extract`` calls raise."""
        with self._ready:
            if self._closed:
                return
            self._closed = True
            worker = self._worker
            self._ready.notify()
        if worker is not None:
            worker.join()

    def _run(self) -> None:
        while True:
            with self._ready:
                jobs = self._next_jobs()
            if not jobs:
                return
            self._forward(jobs)

    def _next_jobs(self) -> list[_Job]:
        """Under ``_ready``: the next batch, waiting for one; empty once closed and drained."""
        foreground, background = self._lanes
        while True:
            if foreground:
                return [foreground.popleft() for _ in range(min(self.max_batch, len(foreground)))]
            if background:
                now = time.monotonic()
                free_at = self._foreground_done_at + BACKGROUND_GAP * self._last_forward_s
                waited_enough = background[0].queued_at + BACKGROUND_MAX_WAIT * self._last_forward_s
                start_at = min(free_at, waited_enough)
                if self._closed or now >= start_at:
                    return [background.popleft()]
                self._ready.wait(start_at - now)
                continue
            if self._closed:
                return []
            self._ready.wait()

    def _forward(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            features = self.extractor.embed(np.stack([job.tensor for job in jobs]))
        except Exception as exc:  # every waiter gets the error; the worker lives on
            logger.exception("Inference forward of a batch of %d failed", len(jobs))
            for job in jobs:
                job.error = exc
                job.done.set()
            return
        seconds = time.perf_counter() - started
        self._last_forward_s = seconds / len(jobs) if jobs[0].background else seconds
        if not jobs[0].background:
            self._foreground_done_at = time.monotonic()
        with self._stats_lock:
            self._batch_sizes[len(jobs)] += 1
        if self.on_forward is not None:
            self.on_forward(len(jobs), seconds)
        logger.debug("forward batch=%d seconds=%.3f background=%s", len(jobs), seconds, jobs[0].background)
        for job, rows in zip(jobs, features):
            job.features = rows
            job.done.set()
