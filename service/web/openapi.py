"""The OpenAPI document: its settings, the error responses every route documents, and the routes
that serve it (``/schema/openapi.json``, ``/openapi.json`` where FastAPI clients look, ``/docs``).

The document must not depend on settings or the machine: ``openapi.json`` at the top of the repo
is a snapshot of it that the tests compare against.
"""

from __future__ import annotations

import dataclasses
import inspect
from http import HTTPStatus
from typing import Any

from litestar import Request, Response, Router, get
from litestar.datastructures import ResponseHeader
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    Example,
    OpenAPI,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    Reference,
    Schema,
    SecurityScheme,
    Tag,
)
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

from ..errors import InsufficientStorage
from ..storage.keys import ROLES
from . import auth, shared
from .audit import schemas as audit_schemas
from .auth import INSPECTOR
from .datasets import schemas as datasets_schemas
from .inspection import schemas as inspection_schemas
from .jobs import schemas as jobs_schemas
from .records import schemas as records_schemas
from .reviews import schemas as reviews_schemas
from .shared import ErrorResponse
from .versions import schemas as versions_schemas

DESCRIPTION = """\
Anomaly detection for brake-disc inspection ROIs: DINOv2 ViT-S/14 patch features + PatchCore.
A drop-in replacement for the old FastAPI backend; its operation ids, fields and error bodies are kept.

The GUI's flow: **POST /fit_ok** with OK images of a (role_id, roi_id) → **POST /infer** on OK (and NG)
samples to collect their scores → **POST /calibrate_ng** with those scores to set the threshold →
**POST /infer** in production, reading `decision` (`ng` when score ≥ threshold). **GET /state** tells
whether a model is fitted and calibrated; **GET /health** what runs.

Form fields are text: numbers and booleans arrive as strings (`"0.2"`, `"true"`). In the JSON body of
/calibrate_ng numbers may also be numeric strings.

Every error is JSON `{"error", "detail"}` (`ErrorResponse`): `error` says what to do, `detail` repeats it
or, on 422, lists the fields FastAPI-style; 500 adds `trace`. Unknown routes answer 404 with the same body. A write
that finds the disk full answers 507 and stores nothing.

An `X-Correlation-Id` or `X-Request-Id` request header is echoed on the response (a new id otherwise) and
marks the server's log lines of that request.

The newer GUI's flow adds recipes and samples kept by the service: **POST /datasets/ok/upload** and
**/datasets/ng/upload** (samples with their metas) → **GET /datasets/list** → **POST /fit_ok** with
`use_dataset=true` → **POST /calibrate_dataset** → **POST /infer**. A recipe (`recipe_id` field or query,
else the `X-Recipe-Id` header) is a namespace of its own models, calibrations and samples; without one,
requests use the default namespace, the models old GUIs use. Requests that identify as the newer GUI
(an `X-Request-Id` or `X-Recipe-Id` header, or a field only it sends) get `request_id` and `recipe_id`
in the answers of the old routes too; other clients get exactly the old keys.

This document is at `/openapi.json` and `/schema/openapi.json`; a viewer is at `/docs`.
"""

TAGS = [
    Tag(name="inspection", description="The inspection API both GUIs use (CONTRACT.md): what runs, fitting a ROI from "
        "OK images, calibrating its threshold, inspecting an image and a model's state."),
    Tag(name="datasets", description="The newer GUI's samples, kept by the service per recipe (CONTRACT-GUI2.md): "
        "upload, list, read and delete them, and calibrate from them."),
    Tag(name="records", description="The record of every answered /infer, with its image and heatmap when kept."),
    Tag(name="monitoring", description="The running service's metrics, in Prometheus text format."),
    Tag(name="jobs", description="Work run off the request path, readable from every host: replay a model version "
        "on the recorded inspections."),
    Tag(name="audit", description="Who changed what and when: every fit, calibration, activation, deletion, "
        "key... (engineer role and above)."),
    Tag(name="reviews", description="People's verdicts on recorded inspections, the queue of records most worth one, "
        "and a shadow version scoring live traffic beside the active one (CONTRACT-REVIEW.md)."),
    Tag(name="versions", description="A model's memory versions (active, staged, retired): list them, activate one "
        "(rollback included), and learn a new one from the reviewed false rejects."),
]
"""One tag per domain of the web layer (its Controller's ``tags``), in the order of the document; generated clients
group their operations by tag (openapi-python-client: ``bdi_client.api.<tag>``)."""

