"""The newer GUI's dataset routes and /calibrate_dataset (CONTRACT-GUI2.md): samples of a recipe stored by the
service, and a calibration from them. Their answers always carry ``request_id`` and ``recipe_id``."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.openapi import ResponseSpec
from litestar.params import Body, JSONBody, Parameter

from ...core import InspectionService, Upload
from ...errors import BadRequest
from ...logs import correlation_id
from ..auth import INSPECTOR, SETUP
from ..openapi import error_responses
from ..shared import (
    FORM_422,
    IDS_400,
    MM_PER_PX_409,
    RECIPE_400,
    RecipeHeader,
    RecipeQuery,
    RoiQuery,
    RoleQuery,
    as_schema,
    form_check,
    off_loop,
    recipe_of,
    request_context,
)
from .schemas import (
    CalibrateDatasetRequest,
    CalibrateDatasetResponse,
    DatasetDeleteResponse,
    DatasetListResponse,
    DatasetUploadForm,
    DatasetUploadResponse,
    SampleMeta,
)

_LabelQuery = Annotated[str, Parameter(description="`ok` or `ng`.")]
_FilenameQuery = Annotated[str, Parameter(description="A stored name (GET /datasets/list); only its last path "
                                          "component counts.")]
_SAMPLE_400 = f"`label` is not `ok` or `ng`. {IDS_400} {RECIPE_400}"
_SAMPLE_422 = "`role_id`, `roi_id`, `label` or `filename` is missing."


def _with_ids(recipe: str, result: dict[str, Any]) -> dict[str, Any]:
    """The new routes' answers always carry the request's id and recipe."""
    return {**result, "request_id": correlation_id.get(), "recipe_id": recipe}


_UPLOAD_ERRORS = error_responses({
    400: f"{IDS_400} An image is empty, does not decode or is not PNG/JPEG/BMP/TIFF (the error names it); a meta "
    "is not a JSON object, or its `mm_per_px` is not a finite number > 0, its `shape_json` is not /infer's shape or "
    f"its `timestamp` not ISO-8601 (the error names the sample); the number of `metas` is neither 0 nor the number "
    f"of images; or the body is not readable multipart/form-data. {RECIPE_400} One bad sample refuses the whole "
    "upload: nothing is stored.",
    409: MM_PER_PX_409,
    413: "More images than BDI_MAX_FIT_IMAGES or form parts than BDI_MAX_FIT_IMAGES + 64, an image over "
    "BDI_MAX_IMAGE_PIXELS or a body over BDI_MAX_BODY_MB. Nothing is stored.",
    422: f"{FORM_422} (`metas` may repeat), or `images` is absent or sent as text.",
    503: "The registry's database is unavailable (a named recipe's mm/px lock is kept there). Nothing is stored.",
    507: None,
})


async def _upload(
    label: str, data: DatasetUploadForm, request: Request[Any, Any, Any], service: InspectionService,
    recipe_header: str | None,
) -> DatasetUploadResponse:
    recipe = recipe_of(data.recipe_id, recipe_header)
    uploads = [Upload(f.filename or f"images[{i}]", await f.read()) for i, f in enumerate(data.images)]
    result = await off_loop(
        service.dataset_upload, label, data.role_id, data.roi_id, uploads, data.metas, request_context(request),
        recipe_id=recipe,
    )
    return as_schema(DatasetUploadResponse, _with_ids(recipe, result))


_UPLOAD_DESCRIPTION = (
    "Stores {label} samples of (role_id, roi_id) in the request's recipe, each decoded and checked first, under a "
    "new stored name (UTC time + counter: unique, never reused, sorting chronologically; the bytes under a name "
    "never change), with a JSON sidecar: the sample's meta (the `metas` part of the same index) plus `role_id`, "
    "`roi_id`, `label`, `recipe_id`, `created_at_utc`, `sha256`, `filename` = the stored name and "
    "`client_filename` = the client's own name. In a named recipe, the first `mm_per_px` seen locks the recipe's "
    "mm/px."
)


class DatasetsController(Controller):
    """Upload, list, read and delete a recipe's samples; calibrate from them."""

    tags = ["datasets"]

    @post(
        "/datasets/ok/upload",
        guards=[SETUP],
        status_code=200,
        operation_id="upload_ok_datasets_ok_upload_post",
        summary="Store OK samples",
        description=_UPLOAD_DESCRIPTION.format(label="OK"),
        response_description="The stored names.",
        responses=_UPLOAD_ERRORS,
        before_request=form_check(DatasetUploadForm, "images", many=True, repeated=("metas",)),
    )
    async def upload_ok(
        self,
        data: Annotated[DatasetUploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
        request: Request[Any, Any, Any],
        service: NamedDependency[InspectionService],
        recipe_header: RecipeHeader = None,
    ) -> DatasetUploadResponse:
        return await _upload("ok", data, request, service, recipe_header)

    @post(
        "/datasets/ng/upload",
        guards=[SETUP],
        status_code=200,
        operation_id="upload_ng_datasets_ng_upload_post",
        summary="Store NG samples",
        description=_UPLOAD_DESCRIPTION.format(label="NG"),
        response_description="The stored names.",
        responses=_UPLOAD_ERRORS,
        before_request=form_check(DatasetUploadForm, "images", many=True, repeated=("metas",)),
    )
    async def upload_ng(
        self,
        data: Annotated[DatasetUploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
        request: Request[Any, Any, Any],
        service: NamedDependency[InspectionService],
        recipe_header: RecipeHeader = None,
    ) -> DatasetUploadResponse:
        return await _upload("ng", data, request, service, recipe_header)

    @get(
        "/datasets/list",
        guards=[INSPECTOR],
        operation_id="list_datasets_list_get",
        summary="List the stored samples",
        description="The stored OK and NG samples of (role_id, roi_id) in the request's recipe, oldest first, and which "
        "have a sidecar. Read-only; nothing stored is not an error (counts 0).",
        response_description="The stored samples.",
        responses=error_responses({400: f"{IDS_400} {RECIPE_400}", 422: "`role_id` or `roi_id` is missing."}),
    )
    async def list_datasets(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[InspectionService],
        role_id: RoleQuery,
        roi_id: RoiQuery,
        recipe_id: RecipeQuery = None,
        recipe_header: RecipeHeader = None,
    ) -> DatasetListResponse:
        recipe = recipe_of(recipe_id, recipe_header)
        result = await off_loop(service.dataset_list, role_id, roi_id, recipe_id=recipe)
        return as_schema(DatasetListResponse, _with_ids(recipe, result))

    @get(
        "/datasets/file",
        guards=[INSPECTOR],
        operation_id="get_file_datasets_file_get",
        summary="Download a stored sample",
        description="The stored bytes of one sample. The answer's `Content-Type` is that of its extension (`image/png`, "
        "`image/jpeg`, `image/bmp`, `image/tiff`); the document says `application/octet-stream`, which every client "
        "generator reads as a file.",
        response_description="The image as stored.",
        media_type="application/octet-stream",
        responses={
            200: ResponseSpec(data_container=bytes, description="The image as stored.",
                              media_type="application/octet-stream", generate_examples=False),
            **error_responses({400: _SAMPLE_400, 404: "No such stored sample: `file not found: ...`.", 422: _SAMPLE_422}),
        },
    )
    async def get_file(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[InspectionService],
        role_id: RoleQuery,
        roi_id: RoiQuery,
        label: _LabelQuery,
        filename: _FilenameQuery,
        recipe_id: RecipeQuery = None,
        recipe_header: RecipeHeader = None,
    ) -> Response[bytes]:
        recipe = recipe_of(recipe_id, recipe_header)
        content, media_type = await off_loop(service.dataset_file, role_id, roi_id, label, filename, recipe_id=recipe)
        return Response(content, media_type=media_type)

    @delete(
        "/datasets/file",
        guards=[SETUP],
        status_code=200,
        operation_id="delete_file_datasets_file_delete",
        summary="Delete a stored sample",
        description="Removes one sample's image and sidecar. A sample that is not stored is not an error: "
        "`deleted: false`. Its name is never given to another sample.",
        response_description="Whether it was deleted.",
        responses=error_responses({400: _SAMPLE_400, 422: _SAMPLE_422}),
    )
    async def delete_file(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[InspectionService],
        role_id: RoleQuery,
        roi_id: RoiQuery,
        label: _LabelQuery,
        filename: _FilenameQuery,
        recipe_id: RecipeQuery = None,
        recipe_header: RecipeHeader = None,
    ) -> DatasetDeleteResponse:
        recipe = recipe_of(recipe_id, recipe_header)
        result = await off_loop(
            service.dataset_delete, role_id, roi_id, label, filename, request_context(request), recipe_id=recipe
        )
        return as_schema(DatasetDeleteResponse, _with_ids(recipe, result))

    @get(
        "/datasets/meta",
        guards=[INSPECTOR],
        operation_id="get_meta_datasets_meta_get",
        summary="A stored sample's sidecar",
        description="The sidecar of one stored sample: the client's meta plus the keys the service set, with "
        "`request_id` and `recipe_id` added when it has none. `mm_per_px` is a number when present, never null.",
        response_description="The sidecar.",
        responses={
            200: ResponseSpec(data_container=SampleMeta, description="The sidecar.", generate_examples=False),
            **error_responses({400: _SAMPLE_400, 404: "No such sample, or it has no sidecar: `meta not found: ...`.",
                               422: _SAMPLE_422}),
        },
    )
    async def get_meta(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[InspectionService],
        role_id: RoleQuery,
        roi_id: RoiQuery,
        label: _LabelQuery,
        filename: _FilenameQuery,
        recipe_id: RecipeQuery = None,
        recipe_header: RecipeHeader = None,
    ) -> dict[str, Any]:
        recipe = recipe_of(recipe_id, recipe_header)
        meta = await off_loop(service.dataset_meta, role_id, roi_id, label, filename, recipe_id=recipe)
        return {**meta, "request_id": meta.get("request_id", correlation_id.get()), "recipe_id": meta.get("recipe_id", recipe)}

    @post(
        "/calibrate_dataset",
        guards=[SETUP],
        status_code=200,
        operation_id="calibrate_dataset_calibrate_dataset_post",
        summary="Calibrate from the stored samples",
        description="Scores every stored sample of (role_id, roi_id) in the request's recipe as /infer would (each inside "
        "its sidecar's `shape_json`), applies the threshold rule of /calibrate_ng to the OK and NG scores and stores the "
        "result as the active calibration (in the history with source `dataset`). Samples that can't be scored are "
        "skipped and counted. The forwards run in batches; see the README for samples per second (the newer GUI "
        "waits 120 s). Calibrating on the OK samples the memory was fitted on biases the threshold low: with "
        "BDI_DATASET_HOLDOUT the fit keeps some out and the OK side is taken from those; otherwise `warning` says so.",
        response_description="The stored calibration.",
        responses=error_responses({
            400: "`role_id` or `roi_id` is missing or invalid; no memory (`Memoria no encontrada. Ejecuta /fit_ok antes de "
            "/calibrate_dataset.`); no scorable OK sample (`No valid OK samples for calibration.`); `require_ng` and no "
            "scorable NG sample (`No NG samples available for calibration.`); the memory's token grid is not the "
            "extractor's; a number is out of range; or the body is not a JSON object. " + RECIPE_400,
            413: None,
            422: "A field has the wrong type (e.g. `require_ng` is not a boolean).",
            503: None,
            507: None,
        }),
    )
    async def calibrate_dataset(
        self,
        data: JSONBody[CalibrateDatasetRequest], request: Request[Any, Any, Any],
        service: NamedDependency[InspectionService], recipe_header: RecipeHeader = None,
    ) -> CalibrateDatasetResponse:
        recipe = recipe_of(data.recipe_id, recipe_header)
        for name in ("role_id", "roi_id"):
            if getattr(data, name) is None:
                raise BadRequest(f"{name} is missing; send a JSON object with role_id, roi_id (and default_mm_per_px).")
        assert data.role_id is not None and data.roi_id is not None
        result = await off_loop(
            service.calibrate_dataset, data.role_id, data.roi_id, data.default_mm_per_px, data.score_percentile,
            data.area_mm2_thr, data.require_ng, request_context(request), recipe_id=recipe,
        )
        result = {**_with_ids(recipe, result), "model_key": data.model_key or data.roi_id}
        return as_schema(CalibrateDatasetResponse, result)
