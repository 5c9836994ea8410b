"""What a new user trips on (issue 22), through ``bdi``: the records table names the recipe."""

from __future__ import annotations

import datetime as dt

from service.settings import Settings
from service.storage import RecordStore, open_storage
from tests.cli.support import bdi, cli_env
from tests.support import make_record

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _records(models_dir) -> RecordStore:
    _, registry = open_storage(Settings.load(cli_env(models_dir)))
    registry.upgrade()
    return RecordStore(registry.engine, models_dir)


def test_the_records_table_shows_the_recipe_and_filters_by_it(models_dir):
    rows = [make_record(NOW, recipe_id="line2-disc", part_id="P-LINE2"),
            make_record(NOW - dt.timedelta(minutes=1), part_id="P-DEFAULT")]
    _records(models_dir).insert(rows)
    table = bdi(models_dir, "inspections", "list")
    assert table.exit_code == 0, table.stderr
    header = next(line for line in table.stdout.splitlines() if "role" in line)
    assert "recipe" in header
    line2 = next(line for line in table.stdout.splitlines() if "P-LINE2" in line)
    assert "line2-disc" in line2
    only = bdi(models_dir, "inspections", "list", "--recipe", "Line2-Disc")
    assert "P-LINE2" in only.stdout and "P-DEFAULT" not in only.stdout


def test_reindex_rebuilds_the_training_size_from_the_versions_files(models_dir):
    from tests.cli.support import PLAIN
    from tests.support import forget_registry

    forget_registry(models_dir)
    assert bdi(models_dir, "models", "reindex").exit_code == 0
    store, registry = open_storage(Settings.load(cli_env(models_dir)))
    try:
        active = registry.state(*PLAIN).active
        assert (active.train_width, active.train_height) == (60, 50)  # uploads(): 60x50 images
    finally:
        registry.dispose()


def test_an_imported_version_keeps_its_training_size(models_dir, tmp_path):
    from tests.cli.support import PLAIN

    bundle = tmp_path / "plain.bdimodel"
    assert bdi(models_dir, "models", "export", *PLAIN, "-o", str(bundle)).exit_code == 0
    assert bdi(models_dir, "models", "import", str(bundle), "--as", "Copy/roi-2").exit_code == 0
    store, registry = open_storage(Settings.load(cli_env(models_dir)))
    try:
        active = registry.state("Copy", "roi-2").active
        assert (active.source, active.train_width, active.train_height) == ("imported", 60, 50)
    finally:
        registry.dispose()
