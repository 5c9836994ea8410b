"""The audit trail: one ``audit`` row per change to what judges parts (fit, calibrate, activate, delete, keys...),
naming who made it, when, from where, and what it changed.

A change and its row commit together: the registry's write methods take an ``AuditEvent`` and call ``write_audit``
inside their own transaction, so a change without its row can't happen. The rows are never pruned by the
inspection records' retention. Reads page newest first on the keyset (at, id), like the inspection records.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import socket
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, or_, select, true
from sqlalchemy.orm import Session

from ...errors import BadRequest
from ..records import iso, utc
from .engine import unavailable_as_503
from .tables import AuditEntry

_TABLE = AuditEntry.__table__
EXPORT_CHUNK = 2000

ACTIONS = (
    "fit", "append", "calibrate", "learn", "activate", "rollback", "delete", "import", "review", "shadow",
    "dataset_upload", "dataset_delete", "recipe_mm_per_px", "key_add", "key_revoke",
)
"""Every action the trail knows; an event naming another is a programming error."""

HOST = socket.gethostname()


@dataclasses.dataclass(frozen=True)
class AuditEvent:
    """One change as the caller knows it; ``write_audit`` adds the time and the host.

    ``actor``: the API key's name, ``cli:<OS user>`` for the CLI, None when the service is open (no keys).
    """

    action: str
    actor: str | None = None
    role: str | None = None
    recipe_id: str | None = None
    role_id: str | None = None
    roi_id: str | None = None
    version_before: int | None = None
    version_after: int | None = None
    threshold_before: float | None = None
    threshold_after: float | None = None
    details: dict[str, Any] | None = None
    correlation_id: str | None = None
    client: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown audit action {self.action!r}")

    def about(self, **fields: Any) -> AuditEvent:
        """The same event with more fields filled (the model, the versions or thresholds once known)."""
        return dataclasses.replace(self, **fields)


@dataclasses.dataclass(frozen=True)
class AuditItem:
    """One row of the trail, as read back."""

    id: int
    at: dt.datetime
    actor: str | None
    role: str | None
    action: str
    recipe_id: str | None
    role_id: str | None
    roi_id: str | None
    version_before: int | None
    version_after: int | None
    threshold_before: float | None
    threshold_after: float | None
    details: dict[str, Any] | None
    correlation_id: str | None
    host: str | None
    client: str | None

    def as_dict(self) -> dict[str, Any]:
        item = dataclasses.asdict(self)
        item["at"] = iso(self.at)
        return item


def write_audit(transaction: Session | Connection, event: AuditEvent) -> None:
    """Insert the event's row in the caller's open transaction (it commits or rolls back with the change)."""
    row = dataclasses.asdict(event)
    transaction.execute(insert(_TABLE).values(**row, at=dt.datetime.now(dt.timezone.utc), host=HOST))


@dataclasses.dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    recipe_id: str | None = None
    role_id: str | None = None
    roi_id: str | None = None
    actor: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def clauses(self) -> list[Any]:
        c = _TABLE.c
        found = [getattr(c, name) == getattr(self, name)
                 for name in ("action", "recipe_id", "role_id", "roi_id", "actor") if getattr(self, name) is not None]
        if self.since is not None:
            found.append(c.at >= utc(self.since))
        if self.until is not None:
            found.append(c.at < utc(self.until))
        return found


class AuditLog:
    """The read side of the trail: pages for GET /audit, every row for ``bdi audit export``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def page(self, where: AuditFilter, limit: int, cursor: str | None = None) -> tuple[list[AuditItem], str | None]:
        """Up to ``limit`` rows newest first, after ``cursor``; and the cursor of the next page (None: last)."""
        rows = self._chunk(where, _decode_cursor(cursor) if cursor else None, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, _encode_cursor(rows[-1]) if more else None

    def iterate(self, where: AuditFilter, chunk: int = EXPORT_CHUNK) -> Iterator[AuditItem]:
        after = None
        while True:
            rows = self._chunk(where, after, chunk)
            yield from rows
            if len(rows) < chunk:
                return
            after = (rows[-1].at, rows[-1].id)

    def _chunk(self, where: AuditFilter, after: tuple[dt.datetime, int] | None, limit: int) -> list[AuditItem]:
        c = _TABLE.c
        clauses = where.clauses()
        if after is not None:
            stamp, row_id = after
            clauses += [c.at <= stamp, or_(c.at < stamp, c.id < row_id)]
        query = select(_TABLE).where(and_(true(), *clauses)).order_by(c.at.desc(), c.id.desc()).limit(limit)
        with unavailable_as_503(self.engine), self.engine.connect() as connection:
            return [_item(row) for row in connection.execute(query)]


def _item(row: Any) -> AuditItem:
    values = dict(row._mapping)
    values["at"] = utc(values["at"])
    return AuditItem(**{field.name: values[field.name] for field in dataclasses.fields(AuditItem)})


def _encode_cursor(item: AuditItem) -> str:
    return base64.urlsafe_b64encode(f"{iso(item.at)} {item.id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, row_id = text.split(" ")
        return utc(dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))), int(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(
            f"cursor {cursor[:40]!r} is not one this service made; pass back the next_cursor of the previous page "
            "unchanged, or leave it out for the first page."
        ) from None
