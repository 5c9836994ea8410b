"""``bdi recipes set-mm-per-px``: reset a named recipe's mm/px lock (the 409 of a mismatch names it)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import BadRequest
from ..storage import set_mm_per_px
from ..validation import normalize_recipe
from .common import cli_audit, models_dir_option, open_models, rich_console


@click.group()
def recipes() -> None:
    """The recipes (the newer GUI's namespaces of models and samples) and their mm/px lock."""


@recipes.command("set-mm-per-px")
@click.argument("recipe")
@click.argument("value", type=float)
@click.option("--force", is_flag=True, help="Change it although models of the recipe were fitted at the old value "
              "(refit them afterwards: their regions' mm² would be off).")
@models_dir_option
def set_mm_per_px_command(recipe: str, value: float, force: bool, models_dir: Path | None) -> None:
    """Lock RECIPE's mm_per_px at VALUE (millimetres per pixel): the value every fit, infer and upload of the recipe
    must then send. Audited as recipe_mm_per_px."""
    try:
        recipe_id = normalize_recipe(recipe)
    except BadRequest as exc:
        raise click.BadParameter(exc.message, param_hint="RECIPE") from None
    opened = open_models(models_dir)
    before = set_mm_per_px(opened.store, opened.registry, recipe_id, value, force,
                           cli_audit("recipe_mm_per_px", details={"force": force}))
    was = "had no lock" if before is None else f"was locked at {before}"
    rich_console().print(f"Recipe '{recipe_id}' is now locked at mm_per_px={value} ({was}).")
