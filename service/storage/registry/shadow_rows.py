"""The registry's shadow setting of a model: which kept version scores live traffic beside the active one.
A part of ``Registry`` (a mixin over its sessions)."""

from __future__ import annotations

from sqlalchemy import select

from ...errors import Conflict, NotFound
from ...validation import DEFAULT_RECIPE
from ..files import utc_now
from .audit import AuditEvent, write_audit
from .tables import MemoryVersion


class ShadowRows:
    """Set or stop a model's shadow version; ``Registry`` provides ``_write`` and ``_find``."""

    def set_shadow(
        self, role_id: str, roi_id: str, version: int | None, audit: AuditEvent, *, recipe_id: str = DEFAULT_RECIPE
    ) -> tuple[int | None, str | None]:
        """Make ``version`` (a registered version other than the active one) score the model's live traffic beside
        the active one, or stop with None; ``audit``'s row commits with it. (version, since): the same version
        again keeps its ``since``, so the comparison it has gathered goes on."""
        with self._write() as session, session.begin():
            model = self._find(session, recipe_id, role_id, roi_id)
            if model is None:
                raise NotFound(f"There is no model role_id={role_id!r}, roi_id={roi_id!r} of recipe {recipe_id!r}; "
                               "fit it first.")
            before = model.shadow_version
            if version is not None and version != before:
                if version == model.active_version:
                    raise Conflict(f"Version {version} is the active version of role_id={role_id!r}, "
                                   f"roi_id={roi_id!r}; shadow a staged or retired version (GET /models/versions).")
                registered = session.scalar(select(MemoryVersion.id).where(
                    MemoryVersion.model_id == model.id, MemoryVersion.version == version))
                if registered is None:
                    raise NotFound(f"role_id={role_id!r}, roi_id={roi_id!r} has no version {version}; "
                                   "GET /models/versions lists the versions it keeps.")
                model.shadow_since = utc_now()
            model.shadow_version = version
            if version is None:
                model.shadow_since = None
            write_audit(session, audit.about(
                recipe_id=recipe_id, role_id=role_id, roi_id=roi_id, version_before=model.active_version,
                version_after=model.active_version, details={"shadow_before": before, "shadow_after": version},
            ))
            return model.shadow_version, model.shadow_since
