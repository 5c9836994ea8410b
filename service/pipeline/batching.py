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
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from .features import FeatureExtractor, preprocess

logger = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class _Job:
    tensor: np.ndarray  # preprocessed CHW float32
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    features: np.ndarray | None = None
    error: BaseException | None = None


class MicroBatcher:
    """``extract(bgr)`` from any number of threads; forwards batched by one worker thread."""

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
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders start/submit/close so nothing is queued behind the stop
        self._worker: threading.Thread | None = None
        self._closed = False

    def extract(self, bgr: np.ndarray) -> np.ndarray:
        """(H*W, 1152) unit rows of one HxWx3 uint8 BGR image, as ``FeatureExtractor.extract`` gives."""
        job = _Job(preprocess(bgr, self.extractor.input_size)[0])
        with self._lock:
            if self._closed:
                raise RuntimeError("the inference worker is closed (the service is shutting down)")
            if self._worker is None:  # started on first use: CLI commands that never infer pay nothing
                self._worker = threading.Thread(target=self._run, name="bdi-infer-forward", daemon=True)
                self._worker.start()
            self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.features is not None
        return job.features

    def forwards_by_size(self) -> dict[int, int]:
        """How many forwards ran at each batch size, smallest first."""
        with self._stats_lock:
            return dict(sorted(self._batch_sizes.items()))

    def close(self) -> None:
        """Finish the queued jobs, then stop the worker; later ``extract`` calls raise."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            worker = self._worker
            if worker is not None:
                self._queue.put(None)
        if worker is not None:
            worker.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            while len(jobs) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:  # the stop comes last: finish this batch first
                    stopping = True
                    break
                jobs.append(job)
            self._forward(jobs)

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
        with self._stats_lock:
            self._batch_sizes[len(jobs)] += 1
        if self.on_forward is not None:
            self.on_forward(len(jobs), seconds)
        logger.debug("forward batch=%d seconds=%.3f", len(jobs), seconds)
        for job, rows in zip(jobs, features):
            job.features = rows
            job.done.set()
