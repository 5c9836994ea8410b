"""Alembic environment. No ``fileConfig`` here: it would silence the service's loggers.

The service passes its own engine (``config.attributes["engine"]``) so that the SQLite pragmas and
BEGIN handling are the registry's; by hand, the URL comes from the service's settings.
"""

from __future__ import annotations

from alembic import context

from service.settings import Settings
from service.storage.registry.engine import make_engine
from service.storage.registry.tables import Base


def run_migrations() -> None:
    engine = context.config.attributes.get("engine")
    if engine is None:
        url = context.config.get_main_option("sqlalchemy.url") or Settings.load().database_url
        engine = make_engine(url, statement_timeout=None)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # A batch migration rebuilds a table (copy, drop, rename); with foreign keys on, dropping the old table
            # would cascade-delete every row that refers to it. The pragma works only outside a transaction.
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if sqlite:
                connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run them against the database.")
run_migrations()
