"""Alembic revision 0002 (recipes) on a registry that already holds models, on SQLite and on PostgreSQL (with
BDI_TEST_DATABASE_URL): existing models become the default namespace, (recipe, role, roi) is unique."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.exc import IntegrityError

from service.storage.registry.database import migrations_dir
from service.storage.registry.engine import make_engine
from tests.support import both_registries


def _migrate(engine: sa.Engine, revision: str, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["engine"] = engine
    (command.downgrade if down else command.upgrade)(config, revision)


def _insert_model(connection: sa.Connection, role: str, roi: str, recipe: str | None = None) -> None:
    columns = "role_id, roi_id, folder, active_version, created_at, updated_at" + (", recipe_id" if recipe else "")
    values = ":role, :roi, :folder, 1, 'now', 'now'" + (", :recipe" if recipe else "")
    connection.execute(sa.text(f"INSERT INTO models ({columns}) VALUES ({values})"),
                       {"role": role, "roi": roi, "folder": f"{role}/{roi}", "recipe": recipe})


@both_registries
def test_0002_puts_existing_models_in_the_default_namespace(database_url, tmp_path):
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'registry.sqlite3'}", statement_timeout=None)
    try:
        _migrate(engine, "0001")
        with engine.begin() as connection:
            _insert_model(connection, "Master1", "inspection-1")
            model_id = connection.execute(sa.text("SELECT id FROM models")).scalar_one()
            connection.execute(sa.text(
                "INSERT INTO calibrations (uid, model_id, threshold, source, created_at) "
                "VALUES ('u1', :id, 0.5, 'api', 'now')"), {"id": model_id})
            connection.execute(sa.text(
                "INSERT INTO memory_versions (model_id, version, n_embeddings, coreset_size, token_h, token_w, embed_dim, "
                "memory_path, memory_sha256, memory_bytes, source, created_at) "
                "VALUES (:id, 1, 256, 6, 16, 16, 1152, 'm', 'sha', 1, 'fit', 'now')"), {"id": model_id})
        _migrate(engine, "0002")
        with engine.begin() as connection:
            rows = connection.execute(sa.text("SELECT recipe_id, role_id, roi_id FROM models")).all()
            assert [tuple(row) for row in rows] == [("default", "Master1", "inspection-1")]
            # the models table was rebuilt (SQLite batch mode): the rows that refer to it are all still there
            assert connection.execute(sa.text("SELECT count(*) FROM calibrations")).scalar_one() == 1
            assert connection.execute(sa.text("SELECT count(*) FROM memory_versions")).scalar_one() == 1
            if engine.dialect.name == "sqlite":
                assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
            _insert_model(connection, "Master1", "inspection-1", recipe="line2")  # another recipe: allowed
            connection.execute(sa.text(
                "INSERT INTO recipes (recipe_id, mm_per_px, created_at) VALUES ('line2', 0.2, 'now')"))
        with pytest.raises(IntegrityError), engine.begin() as connection:
            _insert_model(connection, "Master1", "inspection-1", recipe="line2")  # the same (recipe, role, roi)
        with engine.begin() as connection:
            recipes = connection.execute(sa.text("SELECT recipe_id FROM models ORDER BY recipe_id")).scalars().all()
            assert recipes == ["default", "line2"]
        _migrate(engine, "0001", down=True)  # back to one namespace: the named recipe's row goes, the rest stays
        with engine.begin() as connection:
            assert [tuple(row) for row in connection.execute(sa.text("SELECT role_id, roi_id FROM models")).all()] == [
                ("Master1", "inspection-1")]
            assert connection.execute(sa.text("SELECT count(*) FROM calibrations")).scalar_one() == 1
            assert "recipes" not in sa.inspect(connection).get_table_names()
    finally:
        engine.dispose()
