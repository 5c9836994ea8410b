"""Alembic revisions of the registry, applied to a registry that already holds rows."""

from __future__ import annotations

import datetime as dt

from alembic import command
from alembic.config import Config
from sqlalchemy import column, insert, inspect, table, text

from service.storage import RecordStore, Registry
from service.storage.records import FIELDS, RecordFilter
from service.storage.registry.database import migrations_dir
from tests.support import both_registries, make_record

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)

APPEND_COLUMNS = {"parent_version", "ancestors", "covering_radius"}


@both_registries
def test_0003_adds_the_append_columns_and_keeps_the_rows(tmp_path, database_url):
    registry = Registry(database_url or f"sqlite:///{tmp_path / 'registry.sqlite3'}", tmp_path / ".registry.lock")
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["engine"] = registry.engine
    command.upgrade(config, "0001")
    with registry.engine.begin() as connection:  # a model fitted before this revision
        connection.execute(text(
            "INSERT INTO models (id, role_id, roi_id, folder, active_version, created_at, updated_at) "
            "VALUES (1, 'R', 'r', 'R/r', 1, 't', 't')"))
        connection.execute(text(
            "INSERT INTO memory_versions (model_id, version, n_embeddings, coreset_size, token_h, token_w, embed_dim, "
            "memory_path, memory_sha256, memory_bytes, source, created_at) "
            "VALUES (1, 1, 1024, 21, 32, 32, 1152, 'R/r/versions/000001/memory.npz', 'ab', 10, 'fit', 't')"))

    registry.upgrade()
    columns = {column["name"] for column in inspect(registry.engine).get_columns("memory_versions")}
    assert APPEND_COLUMNS <= columns
    state = registry.state("R", "r")
    assert state is not None and state.active is not None and state.active.coreset_size == 21
    assert (state.active.parent_version, state.active.ancestors, state.active.covering_radius) == (None, (), None)
    assert state.calib_stale is False

    command.downgrade(config, "0001")
    columns = {column["name"] for column in inspect(registry.engine).get_columns("memory_versions")}
    assert not APPEND_COLUMNS & columns
    with registry.engine.connect() as connection:
        assert connection.execute(text("SELECT coreset_size FROM memory_versions")).scalar_one() == 21
    registry.dispose()


@both_registries
def test_0005_holds_memory_files_over_2_gib(tmp_path, database_url):
    """A memory_fit memory of a few hundred images at 448 is over 2 GiB; PostgreSQL's INTEGER refused its size."""
    registry = Registry(database_url or f"sqlite:///{tmp_path / 'registry.sqlite3'}", tmp_path / ".registry.lock")
    registry.upgrade()
    size = 5 * 2**30
    with registry.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO models (id, recipe_id, role_id, roi_id, folder, active_version, created_at, updated_at) "
            "VALUES (1, 'default', 'R', 'r', 'R/r', 1, 't', 't')"))
        connection.execute(text(
            "INSERT INTO memory_versions (model_id, version, n_embeddings, coreset_size, token_h, token_w, embed_dim, "
            "memory_path, memory_sha256, memory_bytes, index_bytes, source, created_at) "
            "VALUES (1, 1, 1048576, 1048576, 32, 32, 1152, 'R/r/versions/000001/memory.npz', 'ab', :size, :size, "
            "'fit', 't')"), {"size": size})
    with registry.engine.connect() as connection:
        row = connection.execute(text("SELECT memory_bytes, index_bytes FROM memory_versions")).one()
    assert tuple(row) == (size, size)
    registry.dispose()


@both_registries
def test_0006_numbers_the_existing_records_in_time_order_and_continues_after_them(tmp_path, database_url):
    registry = Registry(database_url or f"sqlite:///{tmp_path / 'registry.sqlite3'}", tmp_path / ".registry.lock")
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["engine"] = registry.engine
    command.upgrade(config, "0005")
    stamps = [NOW + dt.timedelta(seconds=s) for s in (30, 10, 20)]  # inserted out of time order
    with registry.engine.begin() as connection:
        columns_0005 = FIELDS[:FIELDS.index("seq")]  # the record's columns before 0006 added seq
        connection.execute(insert(table("inspections", *[column(name) for name in columns_0005])), [
            {name: value for name, value in make_record(stamp, id=f"r{n}").row().items() if name in columns_0005}
            for n, stamp in enumerate(stamps)])

    registry.upgrade()
    store = RecordStore(registry.engine, tmp_path)
    seen, after = store.follow(RecordFilter(), 0, 10)
    assert [(record.id, record.seq) for record in seen] == [("r1", 1), ("r2", 2), ("r0", 3)] and after == 3
    store.insert([make_record(NOW, id="new")])
    assert [(record.id, record.seq) for record in store.follow(RecordFilter(), after, 10)[0]] == [("new", 4)]

    command.downgrade(config, "0005")
    assert "seq" not in {column["name"] for column in inspect(registry.engine).get_columns("inspections")}
    assert "inspection_sequence" not in inspect(registry.engine).get_table_names()
    registry.dispose()


@both_registries
def test_the_migrations_build_exactly_the_tables_the_code_declares(tmp_path, database_url):
    """Alembic's comparison of the migrated schema with the ORM finds nothing: a column or index added to
    tables.py without its migration (or the other way round) fails here, on both registries."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from service.storage.registry.tables import Base

    registry = Registry(database_url or f"sqlite:///{tmp_path / 'registry.sqlite3'}", tmp_path / ".registry.lock")
    registry.upgrade()
    with registry.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    registry.dispose()
    assert differences == []
