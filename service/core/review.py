"""Reviews and shadow versions: a person's verdict on a recorded inspection, the queue of records most worth a
verdict, and a staged version scoring live traffic beside the active one (the scoring itself is the inspection's:
``Inspector.inspect``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import BadRequest, NotFound
from ..storage import RecordFilter, Registry
from ..storage.records import iso, parse_moment
from ..storage.reviews import VERDICTS, ReviewResult, ReviewStore
from ..validation import normalize_recipe, validate_id
from .records import RecordReader
from .request import RequestContext, checked_recipe

MAX_NOTE = 2000


class Reviews:
    def __init__(self, registry: Registry, record_reader: RecordReader) -> None:
        self.registry = registry
        self.record_reader = record_reader
        self.store = ReviewStore(registry.engine)

    def review(
        self, inspection_id: str, verdict: str, note: str | None = None, reviewer: str | None = None,
        context: RequestContext = RequestContext(),
    ) -> dict[str, Any]:
        """Give a record its current review (a second one replaces the first; both stay in the history and the
        audit trail). ``reviewer``: the caller's key name when it has one, else the name given, else None."""
        self.record_reader.get(inspection_id)  # 400 for a malformed id, 404 for an unknown one
        problem = verdict_problem(verdict)
        if problem is not None:
            raise BadRequest(f"verdict {problem}.", 422)
        if note is not None and len(note) > MAX_NOTE:
            raise BadRequest(f"note is {len(note)} characters long; keep it to {MAX_NOTE}.")
        if reviewer is not None:
            validate_id("reviewer", reviewer)
        who = context.actor or reviewer
        result = self.store.review(inspection_id, verdict, who, note, context.audit("review"))
        if result is None:  # pruned by the retention between the check and the write
            raise NotFound(f"There is no inspection record {inspection_id!r}; it was deleted past "
                           "BDI_RECORD_RETENTION_DAYS a moment ago.")
        return review_body(result)

    def history(self, inspection_id: str) -> list[dict[str, Any]]:
        """Every verdict the record was given, oldest first."""
        self.record_reader.get(inspection_id)
        return [review_body(result) for result in self.store.history(inspection_id)]

    def queue(self, where: RecordFilter, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
        """The unreviewed records with a kept image, nearest their threshold first (NG and OK alike), in the shape
        of a records page: ``{"items": [...], "next_cursor": str | None, "next_after_seq": None}`` (the queue is
        paged by its cursor only)."""
        where = dataclasses.replace(self.record_reader.checked(where, limit), review=None, outcome=None)
        items, next_cursor = self.store.queue(where, limit, cursor)
        return {"items": [item.as_dict() for item in items], "next_cursor": next_cursor, "next_after_seq": None}

    # ---- shadow ---------------------------------------------------------------------------------
    def set_shadow(
        self, role_id: str, roi_id: str, version: int | None, context: RequestContext = RequestContext(), *,
        recipe_id: str | None = None,
    ) -> dict[str, Any]:
        """Make a kept version other than the active one (staged, or retired) score every /infer of the model
        beside the active one, or stop with None. 404: no such model or version; 409: the active version."""
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        if version is not None and (isinstance(version, bool) or version < 1):
            raise BadRequest(f"version must be a version number >= 1 or null (stop shadowing), got {version!r}.")
        shadow, since = self.registry.set_shadow(role_id, roi_id, version, context.audit("shadow"), recipe_id=recipe)
        return {"version": shadow, "since": since}

    def shadow(self, role_id: str, roi_id: str, *, recipe_id: str | None = None) -> dict[str, Any]:
        """The shadow version and how its decisions compare with the answered ones since it was set: ``n`` records
        scored by it, ``agree`` with the same decision, the flips ``ok_to_ng`` and ``ng_to_ok`` (records without a
        decision, from an uncalibrated model, count only in ``n``)."""
        recipe = checked_recipe(role_id, roi_id, recipe_id)
        state = self.registry.state(role_id, roi_id, recipe_id=recipe)
        if state is None:
            raise NotFound(f"There is no model role_id={role_id!r}, roi_id={roi_id!r} of recipe {recipe!r}.")
        if state.shadow is None:
            return {"version": None, "since": None, "n": 0, "agree": 0, "ok_to_ng": 0, "ng_to_ok": 0}
        where = RecordFilter(recipe_id=normalize_recipe(recipe), role_id=role_id, roi_id=roi_id,
                             since=parse_moment(state.shadow.since))
        tally = self.store.shadow_tally(where, state.shadow.version)
        return {"version": state.shadow.version, "since": state.shadow.since, **dataclasses.asdict(tally)}


def verdict_problem(verdict: str) -> str | None:
    """What is wrong with a verdict, naming the ones there are (None: it is one)."""
    if verdict in VERDICTS:
        return None
    return f"must be 'ok' (the part is good) or 'ng' (it is defective), got {verdict!r:.40}"


def review_body(result: ReviewResult) -> dict[str, Any]:
    """A review as POST /inspections/{id}/review answers it."""
    body = dataclasses.asdict(result)
    body["reviewed_at"] = iso(result.reviewed_at)
    return body


