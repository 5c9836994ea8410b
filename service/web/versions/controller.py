"""Versions routes: GET /models/versions, POST /models/activate (a staged version goes live, or a rollback) and
POST /models/learn (a new version from the reviewed false rejects)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from ...core import InspectionService
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
from .schemas import ActivatedState, ActivateRequest, LearnRequest, LearnResponse, VersionList

_MODEL_404 = "The model does not exist (never fitted in this recipe)."
_UNCHANGED = " Nothing is changed by an error."


class VersionsController(Controller):
    """List a model's memory versions, activate one, learn a new one from the reviews."""

    tags = ["versions"]
    guards = [ENGINEER]

    @get(
        "/models/versions",
        operation_id="list_versions",
        summary="Memory versions of a model",
        description="Every kept memory version of the model, newest first: its status (`active`, `staged`, "
        "`retired`), where it came from, its size, its calibration and whether it shadows the active one. Read-only.",
        response_description="The versions.",
        responses=error_responses({
            400: f"{IDS_400} {RECIPE_400}", 404: _MODEL_404, 422: "`role_id` or `roi_id` is missing from the query.",
            503: None,
        }),
    )
    async def list_versions(
        self, service: NamedDependency[InspectionService], role_id: RoleQuery, roi_id: RoiQuery,
        recipe_id: RecipeQuery = None, recipe_header: RecipeHeader = None,
    ) -> VersionList:
        recipe = recipe_of(recipe_id, recipe_header)
        return as_schema(VersionList, await off_loop(service.versions, role_id, roi_id, recipe_id=recipe))

    @post(
        "/models/activate",
        status_code=200,
        operation_id="activate_version",
        summary="Activate a memory version",
        description="Makes a kept version the active one: /infer answers with it from now on. The version active "
        "before becomes `retired` (still kept and activatable: activating it again is a rollback). A learned "
        "version's own calibration becomes the active calibration with it (unless one was made for it since). "
        "Activating the active version changes nothing. Recorded in the audit trail (`activate`).",
        response_description="The model's /state once the version is active.",
        responses=error_responses({
            400: f"{IDS_400} {RECIPE_400}{_UNCHANGED}",
            404: f"{_MODEL_404} Or it keeps no such version (never written, pruned by BDI_KEEP_VERSIONS, or another "
            f"model's number).{_UNCHANGED}",
            409: "The version was fitted on another token grid than the one this service extracts (BDI_INPUT_SIZE): "
            f"every /infer would be refused.{_UNCHANGED}",
            422: "The body is not a JSON object with `role_id`, `roi_id` and an integer `version` >= 1.",
            503: None,
            507: None,
        }),
    )
    async def activate_version(
        self, data: JSONBody[ActivateRequest], request: Request[Any, Any, Any], service: NamedDependency[InspectionService],
        recipe_header: RecipeHeader = None,
    ) -> ActivatedState:
        recipe = recipe_of(data.recipe_id, recipe_header)
        state = await off_loop(service.activate, data.role_id, data.roi_id, data.version, request_context(request),
                               recipe_id=recipe)
        return as_schema(ActivatedState, state)

    @post(
        "/models/learn",
        status_code=200,
        operation_id="learn_from_reviews",
        summary="Learn from the reviewed false rejects",
        description="Appends the kept images of the model's reviewed false rejects (POST /inspections/{id}/review: "
        "an NG decision a person found OK) not learned yet to the active memory, as a new version made by the "
        "append algorithm from the patches inside the shape each was inspected in; `staged` unless `activate` is "
        "true. Proposes the new version's calibration from the kept images of every reviewed record of the model "
        "scored under it. Replay it (POST /models/replay) or shadow it (POST /models/shadow), then activate it "
        "(POST /models/activate). Recorded in the audit trail (`learn`).",
        response_description="The learned version.",
        responses=error_responses({
            400: f"{IDS_400} {RECIPE_400} Or the model has no active memory (fit first), or its memory was fitted at "
            f"another token grid or with other backbone weights than the running ones.{_UNCHANGED}",
            409: "There is no reviewed false reject with a kept image left to learn from: review records first (GET "
            "/review/queue), keeping their images (BDI_RECORD_IMAGES)." + _UNCHANGED,
            413: f"The memory would grow past BDI_MAX_MEMORY_ROWS rows, or more false rejects than BDI_MAX_FIT_IMAGES."
            f"{_UNCHANGED}",
            422: "The body is not a JSON object with `role_id`, `roi_id` (and optionally `recipe_id`, a boolean "
            "`activate`).",
            503: None,
            507: None,
        }),
    )
    async def learn_from_reviews(
        self, data: JSONBody[LearnRequest], request: Request[Any, Any, Any], service: NamedDependency[InspectionService],
        recipe_header: RecipeHeader = None,
    ) -> LearnResponse:
        recipe = recipe_of(data.recipe_id, recipe_header)
        answer = await off_loop(service.learn, data.role_id, data.roi_id, data.activate, request_context(request),
                                recipe_id=recipe)
        return as_schema(LearnResponse, answer)
