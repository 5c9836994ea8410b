"""Bodies of the jobs routes (CONTRACT-REVIEW.md, Replay). Field order is the order of the JSON keys."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from ...core.replay import DEFAULT_LAST, MAX_LAST
from ..shared import Decision, RecipeIdField, RoiId, RoleId


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Which version of which model to replay, on how many of its newest records."""

    example: ClassVar[dict[str, Any]] = {"role_id": "Master1", "roi_id": "inspection-1", "version": 4, "last": 500}

    role_id: RoleId
    roi_id: RoiId
    version: Annotated[int, Meta(description="The version to score (GET /models/versions lists them): staged, "
                                 "retired or the active one.", ge=1)]
    recipe_id: RecipeIdField | None = None
    last: Annotated[int, Meta(description="How many of the model's newest records to replay (those whose image was "
                              "kept), every reviewed record with a kept image besides.", ge=1, le=MAX_LAST)] = DEFAULT_LAST


class JobAccepted(msgspec.Struct):
    """The job just queued; poll GET /jobs/{job_id}."""

    example: ClassVar[dict[str, Any]] = {"job_id": "3f2a9c0e5b7d4e1f8a6c2b9d0e4f7a1c"}

    job_id: Annotated[str, Meta(description="32 hexadecimal digits.")]


class JobProgress(msgspec.Struct):
    """Items done of the job's total (0 of 0 until it starts)."""

    done: int
    total: int


class ComparedWith(msgspec.Struct):
    """What answered at the start of the replay: the active version and threshold (null: uncalibrated)."""

    version: int | None
    threshold: float | None


class Flips(msgspec.Struct):
    """Records whose decision the replayed version turns around."""

    ok_to_ng: int
    ng_to_ok: int


class ReviewCounts(msgspec.Struct):
    """What the replayed version does with the reviewed records: false rejects (answered ng, reviewed ok) fixed or
    left, missed defects (answered ok, reviewed ng) caught or left, confirmed NG (ng, reviewed ng) now answered ok."""

    false_rejects_fixed: int
    false_rejects_left: int
    missed_defects_caught: int
    missed_defects_left: int
    confirmed_ng_lost: int


class ReplayItem(msgspec.Struct):
    """One replayed record: what was answered then, what the version answers now, and the review's verdict."""

    inspection_id: str
    old_score: float
    old_decision: Decision | None
    new_score: float
    new_decision: Annotated[Decision | None, Meta(description="null when neither the version nor the model has a "
                                                  "calibration.")]
    verdict: Annotated[Decision | None, Meta(description="The person's verdict (POST /inspections/{id}/review); "
                                             "null: not reviewed.")]


class ReplayResult(msgspec.Struct):
    """What would change if ``version`` were active: scored with its own calibration when it has one, else with
    the active threshold."""

    version: int
    compared_with: ComparedWith
    n: Annotated[int, Meta(description="Records scored (their kept image read).")]
    flips: Flips
    reviews: ReviewCounts
    items: list[ReplayItem]


class JobView(msgspec.Struct):
    """A job as any host sees it. A job whose host died is `failed` with a sentence once its lease (6 x
    BDI_JOB_HEARTBEAT_S) runs out, never `running` forever."""

    example: ClassVar[dict[str, Any]] = {
        "job_id": "3f2a9c0e5b7d4e1f8a6c2b9d0e4f7a1c", "kind": "replay", "status": "running",
        "progress": {"done": 120, "total": 512}, "started_at": "2026-12-03T08:00:01.000000Z", "finished_at": None,
        "error": None, "result": None,
    }

    job_id: str
    kind: Annotated[Literal["replay"], Meta(description="What the job does.")]
    status: Literal["queued", "running", "done", "failed"]
    progress: JobProgress
    started_at: str | None
    finished_at: str | None
    error: Annotated[str | None, Meta(description="Why the job failed: a sentence.")]
    result: Annotated[ReplayResult | None, Meta(description="Once `done`.")]