SCHEMA_MODULES = (shared, inspection_schemas, datasets_schemas, records_schemas, audit_schemas, jobs_schemas,
                  versions_schemas, reviews_schemas)
"""Where the component schemas' classes are defined: ``finish_document`` takes their docstrings and examples from
there. A new domain with schemas adds its module."""

VIEWER_ASSETS = "/docs/assets"
VIEWER = SwaggerRenderPlugin(
    path="/",
    js_url=f"{VIEWER_ASSETS}/swagger-ui-bundle.js",
    css_url=f"{VIEWER_ASSETS}/swagger-ui.css",
    standalone_preset_js_url=f"{VIEWER_ASSETS}/swagger-ui-standalone-preset.js",
    favicon=f"<link rel='icon' type='image/png' href='{VIEWER_ASSETS}/favicon-32x32.png'>",
)
"""Swagger UI with its script, style and icon served by the service itself (Litestar's default loads them from a
CDN, which leaves the page blank on a PC without internet); the files come from the swagger-ui-bundle-v2 package."""

CORRELATION_HEADER = ResponseHeader(
    name="X-Correlation-Id",
    value="3f9c2a7e5b1d4c8f9a0e6b2d7c4f1a85",
    documentation_only=True,  # set on every response, errors included, by the app's before_send hook
    description="The request's X-Correlation-Id or X-Request-Id (also echoed as X-Request-Id when that was sent), "
    "else a new id. It marks the server's log lines of this request.",
)

_ERROR_MESSAGES = {
    401: auth.NEEDS_KEY,
    403: "The key 'cell-3-gui' has the role inspector; POST /fit_ok needs the role setup or higher. Ask an "
    "administrator for a key with that role (`bdi keys add NAME --role setup`).",
    400: "role_id is empty; send the name of the role (1 to 128 characters).",
    404: "file not found: no ok sample '20261201T153458123456Z-000042.png' for (Inspection, inspection-1) in recipe "
    "'default'; GET /datasets/list names the stored files.",
    409: "mm_per_px mismatch for recipe 'line2-disc': expected 0.2, got 0.25",
    405: "GET is not allowed on /fit_ok; see the API document at /docs.",
    413: "The request body is over the limit of 1024 MB (BDI_MAX_BODY_MB); send fewer or smaller images.",
    422: "Invalid request (roi_id: Field required). Fix the listed fields and send it again.",
    500: "disk I/O error",
    503: "The registry database is unavailable (connection failed: Connection refused); retry in a few seconds: "
    "the service recovers by itself when the database is back.",
    507: InsufficientStorage.sentence(
        "the new memory version (memory.npz + index.faiss)", "/srv/bdi/models", 9 * 2**20, 2 * 2**20
    ),
}
_ERROR_DESCRIPTIONS = {
    405: "Another method on this route. OPTIONS answers 2xx with an `Allow` header instead.",
    413: "The body is over BDI_MAX_BODY_MB (default 1024 MB).",
    422: "A required field is missing or has the wrong type; `detail` lists the problems as `{loc, msg, type}`.",
    500: "An unexpected server error. `error` is the exception's message; `trace` carries the server's traceback "
    "unless BDI_ERROR_TRACE=0.",
    503: "The registry database (PostgreSQL) can't be reached or did not answer in time (BDI_DATABASE_CONNECT_TIMEOUT, "
    "BDI_DATABASE_STATEMENT_TIMEOUT); retry the request: the service recovers by itself when the database is back. "
    "`trace` as on 500.",
    507: "The disk of the models dir (or of the registry) is full. `error` says how much space the write needed and "
    "what to free; nothing of the request was stored and the previous version and calibration stay active.",
}


def _example(status: int) -> Example:
    message = _ERROR_MESSAGES[status]
    value: dict[str, Any] = {"error": message, "detail": message}
    if status == 422:
        value["detail"] = [{"loc": ["body", "roi_id"], "msg": "Field required", "type": "missing"}]
    elif status == 500:
        value["detail"] = "Internal error: OperationalError('disk I/O error')"
        value["trace"] = "Traceback (most recent call last):\n  ...\nsqlite3.OperationalError: disk I/O error\n"
    elif status == 503:
        value["trace"] = "Traceback (most recent call last):\n  ...\nservice.errors.RegistryUnavailable: ...\n"
    elif status == 507:
        value["trace"] = "Traceback (most recent call last):\n  ...\nservice.errors.InsufficientStorage: ...\n"
    return Example(summary=f"{status} {HTTPStatus(status).phrase}", value=value)


