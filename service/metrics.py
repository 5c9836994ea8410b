"""Prometheus metrics of one service (``GET /metrics``), shared by every wing that observes something.

Each ``Metrics`` has its own registry, so two services in one process (tests) count apart. With
``PROMETHEUS_MULTIPROC_DIR`` set before ``prometheus_client`` is first imported (``bdi serve --workers N``
does it), prometheus-client's multiprocess mode is on: every worker writes its values to files in that
folder and ``render`` sums the folder, so a scrape that lands on any worker sees the whole server.

Labels stay bounded: route templates (never raw paths), methods, statuses, model ids (only models that
exist answer an inspection), decisions, reasons. Never request or part ids.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from sqlalchemy import Engine, event

disable_created_metrics()  # the *_created series double every metric's lines and multiprocess mode has none
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "<unmatched>"
"""The route label of requests that matched no route (404, 405): the raw path would make labels unbounded."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_FIT_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def multiprocess_dir() -> str | None:
    """The multiprocess folder when that mode is on, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir(path: Path) -> None:
    """Create the folder and empty it: values left by an earlier server would be summed into this one's."""
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class Metrics:
    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bdi_http_requests", "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"], registry=registry,
        )
        self.latency = Histogram(
            "bdi_http_request_duration_seconds", "Time from request to response, by route template and method.",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.forward_seconds = Histogram(
            "bdi_backbone_forward_seconds", "Duration of one /infer backbone forward (a micro-batch).",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.batch_size = Histogram(
            "bdi_backbone_batch_size", "Images per /infer backbone forward.", buckets=_BATCH_BUCKETS, registry=registry,
        )
        self.queue_depth = Gauge(
            "bdi_inference_queue_depth", "/infer requests waiting for or inside a backbone forward.",
            registry=registry, multiprocess_mode="livesum",
        )
        self.cache_hits = Counter(
            "bdi_memory_cache_hits", "Memory-bank lookups served from this process's cache.", registry=registry,
        )
        self.cache_misses = Counter(
            "bdi_memory_cache_misses", "Memory-bank lookups that read the files.", registry=registry,
        )
        self.inspections = Counter(
            "bdi_inspections", "Answered inspections by model and decision (none: uncalibrated).",
            ["recipe_id", "role_id", "roi_id", "decision"], registry=registry,
        )
        self.inspection_warnings = Counter(
            "bdi_inspection_warnings", "Inspections answered with a warning, by kind (image_size: the image's size "
            "differs from the training images').", ["recipe_id", "role_id", "roi_id", "kind"], registry=registry,
        )
        self.fits = Counter("bdi_fits", "Completed fits and appends (new memory versions), by kind.", ["kind"],
                            registry=registry)
        self.fit_seconds = Histogram(
            "bdi_fit_duration_seconds", "Duration of a fit or append, reading the images to the activated version.",
            ["kind"], buckets=_FIT_BUCKETS, registry=registry,
        )
        self.registry_errors = Counter(
            "bdi_registry_errors", "Database errors of the registry, by exception type.", ["error"], registry=registry,
        )
        self.free_disk = Gauge(
            "bdi_models_dir_free_bytes", "Free bytes on the disk of the models dir, read at scrape time.",
            registry=registry, multiprocess_mode="mostrecent",
        )
        self.records_written = Counter(
            "bdi_records_written", "Inspection records written to the registry.", registry=registry,
        )
        self.record_failures = Counter(
            "bdi_record_write_failures",
            "Inspection records (or their images) that could not be written, by reason: queue_full, database, "
            "disk_full (the registry's disk), image, shutdown (still queued when the writer had to stop); and "
            "failed prunes (prune) and writer batches that failed otherwise (writer).", ["reason"], registry=registry,
        )
        self.record_queue = Gauge(
            "bdi_record_queue_depth", "Inspection records waiting for the background writer.",
            registry=registry, multiprocess_mode="livesum",
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float | None) -> None:
        self.requests.labels(route, method, str(status)).inc()
        if seconds is not None:
            self.latency.labels(route, method).observe(seconds)

    def observe_forward(self, batch: int, seconds: float) -> None:
        """The inference worker's hook (``MicroBatcher(on_forward=...)``): pipeline code never imports this."""
        self.forward_seconds.observe(seconds)
        self.batch_size.observe(batch)

    def watch_engine(self, engine: Engine) -> None:
        """Count every database error of this engine (SQLAlchemy's ``handle_error`` event)."""

        def counted(context: Any) -> None:
            self.registry_errors.labels(type(context.original_exception).__name__).inc()

        event.listen(engine, "handle_error", counted)

    def render(self, models_dir: Path) -> tuple[bytes, str]:
        """The text exposition (body, content type); in multiprocess mode, summed over every worker."""
        try:
            self.free_disk.set(shutil.disk_usage(models_dir).free)
        except OSError:
            pass  # the models dir is gone: /health says so; the other metrics still count
        folder = multiprocess_dir()
        if folder is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, folder)
        return generate_latest(merged), CONTENT_TYPE_LATEST

    @staticmethod
    def close() -> None:
        """A worker that stops takes its live gauges (queue depths) out of the multiprocess sums."""
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(os.getpid())
