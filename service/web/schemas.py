"""Request and response bodies of the HTTP contract (CONTRACT.md), as msgspec Structs.

Field order is the order of the JSON keys on the wire; the contract fixes it for calibration.
The ``Meta`` descriptions and examples, the docstrings and the ``example`` class variables are
what the OpenAPI document shows (see ``service.openapi``); they never change validation.
"""

from __future__ import annotations

import enum
import json
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from litestar.datastructures import UploadFile
from msgspec import Meta

from ..pipeline.calibration import MAX_SCORE
from ..validation import MAX_ID_LENGTH, MAX_MM_PER_PX, RECIPE_PATTERN

# Constraints for the document only: Litestar copies a Meta's ``extra_json_schema["extra"]`` into the field's
# schema and msgspec validates none of it, so the service's own checks, with the contract's 400s, stay the rule.
_CONTROL = "\\u0000-\\u001F\\u007F-\\u009F\\u2028\\u2029"
_SPACE = " \\u00A0\\u1680\\u2000-\\u200A\\u202F\\u205F\\u3000"
ID_SCHEMA = {
    "minLength": 1,
    "maxLength": MAX_ID_LENGTH,
    "pattern": f"^[^{_CONTROL}]*[^{_SPACE}{_CONTROL}][^{_CONTROL}]*$",
}
"""What an id must be (``validation.validate_id``: not blank after ``str.strip``, no control, line or paragraph
separator), for the document only: a violation is the contract's 400, not the 422 a validating Meta would give.
The spaces listed are the characters ``str.isspace`` knows besides those; surrogates can't arrive in UTF-8."""
MM_PER_PX_SCHEMA = {"maximum": MAX_MM_PER_PX}  # no lower bound: OpenAPI 3.0 has no numeric exclusiveMinimum
SCORES_SCHEMA = {"items": {"type": "number", "minimum": -MAX_SCORE, "maximum": MAX_SCORE}}

RoleId = Annotated[
    str,
    Meta(
        description="Role of the model, e.g. `Master1`. Free text: 1 to 128 printable characters, not blank, "
        "case-sensitive (`Master1` and `master1` are two models).",
        examples=["Master1"],
        extra_json_schema={"extra": ID_SCHEMA},
    ),
]
RoiId = Annotated[
    str,
    Meta(description="ROI within the role, e.g. `inspection-1`. Same rules as `role_id`.", examples=["inspection-1"],
         extra_json_schema={"extra": ID_SCHEMA}),
]
TokenShape = Annotated[
    list[int],
    Meta(description="Patch-token grid `[rows, cols]` of the extractor: input size / 14 (`[32, 32]` at 448).",
         examples=[[32, 32]]),
]
FormMmPerPx = Annotated[
    float,
    Meta(
        description="Millimetres per pixel of the image. Form fields are text: send it as e.g. `0.2`. "
        "Must be finite, > 0 and at most 1e6, else 400.",
        examples=[0.2],
        extra_json_schema={"extra": MM_PER_PX_SCHEMA},
    ),
]
MODEL_KEY_DESCRIPTION = "Accepted and ignored (newer GUIs send it, equal to `roi_id`)."
RecipeIdField = Annotated[
    str,
    Meta(
        description="The recipe (namespace of models and datasets, one per product variant). Beats the "
        "`X-Recipe-Id` header; both absent or blank: the default namespace, the models old GUIs use. Normalised "
        f"by `strip().lower()`, then it must match `{RECIPE_PATTERN}` and not be `last`, else 400.",
        examples=["line2-disc"],
    ),
]
NEWER_GUI_KEYS = (
    "Present only when the request comes from the newer GUI: it sends an `X-Request-Id` or `X-Recipe-Id` header, "
    "or a field only the newer GUI sends (`recipe_id`, `use_dataset`, `include_heatmap`). Old GUIs "
    "get exactly the keys above."
)
RequestIdKey = Annotated[str, Meta(description="The request's id (the echoed X-Request-Id). " + NEWER_GUI_KEYS)]
RecipeIdKey = Annotated[str, Meta(description="The recipe the request was answered in (`default` when it named "
                                  "none). " + NEWER_GUI_KEYS)]


