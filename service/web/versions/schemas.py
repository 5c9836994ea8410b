"""Bodies of the versions routes (CONTRACT-REVIEW.md, Versions and Learn from reviews). Field order is the order
of the JSON keys."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from ..shared import RecipeIdField, RoiId, RoleId

VersionStatus = Annotated[
    Literal["active", "staged", "retired"],
    Meta(description="`active`: the version /infer answers with; `staged`: written without being activated "
         "(`/fit_ok` with `activate=false`, POST /models/learn); `retired`: active once, replaced since."),
]


class ProposedCalibration(msgspec.Struct):
    """The calibration made for a version (or, for a learned one not active yet, the one it proposes)."""

    threshold: float
    ok_mean: float | None = None
    ng_mean: float | None = None
    p99_ok: float | None = None
    p5_ng: float | None = None
    mm_per_px: float | None = None
    area_mm2_thr: float | None = None
    score_percentile: int | None = None


class VersionItem(msgspec.Struct):
    """One kept memory version of the model."""

    version: int
    status: VersionStatus
    parent_version: Annotated[int | None, Meta(description="The version it grew from (append, learn); null for a "
                                               "fit.")]
    origin: Annotated[Literal["fit", "append", "learn", "import", "migrate"],
                      Meta(description="How it was made: `/fit_ok` (or `bdi fit`), an append, POST /models/learn, "
                           "a bundle import, or a migration of an earlier backend's files.")]
    rows: Annotated[int, Meta(description="Rows of its memory.")]
    created_at: Annotated[str, Meta(description="UTC, ISO 8601.")]
    calibration: Annotated[ProposedCalibration | None,
                           Meta(description="The newest calibration made for this version; for a learned version "
                                "never activated, the one it proposes; null when none.")]
    shadow: Annotated[bool, Meta(description="Whether it scores the live traffic beside the active one "
                                 "(POST /models/shadow).")]


class VersionList(msgspec.Struct):
    """The model's kept versions, newest first."""

    example: ClassVar[dict[str, Any]] = {"items": [
        {"version": 3, "status": "staged", "parent_version": 2, "origin": "learn", "rows": 1210,
         "created_at": "2026-12-01T08:00:00Z", "calibration": {"threshold": 0.41, "ok_mean": 0.3, "ng_mean": 0.7,
         "p99_ok": 0.4, "p5_ng": 0.62, "mm_per_px": 0.2, "area_mm2_thr": 0.5, "score_percentile": 99},
         "shadow": True},
        {"version": 2, "status": "active", "parent_version": None, "origin": "fit", "rows": 1180,
         "created_at": "2026-11-20T08:00:00Z", "calibration": None, "shadow": False},
    ]}

    items: list[VersionItem]


class ActivateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Which kept version of which model to make active."""

    example: ClassVar[dict[str, Any]] = {"role_id": "Master1", "roi_id": "inspection-1", "version": 3}

    role_id: RoleId
    roi_id: RoiId
    version: Annotated[int, Meta(description="A kept version (GET /models/versions): staged or retired.", ge=1)]
    recipe_id: RecipeIdField | None = None


class LearnRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Which model learns from its reviewed false rejects."""

    example: ClassVar[dict[str, Any]] = {"role_id": "Master1", "roi_id": "inspection-1", "activate": False}

    role_id: RoleId
    roi_id: RoiId
    recipe_id: RecipeIdField | None = None
    activate: Annotated[bool, Meta(description="`true`: the new version becomes active at once, with its proposed "
                                   "calibration; default `false`: it is `staged`.")] = False


class LearnedCalibration(ProposedCalibration):
    """The calibration proposed for the learned version, and how many reviewed records it was taken from."""

    n_ok: int = 0
    n_ng: int = 0


class LearnResponse(msgspec.Struct):
    """The version learned from the reviewed false rejects."""

    example: ClassVar[dict[str, Any]] = {
        "version": 5, "parent_version": 4, "status": "staged", "images_used": 3,
        "records_used": ["0f8e2c9a4b6d4e1f8a3c5b7d9e1f2a4c"], "records_without_image": 1, "rows_added": 41,
        "calibration": {"threshold": 0.41, "ok_mean": 0.3, "ng_mean": 0.7, "p99_ok": 0.4, "p5_ng": 0.62,
                        "mm_per_px": 0.2, "area_mm2_thr": 0.5, "score_percentile": 99, "n_ok": 12, "n_ng": 3},
    }

    version: Annotated[int, Meta(description="The new version.")]
    parent_version: Annotated[int, Meta(description="The version it grew from (the active one).")]
    status: Annotated[Literal["active", "staged"], Meta(description="`staged` unless `activate` was true.")]
    images_used: Annotated[int, Meta(description="Kept images of false rejects learned.")]
    records_used: Annotated[list[str], Meta(description="Their inspection ids; each now names this version as "
                                            "the one it was learned into.")]
    records_without_image: Annotated[int, Meta(description="Reviewed false rejects not learned: their image was "
                                               "not kept (BDI_RECORD_IMAGES) or can't be read.")]
    rows_added: Annotated[int, Meta(description="Rows added to the memory.")]
    calibration: Annotated[LearnedCalibration | None,
                           Meta(description="From the kept images of the model's reviewed records scored under the "
                                "new version (OK: confirmed_ok, false_reject, labelled_ok; NG: confirmed_ng, "
                                "missed_defect, labelled_ng), by the usual threshold rule; the version's own "
                                "calibration, active with it. Null when there is no OK score.")]


class ActivatedState(msgspec.Struct):
    """The model's /state body once the version is active (the keys GET /state answers every client)."""

    status: Annotated[str, Meta(description="Always `ok`.")]
    role_id: str
    roi_id: str
    memory_fitted: Annotated[bool, Meta(description="An active memory exists.")]
    fitted: Annotated[bool, Meta(description="Same as `memory_fitted`.")]
    calib_present: Annotated[bool, Meta(description="A calibration exists.")]
    token_shape: Annotated[list[int] | None, Meta(description="Token grid of the active memory.")]
    version: Annotated[int | None, Meta(description="The active memory version: the one just activated.")]
    calib_source: Annotated[str | None, Meta(description="Where the active calibration came from (`learn`: the "
                                             "version's own, activated with it).")] = None
    calib_stale: Annotated[bool, Meta(description="The active calibration was made for a version the active memory "
                                      "grew from by appends.")] = False
