"""HTTP routes of the contract (CONTRACT.md) and of the newer GUI (CONTRACT-GUI2.md): parse, call one service
method off the event loop, shape the answer.

The recipe of a request is its ``recipe_id`` field (form, query or JSON body) when given and not blank, else its
``X-Recipe-Id`` header, else none (the default namespace); ``validation.normalize_recipe`` checks it.

The newer GUI's extra answer keys (``request_id``, ``recipe_id``, ``model_key``) go into the answers of the old
routes only when the request comes from the newer GUI (``_newer_gui``), so an old GUI gets exactly CONTRACT.md's
keys; the new routes always carry them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable
from typing import Annotated, Any, Callable, TypeVar

import anyio.to_thread
import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import FormMultiDict, UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import Body, HeaderParameter, JSONBody, Parameter
from multipart import ParserLimitReached

from ..errors import BadRequest, PayloadTooLarge
from ..inspection import InspectionService, RequestContext, Upload
from ..logs import correlation_id
from ..validation import normalize_recipe
from .openapi import error_responses
from .schemas import (
    ID_SCHEMA,
    CalibrateDatasetRequest,
    CalibrateDatasetResponse,
    CalibrateRequest,
    CalibrationResponse,
    DatasetDeleteResponse,
    DatasetListResponse,
    DatasetUploadForm,
    DatasetUploadResponse,
    FitOkForm,
    FitResponse,
    HealthResponse,
    InferForm,
    InferResponse,
    SampleMeta,
    StateResponse,
)

T = TypeVar("T")


async def _off_loop(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """CPU and disk work runs in a worker thread (the context, so the correlation id, goes along)."""
    return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))


def _context(request: Request[Any, Any, Any]) -> RequestContext:
    client = f"{request.client.host}:{request.client.port}" if request.client else None
    return RequestContext(correlation_id=correlation_id.get(), client=client, source="api")


def _as(schema: type[T], value: dict[str, Any]) -> T:
    return msgspec.convert(value, schema)


NEWER_GUI_HEADERS = ("x-request-id", "x-recipe-id")


_RecipeHeader = Annotated[
    str | None,
    HeaderParameter(name="X-Recipe-Id", description="The recipe (the newer GUI's layout name, sent verbatim): a namespace "
              "of models and samples. A `recipe_id` field or query beats it; both absent or blank: the default "
              "namespace, the models old GUIs use. `strip().lower()` must match `[a-z0-9][a-z0-9_-]{0,63}` and not be "
              "`last`, else 400 (/health: 200 with `recipe_error`)."),
]


def _recipe(given: Any, header: str | None) -> str:
    """The request's recipe, checked (400 with the contract's sentence): ``recipe_id`` when given and not blank,
    else the X-Recipe-Id header, else the default namespace."""
    return normalize_recipe(given if isinstance(given, str) and given.strip() else header)


def _newer_gui(request: Request[Any, Any, Any], *fields: Any) -> bool:
    """Whether the request comes from the newer GUI: it sends an X-Request-Id (a new GUID on every request) or
    X-Recipe-Id header, or a field CONTRACT.md does not know (``fields``: the values of recipe_id, use_dataset,
    include_heatmap; UNSET or None when absent). Only then do the old routes add ``request_id``, ``recipe_id`` (and
    ``model_key``) to their answers. ``model_key`` alone does not count: CONTRACT.md lists it, so a client of that
    contract may send it and must get exactly its keys."""
    return any(name in request.headers for name in NEWER_GUI_HEADERS) or any(
        field is not msgspec.UNSET and field is not None for field in fields
    )


def _given(value: Any) -> Any:
    return None if value is msgspec.UNSET else value


async def _read_form(request: Request[Any, Any, Any]) -> FormMultiDict:
    """The multipart form, parsed here rather than by Litestar's body extraction, whose parser failures would
    reach the client as a 500 (a text part that is not UTF-8, such as a file part without a file name) or as a
    400 that says "Request Entity Too Large" (too many parts)."""
    content_type, _ = request.content_type
    if content_type != RequestEncodingType.MULTI_PART:
        raise BadRequest(
            f"The body must be multipart/form-data (text fields and file parts), not {content_type or 'untyped'}; "
            "send the form as multipart/form-data."
        )
    try:
        return await request.form()
    except UnicodeDecodeError:
        raise BadRequest(
            "A text field of the form is not UTF-8 text, or a file part has no file name; send the image(s) as "
            'file parts with a file name (filename="roi.png") and the other fields as UTF-8 text.'
        ) from None
    except ClientException as exc:
        if exc.status_code == 413:  # the body is over BDI_MAX_BODY_MB: the app's 413 sentence
            raise
        limit = exc.__context__  # Litestar raises its own error "from None" over the parser's
        if isinstance(limit, ParserLimitReached) and "segment count" in str(limit):
            settings = request.app.state.settings
            raise PayloadTooLarge(
                f"The form has more than {request.app.multipart_form_part_limit} parts: at most "
                f"{settings.max_fit_images} images per request (BDI_MAX_FIT_IMAGES) and a few text fields; send "
                "fewer images or raise BDI_MAX_FIT_IMAGES."
            ) from None
        if isinstance(limit, ParserLimitReached):
            raise BadRequest(
                f"A part of the form has headers over the parser's limits ({limit}); keep file names short "
                "(well under 4 KB) and each part to a few headers."
            ) from None
        raise BadRequest(
            f"The multipart/form-data body can't be read ({str(exc.detail).rstrip('.')}); send text fields and "
            "file parts as the API document at /docs describes."
        ) from None


def _form_check(
    schema: type[msgspec.Struct], file_field: str, many: bool, repeated: tuple[str, ...] = ()
) -> Callable[[Request[Any, Any, Any]], Awaitable[None]]:
    """A before_request hook for a multipart route: reads the form (see ``_read_form``) and answers 422, naming
    the field, for a repeated field (other than those in ``repeated``), a text field sent as a file or the file(s)
    sent as text, which the body's type check would report only with type names (``Unsupported type: <class
    'list'>``)."""
    text_fields = [field.name for field in msgspec.structs.fields(schema) if field.name != file_field]

    async def check(request: Request[Any, Any, Any]) -> None:
        form = await _read_form(request)
        problems = []
        files = form.getall(file_field, [])
        if not all(isinstance(value, UploadFile) for value in files):
            problems.append((file_field, 'must be a file part with a file name (filename="roi.png"), not a text field'))
        elif not many and len(files) > 1:
            problems.append((file_field, f"was sent {len(files)} times; send exactly one image"))
        for name in text_fields:
            values = form.getall(name, [])
            if any(isinstance(value, UploadFile) for value in values):
                problems.append((name, "must be a text field, not a file part"))
            elif len(values) > 1 and name not in repeated:
                problems.append((name, f"was sent {len(values)} times; send it once"))
        if problems:
            extra = [{"key": key, "message": message, "source": "body"} for key, message in problems]
            raise ValidationException("Invalid form fields", extra=extra)

    return check


_IDS_400 = "`role_id` or `roi_id` is blank, longer than 128 characters or contains control characters."
_RECIPE_400 = ("The recipe (`recipe_id`, else the `X-Recipe-Id` header) is invalid: `Invalid recipe_id 'My Layout'. "
               "Allowed: [a-z0-9][a-z0-9_-]{0,63}.`, or reserved (`last`).")
_FORM_422 = ("A required field is missing or has the wrong type (`detail` lists them as `{loc, msg, type}`; a "
             "number written with a decimal comma, `0,2`, is one: `error` then says to use a dot); a text "
             "field is sent as a file part or more than once")
_NEWER_GUI = (" Requests of the newer GUI (an `X-Request-Id` or `X-Recipe-Id` header, or a field only it sends: "
              "`recipe_id`, `use_dataset`, `include_heatmap`) also get `request_id` and `recipe_id` in "
              "the answer; other clients get exactly the keys listed.")
_MM_409 = ("In a named recipe, `mm_per_px` differs from the recipe's locked value (the first one it saw) by more than "
           "1e-6 relative: `mm_per_px mismatch for recipe '<r>': expected <e>, got <g>`. Nothing is stored.")


@get(
    "/health",
    operation_id="health_health_get",
    summary="Service health",
    description="What runs (device, backbone, weights, input size) and whether the service can serve. Always 200: "
    "`status` is `degraded`, with `problems`, when the models dir is not writable, the disk is nearly full or the "
    "registry is unreadable or its database unavailable. An invalid `X-Recipe-Id` header never fails it (the newer GUI reads any non-2xx as "
    "\"offline\"): the problem is in `recipe_error`." + _NEWER_GUI,
    response_description="What runs and whether it can serve.",
    responses=error_responses(),
)
async def health(request: Request[Any, Any, Any], service: NamedDependency[InspectionService]) -> HealthResponse:
    body = await _off_loop(service.health)
    if _newer_gui(request):  # the header is read here, not declared: a declared parameter could fail /health
        header = request.headers.get("x-recipe-id")
        body["request_id"] = correlation_id.get()
        try:
            body["recipe_id"] = _recipe(None, header)
        except BadRequest as exc:
            body["recipe_id"] = (header or "").strip()
            body["recipe_error"] = exc.message
    return _as(HealthResponse, body)


@post(
    "/fit_ok",
    status_code=200,
    operation_id="fit_ok_fit_ok_post",
    summary="Fit a ROI from OK images",
    description="Builds a new PatchCore memory for (role_id, roi_id) of the request's recipe from these OK images "
    "only (or, with `use_dataset=true`, from the recipe's stored OK samples) and makes it the active version (the "
    "previous one stays in the history). The active calibration is kept: the threshold stays until it is "
    "calibrated again. Form fields are text (`mm_per_px=0.2`, `memory_fit=true`). With `append=true` the images "
    "grow the active memory instead of replacing it (see the field)." + _NEWER_GUI,
    response_description="The memory just built.",
    responses=error_responses({
        400: f"{_IDS_400} Or `mm_per_px` is not a finite number > 0 and <= 1e6; or an image is empty or does not "
        "decode (the error names the file); or the body is not readable multipart/form-data (a text field that is "
        "not UTF-8, a file part without a file name). With `append=true`: (role_id, roi_id) has no memory (fit "
        "first), or its memory was fitted at another token grid (`error` starts `Token grid mismatch: got (H, W), "
        "expected (H', W')`) or with other backbone weights (`Extractor mismatch: got weights …, expected …`); "
        "`append=true` with `use_dataset=true`. With `use_dataset=true`: no OK samples are stored (`No OK dataset "
        "samples found for (role, roi) in recipe '<r>'; upload OK samples first.`) or fewer than BDI_MIN_OK_SAMPLES "
        f"(`Insufficient OK samples: need at least 10, found N`). {_RECIPE_400} Nothing is stored.",
        409: _MM_409,
        413: "More images than BDI_MAX_FIT_IMAGES (default 1000) or more form parts than BDI_MAX_FIT_IMAGES + 64, an "
        "image over BDI_MAX_IMAGE_PIXELS (default 100 000 000, read from its header) or a body over BDI_MAX_BODY_MB "
        "(default 1024 MB); with `append=true`, a memory that would grow past BDI_MAX_MEMORY_ROWS rows (default "
        "5 000). Nothing is stored.",
        422: f"{_FORM_422}, or `images` is sent as text, or absent without `use_dataset=true`.",
        503: None,
        507: None,
    }),
    before_request=_form_check(FitOkForm, "images", many=True),
)
async def fit_ok(
    data: Annotated[FitOkForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    request: Request[Any, Any, Any],
    service: NamedDependency[InspectionService],
    recipe_header: _RecipeHeader = None,
) -> FitResponse:
    recipe = _recipe(data.recipe_id, recipe_header)
    if data.use_dataset is True:
        if data.append:
            raise BadRequest("append=true grows a memory with the images sent, use_dataset=true fits one from the "
                             "stored samples: send one of them.")
        result = await _off_loop(
            service.fit_dataset, data.role_id, data.roi_id, data.mm_per_px, data.memory_fit, _context(request),
            recipe_id=recipe,
        )
    else:
        if not data.images:  # required unless use_dataset=true: the 422 the field's absence always gave
            raise ValidationException(
                "Invalid form fields",
                extra=[{"key": "data", "message": "Object missing required field `images`", "source": "body"}],
            )
        uploads = [Upload(f.filename or f"images[{i}]", await f.read()) for i, f in enumerate(data.images)]
        result = await _off_loop(
            service.append if data.append else service.fit, data.role_id, data.roi_id, data.mm_per_px, uploads,
            data.memory_fit, _context(request), recipe_id=recipe,
        )
    if _newer_gui(request, data.recipe_id, data.use_dataset):
        result = {**result, "request_id": correlation_id.get(), "recipe_id": recipe}
    return _as(FitResponse, result)


@post(
    "/calibrate_ng",
    status_code=200,
    operation_id="calibrate_ng_calibrate_ng_post",
    summary="Calibrate the threshold",
    description="Sets the threshold of (role_id, roi_id) of the request's recipe from the scores /infer gave OK "
    "samples (and NG samples, if any; `ng_scores` may be null). Rule: `p_ok` = percentile(ok_scores, "
    "score_percentile); no NG: threshold = `p_ok`; with NG, `p_ng` = percentile(ng_scores, 5): threshold = "
    "`1.02 * p_ok` if `p_ng <= p_ok`, else `(p_ok + p_ng) / 2`. Stored as the model's calib.json and in the "
    "history. Calibrating a model that is not fitted yet is allowed.",
    response_description="The stored calibration.",
    responses=error_responses({
        400: f"{_IDS_400} Or `ok_scores` is empty; a score is not finite or beyond ±1e6; `mm_per_px` is not "
        f"finite, <= 0 or over 1e6; `score_percentile` is outside 1..100; or the body is not a JSON object. {_RECIPE_400}",
        413: None,
        422: None,
        503: None,
        507: None,
    }),
)
async def calibrate_ng(
    data: JSONBody[CalibrateRequest], request: Request[Any, Any, Any], service: NamedDependency[InspectionService],
    recipe_header: _RecipeHeader = None,
) -> CalibrationResponse:
    recipe = _recipe(data.recipe_id, recipe_header)
    result = await _off_loop(
        service.calibrate, data.role_id, data.roi_id, data.ok_scores,
        data.ng_scores, data.mm_per_px,
        data.area_mm2_thr, data.score_percentile, _context(request), recipe_id=recipe,
    )
    return _as(CalibrationResponse, result)


@post(
    "/infer",
    status_code=200,
    operation_id="infer_infer_post",
    summary="Inspect one ROI image",
    description="Scores one image of (role_id, roi_id) of the request's recipe against its memory, optionally inside "
    "a `shape` mask, and returns the score, the decision (`ng` when score >= threshold, `ok` otherwise; `threshold` "
    "and `decision` are null while the model is not calibrated, or, with BDI_REQUIRE_CALIBRATION=1, the answer is "
    "a 400 `calibration_missing: ...`), a heatmap PNG of the image's size and the defect regions. Form fields are "
    "text (`mm_per_px=0.2`)." + _NEWER_GUI + "\n\n"
    "`decision` `ok` may come with `regions`: the score is a high percentile (`score_percentile`, 99 by default) of "
    "the whole mask, so a hot area covering less than about (100 - `score_percentile`) % of the mask (1 % by "
    "default) does not lift it to the threshold, while "
    "`regions` lists every area at or above the threshold of at least `area_mm2_thr` mm². Such a part passed; "
    "its regions show where it came closest to failing. Draw them differently on passed parts (or not at all), "
    "and decide on `decision`, never on `regions` being non-empty.",
    response_description="The inspection result.",
    responses=error_responses({
        400: "No memory for (role_id, roi_id): `error` contains `Memory not fitted` and `Memoria no encontrada. "
        "Ejecuta /fit_ok primero.`. The memory was fitted at another input size: `error` starts `Token grid "
        "mismatch: got (H, W), expected (H', W')`. With BDI_REQUIRE_CALIBRATION=1 and no calibration: "
        "`calibration_missing: run a calibration for (role, roi) first`. The image is empty or does not decode. "
        "`shape` is not valid JSON, has bad numbers or covers no pixel of the image. `mm_per_px` is not a finite "
        f"number > 0 and <= 1e6. {_IDS_400} Or the body is not readable multipart/form-data (a text field that is "
        f"not UTF-8, a file part without a file name). Or `part_id` (or X-Part-Id) is longer than 128 characters "
        f"or contains control characters. {_RECIPE_400}",
        409: _MM_409,
        413: "The image is over BDI_MAX_IMAGE_PIXELS (default 100 000 000, read from its header), the body over "
        "BDI_MAX_BODY_MB (default 1024 MB) or the form has more than BDI_MAX_FIT_IMAGES + 64 parts.",
        422: f"{_FORM_422}, or `image` is sent as text or more than once (send exactly one image).",
        503: None,
    }),
    before_request=_form_check(InferForm, "image", many=False),
)
async def infer(
    data: Annotated[InferForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    request: Request[Any, Any, Any],
    service: NamedDependency[InspectionService],
    recipe_header: _RecipeHeader = None,
    part_header: Annotated[
        str | None,
        HeaderParameter(name="X-Part-Id", required=False, description="Id of the inspected part, as the `part_id` "
                        "field (which wins when both are sent)."),
    ] = None,
) -> InferResponse:
    recipe = _recipe(data.recipe_id, recipe_header)
    upload = Upload(data.image.filename or "image", await data.image.read())
    part_id = (None if data.part_id is msgspec.UNSET else data.part_id) or part_header or None
    context = dataclasses.replace(_context(request), part_id=part_id, record=True)
    result = await _off_loop(
        service.infer, data.role_id, data.roi_id, data.mm_per_px, upload, _given(data.shape), context,
        recipe_id=recipe, include_heatmap=data.include_heatmap is not False,
    )
    if _newer_gui(request, data.recipe_id, data.include_heatmap):
        result = {**result, "request_id": correlation_id.get(), "recipe_id": recipe}
    return _as(InferResponse, result)


_RoleQuery = Annotated[str, Parameter(description="Role of the model, e.g. `Master1`.", schema_extra=ID_SCHEMA)]
_RoiQuery = Annotated[str, Parameter(description="ROI within the role, e.g. `inspection-1`.", schema_extra=ID_SCHEMA)]
_RecipeQuery = Annotated[
    str | None,
    Parameter(description="The recipe; beats the `X-Recipe-Id` header. Absent or blank: the header, else the "
              "default namespace. `strip().lower()` must match `[a-z0-9][a-z0-9_-]{0,63}` and not be `last`."),
]
_ModelKeyQuery = Annotated[str | None, Parameter(description="Accepted (the newer GUI sends it, equal to `roi_id`); "
                                                 "echoed as `model_key`, else `roi_id` is.")]
_LabelQuery = Annotated[str, Parameter(description="`ok` or `ng`.")]
_FilenameQuery = Annotated[str, Parameter(description="A stored name (GET /datasets/list); only its last path "
                                          "component counts.")]


@get(
    "/state",
    operation_id="state_state_get",
    summary="State of one model",
    description="Whether (role_id, roi_id) of the request's recipe has an active memory and a calibration, and whether "
    "that calibration predates appends to the memory (`calib_stale`). Read-only. An unknown pair is not an error: "
    "it answers 200 with `memory_fitted: false`, `token_shape: null`, `version: null`."
    + _NEWER_GUI.replace("`request_id` and `recipe_id`", "`request_id`, `recipe_id` and `model_key`"),
    response_description="The model's state.",
    responses=error_responses({400: f"{_IDS_400} {_RECIPE_400}", 422: "`role_id` or `roi_id` is missing from the query.",
                               503: None}),
)
async def state(
    request: Request[Any, Any, Any],
    service: NamedDependency[InspectionService],
    role_id: _RoleQuery,
    roi_id: _RoiQuery,
    recipe_id: _RecipeQuery = None,
    recipe_header: _RecipeHeader = None,
    model_key: _ModelKeyQuery = None,
) -> StateResponse:
    recipe = _recipe(recipe_id, recipe_header)
    result = await _off_loop(service.state, role_id, roi_id, recipe_id=recipe)
    if _newer_gui(request, recipe_id):
        result = {**result, "request_id": correlation_id.get(), "recipe_id": recipe, "model_key": model_key or roi_id}
    return _as(StateResponse, result)


def _with_ids(recipe: str, result: dict[str, Any]) -> dict[str, Any]:
    """The new routes' answers always carry the request's id and recipe."""
    return {**result, "request_id": correlation_id.get(), "recipe_id": recipe}


_UPLOAD_ERRORS = error_responses({
    400: f"{_IDS_400} An image is empty, does not decode or is not PNG/JPEG/BMP/TIFF (the error names it); a meta "
    "is not a JSON object, or its `mm_per_px` is not a finite number > 0, its `shape_json` is not /infer's shape or "
    f"its `timestamp` not ISO-8601 (the error names the sample); the number of `metas` is neither 0 nor the number "
    f"of images; or the body is not readable multipart/form-data. {_RECIPE_400} One bad sample refuses the whole "
    "upload: nothing is stored.",
    409: _MM_409,
    413: "More images than BDI_MAX_FIT_IMAGES or form parts than BDI_MAX_FIT_IMAGES + 64, an image over "
    "BDI_MAX_IMAGE_PIXELS or a body over BDI_MAX_BODY_MB. Nothing is stored.",
    422: f"{_FORM_422} (`metas` may repeat), or `images` is absent or sent as text.",
    503: "The registry's database is unavailable (a named recipe's mm/px lock is kept there). Nothing is stored.",
    507: None,
})


async def _upload(
    label: str, data: DatasetUploadForm, request: Request[Any, Any, Any], service: InspectionService,
    recipe_header: str | None,
) -> DatasetUploadResponse:
    recipe = _recipe(data.recipe_id, recipe_header)
    uploads = [Upload(f.filename or f"images[{i}]", await f.read()) for i, f in enumerate(data.images)]
    result = await _off_loop(
        service.dataset_upload, label, data.role_id, data.roi_id, uploads, data.metas, _context(request),
        recipe_id=recipe,
    )
    return _as(DatasetUploadResponse, _with_ids(recipe, result))


_UPLOAD_DESCRIPTION = (
    "Stores {label} samples of (role_id, roi_id) in the request's recipe, each decoded and checked first, under a "
    "new stored name (UTC time + counter: unique, never reused, sorting chronologically; the bytes under a name "
    "never change), with a JSON sidecar: the sample's meta (the `metas` part of the same index) plus `role_id`, "
    "`roi_id`, `label`, `recipe_id`, `created_at_utc`, `sha256`, `filename` = the stored name and "
    "`client_filename` = the client's own name. In a named recipe, the first `mm_per_px` seen locks the recipe's "
    "mm/px."
)


@post(
    "/datasets/ok/upload",
    status_code=200,
    operation_id="upload_ok_datasets_ok_upload_post",
    summary="Store OK samples",
    description=_UPLOAD_DESCRIPTION.format(label="OK"),
    response_description="The stored names.",
    responses=_UPLOAD_ERRORS,
    before_request=_form_check(DatasetUploadForm, "images", many=True, repeated=("metas",)),
)
async def upload_ok(
    data: Annotated[DatasetUploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    request: Request[Any, Any, Any],
    service: NamedDependency[InspectionService],
    recipe_header: _RecipeHeader = None,
) -> DatasetUploadResponse:
    return await _upload("ok", data, request, service, recipe_header)


@post(
    "/datasets/ng/upload",
    status_code=200,
    operation_id="upload_ng_datasets_ng_upload_post",
    summary="Store NG samples",
    description=_UPLOAD_DESCRIPTION.format(label="NG"),
    response_description="The stored names.",
    responses=_UPLOAD_ERRORS,
    before_request=_form_check(DatasetUploadForm, "images", many=True, repeated=("metas",)),
)
async def upload_ng(
    data: Annotated[DatasetUploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    request: Request[Any, Any, Any],
    service: NamedDependency[InspectionService],
    recipe_header: _RecipeHeader = None,
) -> DatasetUploadResponse:
    return await _upload("ng", data, request, service, recipe_header)


@get(
    "/datasets/list",
    operation_id="list_datasets_list_get",
    summary="List the stored samples",
    description="The stored OK and NG samples of (role_id, roi_id) in the request's recipe, oldest first, and which "
    "have a sidecar. Read-only; nothing stored is not an error (counts 0).",
    response_description="The stored samples.",
    responses=error_responses({400: f"{_IDS_400} {_RECIPE_400}", 422: "`role_id` or `roi_id` is missing."}),
)
async def list_datasets(
    request: Request[Any, Any, Any],
    service: NamedDependency[InspectionService],
    role_id: _RoleQuery,
    roi_id: _RoiQuery,
    recipe_id: _RecipeQuery = None,
    recipe_header: _RecipeHeader = None,
) -> DatasetListResponse:
    recipe = _recipe(recipe_id, recipe_header)
    result = await _off_loop(service.dataset_list, role_id, roi_id, recipe_id=recipe)
    return _as(DatasetListResponse, _with_ids(recipe, result))


_SAMPLE_400 = f"`label` is not `ok` or `ng`. {_IDS_400} {_RECIPE_400}"
_SAMPLE_422 = "`role_id`, `roi_id`, `label` or `filename` is missing."


@get(
    "/datasets/file",
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
    request: Request[Any, Any, Any],
    service: NamedDependency[InspectionService],
    role_id: _RoleQuery,
    roi_id: _RoiQuery,
    label: _LabelQuery,
    filename: _FilenameQuery,
    recipe_id: _RecipeQuery = None,
    recipe_header: _RecipeHeader = None,
) -> Response[bytes]:
    recipe = _recipe(recipe_id, recipe_header)
    content, media_type = await _off_loop(service.dataset_file, role_id, roi_id, label, filename, recipe_id=recipe)
    return Response(content, media_type=media_type)


@delete(
    "/datasets/file",
    status_code=200,
    operation_id="delete_file_datasets_file_delete",
    summary="Delete a stored sample",
    description="Removes one sample's image and sidecar. A sample that is not stored is not an error: "
    "`deleted: false`. Its name is never given to another sample.",
    response_description="Whether it was deleted.",
    responses=error_responses({400: _SAMPLE_400, 422: _SAMPLE_422}),
)
async def delete_file(
    request: Request[Any, Any, Any],
    service: NamedDependency[InspectionService],
    role_id: _RoleQuery,
    roi_id: _RoiQuery,
    label: _LabelQuery,
    filename: _FilenameQuery,
    recipe_id: _RecipeQuery = None,
    recipe_header: _RecipeHeader = None,
) -> DatasetDeleteResponse:
    recipe = _recipe(recipe_id, recipe_header)
    result = await _off_loop(
        service.dataset_delete, role_id, roi_id, label, filename, _context(request), recipe_id=recipe
    )
    return _as(DatasetDeleteResponse, _with_ids(recipe, result))


@get(
    "/datasets/meta",
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
    request: Request[Any, Any, Any],
    service: NamedDependency[InspectionService],
    role_id: _RoleQuery,
    roi_id: _RoiQuery,
    label: _LabelQuery,
    filename: _FilenameQuery,
    recipe_id: _RecipeQuery = None,
    recipe_header: _RecipeHeader = None,
) -> dict[str, Any]:
    recipe = _recipe(recipe_id, recipe_header)
    meta = await _off_loop(service.dataset_meta, role_id, roi_id, label, filename, recipe_id=recipe)
    return {**meta, "request_id": meta.get("request_id", correlation_id.get()), "recipe_id": meta.get("recipe_id", recipe)}


@post(
    "/calibrate_dataset",
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
        "extractor's; a number is out of range; or the body is not a JSON object. " + _RECIPE_400,
        413: None,
        422: "A field has the wrong type (e.g. `require_ng` is not a boolean).",
        503: None,
        507: None,
    }),
)
async def calibrate_dataset(
    data: JSONBody[CalibrateDatasetRequest], request: Request[Any, Any, Any],
    service: NamedDependency[InspectionService], recipe_header: _RecipeHeader = None,
) -> CalibrateDatasetResponse:
    recipe = _recipe(data.recipe_id, recipe_header)
    for name in ("role_id", "roi_id"):
        if getattr(data, name) is None:
            raise BadRequest(f"{name} is missing; send a JSON object with role_id, roi_id (and default_mm_per_px).")
    assert data.role_id is not None and data.roi_id is not None
    result = await _off_loop(
        service.calibrate_dataset, data.role_id, data.roi_id, data.default_mm_per_px, data.score_percentile,
        data.area_mm2_thr, data.require_ng, _context(request), recipe_id=recipe,
    )
    result = {**_with_ids(recipe, result), "model_key": data.model_key or data.roi_id}
    return _as(CalibrateDatasetResponse, result)


ROUTES = [
    health, fit_ok, calibrate_ng, infer, state, upload_ok, upload_ng, list_datasets, get_file, delete_file, get_meta,
    calibrate_dataset,
]
