"""HTTP routes of the contract: parse, call one service method off the event loop, shape the answer."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Callable, TypeVar

import anyio.to_thread
import msgspec
from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.di import NamedDependency
from litestar.params import Body, FromQuery

from .inspection import InspectionService, RequestContext, Upload
from .logs import correlation_id
from .schemas import (
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


@get("/health", operation_id="health_health_get", summary="Service health")
async def health(service: NamedDependency[InspectionService]) -> HealthResponse:
    return _as(HealthResponse, await _off_loop(service.health))


@post("/fit_ok", status_code=200, operation_id="fit_ok_fit_ok_post", summary="Fit a ROI from OK images")
async def fit_ok(
    data: Annotated[FitOkForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    request: Request[Any, Any, Any],
    service: NamedDependency[InspectionService],
) -> FitResponse:
    uploads = [Upload(f.filename or f"images[{i}]", await f.read()) for i, f in enumerate(data.images)]
    result = await _off_loop(
        service.fit, data.role_id, data.roi_id, data.mm_per_px, uploads, data.memory_fit, _context(request)
    )
    return _as(FitResponse, result)


@post("/calibrate_ng", status_code=200, operation_id="calibrate_ng_calibrate_ng_post", summary="Calibrate the threshold")
async def calibrate_ng(data: CalibrateRequest, request: Request[Any, Any, Any], service: NamedDependency[InspectionService]) -> CalibrationResponse:
    result = await _off_loop(
        service.calibrate, data.role_id, data.roi_id, data.ok_scores, data.ng_scores, data.mm_per_px,
        data.area_mm2_thr, data.score_percentile, _context(request),
    )
    return _as(CalibrationResponse, result)


@post("/infer", status_code=200, operation_id="infer_infer_post", summary="Inspect one ROI image")
async def infer(
    data: Annotated[InferForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    request: Request[Any, Any, Any],
    service: NamedDependency[InspectionService],
) -> InferResponse:
    upload = Upload(data.image.filename or "image", await data.image.read())
    result = await _off_loop(
        service.infer, data.role_id, data.roi_id, data.mm_per_px, upload, data.shape, _context(request)
    )
    return _as(InferResponse, result)


@get("/state", operation_id="state_state_get", summary="State of one model")
async def state(
    service: NamedDependency[InspectionService],
    role_id: FromQuery[str],
    roi_id: FromQuery[str],
) -> StateResponse:
    return _as(StateResponse, await _off_loop(service.state, role_id, roi_id))


ROUTES = [health, fit_ok, calibrate_ng, infer, state]
