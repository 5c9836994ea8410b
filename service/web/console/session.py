"""The console's login session: a cookie the service signs (HMAC-SHA256), HttpOnly and SameSite=Strict, holding
the sha256 of the key the person logged in with (never the key), a CSRF token for the console's forms, and when
it was issued. A browser cannot send X-API-Key, so the console's pages are authenticated from this cookie;
``auth.authenticate`` looks the key's hash up among the active keys on every request, so a revoked key ends its
sessions within the key cache's lifetime. The API routes never read the cookie.

The secret: ``BDI_SESSION_SECRET`` when set, else 32 random bytes made once and kept in
``<models_dir>/console-session.secret``; every host of one service shares the models dir, so a session made
through one host is valid on all of them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from litestar.datastructures import Cookie
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ...settings import Settings
from ..auth import SESSION_KEY_SHA256

COOKIE = "bdi_console"
MAX_AGE_S = 12 * 3600
"""A login lasts one working day at most."""
SECRET_FILE = "console-session.secret"
SESSION = "console_session"
"""Key of this request's session (a dict: ``key``, ``csrf``, ``issued``) in the scope state."""
_FRESH = "console_session_fresh"


def session_secret(settings: Settings) -> bytes:
    """``BDI_SESSION_SECRET``, else the models dir's secret file, made on first use (O_EXCL: when two hosts make
    it at once, one wins and both read its bytes)."""
    if settings.session_secret:
        return settings.session_secret.encode("utf-8")
    path = Path(settings.models_dir) / SECRET_FILE
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
    for _ in range(50):  # another host may be between its O_EXCL and its write
        text = path.read_text(encoding="ascii").strip()
        if text:
            return text.encode("ascii")
        time.sleep(0.02)
    raise RuntimeError(f"{path} is empty; delete it (a new secret is made) or set BDI_SESSION_SECRET.")


def _signature(secret: bytes, payload: bytes) -> str:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def encode(session: dict[str, Any], secret: bytes) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(session, separators=(",", ":")).encode("utf-8")).decode("ascii")
    payload = payload.rstrip("=")  # a cookie value without '=' needs no quoting
    return f"{payload}.{_signature(secret, payload.encode('ascii'))}"


def decode(value: str, secret: bytes, now: float | None = None) -> dict[str, Any] | None:
    """The session a cookie holds, None when it is not signed by ``secret``, malformed or older than MAX_AGE_S."""
    payload, _, signature = value.partition(".")
    if not hmac.compare_digest(signature.encode("ascii", "replace"),
                               _signature(secret, payload.encode("ascii", "replace")).encode("ascii")):
        return None
    try:
        session = json.loads(base64.urlsafe_b64decode(payload.encode("ascii") + b"=" * (-len(payload) % 4)))
    except ValueError:
        return None
    if not isinstance(session, dict) or not isinstance(session.get("csrf"), str):
        return None
    issued = session.get("issued")
    if not isinstance(issued, (int, float)) or (now or time.time()) - issued > MAX_AGE_S:
        return None
    return session


def new_session(key_sha256: str | None) -> dict[str, Any]:
    """A session for the key with this hash (None: nobody logged in), with a fresh CSRF token."""
    return {"key": key_sha256, "csrf": secrets.token_urlsafe(24), "issued": int(time.time())}


def cookie(session: dict[str, Any], secret: bytes, secure: bool) -> Cookie:
    return Cookie(key=COOKIE, value=encode(session, secret), path="/console", httponly=True, samesite="strict",
                  secure=secure, max_age=MAX_AGE_S)


def secret_of(scope: Scope) -> bytes:
    """The app's session secret, read once per app."""
    state = scope["app"].state
    if not getattr(state, "console_secret", None):
        state.console_secret = session_secret(state.settings)
    return state.console_secret  # type: ignore[no-any-return]


def _cookie_value(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, text = part.strip().partition("=")
                if key == COOKIE:
                    return text
    return None


class ConsoleSession:
    """Middleware of the console's routes: the signed session of the request into the scope state (and the key
    hash it holds where ``authenticate`` looks for it); a request without a valid one gets a fresh anonymous
    session, set as a cookie on its response unless the route sets its own (login, logout)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secret = secret_of(scope)
        value = _cookie_value(scope)
        session = decode(value, secret) if value else None
        state = scope.setdefault("state", {})
        state[_FRESH] = session is None
        session = session or new_session(None)
        state[SESSION] = session
        if session.get("key"):
            state[SESSION_KEY_SHA256] = session["key"]

        async def send_with_session(message: Message) -> None:
            if message["type"] == "http.response.start" and state.get(_FRESH):
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"set-cookie" and value.startswith(f"{COOKIE}=".encode())
                           for name, value in headers):
                    header = cookie(state[SESSION], secret, scope.get("scheme") == "https").to_header(header="")
                    headers.append((b"set-cookie", header.encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_session)
