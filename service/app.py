"""Litestar app factory: routes, error bodies of the contract, correlation ids, start-up."""

from __future__ import annotations

import hmac
import logging
import re
import time
import traceback
import uuid
from typing import Any

import msgspec
from litestar import Litestar, Request, Response
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import MutableScopeHeaders
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotAuthorizedException, SerializationException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .api import ROUTES
from .errors import ServiceError
from .inspection import InspectionService
from .logs import configure_logging, correlation_id
from .openapi import CORRELATION_HEADER, DOC_ROUTES, finish_document, openapi_config
from .schemas import ErrorResponse, ValidationDetail
from .settings import Settings

logger = logging.getLogger(__name__)

_ID_HEADERS = ("x-correlation-id", "x-request-id")
_VALID_ID = re.compile(r"[\x21-\x7e]{1,128}")


def request_correlation_id(scope: Scope) -> str:
    """The id of this request: the client's X-Correlation-Id / X-Request-Id, else a new one."""
    state = scope.setdefault("state", {})
    if "correlation_id" not in state:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = next((headers[h] for h in _ID_HEADERS if h in headers and _VALID_ID.fullmatch(headers[h])), None)
        state["correlation_id"] = given or uuid.uuid4().hex
        state["correlation_header"] = next((h for h in _ID_HEADERS if h in headers), None)
    return state["correlation_id"]


class CorrelationMiddleware(ASGIMiddleware):
    """Puts the correlation id into the logging context and logs one access line per request."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        token = correlation_id.set(request_correlation_id(scope))
        started = time.perf_counter()
        status: dict[str, int] = {}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, capture)
        finally:
            logger.info(
                "%s %s -> %s in %.1f ms", scope.get("method"), scope.get("path"), status.get("code", "?"),
                (time.perf_counter() - started) * 1000,
            )
            correlation_id.reset(token)


async def echo_correlation_id(message: Message, scope: Scope) -> None:
    """Every response, router 404/405 included, carries the request's id back."""
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        cid = request_correlation_id(scope)
        headers["X-Correlation-Id"] = cid
        if scope["state"].get("correlation_header") == "x-request-id":
            headers["X-Request-Id"] = cid


def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
    """With BDI_API_KEY set, every route but /health (and CORS preflights) needs ``X-API-Key``."""
    expected = connection.app.state.settings.api_key
    if not expected or connection.scope["path"] == "/health" or connection.scope.get("method") == "OPTIONS":
        return
    given = connection.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise NotAuthorizedException("missing or wrong X-API-Key")


def _error(status: int, message: str, detail: Any = None, trace: str | None = None) -> Response[ErrorResponse]:
    body = ErrorResponse(error=message, detail=message if detail is None else detail)
    if trace is not None:
        body.trace = trace
    return Response(body, status_code=status, media_type="application/json")


def _service_error(request: Request[Any, Any, Any], exc: ServiceError) -> Response[ErrorResponse]:
    logger.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.message)
    return _error(exc.status_code, exc.message)


_MISSING = re.compile(r"Object missing required field `([^`]+)`")
_AT_PATH = re.compile(r"^(.*?) - at `\$(.*)`$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_MISSING_PARAMETER = re.compile(r"Missing required (\w+) parameter '([^']*)'")


