"""Bodies of the review and shadow routes (CONTRACT-REVIEW.md). Field order is the order of the JSON keys."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from ...core.review import MAX_NOTE
from ..shared import Decision, RecipeIdField, RoiId, RoleId

Outcome = Literal["confirmed_ok", "confirmed_ng", "false_reject", "missed_defect", "labelled_ok", "labelled_ng"]
_OUTCOME = ("What the verdict says about the decision: ok/ok `confirmed_ok`, ng/ng `confirmed_ng`, answered ng but "
            "ok `false_reject`, answered ok but ng `missed_defect`; uncalibrated (no decision): `labelled_ok` / "
            "`labelled_ng`.")


class ReviewRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A person's verdict on one recorded inspection."""

    example: ClassVar[dict[str, Any]] = {"verdict": "ok", "note": "casting mark, not a crack"}

    verdict: Annotated[str, Meta(description="`ok` (the part is good) or `ng` (it is defective); anything else is a "
                                 "422.", examples=["ok"], extra_json_schema={"extra": {"enum": ["ok", "ng"]}})]
    note: Annotated[str | None, Meta(description=f"Free text kept with the review, at most {MAX_NOTE} characters.")] = None
    reviewer: Annotated[str | None, Meta(description="Who reviewed, when the request carries no API key (the key's "
                                         "name wins). 1 to 128 printable characters.")] = None


class ReviewResponse(msgspec.Struct):
    """The record's current review, as just stored."""

    example: ClassVar[dict[str, Any]] = {
        "inspection_id": "0b6f3c8e9d7a4f21a5c3e8b1d2f4a6c9", "verdict": "ok", "decision": "ng",
        "outcome": "false_reject", "reviewer": "qa-anna", "note": "casting mark, not a crack",
        "reviewed_at": "2026-12-03T10:15:02.123456Z",
    }

    inspection_id: str
    verdict: Decision
    decision: Annotated[Decision | None, Meta(description="What the service answered; null: uncalibrated.")]
    outcome: Annotated[Outcome, Meta(description=_OUTCOME)]
    reviewer: Annotated[str | None, Meta(description="The API key's name, else the `reviewer` sent, else null.")]
    note: str | None
    reviewed_at: Annotated[str, Meta(description="ISO 8601 UTC with microseconds.")]


class ReviewHistory(msgspec.Struct):
    """Every review a record was given, oldest first; the last one is its current review."""

    example: ClassVar[dict[str, Any]] = {"items": [ReviewResponse.example]}

    items: list[ReviewResponse]


class ShadowRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Which version scores the model's live traffic beside the active one."""

    example: ClassVar[dict[str, Any]] = {"role_id": "Master1", "roi_id": "inspection-1", "version": 4}

    role_id: RoleId
    roi_id: RoiId
    version: Annotated[int | None, Meta(description="A kept version other than the active one (staged, or retired "
                                        "to compare a rollback); null stops shadowing.")]
    recipe_id: RecipeIdField | None = None


class ShadowSet(msgspec.Struct):
    """The model's shadow version now."""

    example: ClassVar[dict[str, Any]] = {"version": 4, "since": "2026-12-03T10:15:02.123Z"}

    version: Annotated[int | None, Meta(description="Null: no shadow.")]
    since: Annotated[str | None, Meta(description="When it was set (ISO 8601 UTC); setting the same version again "
                                      "keeps it.")]


class ShadowSummary(msgspec.Struct):
    """How the shadow version's decisions compare with the answered ones, over the records made since it was set."""

    example: ClassVar[dict[str, Any]] = {"version": 4, "since": "2026-12-03T10:15:02.123Z", "n": 1250, "agree": 1244,
                                         "ok_to_ng": 2, "ng_to_ok": 4}

    version: Annotated[int | None, Meta(description="Null: no shadow (the counts are 0).")]
    since: str | None
    n: Annotated[int, Meta(description="Records the shadow scored.")]
    agree: Annotated[int, Meta(description="Of them, with the same decision as answered.")]
    ok_to_ng: Annotated[int, Meta(description="Answered ok, the shadow says ng.")]
    ng_to_ok: Annotated[int, Meta(description="Answered ng, the shadow says ok. Records without a decision "
                                  "(uncalibrated) count only in `n`.")]
