"""Request middleware: the correlation id of each request (logged, echoed) and the request metrics (the API
keys and roles: ``auth``)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from litestar.datastructures import MutableScopeHeaders
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ..logs import correlation_id
from ..metrics import UNMATCHED_ROUTE

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
    """Puts the correlation id into the logging context, logs one access line per request and counts it
    (``bdi_http_requests_total`` and the latency histogram, by route template). It runs for routed requests
    only; ``echo_correlation_id`` counts the router's own 404 and 405 answers."""

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
            seconds = time.perf_counter() - started
            method = scope.get("method", "?")
            logger.info("%s %s -> %s in %.1f ms", method, scope.get("path"), status.get("code", "?"), seconds * 1000)
            scope["app"].state.service.metrics.observe_request(
                scope.get("path_template") or UNMATCHED_ROUTE, method, status.get("code", 500), seconds
            )
            correlation_id.reset(token)


async def echo_correlation_id(message: Message, scope: Scope) -> None:
    """Every response, router 404/405 included, carries the request's id back; those two are counted here,
    since no route's middleware saw them."""
    if message["type"] == "http.response.start":
        if "route_handler" not in scope:
            scope["app"].state.service.metrics.observe_request(UNMATCHED_ROUTE, scope.get("method", "?"),
                                                               message["status"], None)
        headers = MutableScopeHeaders.from_message(message)
        cid = request_correlation_id(scope)
        headers["X-Correlation-Id"] = cid
        if scope["state"].get("correlation_header") == "x-request-id":
            headers["X-Request-Id"] = cid