class FitOkForm(msgspec.Struct):
    """multipart/form-data of POST /fit_ok. Every field is a text part except `images`."""

    role_id: RoleId
    roi_id: RoiId
    mm_per_px: FormMmPerPx
    images: Annotated[
        list[UploadFile],
        Meta(
            description="1 or more OK images of this ROI (PNG, JPEG, BMP or TIFF), one file part per image, "
            "every part named `images`; required (422 when absent) unless `use_dataset=true`, which ignores them. "
            "At most BDI_MAX_FIT_IMAGES images (default 1000) and BDI_MAX_IMAGE_PIXELS pixels per image (default "
            "100 000 000), else 413. One unreadable image refuses the whole request (400) and nothing is stored."
        ),
    ] = msgspec.field(default_factory=list)
    memory_fit: Annotated[
        bool,
        Meta(
            description="Text `true`/`false` (or `1`/`0`). `true` keeps every patch in the memory (coreset "
            "rate 1.0); the default `false` keeps the configured coreset rate (BDI_CORESET_RATE, default 0.02).",
            examples=[False],
        ),
    ] = False
    model_key: Annotated[str, Meta(description=MODEL_KEY_DESCRIPTION)] | msgspec.UnsetType = msgspec.UNSET
    append: Annotated[
        bool,
        Meta(
            description="Text `true`/`false` (or `1`/`0`), default `false` (a fit from these images only). "
            "`true` grows the active memory with these images instead: their patches that the memory does not "
            "already cover (farther from it than its covering radius) are added by the same seeded k-center "
            "greedy, at most the coreset rate the memory was fitted at (every new patch for a `memory_fit` "
            "memory, or with `memory_fit=true`). No earlier image is needed. The result is a new version whose "
            "parent is the active one (roll back to it with `bdi models rollback`); the calibration stays "
            "active and /state says `calib_stale: true` until the next calibration. The images must come "
            "from the memory's extractor (same token grid and weights), else 400; a ROI with no memory is a "
            "400 (fit first); a memory that would pass BDI_MAX_MEMORY_ROWS rows is a 413.",
            examples=[False],
        ),
    ] = False
    use_dataset: Annotated[
        bool,
        Meta(description="Text `true`/`false`. `true`: train from the recipe's stored OK samples of (role_id, "
             "roi_id) (POST /datasets/ok/upload) and ignore any images sent; at least BDI_MIN_OK_SAMPLES (default "
             "10) must be stored, else 400.", examples=[True]),
    ] | msgspec.UnsetType = msgspec.UNSET
    recipe_id: RecipeIdField | msgspec.UnsetType = msgspec.UNSET


class InferForm(msgspec.Struct):
    """multipart/form-data of POST /infer. Every field is a text part except `image`."""

    role_id: RoleId
    roi_id: RoiId
    mm_per_px: FormMmPerPx
    image: Annotated[UploadFile, Meta(description="The ROI image to inspect (PNG, JPEG, BMP or TIFF).")]
    shape: Annotated[
        str,
        Meta(
            description="Optional mask as JSON text, in the uploaded image's pixel coordinates (numbers may be "
            'floats): `{"kind": "rect", "x", "y", "w", "h"}`, `{"kind": "circle", "cx", "cy", "r"}` or '
            '`{"kind": "annulus", "cx", "cy", "r", "r_inner"}`. `kind` is case-insensitive and defaults to '
            "`rect`; missing keys default to the whole image, its centre, half its short side, and 0. "
            "Without `shape` the whole image is inspected. Invalid JSON, bad numbers or a mask that covers "
            "no pixel of the image are a 400.",
            examples=['{"kind": "circle", "cx": 224, "cy": 224, "r": 200}'],
        ),
    ] | msgspec.UnsetType = msgspec.UNSET
    model_key: Annotated[str, Meta(description=MODEL_KEY_DESCRIPTION)] | msgspec.UnsetType = msgspec.UNSET
    include_heatmap: Annotated[
        bool,
        Meta(description="Text `true`/`false`. `false`: `heatmap_png_base64` is null (and not computed); absent: "
             "the heatmap is always sent, as before."),
    ] | msgspec.UnsetType = msgspec.UNSET
    recipe_id: RecipeIdField | msgspec.UnsetType = msgspec.UNSET
    part_id: Annotated[
        str,
        Meta(description="Optional id of the inspected part (serial number, DMC), kept with the inspection record "
             "(GET /inspections?part_id=...); the header `X-Part-Id` does the same. 1 to 128 printable characters, "
             "else 400; empty: none. It never changes the answer.", examples=["DMC-2026-000123"]),
    ] | msgspec.UnsetType = msgspec.UNSET


