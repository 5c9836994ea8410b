"""HTTP routes of the contract: parse, call one service method off the event loop, shape the answer."""

from __future__ import annotations

import functools
from collections.abc import Awaitable
from typing import Annotated, Any, Callable, TypeVar

import anyio.to_thread
import msgspec
from litestar import Request, get, post
from litestar.datastructures import FormMultiDict, UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException, ValidationException
from litestar.params import Body, JSONBody, Parameter
from multipart import ParserLimitReached

from ..errors import BadRequest, PayloadTooLarge
from ..inspection import InspectionService, RequestContext, Upload
from ..logs import correlation_id
from .openapi import error_responses
from .schemas import (
    ID_SCHEMA,
    CalibrateRequest,
    CalibrationResponse,
    FitOkForm,
    FitResponse,
    HealthResponse,
    InferForm,
    InferResponse,
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
    schema: type[msgspec.Struct], file_field: str, many: bool
) -> Callable[[Request[Any, Any, Any]], Awaitable[None]]:
    """A before_request hook for a multipart route: reads the form (see ``_read_form``) and answers 422, naming
    the field, for a repeated field, a text field sent as a file or the file(s) sent as text, which the
    body's type check would report only with type names (``Unsupported type: <class 'list'>``)."""
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
            elif len(values) > 1:
                problems.append((name, f"was sent {len(values)} times; send it once"))
        if problems:
            extra = [{"key": key, "message": message, "source": "body"} for key, message in problems]
            raise ValidationException("Invalid form fields", extra=extra)

    return check


_IDS_400 = "`role_id` or `roi_id` is blank, longer than 128 characters or contains control characters."
_FORM_422 = ("A required field is missing or has the wrong type (`detail` lists them as `{loc, msg, type}`; a "
             "number written with a decimal comma, `0,2`, is one: `error` then says to use a dot); a text "
             "field is sent as a file part or more than once")


@get(
    "/health",
    operation_id="health_health_get",
    summary="Service health",
    description="What runs (device, backbone, weights, input size) and whether the service can serve. Always 200: "
    "`status` is `degraded`, with `problems`, when the models dir is not writable, the disk is nearly full or the "
    "registry is unreadable or its database unavailable.",
    response_description="What runs and whether it can serve.",
    responses=error_responses(),
)
async def health(service: NamedDependency[InspectionService]) -> HealthResponse:
    return _as(HealthResponse, await _off_loop(service.health))


