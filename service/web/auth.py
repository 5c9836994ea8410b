"""Who may call what: the API key of a request names a key of the registry (``bdi keys add``) or BDI_API_KEY
(an ``admin`` key named ``env``), and each route declares the least role it needs with ``requires_role``.

Roles include the ones before them: inspector < setup < engineer < admin. With no key in the registry and no
BDI_API_KEY the service is open (the GUIs send no key) and requests have no actor. ``authenticate`` (an app-wide
guard, run before the routes' own) puts the caller's ``Identity`` into the connection's scope state, where
``requires_role`` and ``request_context`` read it.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from ..errors import ServiceError
from ..storage.keys import ROLES, Identity, hash_key

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]

ENV_KEY_NAME = "env"
IDENTITY = "identity"
"""Key of the caller's ``Identity`` in the scope state (None: the service is open)."""
_PATH_TYPE = re.compile(r"\{(\w+):[^}]+\}")
SESSION_KEY_SHA256 = "session_key_sha256"
"""Key in the scope state of the sha256 of the key a console login session holds (put there by the console's session
middleware, on the console's routes only; the API routes never read a cookie)."""
PUBLIC = "public"
"""The declared "role" of a route anyone may call (/health)."""

NEEDS_KEY = ("This service needs an API key: send the header X-API-Key (or Authorization: Bearer) with a key an "
             "administrator made with `bdi keys add` (or the value of BDI_API_KEY).")
UNKNOWN_KEY = ("The API key sent (X-API-Key or Authorization: Bearer) is not known to this service or was revoked; "
               "ask an administrator for a key (`bdi keys list` names the active ones).")


def presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """``X-API-Key``, else the token of ``Authorization: Bearer`` (what Prometheus can send); '' when neither."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    return connection.headers.get("x-api-key") or (token.strip() if scheme.lower() == "bearer" else "")


def declared_role(handler: BaseRouteHandler) -> str | None:
    """The role a route needs: the highest its guards declare (None: it declares none)."""
    roles = [getattr(getattr(guard, "func", guard), "role", None) for guard in handler.resolve_guards()]
    named = [role for role in roles if role is not None]
    if not named:
        return None
    ranked = [role for role in named if role != PUBLIC]
    return max(ranked, key=ROLES.index) if ranked else PUBLIC


def route_roles(routes: list[Any]) -> dict[tuple[str, str], str | None]:
    """(path, METHOD) -> the role each route of an app declares (None: it declares none), from its route table;
    paths as the OpenAPI document writes them (``{inspection_id}``, no type)."""
    return {
        (_PATH_TYPE.sub(r"{\1}", route.path), method): declared_role(handler)
        for route in routes for handler in getattr(route, "route_handlers", ())
        for method in handler.http_methods if method not in ("OPTIONS", "HEAD")
    }


def authenticate(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Identify the caller from its key (401 when keys exist and it sent none, an unknown or a revoked one).
    Public routes and CORS preflights are let through without a look at the key."""
    state = connection.scope.setdefault("state", {})
    state[IDENTITY] = None
    if connection.scope.get("method") == "OPTIONS" or declared_role(handler) == PUBLIC:
        return
    env_key: str = connection.app.state.settings.api_key
    keys = connection.app.state.service.registry.keys
    if not env_key and not keys.active():
        return  # open: no key configured anywhere
    given = presented_key(connection)
    if not given and state.get(SESSION_KEY_SHA256):
        state[IDENTITY] = _session_identity(state[SESSION_KEY_SHA256], env_key, keys)
        return
    if not given:
        raise ServiceError(NEEDS_KEY, 401)
    if env_key and hmac.compare_digest(given.encode("utf-8"), env_key.encode("utf-8")):
        state[IDENTITY] = Identity(ENV_KEY_NAME, "admin")
        return
    identity = keys.identify(given)
    if identity is None:
        raise ServiceError(UNKNOWN_KEY, 401)
    state[IDENTITY] = identity


def _session_identity(key_sha256: str, env_key: str, keys: Any) -> Identity:
    """The identity of a console session's key, looked up again like a sent key (401 once it is revoked)."""
    if env_key and hmac.compare_digest(key_sha256.encode("ascii"), hash_key(env_key).encode("ascii")):
        return Identity(ENV_KEY_NAME, "admin")
    identity = keys.active().get(key_sha256)
    if identity is None:
        raise ServiceError("The key this console session was opened with was revoked; log in again with an "
                           "active key.", 401)
    return identity


def caller(connection: ASGIConnection[Any, Any, Any, Any]) -> Identity | None:
    """The identity ``authenticate`` found (None: the service is open)."""
    return connection.scope.get("state", {}).get(IDENTITY)


def requires_role(role: str) -> Guard:
    """The guard of a route (or controller) that needs ``role`` or a higher one: 403 naming the role needed.
    The route's role is read back from the guard (``declared_role``) by the OpenAPI document and the tests."""
    if role not in ROLES and role != PUBLIC:
        raise ValueError(f"unknown role {role!r}")

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        identity = caller(connection)
        if role != PUBLIC and identity is not None and not identity.may(role):
            raise ServiceError(
                f"The key {identity.name!r} has the role {identity.role}; {connection.scope.get('method')} "
                f"{connection.scope['path']} needs the role {role} or higher. Ask an administrator for a key with "
                f"that role (`bdi keys add NAME --role {role}`).", 403)

    guard.role = role  # type: ignore[attr-defined]
    guard.__name__ = f"requires_{role}"
    return guard


INSPECTOR = requires_role("inspector")
SETUP = requires_role("setup")
ENGINEER = requires_role("engineer")
ADMIN = requires_role("admin")
ANYONE = requires_role(PUBLIC)