class CalibrateRequest(msgspec.Struct):
    """JSON body of POST /calibrate_ng.

    Numbers may also be sent as numeric strings (`"0.5"`); unknown keys are ignored. Threshold rule:
    `p_ok` = percentile(ok_scores, score_percentile), linear interpolation. Without NG scores the
    threshold is `p_ok`. With NG scores, `p_ng` = percentile(ng_scores, 5); the threshold is
    `1.02 * p_ok` when `p_ng <= p_ok`, else `(p_ok + p_ng) / 2`.
    """

    example: ClassVar[dict[str, Any]] = {
        "role_id": "Master1",
        "roi_id": "inspection-1",
        "ok_scores": [0.41, 0.44, 0.39, 0.47],
        "ng_scores": None,
    }

    role_id: RoleId
    roi_id: RoiId
    ok_scores: Annotated[
        list[float],
        Meta(description="Scores of OK samples (from /infer): at least one, all finite and within ±1e6, else 400.",
             examples=[[0.41, 0.44, 0.39, 0.47]], extra_json_schema={"extra": {"minItems": 1, **SCORES_SCHEMA}}),
    ]
    ng_scores: Annotated[
        list[float] | None,
        Meta(description="Scores of NG samples, all finite and within ±1e6. May be null or absent when there are "
             "none (the GUI sends null); the threshold is then the OK percentile.", examples=[[0.93, 1.1]],
             extra_json_schema={"extra": SCORES_SCHEMA}),
    ] = None
    mm_per_px: Annotated[
        float,
        Meta(description="Millimetres per pixel stored with the calibration; finite, > 0 and at most 1e6.",
             extra_json_schema={"extra": MM_PER_PX_SCHEMA}),
    ] = 0.2
    area_mm2_thr: Annotated[
        float | None,
        Meta(description="Smallest defect area in mm² that /infer reports as a region, finite and >= 0. Null or "
             "absent: the server's setting (BDI_AREA_MM2_THR, default 1.0).",
             extra_json_schema={"extra": {"minimum": 0}}),
    ] = None
    score_percentile: Annotated[
        int | None,
        Meta(description="Integer 1..100: the percentile taken of the OK scores here and of the anomaly map "
             "in /infer. Null or absent: the server's setting (BDI_SCORE_PERCENTILE, default 99).",
             extra_json_schema={"extra": {"minimum": 1, "maximum": 100}}),
    ] = None
    recipe_id: RecipeIdField | None = None


