"""What every call into the core carries: the uploaded images, who asked, the check of the ids that name a
model, and the logger every part writes to."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from ..logs import model_context
from ..storage.audit import AuditEvent
from ..validation import normalize_recipe, validate_id

# Every part logs under the name the service logged under before the core was split into parts: log
# filters and the JSON logs' "logger" field know it.
LOGGER_NAME = "service.inspection"


@dataclasses.dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


@dataclasses.dataclass(frozen=True)
class RequestContext:
    """Who asked: recorded with each calibration and inspection (audit) and in the logs. ``record``: this
    inspection goes into the records (every /infer; the CLI's scoring only with --record). ``actor`` and
    ``role``: the API key's name and role (both None while the service is open); the CLI's actor is
    ``cli:<OS user>`` with no role."""

    correlation_id: str | None = None
    client: str | None = None
    source: str = "api"
    part_id: str | None = None
    record: bool = False
    actor: str | None = None
    role: str | None = None

    def audit(self, action: str, **fields: Any) -> AuditEvent:
        """The audit event of a change this caller makes; the registry write that makes it fills in the rest."""
        return AuditEvent(action, actor=self.actor, role=self.role, correlation_id=self.correlation_id,
                          client=self.client, **fields)


F = TypeVar("F", bound=Callable[..., Any])


def about_model(method: F) -> F:
    """Log lines written inside a method of (role_id, roi_id) carry the two ids (JSON log fields)."""

    @functools.wraps(method)
    def wrapper(self: Any, role_id: str, roi_id: str, *args: Any, **kwargs: Any) -> Any:
        with model_context(role_id, roi_id):
            return method(self, role_id, roi_id, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def checked_recipe(role_id: str, roi_id: str, recipe_id: str | None) -> str:
    """Check the ids; the recipe as stored ("default" for none)."""
    validate_id("role_id", role_id)
    validate_id("roi_id", roi_id)
    return normalize_recipe(recipe_id)
