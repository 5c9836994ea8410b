"""Response bodies of the audit trail (GET /audit)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta


class AuditItem(msgspec.Struct):
    """One change: who made it (the API key's name, `cli:<user>` from the command line, null while the service is
    open), with which role, when, from where, and what it changed."""

    example: ClassVar[dict[str, Any]] = {
        "id": 42, "at": "2026-12-03T10:15:02.123456Z", "actor": "line2-setup", "role": "setup",
        "action": "calibrate", "recipe_id": "default", "role_id": "Master1", "roi_id": "inspection-1",
        "version_before": None, "version_after": 3, "threshold_before": 0.41, "threshold_after": 0.4676,
        "details": {"source": "api"}, "correlation_id": "3f9c2a7e5b1d4c8f9a0e6b2d7c4f1a85", "host": "cell-pc-2",
        "client": "10.0.0.12:53114",
    }

    id: int
    at: Annotated[str, Meta(description="UTC time of the change (RFC 3339).")]
    actor: str | None
    role: str | None
    action: Annotated[str, Meta(description="fit, append, calibrate, learn, activate, rollback, delete, import, "
                                "review, shadow, dataset_upload, dataset_delete, recipe_mm_per_px, key_add or "
                                "key_revoke.")]
    recipe_id: str | None
    role_id: str | None
    roi_id: str | None
    version_before: int | None
    version_after: int | None
    threshold_before: float | None
    threshold_after: float | None
    details: dict[str, Any] | None
    correlation_id: str | None
    host: Annotated[str | None, Meta(description="The service host (or CLI machine) that made the change.")]
    client: Annotated[str | None, Meta(description="The caller's address (ip:port); null from the command line.")]


class AuditPage(msgspec.Struct):
    """One page of the trail, newest first; `next_cursor` is null on the last page."""

    items: list[AuditItem]
    next_cursor: str | None
