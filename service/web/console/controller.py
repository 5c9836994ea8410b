"""The quality engineer's console: server-rendered pages over the same core calls as the API's routes (records,
overview, one model), with the kept images served with caching headers. Pages change nothing the API cannot:
every action calls the core function its route calls. Not in the OpenAPI document (pages, not API)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from litestar.response import Template

from ...core import InspectionService
from ...errors import ServiceError
from ...storage import MOMENT_FORMS, RecordFilter, parse_moment
from ..auth import ENGINEER
from ..shared import off_loop
from .overlay import anchored, model_scale, overlay_png, thumbnail_png
from .plots import score_histogram_svg, scores_over_time_svg

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 50
IMMUTABLE = "private, max-age=31536000, immutable"
"""A record's kept image never changes (its sha256 is in the record), nor what is drawn from it."""
NOT_YET = {
    "review": "Reviewing inspections is not available in this service yet (the review capability, "
              "POST /inspections/{id}/review, has not landed).",
    "versions": "Staged versions, learning, replay, shadow and activation are not available in this service yet.",
}


Query = Annotated[str | None, Parameter(required=False)]
RecordId = Annotated[str, Parameter()]
ModelId = Annotated[str, Parameter()]


def model_path(recipe_id: str, role_id: str, roi_id: str) -> str:
    """The console's address of one model, its ids URL-encoded."""
    return "/console/models/" + "/".join(quote(part, safe="") for part in (recipe_id, role_id, roi_id))


def _error_page(request: Request[Any, Any, Any], exc: Exception) -> Template:
    """A failed page or action: the service's sentence (or the router's), its status, and a way back."""
    status = getattr(exc, "status_code", 500)
    sentence = exc.message if isinstance(exc, ServiceError) else getattr(exc, "detail", "") or str(exc)
    return Template("error.html.j2", context={"status": status, "sentence": sentence}, status_code=status)


def _moment(name: str, text: str | None) -> Any:
    if not text:
        return None
    try:
        return parse_moment(text)
    except ValueError:
        raise ServiceError(f"{name} must be {MOMENT_FORMS}; got {text[:64]!r}.") from None


def _cached(data: bytes, media_type: str, request: Request[Any, Any, Any]) -> Response[bytes]:
    """Bytes that never change for their address, with an ETag (a 304 when the browser has them)."""
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"Cache-Control": IMMUTABLE, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


class ConsoleController(Controller):
    """Pages of the console under /console/."""

    path = "/console"
    include_in_schema = False
    guards = [ENGINEER]  # the quality engineer's pages; open like the API while no key exists
    exception_handlers = {ServiceError: _error_page, HTTPException: _error_page}

    @get("/", name="console_overview")
    async def overview(self, service: NamedDependency[InspectionService]) -> Template:
        models = await off_loop(service.overview)
        for model in models:
            model["href"] = model_path(model["recipe_id"], model["role_id"], model["roi_id"])
        return Template("overview.html.j2", context={"models": models, "not_yet": NOT_YET})

    @get("/inspections", name="console_inspections")
    async def inspections(
        self,
        service: NamedDependency[InspectionService],
        recipe: Query = None,
        role: Query = None,
        roi: Query = None,
        decision: Annotated[Literal["ok", "ng", "none", ""] | None, Parameter(required=False)] = None,
        part: Query = None,
        since: Query = None,
        until: Query = None,
        cursor: Query = None,
    ) -> Template:
        given = {"recipe": recipe, "role": role, "roi": roi, "decision": decision, "part": part, "since": since,
                 "until": until}
        where = RecordFilter(recipe_id=recipe or None, role_id=role or None, roi_id=roi or None,
                             decision=decision or None, part_id=part or None, since=_moment("since", since),
                             until=_moment("until", until))
        page = await off_loop(service.inspections, where, PAGE_SIZE, cursor or None)
        query = {key: value for key, value in given.items() if value}
        next_href = f"/console/inspections?{urlencode({**query, 'cursor': page['next_cursor']})}" \
            if page["next_cursor"] else None
        return Template("inspections.html.j2", context={
            "items": page["items"], "filters": given, "next_href": next_href, "first_href":
            f"/console/inspections?{urlencode(query)}" if cursor else None, "not_yet": NOT_YET})

    @get("/inspections/{inspection_id:str}", name="console_inspection")
    async def inspection(self, service: NamedDependency[InspectionService], inspection_id: RecordId) -> Template:
        record = await off_loop(service.inspection, inspection_id)
        scale = model_scale(record.threshold) if anchored(record) else None
        return Template("inspection.html.j2", context={
            "r": record.as_dict(), "record": record, "scale": scale, "not_yet": NOT_YET,
            "model_href": model_path(record.recipe_id, record.role_id, record.roi_id),
            "regions": record.regions or [],
        })

    @get("/inspections/{inspection_id:str}/image", name="console_image")
    async def image(self, service: NamedDependency[InspectionService], request: Request[Any, Any, Any],
                    inspection_id: RecordId) -> Response[bytes]:
        data, media_type = await off_loop(service.inspection_file, inspection_id, "image")
        return _cached(data, media_type, request)

    @get("/inspections/{inspection_id:str}/thumb.png", name="console_thumbnail")
    async def thumbnail(self, service: NamedDependency[InspectionService], request: Request[Any, Any, Any],
                        inspection_id: RecordId) -> Response[bytes]:
        data, _ = await off_loop(service.inspection_file, inspection_id, "image")
        return _cached(await off_loop(thumbnail_png, data), "image/png", request)

    @get("/inspections/{inspection_id:str}/overlay.png", name="console_overlay")
    async def overlay(self, service: NamedDependency[InspectionService], request: Request[Any, Any, Any],
                      inspection_id: RecordId) -> Response[bytes]:
        record = await off_loop(service.inspection, inspection_id)
        image, _ = await off_loop(service.inspection_file, inspection_id, "image")
        heatmap, _ = await off_loop(service.inspection_file, inspection_id, "heatmap")
        return _cached(await off_loop(overlay_png, record, image, heatmap), "image/png", request)

    @get("/review", name="console_review")
    async def review(self) -> Template:
        return Template("review.html.j2", context={"not_yet": NOT_YET})

    @get("/models/{recipe_id:str}/{role_id:str}/{roi_id:path}", name="console_model")
    async def model(
        self, service: NamedDependency[InspectionService], recipe_id: ModelId, role_id: ModelId, roi_id: ModelId,
    ) -> Template:
        found = await off_loop(service.model_overview, role_id, roi_id.lstrip("/"), recipe_id=recipe_id)
        series = found["series"]
        plots = {
            "calibrations": [score_histogram_svg(entry["ok_scores"], entry["ng_scores"], entry.get("threshold"))
                             for entry in found["calibrations"][:3]],
            "drift": scores_over_time_svg(series.times, series.scores, series.decisions, series.threshold)
            if series is not None else "",
        }
        return Template("model.html.j2", context={**found, "plots": plots, "not_yet": NOT_YET})