def error_responses(when: dict[int, str | None] | None = None) -> dict[int, ResponseSpec]:
    """The error responses of one route: 405 and 500, plus the statuses in ``when``, each with the text
    saying when this route answers it (None: the generic text)."""
    statuses: dict[int, str | None] = {405: None, 500: None, **(when or {})}
    return {
        status: ResponseSpec(
            data_container=ErrorResponse,
            description=text or _ERROR_DESCRIPTIONS[status],
            examples=[_example(status)],
            generate_examples=False,
        )
        for status, text in sorted(statuses.items())
    }


def finish_document(openapi: OpenAPI) -> None:
    """Add what Litestar leaves out of the component schemas of our Structs: the docstring as the
    description and the ``example`` class variable; also unwrap the one-member ``oneOf`` that an
    ``X | UnsetType`` field becomes, which some generators reject, and mark raw (non-JSON, non-text) bodies as
    binary."""
    for item in (openapi.paths or {}).values():
        for operation in (item.get, item.delete, item.post):
            for response in (operation.responses or {}).values() if operation is not None else ():
                for media_type, content in (getattr(response, "content", None) or {}).items():
                    if media_type != "application/json" and not media_type.startswith("text/") \
                            and isinstance(content.schema, Schema):
                        content.schema.format = OpenAPIFormat.BINARY
    models = {name: model for module in SCHEMA_MODULES for name, model in vars(module).items()
              if isinstance(model, type) and model.__module__ == module.__name__}
    for name, schema in (openapi.components.schemas or {}).items():
        model = models.get(name)
        if model is None:
            continue
        if model.__doc__:
            schema.description = inspect.cleandoc(model.__doc__)
        if (example := getattr(model, "example", None)) is not None:
            schema.examples = [example]
        for key, prop in (schema.properties or {}).items():
            if isinstance(prop, Schema) and prop.one_of and len(prop.one_of) == 1:
                # the field's Meta (description, examples) sits on the wrapper: keep it on what replaces it
                kept = {field.name: getattr(prop, field.name) for field in dataclasses.fields(prop)
                        if field.name != "one_of" and getattr(prop, field.name) is not None}
                schema.properties[key] = dataclasses.replace(prop.one_of[0], **kept)


SECURITY_SCHEMES = {
    "ApiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header",
                             description="A key from `bdi keys add NAME --role ROLE`, or BDI_API_KEY (an admin key)."),
    "Bearer": SecurityScheme(type="http", scheme="bearer",
                             description="The same key as `Authorization: Bearer` (Prometheus' scrape setting)."),
}


def document_roles(openapi: OpenAPI, roles: dict[tuple[str, str], str]) -> None:
    """Each operation's role (``auth.route_roles``): the key it accepts (security) and its 401 and 403 answers,
    the 403 naming the role. Public operations (/health) get neither, and those of the least role no 403: every key
    has that role or a higher one."""
    openapi.components = openapi.components or Components()
    openapi.components.security_schemes = dict(SECURITY_SCHEMES)
    for path, item in (openapi.paths or {}).items():
        for method in ("get", "post", "delete", "put", "patch"):
            operation = getattr(item, method)
            role = roles.get((path, method.upper()))
            if operation is None or role is None or role == auth.PUBLIC:
                continue
            operation.security = [{"ApiKey": []}, {"Bearer": []}]
            answers = {"401": _error_response(401, "No API key, or one this service does not know or that was "
                                                   "revoked, while keys exist (`bdi keys add`, BDI_API_KEY); with "
                                                   "none the service is open.")}
            if role != ROLES[0]:
                answers["403"] = _error_response(403, f"The key's role is below {role}: this operation needs the "
                                                      f"role `{role}` or higher ({' < '.join(ROLES)}).")
            operation.responses = {**(operation.responses or {}), **answers}
            operation.responses = dict(sorted(operation.responses.items()))


