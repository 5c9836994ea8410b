"""`bdi models rollback`, `delete` and `reindex` on a full disk: the 507 sentence (what is full, what to free),
never a bare OSError, and the model as it was."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.cli.support import PLAIN, bdi
from tests.storage.test_disk_full import fill, small_disk  # noqa: F401 - small_disk is a fixture

FULL = ("is full", "nothing was changed", "bdi models delete", "BDI_KEEP_VERSIONS")


def _on_a_small_disk(models_dir, small_disk):  # noqa: F811 - the fixture's value
    disk = small_disk("64m")
    moved = shutil.copytree(models_dir, disk / "models")
    return moved


def _verified(models_dir) -> None:
    result = bdi(models_dir, "models", "verify", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["problems"] == []


def test_rollback_delete_and_reindex_on_a_full_disk_say_what_to_free(models_dir, small_disk):  # noqa: F811
    models_dir = _on_a_small_disk(models_dir, small_disk)
    before = json.loads(bdi(models_dir, "models", "list", "--json").stdout)
    filler = fill(models_dir)
    for command in (["models", "rollback", *PLAIN, "1"], ["models", "delete", *PLAIN, "--yes"],
                    ["models", "reindex"]):
        result = bdi(models_dir, *command)
        assert result.exit_code == 1, (command, result.output)
        assert all(part in result.stderr for part in FULL), (command, result.stderr)
        assert "Errno" not in result.stderr and "Unexpected" not in result.stderr
    filler.unlink()
    assert json.loads(bdi(models_dir, "models", "list", "--json").stdout) == before
    _verified(models_dir)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_rollback_with_the_registry_elsewhere_reaches_the_full_disk_and_changes_nothing(
    models_dir, small_disk  # noqa: F811
):
    models_dir = _on_a_small_disk(models_dir, small_disk)
    before = json.loads(bdi(models_dir, "models", "list", "--json").stdout)
    filler = fill(models_dir)
    result = bdi(models_dir, "models", "rollback", *PLAIN, "1")
    assert result.exit_code == 1, result.output
    assert all(part in result.stderr for part in FULL), result.stderr
    assert "Errno" not in result.stderr and "No space left on device" not in result.stderr
    filler.unlink()
    assert json.loads(bdi(models_dir, "models", "list", "--json").stdout) == before
    _verified(models_dir)