class HealthResponse(msgspec.Struct):
    """What runs and whether it can serve. Always 200; read `status`."""

    example: ClassVar[dict[str, Any]] = {
        "status": "ok",
        "device": "cpu",
        "model": "vit_small_patch14_dinov2.lvd142m",
        "version": "0.1.0",
        "weights": "hub",
        "precision": "fp32",
        "input_size": 448,
        "token_shape": [32, 32],
        "models": 3,
        "infer_forwards": {"1": 120, "2": 31, "4": 7},
    }

    status: Annotated[
        Literal["ok", "degraded"],
        Meta(description="`ok` when the service can serve and write; `degraded` (see `problems`) when the models "
             "dir is not writable, the disk is nearly full or the registry is unreadable."),
    ]
    device: Annotated[str, Meta(description="Device the backbone really runs on: `cpu`, `cuda`, `cuda:1`, `mps`.")]
    model: Annotated[str, Meta(description="Backbone name.", examples=["vit_small_patch14_dinov2.lvd142m"])]
    version: Annotated[str, Meta(description="Version of this service.")]
    weights: Annotated[str, Meta(description="Where the backbone weights came from: `hub`, a checkpoint path, or "
                                 "`random (seeded, NOT pretrained)` (demo and tests only: scores mean nothing).")]
    precision: Annotated[
        Literal["fp32", "bf16", "fp16"],
        Meta(description="Arithmetic of the backbone forward (BDI_PRECISION): fp32, or bf16/fp16 autocast."),
    ]
    input_size: Annotated[int, Meta(description="Side in pixels of the square backbone input (BDI_INPUT_SIZE).")]
    token_shape: TokenShape
    models: Annotated[int | None, Meta(description="Number of (role, roi) models in the registry; null when the "
                                       "registry is unreadable.")]
    infer_forwards: Annotated[
        dict[str, int],
        Meta(description="Backbone forwards this process ran for /infer since it started, by batch size: "
             "concurrent requests share a forward (at most BDI_INFER_BATCH_SIZE images)."),
    ]
    problems: Annotated[list[str], Meta(description="Present only when `status` is `degraded`: what is wrong.")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET
    request_id: RequestIdKey | msgspec.UnsetType = msgspec.UNSET
    recipe_id: RecipeIdKey | msgspec.UnsetType = msgspec.UNSET
    recipe_error: Annotated[
        str,
        Meta(description="Present only when the `X-Recipe-Id` header is invalid or reserved: the sentence every other "
             "route answers with a 400 (/health never fails because of the header)."),
    ] | msgspec.UnsetType = msgspec.UNSET


class AppendSummary(msgspec.Struct):
    """What an append (`append=true`) added to the memory."""

    version: Annotated[int, Meta(description="The new active version.")]
    parent_version: Annotated[int, Meta(description="The version it grew from (the one active before).")]
    images: Annotated[int, Meta(description="Images appended.")]
    new_embeddings: Annotated[int, Meta(description="Patches of those images: images × tokens.")]
    admitted: Annotated[int, Meta(description="New patches farther from the memory than its covering radius: the "
                                  "candidates.")]
    added_rows: Annotated[int, Meta(description="Rows added to the memory.")]


class FitResponse(msgspec.Struct):
    """The memory just built (or grown, with `append=true`); it is now the active version of (role_id, roi_id)."""

    example: ClassVar[dict[str, Any]] = {
        "n_embeddings": 3072,
        "coreset_size": 62,
        "token_shape": [32, 32],
        "coreset_rate_requested": 0.02,
        "coreset_rate_applied": 0.020182291666666668,
    }

    n_embeddings: Annotated[int, Meta(description="Patches extracted: images × tokens per image (after an append, "
                                      "every patch the memory stands for, the earlier fits' and appends' included).")]
    coreset_size: Annotated[int, Meta(description="Patches kept in the memory.")]
    token_shape: TokenShape
    coreset_rate_requested: Annotated[float, Meta(description="Coreset rate asked for: the setting, or 1.0 "
                                                  "with `memory_fit=true`; an append's is the memory's own.")]
    coreset_rate_applied: Annotated[float, Meta(description="`coreset_size / n_embeddings`.")]
    append: Annotated[AppendSummary, Meta(description="Only with `append=true`: what the append added.")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET
    request_id: RequestIdKey | msgspec.UnsetType = msgspec.UNSET
    recipe_id: RecipeIdKey | msgspec.UnsetType = msgspec.UNSET


class CalibrationResponse(msgspec.Struct):
    """The stored calibration (the same keys, in this order, as the model's calib.json).

    The threshold rule is the one described on the request body.
    """

    example: ClassVar[dict[str, Any]] = {
        "threshold": 0.4676,
        "ok_mean": 0.4275,
        "ng_mean": 0.0,
        "p99_ok": 0.4676,
        "p5_ng": None,
        "mm_per_px": 0.2,
        "area_mm2_thr": 1.0,
        "score_percentile": 99,
    }

    threshold: Annotated[float, Meta(description="Scores at or above it are NG.")]
    ok_mean: Annotated[float, Meta(description="Mean of the OK scores.")]
    ng_mean: Annotated[float, Meta(description="Mean of the NG scores; 0.0 without NG scores.")]
    p99_ok: Annotated[float, Meta(description="Percentile `score_percentile` of the OK scores (the name is kept "
                                  "from the old backend whatever the percentile).")]
    p5_ng: Annotated[float | None, Meta(description="5th percentile of the NG scores; null without NG scores.")]
    mm_per_px: float
    area_mm2_thr: Annotated[float, Meta(description="Smallest defect area in mm² reported as a region.")]
    score_percentile: int


class Region(msgspec.Struct):
    """One connected area of the heatmap at or above the threshold, in the uploaded image's pixels."""

    example: ClassVar[dict[str, Any]] = {
        "bbox": [120, 64, 30, 22],
        "x": 120,
        "y": 64,
        "w": 30,
        "h": 22,
        "area_px": 518.0,
        "area_mm2": 20.72,
        "contour": [[120, 64], [149, 64], [149, 85], [120, 85]],
    }

    bbox: Annotated[list[int], Meta(description="`[x, y, w, h]` (old backend's spelling of the same box).")]
    x: int
    y: int
    w: int
    h: int
    area_px: Annotated[float, Meta(description="Area in pixels².")]
    area_mm2: Annotated[float, Meta(description="Area in mm², with the request's `mm_per_px`.")]
    contour: Annotated[list[list[int]], Meta(description="Outline as `[x, y]` points.")]


class Decision(enum.Enum):
    """`ng` when score >= threshold, else `ok`."""

    OK = "ok"
    NG = "ng"


class InferResponse(msgspec.Struct):
    """Result of one inspection. `threshold` and `decision` are null while the model is not calibrated."""

    example: ClassVar[dict[str, Any]] = {
        "score": 0.52,
        "threshold": 0.4676,
        "decision": "ng",
        "token_shape": [32, 32],
        "heatmap_png_base64": "iVBORw0KGgoAAAANSUhEUgAA...",
        "regions": [Region.example],
    }

    score: Annotated[
        float,
        Meta(description="Percentile `score_percentile` (from the calibration, else the setting) of the blurred "
             "anomaly map inside the mask. Euclidean distance between L2-normalised patch embeddings: 0..2."),
    ]
    threshold: Annotated[float | None, Meta(description="The active calibration's threshold; null when uncalibrated.")]
    decision: Annotated[
        Decision | None,
        Meta(description="`ng` when score >= threshold, `ok` otherwise, null when uncalibrated."),
    ]
    token_shape: TokenShape
    heatmap_png_base64: Annotated[
        str | None,
        Meta(description="Plain base64 (no `data:` prefix) of an 8-bit greyscale PNG as wide and high as the "
             "uploaded image, aligned with it pixel for pixel, zero outside the mask. Null only when the request "
             "sent `include_heatmap=false`."),
    ]
    regions: Annotated[
        list[Region],
        Meta(description="Areas at or above the threshold inside the mask, at least `area_mm2_thr` mm², largest "
             "first; empty when uncalibrated. Not empty does not mean NG: with `decision` `ok` they are areas that "
             "reach the threshold but are too small to lift the score (a percentile of the whole mask) to it; "
             "decide on `decision`."),
    ]
    request_id: RequestIdKey | msgspec.UnsetType = msgspec.UNSET
    recipe_id: RecipeIdKey | msgspec.UnsetType = msgspec.UNSET


class StateResponse(msgspec.Struct):
    """State of one (role_id, roi_id). An unknown pair is not an error: it is reported as not fitted."""

    example: ClassVar[dict[str, Any]] = {
        "status": "ok",
        "role_id": "Master1",
        "roi_id": "inspection-1",
        "memory_fitted": True,
        "fitted": True,
        "calib_present": True,
        "token_shape": [32, 32],
        "version": 3,
        "calib_source": "api",
        "calib_stale": False,
    }

    status: Annotated[str, Meta(description="Always `ok`.")]
    role_id: str
    roi_id: str
    memory_fitted: Annotated[bool, Meta(description="An active memory exists.")]
    fitted: Annotated[bool, Meta(description="Same as `memory_fitted` (the other GUI's spelling).")]
    calib_present: Annotated[bool, Meta(description="A calibration exists (it may predate the memory).")]
    token_shape: Annotated[list[int] | None, Meta(description="Token grid of the active memory; null when not fitted.")]
    version: Annotated[int | None, Meta(description="Active memory version (1, 2, …); null when not fitted.")]
    calib_source: Annotated[str | None, Meta(description="Where the active calibration came from (`api` for "
                                             "/calibrate_ng, `dataset` for /calibrate_dataset, `cli`, `legacy`); "
                                             "null without calibration.")] = None
    calib_stale: Annotated[bool, Meta(description="The active calibration was made for a version the active memory "
                                      "grew from by appends (`/fit_ok` with `append=true`): it still applies, but "
                                      "has not seen the appended images; recalibrate. False otherwise.")] = False
    request_id: RequestIdKey | msgspec.UnsetType = msgspec.UNSET
    recipe_id: RecipeIdKey | msgspec.UnsetType = msgspec.UNSET
    model_key: Annotated[str, Meta(description="The `model_key` sent, else `roi_id`. " + NEWER_GUI_KEYS)] | (
        msgspec.UnsetType
    ) = msgspec.UNSET


class ValidationDetail(msgspec.Struct):
    """One field problem, as FastAPI reports it."""

    example: ClassVar[dict[str, Any]] = {"loc": ["body", "mm_per_px"], "msg": "Expected `float`, got `str`",
                                         "type": "value_error"}

    loc: Annotated[list[str | int], Meta(description="Where: the source (`body`, `query`), then the field path.")]
    msg: str
    type: Annotated[str, Meta(description="`missing` for an absent field, else `value_error`.")]


class ErrorResponse(msgspec.Struct):
    """Every error body (4xx and 5xx)."""

    example: ClassVar[dict[str, Any]] = {
        "error": "Memory not fitted for role_id='Master1', roi_id='inspection-1'. "
        "Memoria no encontrada. Ejecuta /fit_ok primero.",
        "detail": "Memory not fitted for role_id='Master1', roi_id='inspection-1'. "
        "Memoria no encontrada. Ejecuta /fit_ok primero.",
    }

    error: Annotated[str, Meta(description="A sentence saying what went wrong and what to do.")]
    detail: Annotated[
        str | list[ValidationDetail],
        Meta(description="On 422 the list of field problems (FastAPI's `{loc, msg, type}`); otherwise the same "
             "sentence as `error` (on 500, the exception's repr). The GUI reads `detail` first."),
    ]
    trace: Annotated[str, Meta(description="Only on 5xx (unless BDI_ERROR_TRACE=0): the server's traceback.")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET


# ---- the newer GUI's dataset routes and /calibrate_dataset (CONTRACT-GUI2.md) ----------------------------
RequestId = Annotated[str, Meta(description="The request's id (the echoed X-Request-Id, else a new one).")]
RecipeId = Annotated[str, Meta(description="The recipe the request was answered in (`default` when it named none).",
                               examples=["line2-disc"])]
StoredName = Annotated[
    str,
    Meta(description="A stored sample's name: UTC time to the microsecond, a counter and the image's extension. "
         "Unique, never reused, sorts chronologically; the bytes under a name never change.",
         examples=["20261201T153458123456Z-000042.png"]),
]
Label = Annotated[str, Meta(description="`ok` or `ng` (any case), else 400.", examples=["ok"])]


class DatasetUploadForm(msgspec.Struct):
    """multipart/form-data of POST /datasets/ok/upload and /datasets/ng/upload. Every field is a text part except
    `images`."""

    role_id: RoleId
    roi_id: RoiId
    images: Annotated[
        list[UploadFile],
        Meta(description="1 or more samples (PNG, JPEG, BMP or TIFF), one file part per image, every part named "
             "`images`. Each is decoded first: a file that is not a readable image refuses the whole upload (400) "
             "and nothing is stored. At most BDI_MAX_FIT_IMAGES per request and BDI_MAX_IMAGE_PIXELS pixels each."),
    ]
    metas: Annotated[
        list[str],
        Meta(description="None, or one text part per image (in the images' order), each a JSON object: the sample's "
             "meta, stored as its sidecar. Keys the service reads: `mm_per_px` (a finite number > 0; in a named "
             "recipe it must agree with the recipe's locked value, else 409), `shape_json` (the mask as /infer's "
             "`shape` text), `timestamp` (ISO-8601 or null). Other keys are kept as sent.",
             examples=[[json.dumps({"mm_per_px": 0.2, "shape_json": '{"kind": "circle", "cx": 48, "cy": 40, "r": 36}',
                                    "filename": "roi_0001.png", "timestamp": None})]]),
    ] = msgspec.field(default_factory=list)
    recipe_id: RecipeIdField | msgspec.UnsetType = msgspec.UNSET


class DatasetUploadResponse(msgspec.Struct):
    """The samples were stored."""

    example: ClassVar[dict[str, Any]] = {
        "status": "ok",
        "saved": ["20261201T153458123456Z-000042.png"],
        "request_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "recipe_id": "line2-disc",
    }

    status: Annotated[str, Meta(description="Always `ok`.")]
    saved: Annotated[list[StoredName], Meta(description="The stored names, in the order the images were sent.")]
    request_id: RequestId
    recipe_id: RecipeId


class DatasetClass(msgspec.Struct):
    """The stored samples of one class."""

    count: Annotated[int, Meta(description="How many samples are stored.")]
    files: Annotated[list[StoredName], Meta(description="Their names, oldest first.")]
    meta: Annotated[dict[str, bool], Meta(description="Per name: whether its sidecar exists.")]


class DatasetListResponse(msgspec.Struct):
    """The stored samples of (role_id, roi_id) in the request's recipe."""

    example: ClassVar[dict[str, Any]] = {
        "role_id": "Inspection",
        "roi_id": "inspection-1",
        "classes": {
            "ok": {"count": 1, "files": ["20261201T153458123456Z-000042.png"],
                   "meta": {"20261201T153458123456Z-000042.png": True}},
            "ng": {"count": 0, "files": [], "meta": {}},
        },
        "request_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "recipe_id": "default",
    }

    role_id: str
    roi_id: str
    classes: Annotated[dict[str, DatasetClass], Meta(description="`ok` and `ng`, each present (empty when none).")]
    request_id: RequestId
    recipe_id: RecipeId


class DatasetDeleteResponse(msgspec.Struct):
    """Whether a sample was deleted."""

    example: ClassVar[dict[str, Any]] = {
        "deleted": True,
        "filename": "20261201T153458123456Z-000042.png",
        "request_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "recipe_id": "default",
    }

    deleted: Annotated[bool, Meta(description="`true` when the image (and its sidecar) was removed; `false` when no "
                                  "such sample was stored.")]
    filename: Annotated[str, Meta(description="The name looked up (the last path component of `filename`).")]
    request_id: RequestId
    recipe_id: RecipeId


class SampleMeta(msgspec.Struct, forbid_unknown_fields=False):
    """A stored sample's sidecar: the client's meta as sent, plus the keys the service sets. Other keys the client
    sent are kept and returned too."""

    example: ClassVar[dict[str, Any]] = {
        "mm_per_px": 0.2,
        "shape_json": '{"kind": "circle", "cx": 48, "cy": 40, "r": 36}',
        "timestamp": None,
        "angle": None,
        "source_path": "C:/captures/roi_0001.png",
        "role_id": "Inspection",
        "roi_id": "inspection-1",
        "label": "ok",
        "recipe_id": "default",
        "filename": "20261201T153458123456Z-000042.png",
        "client_filename": "roi_0001.png",
        "created_at_utc": "2026-12-01T15:34:58.123Z",
        "sha256": "9f2c...",
        "request_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
    }

    role_id: str
    roi_id: str
    label: Annotated[str, Meta(description="`ok` or `ng`.")]
    recipe_id: RecipeId
    filename: StoredName
    client_filename: Annotated[str, Meta(description="The name the client gave the sample (its meta's `filename`, "
                                         "else the file part's name).")]
    created_at_utc: Annotated[str, Meta(description="When it was stored, ISO-8601 UTC.")]
    sha256: Annotated[str, Meta(description="sha256 of the stored bytes.")]
    request_id: RequestId
    mm_per_px: Annotated[float, Meta(description="Millimetres per pixel, when the client sent one (never null).")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET
    shape_json: Annotated[str | None, Meta(description="The mask, as /infer's `shape` text.")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET
    timestamp: Annotated[str | None, Meta(description="ISO-8601 or null, as the client sent it.")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET


class CalibrateDatasetRequest(msgspec.Struct):
    """JSON body of POST /calibrate_dataset. The newer GUI sends `{"role_id", "roi_id", "default_mm_per_px"}` only;
    numbers may be numeric strings; unknown keys are ignored."""

    example: ClassVar[dict[str, Any]] = {"role_id": "Inspection", "roi_id": "inspection-1", "default_mm_per_px": 0.2}

    role_id: Annotated[str | None, Meta(description="Role of the model; required (400 when missing).",
                                        examples=["Inspection"])] = None
    roi_id: Annotated[str | None, Meta(description="ROI of the model; required (400 when missing).",
                                       examples=["inspection-1"])] = None
    default_mm_per_px: Annotated[
        float | None,
        Meta(description="mm/px of samples whose sidecar has none: recorded with the calibration when no sample has "
             "one (a named recipe records its locked value). Null or absent: 0.2.",
             extra_json_schema={"extra": MM_PER_PX_SCHEMA}),
    ] = None
    score_percentile: Annotated[
        int | None,
        Meta(description="Integer 1..100 (the score's percentile and the OK percentile of the rule). Null or "
             "absent: BDI_SCORE_PERCENTILE (99).", extra_json_schema={"extra": {"minimum": 1, "maximum": 100}}),
    ] = None
    area_mm2_thr: Annotated[
        float | None,
        Meta(description="Smallest region area in mm², finite and >= 0. Null or absent: BDI_AREA_MM2_THR (1.0).",
             extra_json_schema={"extra": {"minimum": 0}}),
    ] = None
    require_ng: Annotated[bool, Meta(description="`true` (default): no scorable NG sample is a 400.")] = True
    recipe_id: RecipeIdField | None = None
    model_key: Annotated[str | None, Meta(description=MODEL_KEY_DESCRIPTION)] = None


class SkippedSample(msgspec.Struct):
    """A stored sample that could not be scored."""

    label: str
    filename: StoredName
    reason: Annotated[str, Meta(description="Why: the image does not decode, the sidecar's shape covers no pixel, ...")]


class CalibrateDatasetResponse(msgspec.Struct):
    """The calibration just stored (source `dataset`): /infer uses its threshold from now on."""

    example: ClassVar[dict[str, Any]] = {
        "status": "ok",
        "threshold": 0.5123,
        "score_percentile": 99,
        "area_mm2_thr": 1.0,
        "n_ok": 10,
        "n_ng": 2,
        "n_skipped": 0,
        "request_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "recipe_id": "default",
        "role_id": "Inspection",
        "roi_id": "inspection-1",
        "model_key": "inspection-1",
        "skipped": [],
    }

    status: Annotated[str, Meta(description="Always `ok`.")]
    threshold: Annotated[float, Meta(description="The new threshold (CONTRACT.md's rule on the OK and NG scores).")]
    score_percentile: int
    area_mm2_thr: float
    n_ok: Annotated[int, Meta(description="OK scores the threshold was taken from (with BDI_DATASET_HOLDOUT: only "
                              "the OK samples the memory was not fitted on).")]
    n_ng: Annotated[int, Meta(description="NG scores the threshold was taken from.")]
    n_skipped: Annotated[int, Meta(description="Samples that could not be scored (listed in `skipped`).")]
    request_id: RequestId
    recipe_id: RecipeId
    role_id: str
    roi_id: str
    model_key: Annotated[str, Meta(description="The `model_key` sent, else `roi_id`.")]
    skipped: list[SkippedSample]
    warning: Annotated[
        str,
        Meta(description="Present when OK samples the memory was fitted on were scored: the threshold is biased "
             "low; the text says how to avoid it."),
    ] | msgspec.UnsetType = msgspec.UNSET


class InspectionItem(msgspec.Struct):
    """One answered /infer as recorded: what judged what, when, for whom (audit data)."""

    example: ClassVar[dict[str, Any]] = {
        "id": "0b6f3c8e9d7a4f21a5c3e8b1d2f4a6c9",
        "created_at": "2026-12-01T08:15:02.123456Z",
        "recipe_id": "default",
        "role_id": "Master1",
        "roi_id": "inspection-1",
        "version": 3,
        "memory_sha256": "9f2c4e1a" + "0" * 56,
        "model": "vit_small_patch14_dinov2.lvd142m",
        "weights_sha256": "5d1e7b3c" + "0" * 56,
        "calibration_id": "7c2e9a4b1f3d4e8a9b0c1d2e3f4a5b6c",
        "score": 0.52,
        "threshold": 0.4676,
        "decision": "ng",
        "score_percentile": 99,
        "n_regions": 1,
        "largest_area_mm2": 20.72,
        "total_area_mm2": 20.72,
        "image_width": 300,
        "image_height": 270,
        "image_sha256": "1e4a7c9f" + "0" * 56,
        "shape_kind": "annulus",
        "mm_per_px": 0.2,
        "correlation_id": "3f9c2a7e5b1d4c8f9a0e6b2d7c4f1a85",
        "client": "10.0.0.17:53412",
        "part_id": "DMC-2026-000123",
        "source": "api",
        "load_ms": 3.1,
        "forward_ms": 452.7,
        "total_ms": 489.0,
        "image_kept": True,
    }

    id: Annotated[str, Meta(description="Id of the record (32 hex digits).")]
    created_at: Annotated[str, Meta(description="When the answer was made, ISO 8601 UTC with microseconds.")]
    recipe_id: Annotated[str, Meta(description="Recipe of the model (`default` outside recipes).")]
    role_id: str
    roi_id: str
    version: Annotated[int, Meta(description="Memory version that judged.")]
    memory_sha256: Annotated[str, Meta(description="sha256 of that version's memory.npz.")]
    model: Annotated[str, Meta(description="Backbone.")]
    weights_sha256: Annotated[str | None, Meta(description="sha256 of the backbone weights.")]
    calibration_id: Annotated[str | None, Meta(description="Id of the calibration that set the threshold (its "
                                               "history entry); null when uncalibrated.")]
    score: float
    threshold: Annotated[float | None, Meta(description="Null when uncalibrated.")]
    decision: Annotated[Decision | None, Meta(description="As answered; null when uncalibrated.")]
    score_percentile: Annotated[int, Meta(description="Percentile of the anomaly map the score is.")]
    n_regions: int
    largest_area_mm2: Annotated[float, Meta(description="Area of the largest region; 0 without regions.")]
    total_area_mm2: Annotated[float, Meta(description="Sum of the regions' areas.")]
    image_width: int
    image_height: int
    image_sha256: Annotated[str, Meta(description="sha256 of the uploaded file's bytes.")]
    shape_kind: Annotated[str | None, Meta(description="`rect`, `circle`, `annulus`; null: no shape (whole image).")]
    mm_per_px: float
    correlation_id: Annotated[str | None, Meta(description="The request's X-Correlation-Id (or the id made for it).")]
    client: Annotated[str | None, Meta(description="Address:port the request came from.")]
    part_id: Annotated[str | None, Meta(description="The request's `part_id` field or X-Part-Id header.")]
    source: Annotated[str, Meta(description="`api` (/infer) or `cli` (`bdi calibrate`/`bdi eval` with --record).")]
    load_ms: Annotated[float, Meta(description="Registry check, decoding and memory lookup, in ms.")]
    forward_ms: Annotated[float, Meta(description="Waiting for and running the backbone forward, in ms.")]
    total_ms: Annotated[float, Meta(description="The whole inspection in the service, in ms.")]
    image_kept: Annotated[bool, Meta(description="The upload and heatmap are kept (`/inspections/{id}/image`, "
                                     "`/heatmap`); see BDI_RECORD_IMAGES.")]


class InspectionPage(msgspec.Struct):
    """One page of inspection records, newest first. Pass `next_cursor` back as `cursor` for the next page."""

    example: ClassVar[dict[str, Any]] = {"items": [InspectionItem.example], "next_cursor": "MjAyNi0xMi0wMVQwOD..."}

    items: list[InspectionItem]
    next_cursor: Annotated[str | None, Meta(description="Cursor of the next page; null on the last page.")]
