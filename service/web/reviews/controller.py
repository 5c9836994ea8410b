"""Review routes: a person's verdict on a recorded inspection (and its history), and the shadow version that
scores a model's live traffic beside the active one. The review queue is listed with the records
(GET /review/queue, ``web.records``), whose items it shares."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import JSONBody, Parameter

from ...core import InspectionService
from ...core.review import verdict_problem
from ..auth import ENGINEER
from ..openapi import error_responses
from ..shared import (
    IDS_400,
    RECIPE_400,
    RecipeHeader,
    RecipeQuery,
    RoiQuery,
    RoleQuery,
    as_schema,
    off_loop,
    recipe_of,
    request_context,
)
from .schemas import ReviewHistory, ReviewRequest, ReviewResponse, ShadowRequest, ShadowSet, ShadowSummary

_RECORD_ID = Parameter(description="Id of the record (`id` in GET /inspections or GET /review/queue).")
_RECORD_400 = "`inspection_id` is not a record id (32 hexadecimal digits)."
_RECORD_404 = "No inspection record has this id (never made, or deleted past BDI_RECORD_RETENTION_DAYS)."


class ReviewsController(Controller):
    """Give a recorded inspection a person's verdict, and read the verdicts it was given."""

    tags = ["reviews"]

    @post(
        "/inspections/{inspection_id:str}/review",
        guards=[ENGINEER],
        status_code=200,
        operation_id="review_inspection",
        summary="Review an inspection",
        description="A person's verdict (`ok` or `ng`) on one recorded inspection, compared with what the service "
        "answered: `confirmed_ok`, `confirmed_ng`, `false_reject` (answered ng, the part is good), `missed_defect` "
        "(answered ok, the part is defective), or `labelled_ok` / `labelled_ng` when the model was uncalibrated. A "
        "second review replaces the first on the record (GET /inspections shows the current one); every review stays "
        "in the record's history (GET /inspections/{id}/reviews) and in the audit trail. The record is reviewable "
        "after its model was deleted. `reviewer` is the API key's name, else the `reviewer` field, else null.",
        response_description="The record's current review.",
        responses=error_responses({
            400: f"{_RECORD_400} Or `note` is over 2000 characters, or `reviewer` is blank, over 128 characters or "
            "has control characters.",
            404: _RECORD_404,
            422: "`verdict` is not `ok` or `ng` (the sentence lists them), or the body is not a JSON object with "
            "`verdict`.",
            503: None,
        }),
    )
    async def review_inspection(
        self, inspection_id: Annotated[str, _RECORD_ID], data: JSONBody[ReviewRequest], request: Request[Any, Any, Any],
        service: NamedDependency[InspectionService],
    ) -> ReviewResponse:
        problem = verdict_problem(data.verdict)
        if problem is not None:  # the field problem list of every 422, naming the verdicts there are
            raise ValidationException("Invalid request body", extra=[
                {"key": "verdict", "message": problem, "source": "body"}])
        result = await off_loop(service.review, inspection_id, data.verdict, data.note, data.reviewer,
                                request_context(request))
        return as_schema(ReviewResponse, result)

    @get(
        "/inspections/{inspection_id:str}/reviews",
        guards=[ENGINEER],
        operation_id="list_inspection_reviews",
        summary="The reviews of an inspection",
        description="Every verdict the record was given, oldest first; the last one is its current review.",
        response_description="The record's reviews.",
        responses=error_responses({400: _RECORD_400, 404: _RECORD_404, 503: None}),
    )
    async def list_inspection_reviews(
        self, inspection_id: Annotated[str, _RECORD_ID], service: NamedDependency[InspectionService]
    ) -> ReviewHistory:
        return as_schema(ReviewHistory, {"items": await off_loop(service.review_history, inspection_id)})


class ShadowController(Controller):
    """Score a model's live traffic with a second version beside the active one, and compare their decisions."""

    tags = ["reviews"]

    @post(
        "/models/shadow",
        guards=[ENGINEER],
        status_code=200,
        operation_id="set_shadow_version",
        summary="Shadow a version on live traffic",
        description="While set, every /infer of the model also scores `version` on the same backbone features (one "
        "more memory search, no second forward) under that version's own calibration (the newest made for it), else "
        "the active threshold, and records `shadow_version`, `shadow_score` and `shadow_decision` with the "
        "inspection; the /infer answer does not change. The version must be kept and not the active one (staged, or "
        "retired to try a rollback). `null` stops. Recorded in the audit trail.",
        response_description="The shadow version now.",
        responses=error_responses({
            400: f"{IDS_400} Or `version` is below 1. {RECIPE_400}",
            404: "The model does not exist, or keeps no such version.",
            409: "`version` is the active version.",
            422: "The body is not a JSON object with `role_id`, `roi_id` and `version` (an integer or null).",
            503: None,
        }),
    )
    async def set_shadow_version(
        self, data: JSONBody[ShadowRequest], request: Request[Any, Any, Any], service: NamedDependency[InspectionService],
        recipe_header: RecipeHeader = None,
    ) -> ShadowSet:
        recipe = recipe_of(data.recipe_id, recipe_header)
        answer = await off_loop(service.set_shadow, data.role_id, data.roi_id, data.version, request_context(request),
                                recipe_id=recipe)
        return as_schema(ShadowSet, answer)

    @get(
        "/models/shadow",
        guards=[ENGINEER],
        operation_id="get_shadow_version",
        summary="How the shadow version compares",
        description="The shadow version and, over the records made since it was set, how many it scored, how many "
        "it decided as answered, and the flips each way. Records reach the count through the records' background "
        "writer, a moment after their /infer answer.",
        response_description="The comparison.",
        responses=error_responses({
            400: f"{IDS_400} {RECIPE_400}",
            404: "The model does not exist.",
            422: "`role_id` or `roi_id` is missing.",
            503: None,
        }),
    )
    async def get_shadow_version(
        self, service: NamedDependency[InspectionService], role_id: RoleQuery, roi_id: RoiQuery,
        recipe_id: RecipeQuery = None, recipe_header: RecipeHeader = None,
    ) -> ShadowSummary:
        recipe = recipe_of(recipe_id, recipe_header)
        return as_schema(ShadowSummary, await off_loop(service.shadow, role_id, roi_id, recipe_id=recipe))
