"""Request and response bodies of the newer GUI's dataset routes and /calibrate_dataset (CONTRACT-GUI2.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar

import msgspec
from litestar.datastructures import UploadFile
from msgspec import Meta

from ..shared import MM_PER_PX_SCHEMA, MODEL_KEY_DESCRIPTION, RecipeIdField, RoiId, RoleId

RequestId = Annotated[str, Meta(description="The request's id (the echoed X-Request-Id, else a new one).")]
RecipeId = Annotated[str, Meta(description="The recipe the request was answered in (`default` when it named none).",
                               examples=["line2-disc"])]
StoredName = Annotated[
    str,
    Meta(description="A stored sample's name: UTC time to the microsecond, a counter and the image's extension. "
         "Unique, never reused, sorts chronologically; the bytes under a name never change.",
         examples=["20261201T153458123456Z-000042.png"]),
]


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
    saved: Annotated[list[StoredName], Meta(description="The stored names, in the order the images were sent. An "
                     "image whose bytes are already stored in the class is not stored again: its entry is the stored "
                     "sample's name.")]
    request_id: RequestId
    recipe_id: RecipeId
    already_stored: Annotated[list[StoredName], Meta(
        description="The names of `saved` that were stored before this upload (same bytes, same class; deduplicated "
        "by sha256). Only for clients that identify as newer (an `X-Request-Id` or `X-Recipe-Id` header, or a "
        "`recipe_id` field).", examples=[["20261130T101500000000Z-000007.png"]],
    )] | msgspec.UnsetType = msgspec.UNSET


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

