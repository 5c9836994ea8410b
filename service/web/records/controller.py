"""Read-only routes of the inspection records (GET /inspections...). Like every route but /health they need the
API key when BDI_API_KEY is set."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Parameter

from ...core import MAX_PAGE, InspectionService
from ...storage import MOMENT_FORMS, RecordFilter, parse_moment
from ...storage.reviews import OUTCOMES
from ..auth import ENGINEER
from ..openapi import error_responses
from ..shared import ID_SCHEMA, IDS_400, RECIPE_400, RecipeHeader, as_schema, off_loop, recipe_of
from .schemas import InspectionItem, InspectionPage

_ID_FILTER = "Only the records of this {}."
_RECORD_400 = "`inspection_id` is not a record id (32 hexadecimal digits)."
_RECORD_404 = "No inspection record has this id (never made, or deleted past BDI_RECORD_RETENTION_DAYS)."
_FILE_404 = (f"{_RECORD_404} Or the record exists but its {{}} was not kept: BDI_RECORD_IMAGES (`none`, `ng`, "
             "`review` or `all`) decides which inspections keep their image and heatmap, and the oldest are deleted "
             "past BDI_RECORD_MAX_MB.")


def _id_filter(what: str) -> Any:
    return Parameter(description=_ID_FILTER.format(what), required=False, schema_extra=ID_SCHEMA)


def _time_filter(when: str) -> Any:
    return Parameter(description=f"Only records made {when} this time: {MOMENT_FORMS}, the forms `bdi inspections "
                     "--since` takes. A bare number is not taken as a Unix time.", required=False,
                     examples=[Example(value="2026-12-01T08:00:00Z"), Example(value="7d")])


def _moment(name: str, text: str | None) -> dt.datetime | None:
    """The time of a query parameter (a 422 naming the parameter and the accepted forms otherwise)."""
    if text is None:
        return None
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise ValidationException("Invalid query parameters", extra=[
            {"key": name, "message": f"Expected {MOMENT_FORMS}: {exc}", "source": "query"}
        ]) from None


def _recipe_filter(query: str | None, header: str | None) -> str | None:
    """The recipe rule of every route: the ``recipe_id`` query, else the X-Recipe-Id header; with neither (both
    absent or blank), every recipe is listed, as the list always did for clients that name none."""
    given = query if query is not None and query.strip() else header
    return recipe_of(given, None) if given is not None and given.strip() else None


_RECORD_ID = Parameter(description="Id of the record (`id` in GET /inspections).")
_RoleFilter = Annotated[str | None, _id_filter("role")]
_RoiFilter = Annotated[str | None, _id_filter("ROI")]
_RecipeFilter = Annotated[str | None, Parameter(
    description="Only the records of this recipe (`default` outside recipes); beats the `X-Recipe-Id` header. "
    "Normalised by `strip().lower()` as every route does.", required=False, examples=[Example(value="line2-disc")])]
_DecisionFilter = Annotated[Literal["ok", "ng", "none"] | None, Parameter(
    description="Only this decision; `none`: the uncalibrated inspections.", required=False)]
_SinceFilter = Annotated[str | None, _time_filter("at or after")]
_UntilFilter = Annotated[str | None, _time_filter("before")]
_PartFilter = Annotated[str | None, _id_filter("part (the `part_id` field or X-Part-Id header of /infer)")]
_Limit = Annotated[int, Parameter(description=f"Records per page, 1 to {MAX_PAGE}.", required=False,
                                  schema_extra={"minimum": 1, "maximum": MAX_PAGE})]
_Cursor = Annotated[str | None, Parameter(description="`next_cursor` of the previous page.", required=False)]
_AfterSeq = Annotated[int | None, Parameter(
    description="Follow the records in the order they were written: those written after this sequence number "
    "(0: from the first kept), oldest write first; poll again with the answer's `next_after_seq`. Misses no record, "
    "however late it was written; not with `cursor`.", required=False, schema_extra={"minimum": 0})]


async def _file(service: InspectionService, inspection_id: str, kind: str) -> Response[bytes]:
    data, media_type = await off_loop(service.inspection_file, inspection_id, kind)
    return Response(data, media_type=media_type)


class RecordsController(Controller):
    """List the records, read one, and fetch its kept image and heatmap."""

    tags = ["records"]
    guards = [ENGINEER]

    @get(
        "/inspections",
        operation_id="list_inspections",
        summary="Inspection records",
        description="Every answered /infer is recorded: what judged what (model version, calibration, threshold), "
        "with what result, when and for whom. Newest first, filtered by the query; keyset pages: pass `next_cursor` "
        "back as `cursor` (a row is never listed twice or skipped, whatever is recorded meanwhile). Records reach "
        "this list through a background writer, a moment after the /infer answer, so a record can be written after "
        "newer ones and paging by time (`since`) can miss it: to see every new record, follow them by `after_seq` "
        "instead (oldest write first; poll with `next_after_seq`), which misses none. The recipe follows the rule of "
        "every route: the `recipe_id` query, else the `X-Recipe-Id` header; with neither, every recipe is listed "
        "(each item names its `recipe_id`).",
        response_description="One page of records.",
        responses=error_responses({
            400: f"{IDS_400.replace('`role_id` or `roi_id`', 'A filter id')} Or `limit` is outside 1..{MAX_PAGE}, or "
            f"`cursor` is not a next_cursor of this service, or `after_seq` is negative or comes with `cursor`. "
            f"{RECIPE_400}",
            422: "`limit` or `after_seq` is not an integer, `since`/`until` are neither ISO 8601 times nor ages (`7d`), `decision` "
            "is not ok, ng or none, `review` not pending or reviewed, or `outcome` not an outcome of the review table.",
            503: None,
        }),
    )
    async def list_inspections(
        self,
        service: NamedDependency[InspectionService],
        role_id: _RoleFilter = None,
        roi_id: _RoiFilter = None,
        recipe_id: _RecipeFilter = None,
        decision: _DecisionFilter = None,
        review: Annotated[Literal["pending", "reviewed"] | None, Parameter(
            description="`pending`: only the records not reviewed yet; `reviewed`: only those with a review.",
            required=False)] = None,
        outcome: Annotated[Literal[OUTCOMES] | None, Parameter(  # type: ignore[valid-type]
            description="Only the records whose current review has this outcome (POST /inspections/{id}/review).",
            required=False)] = None,
        since: _SinceFilter = None,
        until: _UntilFilter = None,
        part_id: _PartFilter = None,
        limit: _Limit = 100,
        cursor: _Cursor = None,
        after_seq: _AfterSeq = None,
        recipe_header: RecipeHeader = None,
    ) -> InspectionPage:
        where = RecordFilter(recipe_id=_recipe_filter(recipe_id, recipe_header), role_id=role_id, roi_id=roi_id,
                             decision=decision, since=_moment("since", since), until=_moment("until", until),
                             part_id=part_id, review=review, outcome=outcome)
        return as_schema(InspectionPage, await off_loop(service.inspections, where, limit, cursor, after_seq))

    @get(
        "/review/queue",
        tags=["reviews"],
        operation_id="review_queue",
        summary="The records most worth a review",
        description="The unreviewed records whose image was kept, most informative first: nearest their threshold "
        "(`|score / threshold - 1|` ascending), NG and OK decisions alike, so the OK decisions just under the "
        "threshold, where a missed defect hides, come with the NG decisions just over it. Uncalibrated records (no "
        "threshold) are not queued: GET /inspections?decision=none&review=pending lists them. Which images are kept "
        "is BDI_RECORD_IMAGES (`review` by default: the NG decisions and the OK ones within BDI_RECORD_NEAR_MARGIN "
        "of the threshold). Same filters and keyset pages as GET /inspections; a record reviewed meanwhile leaves "
        "the queue.",
        response_description="One page of the queue.",
        responses=error_responses({
            400: f"{IDS_400.replace('`role_id` or `roi_id`', 'A filter id')} Or `limit` is outside 1..{MAX_PAGE}, or "
            f"`cursor` is not a next_cursor of the queue. {RECIPE_400}",
            422: "`limit` is not an integer, `since`/`until` are neither ISO 8601 times nor ages (`7d`), or `decision` "
            "is not ok, ng or none.",
            503: None,
        }),
    )
    async def review_queue(
        self,
        service: NamedDependency[InspectionService],
        role_id: _RoleFilter = None,
        roi_id: _RoiFilter = None,
        recipe_id: _RecipeFilter = None,
        decision: _DecisionFilter = None,
        since: _SinceFilter = None,
        until: _UntilFilter = None,
        part_id: _PartFilter = None,
        limit: _Limit = 100,
        cursor: _Cursor = None,
        after_seq: _AfterSeq = None,
        recipe_header: RecipeHeader = None,
    ) -> InspectionPage:
        where = RecordFilter(recipe_id=_recipe_filter(recipe_id, recipe_header), role_id=role_id, roi_id=roi_id,
                             decision=decision, since=_moment("since", since), until=_moment("until", until),
                             part_id=part_id)
        return as_schema(InspectionPage, await off_loop(service.review_queue, where, limit, cursor))

    @get(
        "/inspections/{inspection_id:str}",
        operation_id="get_inspection",
        summary="One inspection record",
        description="The record of one answered /infer, as GET /inspections lists it.",
        response_description="The record.",
        responses=error_responses({400: _RECORD_400, 404: _RECORD_404, 503: None}),
    )
    async def get_inspection(
        self,
        service: NamedDependency[InspectionService], inspection_id: Annotated[str, _RECORD_ID]
    ) -> InspectionItem:
        record = await off_loop(service.inspection, inspection_id)
        return as_schema(InspectionItem, record.as_dict())

    @get(
        "/inspections/{inspection_id:str}/image",
        operation_id="get_inspection_image",
        summary="The image of an inspection",
        description="The uploaded image exactly as it was sent (its sha256 is the record's `image_sha256`), when it was "
        "kept. The answer's `Content-Type` is the image's (`image/png`, `image/jpeg`, `image/bmp`, `image/tiff`); the "
        "document says `application/octet-stream`, which every client generator reads as a file.",
        response_description="The uploaded bytes.",
        media_type="application/octet-stream",
        responses={
            200: ResponseSpec(data_container=bytes, description="The uploaded bytes.",
                              media_type="application/octet-stream", generate_examples=False),
            **error_responses({400: _RECORD_400, 404: _FILE_404.format("image"), 503: None}),
        },
    )
    async def get_inspection_image(
        self,
        service: NamedDependency[InspectionService], inspection_id: Annotated[str, _RECORD_ID]
    ) -> Response[bytes]:
        return await _file(service, inspection_id, "image")

    @get(
        "/inspections/{inspection_id:str}/heatmap",
        operation_id="get_inspection_heatmap",
        summary="The heatmap of an inspection",
        description="The heatmap PNG /infer answered (8-bit greyscale, the image's size), when it was kept. The "
        "answer's `Content-Type` is `image/png`; the document says `application/octet-stream`, which every client "
        "generator reads as a file.",
        response_description="The heatmap PNG.",
        media_type="application/octet-stream",
        responses={
            200: ResponseSpec(data_container=bytes, description="The heatmap PNG.",
                              media_type="application/octet-stream", generate_examples=False),
            **error_responses({400: _RECORD_400, 404: _FILE_404.format("heatmap"), 503: None}),
        },
    )
    async def get_inspection_heatmap(
        self,
        service: NamedDependency[InspectionService], inspection_id: Annotated[str, _RECORD_ID]
    ) -> Response[bytes]:
        return await _file(service, inspection_id, "heatmap")
