"""API keys in the registry: a name, a role, and only the sha256 of the token (tokens are long random strings
from ``secrets``, so a hash is enough and a stolen registry gives no key away).

Every host reads the active keys again at most ``KEY_CACHE_TTL_S`` after its last read, so a key added or revoked
on one host is honoured by all within that time without a query per request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time

from sqlalchemy import Engine, insert, select, update

from ..errors import BadRequest, NotFound, ServiceError
from .files import utc_now
from .registry.audit import AuditEvent, write_audit
from .registry.engine import unavailable_as_503
from .registry.tables import ApiKey

logger = logging.getLogger(__name__)

ROLES = ("inspector", "setup", "engineer", "admin")
"""Each role may do what the ones before it may."""

KEY_CACHE_TTL_S = 2.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
_TABLE = ApiKey.__table__


def role_rank(role: str) -> int:
    return ROLES.index(role)


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who a request's key says the caller is."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        return role_rank(self.role) >= role_rank(role)


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """One key as ``bdi keys list`` shows it (never the token)."""

    name: str
    role: str
    created_at: str
    created_by: str | None
    revoked_at: str | None


class KeyStore:
    """The api_keys table: add, list, revoke (each with its audit row in the same transaction) and the cached
    look-up of a token."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(sqlite_immediate=True)
        self._lock = threading.Lock()
        self._active: dict[str, Identity] = {}
        self._read_at: float | None = None

    def add(self, name: str, role: str, audit: AuditEvent) -> str:
        """A new key; the token is returned once and never stored."""
        if not _NAME.fullmatch(name):
            raise BadRequest(f"key name {name[:80]!r} is not usable; use 1 to 64 letters, digits or . _ : @ - "
                             "(starting with a letter or digit), e.g. cell-3-gui.")
        if role not in ROLES:
            raise BadRequest(f"role {role!r} is not one of {', '.join(ROLES)}.")
        token = secrets.token_urlsafe(32)
        with unavailable_as_503(self.engine), self._writer.begin() as connection:
            if connection.execute(select(_TABLE.c.id).where(_TABLE.c.name == name)).first() is not None:
                raise ServiceError(f"a key named {name!r} exists already (revoked keys keep their name so the audit "
                                   "trail stays unambiguous); choose another name.", 409)
            connection.execute(insert(_TABLE).values(
                name=name, role=role, key_sha256=hash_key(token), created_at=utc_now(), created_by=audit.actor,
            ))
            write_audit(connection, audit.about(details={**(audit.details or {}), "key": name, "key_role": role}))
        self._read_at = None
        return token

    def revoke(self, name: str, audit: AuditEvent) -> None:
        with unavailable_as_503(self.engine), self._writer.begin() as connection:
            row = connection.execute(select(_TABLE.c.role, _TABLE.c.revoked_at).where(_TABLE.c.name == name)).first()
            if row is None:
                raise NotFound(f"no key is named {name!r}; `bdi keys list` names them.")
            if row.revoked_at is not None:
                raise ServiceError(f"the key {name!r} was revoked already at {row.revoked_at}.", 409)
            connection.execute(update(_TABLE).where(_TABLE.c.name == name).values(revoked_at=utc_now()))
            write_audit(connection, audit.about(details={**(audit.details or {}), "key": name, "key_role": row.role}))
        self._read_at = None

    def list(self) -> list[KeyInfo]:
        with unavailable_as_503(self.engine), self.engine.connect() as connection:
            rows = connection.execute(select(_TABLE).order_by(_TABLE.c.name)).all()
        return [KeyInfo(row.name, row.role, row.created_at, row.created_by, row.revoked_at) for row in rows]

    def active(self) -> dict[str, Identity]:
        """The active keys by hash, read again when the last read is older than ``KEY_CACHE_TTL_S``. When the
        registry can't be read, the last keys read stay in force (a registry outage locks no one out and opens
        nothing); with none read yet, the outage is the caller's 503."""
        with self._lock:
            now = time.monotonic()
            if self._read_at is None or now - self._read_at >= KEY_CACHE_TTL_S:
                try:
                    self._active = self._read()
                except ServiceError:
                    if self._read_at is None:
                        raise
                    logger.warning("API keys could not be re-read from the registry; the %d read before stay "
                                   "in force", len(self._active))
                self._read_at = now
            return self._active

    def identify(self, token: str) -> Identity | None:
        """The active key matching ``token`` (None: unknown or revoked), compared in constant time."""
        given = hash_key(token).encode("ascii")
        found = None
        for digest, identity in self.active().items():
            if hmac.compare_digest(given, digest.encode("ascii")):
                found = identity
        return found

    def _read(self) -> dict[str, Identity]:
        with unavailable_as_503(self.engine), self.engine.connect() as connection:
            rows = connection.execute(
                select(_TABLE.c.key_sha256, _TABLE.c.name, _TABLE.c.role).where(_TABLE.c.revoked_at.is_(None))
            ).all()
        return {row.key_sha256: Identity(row.name, row.role) for row in rows}
