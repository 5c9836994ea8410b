"""Request and response bodies of the HTTP contract (CONTRACT.md), as msgspec Structs.

Field order is the order of the JSON keys on the wire; the contract fixes it for calibration.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from litestar.datastructures import UploadFile


class FitOkForm(msgspec.Struct):
    """multipart/form-data of POST /fit_ok."""

    role_id: str
    roi_id: str
    mm_per_px: float
    images: list[UploadFile]
    memory_fit: bool = False
    model_key: str | None = None


class InferForm(msgspec.Struct):
    """multipart/form-data of POST /infer."""

    role_id: str
    roi_id: str
    mm_per_px: float
    image: UploadFile
    shape: str | None = None
    model_key: str | None = None


class CalibrateRequest(msgspec.Struct):
    """JSON body of POST /calibrate_ng. Numeric strings are accepted for numbers; unknown keys ignored."""

    role_id: str
    roi_id: str
    ok_scores: list[float]
    ng_scores: list[float] | None = None
    mm_per_px: float = 0.2
    area_mm2_thr: float | None = None
    score_percentile: int | None = None


class HealthResponse(msgspec.Struct):
    status: Literal["ok", "degraded"]
    device: str
    model: str
    version: str
    weights: str
    input_size: int
    token_shape: list[int]
    models: int | None
    problems: list[str] | msgspec.UnsetType = msgspec.UNSET


class FitResponse(msgspec.Struct):
    n_embeddings: int
    coreset_size: int
    token_shape: list[int]
    coreset_rate_requested: float
    coreset_rate_applied: float


class CalibrationResponse(msgspec.Struct):
    threshold: float
    ok_mean: float
    ng_mean: float
    p99_ok: float
    p5_ng: float | None
    mm_per_px: float
    area_mm2_thr: float
    score_percentile: int


class Region(msgspec.Struct):
    bbox: list[int]
    x: int
    y: int
    w: int
    h: int
    area_px: float
    area_mm2: float
    contour: list[list[int]]


class InferResponse(msgspec.Struct):
    score: float
    threshold: float | None
    decision: Literal["ok", "ng"] | None
    token_shape: list[int]
    heatmap_png_base64: str
    regions: list[Region]


class StateResponse(msgspec.Struct):
    status: str
    role_id: str
    roi_id: str
    memory_fitted: bool
    fitted: bool
    calib_present: bool
    token_shape: list[int] | None
    version: int | None
    calib_source: str | None = None


class ValidationDetail(msgspec.Struct):
    """One FastAPI-style validation problem."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(msgspec.Struct):
    """Every error body: ``error`` is a sentence saying what to do; ``detail`` the same sentence,
    or the list of field problems on 422; ``trace`` only on 500 (unless BDI_ERROR_TRACE=0)."""

    error: str
    detail: str | list[ValidationDetail]
    trace: str | msgspec.UnsetType = msgspec.UNSET
