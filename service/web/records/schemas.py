"""Response bodies of the inspection records (GET /inspections...)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from ..shared import Decision


class RecordedRegion(msgspec.Struct):
    """One defect region as /infer answered it: its box in the image's pixels and its area (the outline is not
    recorded)."""

    x: int
    y: int
    w: int
    h: int
    area_px: Annotated[float, Meta(description="Area in pixels².")]
    area_mm2: float


class ReviewSummary(msgspec.Struct):
    """The record's current review (POST /inspections/{id}/review; its history: GET /inspections/{id}/reviews)."""

    example: ClassVar[dict[str, Any]] = {"verdict": "ok", "outcome": "false_reject", "reviewer": "qa-anna",
                                         "reviewed_at": "2026-12-03T10:15:02.123456Z"}

    verdict: Decision
    outcome: Annotated[str, Meta(description="`confirmed_ok`, `confirmed_ng`, `false_reject`, `missed_defect`, "
                                 "`labelled_ok` or `labelled_ng`.")]
    reviewer: str | None
    reviewed_at: str


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
        "warnings": None,
        "heatmap_low": 0.3112,
        "heatmap_high": 0.5981,
        "shape": {"kind": "annulus", "cx": 150.0, "cy": 135.0, "r": 130.0, "r_inner": 60.0},
        "regions": [{"x": 120, "y": 40, "w": 14, "h": 37, "area_px": 518.0, "area_mm2": 20.72}],
        "shadow_version": 4,
        "shadow_score": 0.4412,
        "shadow_decision": "ok",
        "image_kept": True,
        "review": ReviewSummary.example,
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
    warnings: Annotated[list[str] | None, Meta(
        description="What the answer warned about (shown to newer clients in /infer's `warnings`), each starting "
        "with its kind: `image_size:` the image's size differs from the training images' by more than 10%, so "
        "its score is not comparable with the calibration. Null: none.",
        examples=[["image_size: the image is 600x150 px but version 3 was fitted on 256x256 px images; ..."]])]
    heatmap_low: Annotated[float | None, Meta(description="The anomaly-map value the heatmap's grey 0 stands for "
                                              "(grey g is heatmap_low + g/255 x (heatmap_high - heatmap_low), "
                                              "clipped); null in records made before it was recorded.")]
    heatmap_high: Annotated[float | None, Meta(description="The map value grey 255 stands for. With /infer's "
                                               "default scale each image has its own (its 1st..99th percentile); "
                                               "with `heatmap_scale=threshold`, 0 and threshold / 0.7.")]
    shape: Annotated[dict[str, Any] | None, Meta(description="The whole mask as scored: `kind` and its coordinates "
                                                  "in the image's pixels, defaults filled in (as /infer's `shape` "
                                                  "takes it); null: the whole image.")]
    regions: Annotated[list[RecordedRegion] | None, Meta(description="The regions as answered, without their "
                                                         "outlines; null in records made before they were recorded.")]
    shadow_version: Annotated[int | None, Meta(description="The shadow version that also scored this image (POST "
                                               "/models/shadow); null: none.")]
    shadow_score: Annotated[float | None, Meta(description="Its score, on the same backbone features.")]
    shadow_decision: Annotated[Decision | None, Meta(description="Its decision under its own calibration, else the "
                                                     "active threshold; null: no threshold.")]
    image_kept: Annotated[bool, Meta(description="The upload and heatmap are kept (`/inspections/{id}/image`, "
                                     "`/heatmap`); see BDI_RECORD_IMAGES.")]
    review: Annotated[ReviewSummary | None, Meta(description="The current review; null: not reviewed.")]


class InspectionPage(msgspec.Struct):
    """One page of inspection records, newest first (pass `next_cursor` back as `cursor` for the next page), or
    with `after_seq` the records written after it, oldest write first (pass `next_after_seq` back as `after_seq`)."""

    example: ClassVar[dict[str, Any]] = {"items": [InspectionItem.example], "next_cursor": "MjAyNi0xMi0wMVQwOD...",
                                         "next_after_seq": None}

    items: list[InspectionItem]
    next_cursor: Annotated[str | None, Meta(description="Cursor of the next page; null on the last page and when "
                                                        "following by `after_seq`.")]
    next_after_seq: Annotated[int | None, Meta(description="With `after_seq`: the `after_seq` to poll with next "
                                                           "(the same when nothing new was written); null otherwise.")]
