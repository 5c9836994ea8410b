"""Logging with the request's correlation id on every line about that request; text by default, or one
JSON object per line (``BDI_LOG_FORMAT=json``) for log shippers."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
from collections.abc import Iterator

correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="-")
model_ids: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "model_ids", default=(None, None)
)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"


@contextlib.contextmanager
def model_context(role_id: str, roi_id: str) -> Iterator[None]:
    """Stamp the log lines written inside with this (role, roi); JSON lines carry them as fields."""
    token = model_ids.set((role_id, roi_id))
    try:
        yield
    finally:
        model_ids.reset(token)


class CorrelationIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get()
        record.role_id, record.roi_id = model_ids.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, correlation_id, role_id, roi_id
    (null outside a request or a model), and the traceback as ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": None if getattr(record, "correlation_id", "-") == "-" else record.correlation_id,
            "role_id": getattr(record, "role_id", None),
            "roi_id": getattr(record, "roi_id", None),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """One stderr handler on the root logger; idempotent (tests and workers call it again), and a later call
    may switch the format."""
    root = logging.getLogger()
    root.setLevel(level)
    handler = next((h for h in root.handlers if getattr(h, "_bdi", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler._bdi = True  # type: ignore[attr-defined]
        handler.addFilter(CorrelationIdFilter())
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(LOG_FORMAT))