@post(
    "/fit_ok",
    status_code=200,
    operation_id="fit_ok_fit_ok_post",
    summary="Fit a ROI from OK images",
    description="Builds a new PatchCore memory for (role_id, roi_id) from these OK images only and makes it the "
    "active version (the previous one stays in the history). The active calibration is kept: the threshold "
    "stays until /calibrate_ng is called again. Form fields are text (`mm_per_px=0.2`, `memory_fit=true`). "
    "With `append=true` the images grow the active memory instead of replacing it (see the field).",
    response_description="The memory just built.",
    responses=error_responses({
        400: f"{_IDS_400} Or `mm_per_px` is not a finite number > 0 and <= 1e6; or an image is empty or does not "
        "decode (the error names the file); or the body is not readable multipart/form-data (a text field that is "
        "not UTF-8, a file part without a file name). With `append=true`: (role_id, roi_id) has no memory (fit "
        "first), or its memory was fitted at another token grid (`error` starts `Token grid mismatch: got (H, W), "
        "expected (H', W')`) or with other backbone weights (`Extractor mismatch: got weights …, expected …`). "
        "Nothing is stored.",
        413: "More images than BDI_MAX_FIT_IMAGES (default 1000) or more form parts than BDI_MAX_FIT_IMAGES + 64, an "
        "image over BDI_MAX_IMAGE_PIXELS (default 100 000 000, read from its header) or a body over BDI_MAX_BODY_MB "
        "(default 1024 MB); with `append=true`, a memory that would grow past BDI_MAX_MEMORY_ROWS rows (default "
        "5 000). Nothing is stored.",
        422: f"{_FORM_422}, or `images` is sent as text.",
        503: None,
        507: None,
    }),
    before_request=_form_check(FitOkForm, "images", many=True),
)
async def fit_ok(
    data: Annotated[FitOkForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    request: Request[Any, Any, Any],
    service: NamedDependency[InspectionService],
) -> FitResponse:
    uploads = [Upload(f.filename or f"images[{i}]", await f.read()) for i, f in enumerate(data.images)]
    result = await _off_loop(
        service.append if data.append else service.fit, data.role_id, data.roi_id, data.mm_per_px, uploads,
        data.memory_fit, _context(request),
    )
    return _as(FitResponse, result)


@post(
    "/calibrate_ng",
    status_code=200,
    operation_id="calibrate_ng_calibrate_ng_post",
    summary="Calibrate the threshold",
    description="Sets the threshold of (role_id, roi_id) from the scores /infer gave OK samples (and NG samples, if "
    "any; `ng_scores` may be null). Rule: `p_ok` = percentile(ok_scores, score_percentile); no NG: threshold = "
    "`p_ok`; with NG, `p_ng` = percentile(ng_scores, 5): threshold = `1.02 * p_ok` if `p_ng <= p_ok`, else "
    "`(p_ok + p_ng) / 2`. Stored as the model's calib.json and in the history. Calibrating a model that is not "
    "fitted yet is allowed.",
    response_description="The stored calibration.",
    responses=error_responses({
        400: f"{_IDS_400} Or `ok_scores` is empty; a score is not finite or beyond ±1e6; `mm_per_px` is not "
        "finite, <= 0 or over 1e6; `score_percentile` is outside 1..100; or the body is not a JSON object.",
        413: None,
        422: None,
        503: None,
        507: None,
    }),
)
async def calibrate_ng(
    data: JSONBody[CalibrateRequest], request: Request[Any, Any, Any], service: NamedDependency[InspectionService]
) -> CalibrationResponse:
    result = await _off_loop(
        service.calibrate, data.role_id, data.roi_id, data.ok_scores,
        data.ng_scores, data.mm_per_px,
        data.area_mm2_thr, data.score_percentile, _context(request),
    )
    return _as(CalibrationResponse, result)


@post(
    "/infer",
    status_code=200,
    operation_id="infer_infer_post",
    summary="Inspect one ROI image",
    description="Scores one image of (role_id, roi_id) against its memory, optionally inside a `shape` mask, and "
    "returns the score, the decision (`ng` when score >= threshold, `ok` otherwise; `threshold` and `decision` "
    "are null while the model is not calibrated), a heatmap PNG of the image's size and the defect regions. Form "
    "fields are text (`mm_per_px=0.2`).\n\n"
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
        "mismatch: got (H, W), expected (H', W')`. The image is empty or does not decode. `shape` is not valid "
        "JSON, has bad numbers or covers no pixel of the image. `mm_per_px` is not a finite number > 0 and <= 1e6. "
        f"{_IDS_400} Or the body is not readable multipart/form-data (a text field that is not UTF-8, a file part "
        "without a file name).",
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
) -> InferResponse:
    upload = Upload(data.image.filename or "image", await data.image.read())
    shape = None if data.shape is msgspec.UNSET else data.shape
    result = await _off_loop(
        service.infer, data.role_id, data.roi_id, data.mm_per_px, upload, shape, _context(request)
    )
    return _as(InferResponse, result)


@get(
    "/state",
    operation_id="state_state_get",
    summary="State of one model",
    description="Whether (role_id, roi_id) has an active memory and a calibration, and whether that calibration "
    "predates appends to the memory (`calib_stale`). Read-only. An unknown pair is not an error: it answers 200 "
    "with `memory_fitted: false`, `token_shape: null`, `version: null`.",
    response_description="The model's state.",
    responses=error_responses({400: _IDS_400, 422: "`role_id` or `roi_id` is missing from the query.", 503: None}),
)
async def state(
    service: NamedDependency[InspectionService],
    role_id: Annotated[str, Parameter(description="Role of the model, e.g. `Master1`.", schema_extra=ID_SCHEMA)],
    roi_id: Annotated[str, Parameter(description="ROI within the role, e.g. `inspection-1`.", schema_extra=ID_SCHEMA)],
) -> StateResponse:
    return _as(StateResponse, await _off_loop(service.state, role_id, roi_id))


ROUTES = [health, fit_ok, calibrate_ng, infer, state]
