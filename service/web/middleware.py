"""Request middleware: the correlation id of each request (logged, echoed) and the optional API key."""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from typing import Any

from litestar.connection import ASGIConnection
from litestar.datastructures import MutableScopeHeaders
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ..logs import correlation_id

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