def _fastapi_detail(problem: dict[str, Any]) -> ValidationDetail:
    """One Litestar/msgspec problem as FastAPI's ``{loc, msg, type}``: loc is source, then the path."""
    source = str(problem.get("source") or "body")
    key = problem.get("key")
    message = str(problem.get("message", "invalid value"))
    if key == "data" and message == "'data'":  # Litestar's KeyError text for an empty body
        return ValidationDetail(loc=[source], msg="Field required", type="missing")
    loc: list[str | int] = [source]
    if key not in (None, "", "data"):
        loc += [name if name else int(index) for name, index in _PATH_PART.findall(f".{key}")]
    at = _AT_PATH.match(message)
    if at:
        message = at.group(1)
        loc += [name if name else int(index) for name, index in _PATH_PART.findall(at.group(2))]
    missing = _MISSING.search(message)
    if missing:
        return ValidationDetail(loc=[*loc, missing.group(1)], msg="Field required", type="missing")
    return ValidationDetail(loc=loc, msg=message, type="value_error")


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorResponse]:
    """Litestar's 400 validation failures become FastAPI's 422 with a ``{loc, msg, type}`` list."""
    problems = exc.extra if isinstance(exc.extra, list) else []
    details = [_fastapi_detail(problem) for problem in problems if isinstance(problem, dict)]
    if missing := _MISSING_PARAMETER.match(str(exc.detail)):
        details = [ValidationDetail(loc=[missing.group(1), missing.group(2)], msg="Field required", type="missing")]
    if not details:
        message = f"The request body could not be read ({str(exc.detail).rstrip('.')}); send the fields CONTRACT.md lists."
        logger.warning("%s %s -> 400: %s", request.method, request.url.path, message)
        return _error(400, message)
    summary = "; ".join(f"{'.'.join(map(str, d.loc[1:])) or d.loc[0]}: {d.msg}" for d in details)
    message = f"Invalid request ({summary}). Fix the listed fields and send it again."
    logger.warning("%s %s -> 422: %s", request.method, request.url.path, summary)
    return _error(422, message, details)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorResponse]:
    status = exc.status_code
    if status == 404:
        message = (
            f"No route {request.url.path}; the service answers /health, /fit_ok, /calibrate_ng, /infer, /state "
            "(API document: /openapi.json, viewer: /docs)."
        )
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}; see the API document at /docs."
    elif status == 401:
        message = "This service needs an API key: send the header X-API-Key with the value of BDI_API_KEY."
    elif status == 413:
        settings: Settings = request.app.state.settings
        message = (
            f"The request body is over the limit of {settings.max_body_mb:g} MB (BDI_MAX_BODY_MB); "
            "send fewer or smaller images."
        )
    elif isinstance(exc.__cause__, SerializationException):  # the JSON body does not decode
        message = (
            f"The body is not valid JSON ({str(exc.detail).rstrip('.')}); send a JSON object with finite numbers "
            "(no NaN, Infinity or out-of-range values) as the API document at /docs describes."
        )
    else:
        message = f"{str(exc.detail).rstrip('.')}; check the request against the API document at /docs."
    logger.warning("%s %s -> %d: %s", request.method, request.url.path, status, message)
    response = _error(status, message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def _unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    logger.exception("%s %s -> 500: unexpected error", request.method, request.url.path)
    settings: Settings = request.app.state.settings
    trace = "".join(traceback.format_exception(exc)) if settings.error_trace else None
    return _error(500, str(exc) or type(exc).__name__, f"Internal error: {exc!r}", trace)


def create_app(settings: Settings | None = None, service: InspectionService | None = None) -> Litestar:
    """Build the app; weights are loaded and the registry migrated before it is returned.

    ``service`` lets tests share one loaded extractor between apps over different models dirs.
    """
    settings = settings or Settings.load()
    configure_logging(settings.log_level)
    owned = service is None
    service = service or InspectionService(settings)
    service.start()

    def shutdown() -> None:
        if owned:
            service.close()

    app = Litestar(
        route_handlers=[*ROUTES, *DOC_ROUTES],
        dependencies={"service": Provide(lambda: service, use_cache=True, sync_to_thread=False)},
        exception_handlers={
            ServiceError: _service_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        middleware=[CorrelationMiddleware()],
        guards=[require_api_key],
        cors_config=CORSConfig(
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Content-Type", "X-API-Key", "X-Correlation-Id", "X-Request-Id"],
            expose_headers=["X-Correlation-Id", "X-Request-Id"],
        ) if settings.cors_origins else None,
        before_send=[echo_correlation_id],
        response_headers=[CORRELATION_HEADER],
        on_shutdown=[shutdown],
        request_max_body_size=settings.max_body_bytes,
        multipart_form_part_limit=settings.max_fit_images + 64,
        openapi_config=openapi_config(__version__),
        type_encoders={msgspec.UnsetType: lambda _: None},
        logging_config=None,  # keep configure_logging's handler (it stamps the correlation id)
        debug=False,
    )
    finish_document(app.openapi_schema)
    app.state.settings = settings
    app.state.service = service
    return app
