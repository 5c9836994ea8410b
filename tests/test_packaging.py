"""A wheel holds what the source tree holds: every package folder under ``service/`` (and the migrations) is
named in pyproject.toml's explicit package list, and the console's templates and assets are package data.
An editable install finds a forgotten package anyway, so only this test notices before a plant's install does."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib comes with Python 3.11")
ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def test_every_package_folder_is_listed():
    folders = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "service").rglob("__init__.py")
    }
    folders |= {"service.migrations", "service.migrations.versions"}
    listed = set(_setuptools()["packages"])
    assert folders - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - folders == set(), "these listed packages have no folder any more"


def test_the_console_assets_are_package_data():
    patterns = _setuptools()["package-data"]["service.web.console"]
    console = ROOT / "service" / "web" / "console"
    assets = [path for path in console.rglob("*") if path.is_file() and path.suffix not in (".py", ".pyc")
              and "__pycache__" not in path.parts]
    assert assets, "the console has templates and static assets"
    for asset in assets:
        relative = asset.relative_to(console)
        assert any(relative.match(pattern) for pattern in patterns), f"{relative} is not package data"
