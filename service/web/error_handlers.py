"""The contract's error bodies: every failure becomes ``{"error", "detail"}`` JSON (FastAPI's 422 list for
field problems, ``trace`` on 500) with a sentence that says what to do."""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException

from ..errors import ServiceError
from ..settings import Settings
from .shared import ErrorResponse, ValidationDetail

logger = logging.getLogger(__name__)


def error_response(status: int, message: str, detail: Any = None, trace: str | None = None) -> Response[ErrorResponse]:
    body = ErrorResponse(error=message, detail=message if detail is None else detail)
    if trace is not None:
        body.trace = trace
    return Response(body, status_code=status, media_type="application/json")


def service_error(request: Request[Any, Any, Any], exc: ServiceError) -> Response[ErrorResponse]:
    """The error's status and sentence; a 5xx (the registry database down) carries the trace as every 5xx does."""
    logger.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.message)
    settings: Settings = request.app.state.settings
    trace = _frames_only(exc) if exc.status_code >= 500 and settings.error_trace else None
    return error_response(exc.status_code, exc.message, trace=trace)


def _frames_only(exc: BaseException) -> str:
    """The trace of ``exc`` and of the errors that caused it, as their types and frames only: their messages (and
    the source lines that built them) can hold connection strings, SQL parameters, host and user names."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    parts = []
    for error in reversed(chain):  # the first cause first, as Python prints a chain
        frames = "".join(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}\n'
                         for frame in traceback.extract_tb(error.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{type(error).__module__}.{type(error).__qualname__}\n")
    return "\nThe above caused:\n\n".join(parts)


_MISSING = re.compile(r"Object missing required field `([^`]+)`")
_AT_PATH = re.compile(r"^(.*?) - at `\$(.*)`$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_MISSING_PARAMETER = re.compile(r"Missing required (\w+) parameter '([^']*)'")
_TEXT_FOR_NUMBER = re.compile(r"Expected `(float|int)[^`]*`, got `str`")
NUMBER_HINT = ("Numbers use a dot as the decimal separator (0.1, not 0,1): format them with an invariant culture "
               "(CultureInfo.InvariantCulture in C#).")


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


def validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorResponse]:
    """Litestar's 400 validation failures become FastAPI's 422 with a ``{loc, msg, type}`` list."""
    problems = exc.extra if isinstance(exc.extra, list) else []
    details = [_fastapi_detail(problem) for problem in problems if isinstance(problem, dict)]
    if missing := _MISSING_PARAMETER.match(str(exc.detail)):
        details = [ValidationDetail(loc=[missing.group(1), missing.group(2)], msg="Field required", type="missing")]
    if not details:
        message = f"The request body could not be read ({str(exc.detail).rstrip('.')}); send the fields CONTRACT.md lists."
        logger.warning("%s %s -> 400: %s", request.method, request.url.path, message)
        return error_response(400, message)
    summary = "; ".join(f"{'.'.join(map(str, d.loc[1:])) or d.loc[0]}: {d.msg}" for d in details)
    hint = f" {NUMBER_HINT}" if any(_TEXT_FOR_NUMBER.match(d.msg) for d in details) else ""
    message = f"Invalid request ({summary}). Fix the listed fields and send it again.{hint}"
    logger.warning("%s %s -> 422: %s", request.method, request.url.path, summary)
    return error_response(422, message, details)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorResponse]:
    status = exc.status_code
    if status == 404:
        message = (
            f"No route {request.url.path}; the service answers /health, /fit_ok, /calibrate_ng, /infer, /state, "
            "/datasets/..., /calibrate_dataset, /inspections, /metrics (API document: /openapi.json, viewer: /docs)."
        )
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}; see the API document at /docs."
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
    response = error_response(status, message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    logger.exception("%s %s -> 500: unexpected error", request.method, request.url.path)
    settings: Settings = request.app.state.settings
    trace = "".join(traceback.format_exception(exc)) if settings.error_trace else None
    return error_response(500, str(exc) or type(exc).__name__, f"Internal error: {exc!r}", trace)


EXCEPTION_HANDLERS = {
    ServiceError: service_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
