"""GET /audit: the audit trail, for engineers and administrators."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import Parameter

from ...core import MAX_PAGE, InspectionService
from ...errors import BadRequest
from ...storage import MOMENT_FORMS, parse_moment
from ...storage.audit import ACTIONS, AuditFilter
from ..auth import ENGINEER
from ..openapi import error_responses
from ..shared import ID_SCHEMA, as_schema, off_loop
from .schemas import AuditPage


def _moment(name: str, text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise ValidationException("Invalid query parameters", extra=[
            {"key": name, "message": f"Expected {MOMENT_FORMS}: {exc}", "source": "query"}
        ]) from None


def _time_filter(when: str) -> Any:
    return Parameter(description=f"Only changes made {when} this time: {MOMENT_FORMS}.", required=False)


def _id_filter(what: str) -> Any:
    return Parameter(description=f"Only the changes of this {what}.", required=False, schema_extra=ID_SCHEMA)


class AuditController(Controller):
    """The trail of every change to what judges parts."""

    tags = ["audit"]
    guards = [ENGINEER]

    @get(
        "/audit",
        operation_id="list_audit",
        summary="Audit trail",
        description="Every change (fit, append, calibrate, learn, activate, rollback, delete, import, review, shadow, "
        "dataset uploads and deletions, a recipe's mm/px lock, keys added and revoked): who, with which role, when, "
        "from which host and address, and the model's versions and thresholds before and after. Newest first; "
        "keyset pages: pass `next_cursor` back as `cursor`. Never pruned by the records' retention.",
        response_description="One page of the trail.",
        responses=error_responses({
            400: f"`limit` is outside 1..{MAX_PAGE}, or `cursor` is not a next_cursor of this service.",
            422: "`limit` is not an integer, `action` is not one of the trail's actions, or `since`/`until` are "
            "neither ISO 8601 times nor ages (`7d`).",
            503: None,
        }),
    )
    async def list_audit(
        self,
        service: NamedDependency[InspectionService],
        action: Annotated[str | None, Parameter(description=f"Only this action: {', '.join(ACTIONS)}.",
                                                required=False, schema_extra={"enum": list(ACTIONS)})] = None,
        recipe_id: Annotated[str | None, _id_filter("recipe")] = None,
        role_id: Annotated[str | None, _id_filter("role")] = None,
        roi_id: Annotated[str | None, _id_filter("ROI")] = None,
        actor: Annotated[str | None, Parameter(description="Only the changes of this key name (or `cli:<user>`).",
                                               required=False)] = None,
        since: Annotated[str | None, _time_filter("at or after")] = None,
        until: Annotated[str | None, _time_filter("before")] = None,
        limit: Annotated[int, Parameter(description=f"Changes per page, 1 to {MAX_PAGE}.", required=False,
                                        schema_extra={"minimum": 1, "maximum": MAX_PAGE})] = 100,
        cursor: Annotated[str | None, Parameter(description="`next_cursor` of the previous page.",
                                                required=False)] = None,
    ) -> AuditPage:
        if action is not None and action not in ACTIONS:
            raise ValidationException("Invalid query parameters", extra=[
                {"key": "action", "message": f"Expected one of {', '.join(ACTIONS)}", "source": "query"}
            ])
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit={limit} is outside 1..{MAX_PAGE}; ask for fewer changes per page.")
        where = AuditFilter(action=action, recipe_id=recipe_id, role_id=role_id, roi_id=roi_id, actor=actor,
                            since=_moment("since", since), until=_moment("until", until))
        items, next_cursor = await off_loop(service.registry.audit_log.page, where, limit, cursor)
        return as_schema(AuditPage, {"items": [item.as_dict() for item in items], "next_cursor": next_cursor})
