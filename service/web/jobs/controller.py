"""Jobs routes: POST /models/replay starts a replay job (202), GET /jobs/{job_id} reads any job from any host."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import Parameter

from ...core import InspectionService
from ..auth import ENGINEER
from ..openapi import error_responses
from ..shared import IDS_400, RECIPE_400, RecipeHeader, as_schema, off_loop, recipe_of, request_context
from .schemas import JobAccepted, JobView, ReplayRequest

_JOB_404 = "No job has this id (ids are the `job_id` POST /models/replay answered)."


class JobsController(Controller):
    """Replay a model version on the recorded inspections, and follow the job."""

    tags = ["jobs"]

    @post(
        "/models/replay",
        guards=[ENGINEER],
        status_code=202,
        operation_id="replay_version",
        summary="Replay a version on the recorded inspections",
        description="Queues a job that scores `version` of the model (with its own calibration when it has one, "
        "else the active threshold) on the kept images of the model's last `last` records plus every reviewed "
        "record, each with the record's shape, and compares with what was answered then. Nothing changes. One "
        "replay runs at a time per host (the next ones wait `queued`); its backbone forwards yield to /infer. "
        "Follow it with GET /jobs/{job_id}.",
        response_description="The queued job.",
        responses=error_responses({
            400: f"{IDS_400} {RECIPE_400}",
            404: "The model does not exist, or keeps no such version (never fitted, pruned, or another model's).",
            422: "The body is not a JSON object with `role_id`, `roi_id` and an integer `version` >= 1, or `last` is "
            "outside 1..10000.",
            503: None,
        }),
    )
    async def replay_version(
        self, data: ReplayRequest, request: Request[Any, Any, Any], service: NamedDependency[InspectionService],
        recipe_header: RecipeHeader = None,
    ) -> JobAccepted:
        recipe = recipe_of(data.recipe_id, recipe_header)
        answer = await off_loop(service.replay, data.role_id, data.roi_id, data.version, data.last,
                                request_context(request), recipe_id=recipe)
        return as_schema(JobAccepted, answer)

    @get(
        "/jobs/{job_id:str}",
        guards=[ENGINEER],
        operation_id="get_job",
        summary="One job",
        description="Status, progress and, once done, the result of a job; every host answers for every job. A job "
        "whose host died is `failed` with a sentence once its lease (6 x BDI_JOB_HEARTBEAT_S) runs out.",
        response_description="The job.",
        responses=error_responses({400: "`job_id` is not a job id (32 hexadecimal digits).", 404: _JOB_404,
                                   503: None}),
    )
    async def get_job(
        self, service: NamedDependency[InspectionService],
        job_id: Annotated[str, Parameter(description="`job_id` of POST /models/replay.")],
    ) -> JobView:
        job = await off_loop(service.job, job_id)
        return as_schema(JobView, job.as_dict())