def _error_response(status: int, description: str) -> OpenAPIResponse:
    example = _example(status)
    return OpenAPIResponse(description=description, content={"application/json": OpenAPIMediaType(
        schema=Reference(ref="#/components/schemas/ErrorResponse"),
        examples={"errorresponse-example-1": example},
    )})


def openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """The document as OpenAPI 3.0.3, for generators that read only 3.0 (NSwag, openapi-generator).

    Litestar writes 3.1 only. The 3.1 parts of this document become: a ``oneOf`` with ``{"type": "null"}``
    or a ``type`` list with ``"null"`` → ``nullable: true``, schema ``examples`` → ``example``;
    ``contentMediaType`` is dropped (``format: binary`` already marks files), and so is an empty ``required``
    list; a ``const`` (a one-value ``Literal``) becomes a one-value ``enum``.
    """

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: _schema_30(value) if key == "schema" else walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    components = document["components"]
    return {
        **document,
        "openapi": "3.0.3",
        "paths": walk(document["paths"]),
        "components": {**components, "schemas": {name: _schema_30(s) for name, s in components["schemas"].items()}},
    }


def _schema_30(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    out = {key: value for key, value in schema.items() if key not in ("contentMediaType", "examples")}
    if out.get("required") == []:  # 3.0 wants at least one name there
        del out["required"]
    if schema.get("examples"):
        out["example"] = schema["examples"][0]
    if "const" in out:  # 3.0 has no const
        out["enum"] = [out.pop("const")]
    if "properties" in out:
        out["properties"] = {name: _schema_30(value) for name, value in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if key in out:
            out[key] = _schema_30(out[key])
    for key in ("oneOf", "anyOf", "allOf"):
        if key in out:
            out[key] = [_schema_30(member) for member in out[key]]
    if isinstance(out.get("type"), list):  # an optional enum parameter: type [..., "null"], null in the enum
        types = [kind for kind in out["type"] if kind != "null"]
        if len(types) < len(out["type"]):
            out["nullable"] = True
            if "enum" in out:
                out["enum"] = [value for value in out["enum"] if value is not None]
        if len(types) == 1:
            out["type"] = types[0]
        else:
            del out["type"]
            out["oneOf"] = [{"type": kind} for kind in types]
    if {"type": "null"} in out.get("oneOf", []):
        rest = [member for member in out.pop("oneOf") if member != {"type": "null"}]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out = {**rest[0], **out}
        else:
            out["allOf" if len(rest) == 1 else "oneOf"] = rest  # 3.0 ignores siblings of a bare $ref
        out["nullable"] = True
    return out


def openapi_config(version: str) -> OpenAPIConfig:
    """Litestar serves the document at /schema/openapi.json and the viewer at /schema (links from before);
    the 404 page Litestar serves for other /schema paths is HTML, so it is replaced by the JSON error body."""
    return OpenAPIConfig(
        title="Brake-disc inspection service",
        version=version,
        description=DESCRIPTION,
        tags=TAGS,
        render_plugins=[VIEWER, JsonRenderPlugin()],
        openapi_router=Router("/schema", route_handlers=[], include_in_schema=False, after_request=_json_not_found,
                              guards=[INSPECTOR]),
    )


def _json_not_found(response: Response[Any]) -> Response[Any]:
    if response.status_code != 404:
        return response
    message = "No such page under /schema; the API document is /openapi.json and its viewer /docs."
    return Response(ErrorResponse(error=message, detail=message), status_code=404, media_type="application/json")


@get("/openapi.json", include_in_schema=False, guards=[INSPECTOR], sync_to_thread=False, media_type="application/json")
def openapi_json(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Where FastAPI clients and generators look for the document."""
    return request.app.openapi_schema.to_schema()


@get("/docs", include_in_schema=False, guards=[INSPECTOR], sync_to_thread=False, media_type="text/html")
def docs(request: Request[Any, Any, Any]) -> bytes:
    """The viewer at FastAPI's address."""
    return VIEWER.render(request, request.app.openapi_schema.to_schema())


viewer_assets = create_static_files_router(
    path=VIEWER_ASSETS, directories=[swagger_ui_path], name="viewer_assets", include_in_schema=False,
    guards=[INSPECTOR],
)

DOC_ROUTES = [openapi_json, docs, viewer_assets]
