"""The contract's inspection routes (CONTRACT.md), which both GUIs use: parse, call one service method off the
event loop, shape the answer.

The newer GUI's extra answer keys (``request_id``, ``recipe_id``, ``model_key``) go into these answers only when
the request comes from the newer GUI (``_newer_gui``), so an old GUI gets exactly CONTRACT.md's keys.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import ValidationException
from litestar.params import Body, HeaderParameter, JSONBody, Parameter

from ...core import InspectionService, Upload
from ...errors import BadRequest
from ...logs import correlation_id
from ..auth import ANYONE, INSPECTOR, SETUP
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
    CalibrateRequest,
    CalibrationResponse,
    FitOkForm,
    FitResponse,
    HealthResponse,
    InferForm,
    InferResponse,
    StateResponse,
)

NEWER_GUI_HEADERS = ("x-request-id", "x-recipe-id")


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


_NEWER_GUI = (" Requests of the newer GUI (an `X-Request-Id` or `X-Recipe-Id` header, or a field only it sends: "
              "`recipe_id`, `use_dataset`, `include_heatmap`) also get `request_id` and `recipe_id` in "
              "the answer; other clients get exactly the keys listed.")

_ModelKeyQuery = Annotated[str | None, Parameter(description="Accepted (the newer GUI sends it, equal to `roi_id`); "
                                                 "echoed as `model_key`, else `roi_id` is.")]


class InspectionController(Controller):
    """The five routes of CONTRACT.md."""

    tags = ["inspection"]

    @get(
        "/health",
        guards=[ANYONE],
        operation_id="health_health_get",
        summary="Service health",
        description="What runs (device, backbone, weights, input size) and whether the service can serve. Always 200: "
        "`status` is `degraded`, with `problems`, when the models dir is not writable, the disk is nearly full or the "
        "registry is unreadable or its database unavailable. An invalid `X-Recipe-Id` header never fails it (the newer GUI reads any non-2xx as "
        "\"offline\"): the problem is in `recipe_error`." + _NEWER_GUI,
        response_description="What runs and whether it can serve.",
        responses=error_responses(),
    )
    async def health(self, request: Request[Any, Any, Any], service: NamedDependency[InspectionService]) -> HealthResponse:
        body = await off_loop(service.health)
        if _newer_gui(request):  # the header is read here, not declared: a declared parameter could fail /health
            header = request.headers.get("x-recipe-id")
            body["request_id"] = correlation_id.get()
            try:
                body["recipe_id"] = recipe_of(None, header)
            except BadRequest as exc:
                body["recipe_id"] = (header or "").strip()
                body["recipe_error"] = exc.message
        return as_schema(HealthResponse, body)

    @post(
        "/fit_ok",
        guards=[SETUP],
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
            400: f"{IDS_400} Or `mm_per_px` is not a finite number > 0 and <= 1e6; or an image is empty or does not "
            "decode (the error names the file); or the body is not readable multipart/form-data (a text field that is "
            "not UTF-8, a file part without a file name). With `append=true`: (role_id, roi_id) has no memory (fit "
            "first), or its memory was fitted at another token grid (`error` starts `Token grid mismatch: got (H, W), "
            "expected (H', W')`) or with other backbone weights (`Extractor mismatch: got weights …, expected …`); "
            "`append=true` with `use_dataset=true` and no stored OK sample new to the memory, or with `holdout`. "
            "With `use_dataset=true`: `holdout` outside 0..0.9, no OK samples are stored (`No OK dataset "
            "samples found for (role, roi) in recipe '<r>'; upload OK samples first.`) or fewer than BDI_MIN_OK_SAMPLES "
            f"(`Insufficient OK samples: need at least 10, found N`). {RECIPE_400} Nothing is stored.",
            409: MM_PER_PX_409,
            413: "More images than BDI_MAX_FIT_IMAGES (default 1000) or more form parts than BDI_MAX_FIT_IMAGES + 64, an "
            "image over BDI_MAX_IMAGE_PIXELS (default 100 000 000, read from its header) or a body over BDI_MAX_BODY_MB "
            "(default 1024 MB); with `append=true`, a memory that would grow past BDI_MAX_MEMORY_ROWS rows (default "
            "5 000). Nothing is stored.",
            422: f"{FORM_422}, or `images` is sent as text, or absent without `use_dataset=true`.",
            503: None,
            507: None,
        }),
        before_request=form_check(FitOkForm, "images", many=True),
    )
    async def fit_ok(
        self,
        data: Annotated[FitOkForm, Body(media_type=RequestEncodingType.MULTI_PART)],
        request: Request[Any, Any, Any],
        service: NamedDependency[InspectionService],
        recipe_header: RecipeHeader = None,
    ) -> FitResponse:
        recipe = recipe_of(data.recipe_id, recipe_header)
        activate = data.activate is not False
        if data.use_dataset is True:
            if data.append and data.holdout is not msgspec.UNSET:
                raise BadRequest("holdout applies to a fit from the dataset; an append (append=true) keeps the samples "
                                 "its fit held out: send one of them.")
            fields = (data.role_id, data.roi_id, data.mm_per_px, data.memory_fit, request_context(request))
            if data.append:
                result = await off_loop(service.append_dataset, *fields, recipe_id=recipe, activate=activate)
            else:
                result = await off_loop(service.fit_dataset, *fields, recipe_id=recipe, activate=activate,
                                        holdout=_given(data.holdout))
            if data.holdout is msgspec.UNSET and not data.append:  # the GUI's request: its answer as it was
                result.pop("dataset")
        else:
            if not data.images:  # required unless use_dataset=true: the 422 the field's absence always gave
                raise ValidationException(
                    "Invalid form fields",
                    extra=[{"key": "data", "message": "Object missing required field `images`", "source": "body"}],
                )
            uploads = [Upload(f.filename or f"images[{i}]", await f.read()) for i, f in enumerate(data.images)]
            result = await off_loop(
                service.append if data.append else service.fit, data.role_id, data.roi_id, data.mm_per_px, uploads,
                data.memory_fit, request_context(request), recipe_id=recipe, activate=activate,
            )
        if data.activate is msgspec.UNSET:  # the body of clients that do not know versions: exactly as before
            result = {key: value for key, value in result.items() if key not in ("version", "status")}
        if _newer_gui(request, data.recipe_id, data.use_dataset):
            result = {**result, "request_id": correlation_id.get(), "recipe_id": recipe}
        return as_schema(FitResponse, result)

    @post(
        "/calibrate_ng",
        guards=[SETUP],
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
            400: f"{IDS_400} Or `ok_scores` is empty; a score is not finite or beyond ±1e6; `mm_per_px` is not "
            f"finite, <= 0 or over 1e6; `score_percentile` is outside 1..100; or the body is not a JSON object. {RECIPE_400}",
            413: None,
            422: None,
            503: None,
            507: None,
        }),
    )
    async def calibrate_ng(
        self,
        data: JSONBody[CalibrateRequest], request: Request[Any, Any, Any], service: NamedDependency[InspectionService],
        recipe_header: RecipeHeader = None,
    ) -> CalibrationResponse:
        recipe = recipe_of(data.recipe_id, recipe_header)
        result = await off_loop(
            service.calibrate, data.role_id, data.roi_id, data.ok_scores,
            data.ng_scores, data.mm_per_px,
            data.area_mm2_thr, data.score_percentile, request_context(request), recipe_id=recipe,
        )
        return as_schema(CalibrationResponse, result)

    @post(
        "/infer",
        guards=[INSPECTOR],
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
            f"number > 0 and <= 1e6. {IDS_400} Or the body is not readable multipart/form-data (a text field that is "
            f"not UTF-8, a file part without a file name). Or `part_id` (or X-Part-Id) is longer than 128 characters "
            f"or contains control characters. {RECIPE_400}",
            409: MM_PER_PX_409,
            413: "The image is over BDI_MAX_IMAGE_PIXELS (default 100 000 000, read from its header), the body over "
            "BDI_MAX_BODY_MB (default 1024 MB) or the form has more than BDI_MAX_FIT_IMAGES + 64 parts.",
            422: f"{FORM_422}, or `image` is sent as text or more than once (send exactly one image).",
            503: None,
        }),
        before_request=form_check(InferForm, "image", many=False),
    )
    async def infer(
        self,
        data: Annotated[InferForm, Body(media_type=RequestEncodingType.MULTI_PART)],
        request: Request[Any, Any, Any],
        service: NamedDependency[InspectionService],
        recipe_header: RecipeHeader = None,
        part_header: Annotated[
            str | None,
            HeaderParameter(name="X-Part-Id", required=False, description="Id of the inspected part, as the `part_id` "
                            "field (which wins when both are sent)."),
        ] = None,
    ) -> InferResponse:
        recipe = recipe_of(data.recipe_id, recipe_header)
        upload = Upload(data.image.filename or "image", await data.image.read())
        part_id = (None if data.part_id is msgspec.UNSET else data.part_id) or part_header or None
        context = dataclasses.replace(request_context(request), part_id=part_id, record=True)
        result = await off_loop(
            service.infer, data.role_id, data.roi_id, data.mm_per_px, upload, _given(data.shape), context,
            recipe_id=recipe, include_heatmap=data.include_heatmap is not False,
            heatmap_scale=_given(data.heatmap_scale) or "image",
        )
        warnings = result.pop("warnings", None)  # an old GUI gets exactly CONTRACT.md's keys
        if _newer_gui(request, data.recipe_id, data.include_heatmap, data.heatmap_scale):
            result = {**result, "request_id": correlation_id.get(), "recipe_id": recipe,
                      **({"warnings": warnings} if warnings else {})}
        return as_schema(InferResponse, result)

    @get(
        "/state",
        guards=[INSPECTOR],
        operation_id="state_state_get",
        summary="State of one model",
        description="Whether (role_id, roi_id) of the request's recipe has an active memory and a calibration, and whether "
        "that calibration predates appends to the memory (`calib_stale`). Read-only. An unknown pair is not an error: "
        "it answers 200 with `memory_fitted: false`, `token_shape: null`, `version: null`."
        + _NEWER_GUI.replace("`request_id` and `recipe_id`", "`request_id`, `recipe_id` and `model_key`"),
        response_description="The model's state.",
        responses=error_responses({400: f"{IDS_400} {RECIPE_400}", 422: "`role_id` or `roi_id` is missing from the query.",
                                   503: None}),
    )
    async def state(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[InspectionService],
        role_id: RoleQuery,
        roi_id: RoiQuery,
        recipe_id: RecipeQuery = None,
        recipe_header: RecipeHeader = None,
        model_key: _ModelKeyQuery = None,
    ) -> StateResponse:
        recipe = recipe_of(recipe_id, recipe_header)
        result = await off_loop(service.state, role_id, roi_id, recipe_id=recipe)
        if _newer_gui(request, recipe_id):
            result = {**result, "request_id": correlation_id.get(), "recipe_id": recipe, "model_key": model_key or roi_id}
        return as_schema(StateResponse, result)
