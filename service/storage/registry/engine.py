"""Engines of the registry database and what its failures mean.

SQLite (the embedded default): WAL, busy timeout, foreign keys, ``BEGIN IMMEDIATE`` for writers,
file locks. PostgreSQL (several hosts): a bounded connect timeout and statement timeout and TCP
keepalives, so that a request during an outage fails fast instead of hanging; ``pool_pre_ping``, so
that the pool replaces the connections a restart killed and the service recovers by itself; and
advisory locks, which hold across hosts where a lock file on a network file system would not.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ...errors import InsufficientStorage, RegistryUnavailable
from ..locks import FileLocks, Locks

logger = logging.getLogger(__name__)

DISK_FULL_SQLSTATE = "53100"
FULL_DISK_BYTES = 1 << 20  # SQLite I/O errors with less free than this are a full disk


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, connect_timeout: int = 5, statement_timeout: float | None = 15.0) -> Engine:
    """An engine with the settings the registry relies on; ``statement_timeout`` None: unbounded
    (migrations and lock waits may take long)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(url, pool_pre_ping=True, connect_args=_postgresql_args(connect_timeout, statement_timeout))
        server = f"the database server {parsed.host or 'localhost'}:{parsed.port or 5432}"

        @event.listens_for(engine, "handle_error")
        def _on_server_error(context: Any) -> None:
            # 53100 disk_full: the server could not extend a file; a 507 as SQLite's full disk, not a 503.
            if getattr(getattr(context.original_exception, "diag", None), "sqlstate", None) == DISK_FULL_SQLSTATE:
                raise InsufficientStorage(f"the registry {parsed.database}", Path(server)) from (
                    context.original_exception
                )

        return engine
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    return _sqlite_engine(url, parsed.database or "")


def _postgresql_args(connect_timeout: int, statement_timeout: float | None) -> dict[str, Any]:
    connect_args: dict[str, Any] = {
        "connect_timeout": max(2, int(connect_timeout)),  # libpq's minimum
        # A server that vanished without closing the socket is noticed in about 5 + 3 x 2 s.
        "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    }
    if statement_timeout is not None:
        connect_args["options"] = f"-c statement_timeout={max(1, round(statement_timeout * 1000))}"
    return connect_args


def _sqlite_engine(url: str, database: str) -> Engine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook below emit BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "handle_error")
    def _on_error(context: Any) -> None:
        # SQLite reports a write that ran out of disk space as SQLITE_FULL ("database or disk is full").
        # On a full disk it can also be an I/O error (its -wal or -shm file could not grow or be made): that
        # is a full disk too, not a damaged registry to set aside.
        code = getattr(context.original_exception, "sqlite_errorcode", None)
        if code is not None and (code & 0xFF == sqlite3.SQLITE_FULL or (
                code & 0xFF in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN) and _disk_is_full(database))):
            raise InsufficientStorage(f"the registry {database}", Path(database).resolve().parent) from (
                context.original_exception
            )

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred read-then-write transaction can fail at once with SQLITE_BUSY; writers take the
        # write lock up front instead.
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _disk_is_full(database: str) -> bool:
    """Whether the disk of the SQLite file ``database`` has less room than one more page of the WAL needs."""
    try:
        return shutil.disk_usage(Path(database).resolve().parent).free < FULL_DISK_BYTES
    except OSError:
        return False


@contextlib.contextmanager
def unavailable_as_503(engine: Engine) -> Iterator[None]:
    """A database server that can't be reached, went away or did not answer in time is
    ``RegistryUnavailable`` (503, retry). SQLite's operational errors (a locked or damaged file) stay
    what they are, unless the connection itself was lost."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        if engine.dialect.name == "sqlite" and not exc.connection_invalidated:
            raise
        raise RegistryUnavailable(_reason(exc)) from exc
    except PoolTimeout as exc:
        raise RegistryUnavailable("no free connection to it in time") from exc


def _reason(exc: DBAPIError) -> str:
    lines = str(exc.orig or exc).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(exc.orig or exc).__name__


def hold_for_transaction(connection: Connection, key: str) -> None:
    """Make the rest of this write transaction exclusive among those that hold ``key``, on every host: a
    transaction-level advisory lock on PostgreSQL (released at commit or rollback, so it can't outlive the
    transaction); nothing on SQLite, whose writers (``BEGIN IMMEDIATE``) hold the database's write lock already."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_number(key)})


def lock_number(key: str) -> int:
    """A stable signed 64-bit number for an advisory lock (the same on every host and Python)."""
    return int.from_bytes(hashlib.sha256(f"bdi:{key}".encode()).digest()[:8], "big", signed=True)


class AdvisoryLocks(Locks):
    """PostgreSQL session-level advisory locks, each held on a connection of its own (autocommit, no
    statement timeout: waiting for another host's fit is normal). A host that dies loses its
    connection and the server releases its locks.

    So does a session that ends while its host lives (a restart, a failover, a killed backend): another host
    gets the lock at once. ``confirm_held`` (before every registry commit) then finds the lock's connection
    dead and the write is refused and undone instead of committed beside the other host's. The session is
    kept from ending on its own: TCP keepalives (``make_engine``) and no ``idle_session_timeout``."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._connections = threading.local()

    def _acquire_model(self, folder: str) -> contextlib.AbstractContextManager[None]:
        return self._hold(f"model:{folder}")

    def _acquire_named(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self._hold(f"named:{name}")

    def confirm_held(self) -> None:
        for key, connection in list(self._held_connections().items()):
            try:
                connection.execute(text("SELECT 1"))
            except DBAPIError as exc:
                connection.invalidate()  # the server released the lock with the session: nothing to unlock
                raise RegistryUnavailable(
                    f"the connection holding the write lock {key!r} was lost: {_reason(exc)}; another host may be "
                    "writing the same model, so this write was undone and nothing was changed"
                ) from None

    def _held_connections(self) -> dict[str, Connection]:
        held = getattr(self._connections, "by_key", None)
        if held is None:
            held = self._connections.by_key = {}
        return held

    @contextlib.contextmanager
    def _hold(self, key: str) -> Iterator[None]:
        number = lock_number(key)
        with unavailable_as_503(self.engine):
            connection = self.engine.connect()
            try:
                if (connection.dialect.server_version_info or (0,)) >= (14,):
                    connection.execute(text("SET idle_session_timeout = 0"))  # a server default would end it
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": number})
            except BaseException:
                connection.close()
                raise
        self._held_connections()[key] = connection
        try:
            yield
        finally:
            self._held_connections().pop(key, None)
            if not connection.invalidated:  # else found lost by confirm_held, which said so
                try:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": number})
                except DBAPIError as exc:
                    # The connection died after the block's last registry commit (confirm_held let that one
                    # through): the server has already released the lock; what the block did stands.
                    logger.warning("The registry connection holding the lock %r was lost: %s", key, _reason(exc))
                    connection.invalidate()
            connection.close()


def make_locks(unbounded: Engine, models_dir: Path) -> Locks:
    """Advisory locks on PostgreSQL, lock files in the models dir otherwise."""
    if unbounded.dialect.name == "postgresql":
        return AdvisoryLocks(unbounded)
    return FileLocks(models_dir)
