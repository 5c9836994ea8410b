"""Request and response bodies of the contract's inspection routes (CONTRACT.md), as msgspec Structs.

Field order is the order of the JSON keys on the wire; the contract fixes it for calibration.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from litestar.datastructures import UploadFile
from msgspec import Meta

from ...pipeline.calibration import MAX_SCORE
from ..shared import MM_PER_PX_SCHEMA, MODEL_KEY_DESCRIPTION, Decision, RecipeIdField, RoiId, RoleId

SCORES_SCHEMA = {"items": {"type": "number", "minimum": -MAX_SCORE, "maximum": MAX_SCORE}}

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
             "10) must be stored, else 400. With `append=true`: grow the active memory with the stored OK samples it "
             "does not hold yet (by content; those its fit held out for calibration stay out), 400 when none is "
             "new.", examples=[True]),
    ] | msgspec.UnsetType = msgspec.UNSET
    holdout: Annotated[
        float,
        Meta(description="Only with `use_dataset=true` (without `append`): the share of the stored OK samples kept out "
             "of the memory (seeded, recorded in the version) for /calibrate_dataset to take the OK side from; 0 to "
             "0.9, else 400. Absent: BDI_DATASET_HOLDOUT. When sent, the answer gains `dataset` (samples fitted and "
             "held out).", examples=[0.3]),
    ] | msgspec.UnsetType = msgspec.UNSET
    recipe_id: RecipeIdField | msgspec.UnsetType = msgspec.UNSET
    activate: Annotated[
        bool,
        Meta(description="Text `true`/`false`, default `true`: the new version becomes the active one. `false` "
             "writes and registers it as `staged` (with `append=true` and `use_dataset=true` too): /infer keeps "
             "answering with the active version until POST /models/activate. When sent, the answer gains "
             "`version` and `status`.", examples=[False]),
    ] | msgspec.UnsetType = msgspec.UNSET


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
            "Without `shape` the whole image is inspected. Invalid JSON, bad numbers, a key the kind does not "
            "take (`width` instead of `w`: ignored, it would leave the whole image) or a mask that covers "
            "no pixel of the image are a 400 whose sentence names the keys each kind takes.",
            examples=['{"kind": "circle", "cx": 224, "cy": 224, "r": 200}'],
        ),
    ] | msgspec.UnsetType = msgspec.UNSET
    model_key: Annotated[str, Meta(description=MODEL_KEY_DESCRIPTION)] | msgspec.UnsetType = msgspec.UNSET
    include_heatmap: Annotated[
        bool,
        Meta(description="Text `true`/`false`. `false`: `heatmap_png_base64` is null (and not computed); absent: "
             "the heatmap is always sent, as before.", examples=[False]),
    ] | msgspec.UnsetType = msgspec.UNSET
    recipe_id: RecipeIdField | msgspec.UnsetType = msgspec.UNSET
    heatmap_scale: Annotated[
        Literal["image", "threshold"],
        Meta(description="How the heatmap's grey levels are scaled: `image` (absent: the default, what the GUIs "
             "show) stretches each image to its own 1st..99th percentile; `threshold` uses one scale per model, "
             "grey 0 = 0 and grey 178 = the threshold, so heatmaps of two parts compare (400 while the model is "
             "uncalibrated).", examples=["threshold"]),
    ] | msgspec.UnsetType = msgspec.UNSET
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


class DatasetFitSummary(msgspec.Struct):
    """Which stored OK samples a fit (or append) from the dataset used."""

    fitted: Annotated[int, Meta(description="Samples fitted (appended, with `append=true`).")]
    held_out: Annotated[int, Meta(description="Samples kept out of the memory for calibration.")]
    holdout: Annotated[float | None, Meta(description="The holdout share applied; null for an append (the fit's "
                                          "holdout stays out).")]


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
    version: Annotated[int, Meta(description="Only when `activate` was sent: the version written.")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET
    status: Annotated[Literal["active", "staged"], Meta(description="Only when `activate` was sent: `active`, or "
                      "`staged` with `activate=false`.")] | msgspec.UnsetType = msgspec.UNSET
    request_id: RequestIdKey | msgspec.UnsetType = msgspec.UNSET
    recipe_id: RecipeIdKey | msgspec.UnsetType = msgspec.UNSET
    dataset: Annotated[DatasetFitSummary, Meta(description="Only with `use_dataset=true` and `holdout` or `append=true` "
                       "sent (fields the GUI never sends, so its answer stays as it was): the stored samples used.")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET


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
             "sent `include_heatmap=false`. Grey levels are linear in the anomaly map: by default each image is "
             "stretched to its own 1st..99th percentile inside the mask (grey 0 to 255), so a clean part looks as "
             "hot as a broken one and only `score` against `threshold` says which is which; with "
             "`heatmap_scale=threshold` grey 0 is 0 and grey 178 the threshold (255 = threshold / 0.7 and above), "
             "comparable between images. The record keeps the values grey 0 and 255 stand for (`heatmap_low`, "
             "`heatmap_high` in GET /inspections)."),
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
    warnings: Annotated[list[str], Meta(
        description="What the client should know about this answer, each sentence starting with its kind: "
        "`image_size:` the image's size differs from the model's training images' by more than 10%, so the "
        "score is not comparable with the calibration (crop as for the training images, or refit). Absent when "
        "there is nothing to say. " + NEWER_GUI_KEYS,
        examples=[["image_size: the image is 600x150 px but version 3 was fitted on 256x256 px images; ..."]],
    )] | msgspec.UnsetType = msgspec.UNSET


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

