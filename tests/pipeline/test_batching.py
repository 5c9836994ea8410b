"""Micro-batching of /infer forwards: batches form while the backbone is busy, rows equal single
extraction, errors reach every waiter, the worker stops cleanly; and concurrent /infer over HTTP
answers exactly what sequential /infer answers."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

import numpy as np
import pytest

from service.pipeline import FeatureExtractor
from service.pipeline.batching import MicroBatcher
from tests.support import fit, infer, synthetic_roi


class GatedExtractor:
    """The real extractor, whose first ``embed`` waits for ``release`` so jobs queue up behind it."""

    def __init__(self, inner: FeatureExtractor, fail_batches: int = 0) -> None:
        self.inner = inner
        self.input_size = inner.input_size
        self.entered = threading.Event()
        self.release = threading.Event()
        self.sizes: list[int] = []
        self.fail_batches = fail_batches

    def embed(self, batch: np.ndarray) -> np.ndarray:
        self.sizes.append(len(batch))
        self.entered.set()
        assert self.release.wait(60)
        if self.fail_batches:
            self.fail_batches -= 1
            raise RuntimeError("out of memory (simulated)")
        return self.inner.embed(batch)


def wait_queued(batcher: MicroBatcher, count: int) -> None:
    deadline = time.monotonic() + 60
    while batcher.waiting() < count:
        assert time.monotonic() < deadline, "jobs did not queue"
        time.sleep(0.01)


def run_gated(batcher: MicroBatcher, gated: GatedExtractor, images: list[np.ndarray]) -> list[Any]:
    """Submit images[0], wait until its forward runs, queue the rest behind it, then release."""
    with concurrent.futures.ThreadPoolExecutor(len(images)) as pool:
        first = pool.submit(batcher.extract, images[0])
        assert gated.entered.wait(60)
        rest = [pool.submit(batcher.extract, image) for image in images[1:]]
        wait_queued(batcher, len(images) - 1)
        gated.release.set()
        futures = [first, *rest]
        concurrent.futures.wait(futures, timeout=120)
    outcomes = []
    for future in futures:
        error = future.exception()
        outcomes.append(error if error is not None else future.result())
    return outcomes


@pytest.fixture
def images() -> list[np.ndarray]:
    return [synthetic_roi(150 + 10 * i, 120, seed=i) for i in range(6)]


def test_queued_requests_share_forwards_and_get_their_own_rows(extractor: FeatureExtractor, images) -> None:
    gated = GatedExtractor(extractor)
    batcher = MicroBatcher(gated, max_batch=4)  # type: ignore[arg-type]
    try:
        outcomes = run_gated(batcher, gated, images)
    finally:
        batcher.close()
    assert gated.sizes == [1, 4, 1]  # the lone first, then the queue in batches of at most 4
    assert batcher.forwards_by_size() == {1: 2, 4: 1}
    for image, rows in zip(images, outcomes):
        assert np.array_equal(rows, extractor.extract([image])[0])


def test_batch_size_one_runs_one_image_per_forward(extractor: FeatureExtractor, images) -> None:
    gated = GatedExtractor(extractor)
    batcher = MicroBatcher(gated, max_batch=1)  # type: ignore[arg-type]
    try:
        outcomes = run_gated(batcher, gated, images[:3])
    finally:
        batcher.close()
    assert gated.sizes == [1, 1, 1]
    assert all(isinstance(rows, np.ndarray) for rows in outcomes)


def test_a_failed_forward_reaches_every_waiter_and_the_worker_lives_on(extractor: FeatureExtractor, images) -> None:
    gated = GatedExtractor(extractor, fail_batches=2)
    batcher = MicroBatcher(gated, max_batch=8)  # type: ignore[arg-type]
    try:
        outcomes = run_gated(batcher, gated, images[:4])
        assert gated.sizes == [1, 3]
        assert all(isinstance(error, RuntimeError) and "out of memory" in str(error) for error in outcomes)
        assert np.array_equal(batcher.extract(images[0]), extractor.extract([images[0]])[0])
    finally:
        batcher.close()


def test_close_finishes_queued_jobs_then_refuses(extractor: FeatureExtractor, images) -> None:
    gated = GatedExtractor(extractor)
    batcher = MicroBatcher(gated, max_batch=2)  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.extract, images[0])
        assert gated.entered.wait(60)
        rest = [pool.submit(batcher.extract, image) for image in images[1:4]]
        wait_queued(batcher, 3)
        closing = pool.submit(batcher.close)
        gated.release.set()
        closing.result(timeout=120)
        assert all(future.result(timeout=1).shape == (256, 1152) for future in [first, *rest])
    assert gated.sizes == [1, 2, 1]
    with pytest.raises(RuntimeError, match="shutting down"):
        batcher.extract(images[0])
    batcher.close()  # twice is fine


def test_background_images_yield_to_infer_images_queued_with_them(extractor: FeatureExtractor, images) -> None:
    """A replay's images (background lane) wait while /infer images are queued, whatever came first."""
    gated = GatedExtractor(extractor)
    batcher = MicroBatcher(gated, max_batch=1)  # type: ignore[arg-type]
    order: list[str] = []
    replays: list[Any] = []
    original = gated.embed

    def embed(batch: np.ndarray) -> np.ndarray:
        rows = original(batch)
        order.append("replay" if any(np.array_equal(batch[0], job.tensor) for job in replays) else "infer")
        return rows

    gated.embed = embed  # type: ignore[method-assign]
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            first = pool.submit(batcher.extract, images[0])
            assert gated.entered.wait(60)
            replays.extend(batcher.extract_later(image, background=True) for image in images[1:3])
            infers = [pool.submit(batcher.extract, image) for image in images[3:5]]
            wait_queued(batcher, 4)
            gated.release.set()
            assert first.result(timeout=120).shape == (256, 1152)
            assert all(future.result(timeout=120).shape == (256, 1152) for future in infers)
            assert all(job.result().shape == (256, 1152) for job in replays)
        assert order == ["infer", "infer", "infer", "replay", "replay"]
        assert np.array_equal(replays[0].result(), extractor.extract([images[1]])[0])
    finally:
        batcher.close()


def test_a_closed_batcher_that_never_ran_starts_no_thread(extractor: FeatureExtractor) -> None:
    batcher = MicroBatcher(extractor, max_batch=4)
    batcher.close()
    assert batcher._worker is None


def test_max_batch_must_be_positive(extractor: FeatureExtractor) -> None:
    with pytest.raises(ValueError):
        MicroBatcher(extractor, max_batch=0)


def test_concurrent_infer_answers_exactly_what_sequential_infer_answers(make_client) -> None:
    client = make_client(BDI_INFER_BATCH_SIZE="4")
    assert fit(client, "Master1", "batch", [synthetic_roi(180, 150, seed=s) for s in range(3)]).status_code == 200
    probes = [synthetic_roi(180, 150, seed=100 + s) for s in range(8)]
    sequential = [infer(client, "Master1", "batch", image).json() for image in probes]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda image: infer(client, "Master1", "batch", image), probes))
    assert [reply.status_code for reply in replies] == [200] * len(probes)
    assert [reply.json() for reply in replies] == sequential
    forwards = client.get("/health").json()["infer_forwards"]
    assert sum(int(size) * count for size, count in forwards.items()) == 2 * len(probes)
