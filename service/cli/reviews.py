"""``bdi inspections review``, ``bdi review queue`` and ``bdi models shadow``: the review loop from the console, on
the registry and the kept files only (never the backbone), through the core's ``Reviews`` as the routes do."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..storage.reviews import VERDICTS
from .common import (
    OpenedModels,
    as_text,
    cli_context,
    echo_json,
    json_option,
    model_label,
    models_dir_option,
    open_models,
    print_table,
    recipe_option,
    rich_console,
)
from .inspections import filter_options, record_filter

if TYPE_CHECKING:
    from ..core.review import Reviews


def _reviews(opened: OpenedModels) -> Reviews:
    """The core's reviews on the opened registry (imported here: the core pulls in torch, which these commands
    never run)."""
    from ..core.records import RecordReader
    from ..core.review import Reviews

    return Reviews(opened.registry, RecordReader(opened.settings, opened.records))


@click.command("review")
@click.argument("inspection_id")
@click.argument("verdict", type=click.Choice(VERDICTS))
@click.option("--note", help="Free text kept with the review.")
@models_dir_option
@json_option
def review_inspection(inspection_id: str, verdict: str, note: str | None, models_dir: Path | None,
                      as_json: bool) -> None:
    """Give the record INSPECTION_ID a person's VERDICT (ok: the part is good, ng: it is defective); a second
    review replaces the first, both stay in the history and the audit trail."""
    result = _reviews(open_models(models_dir)).review(inspection_id, verdict, note, context=cli_context())
    if as_json:
        echo_json(result)
        return
    rich_console().print(f"Inspection {inspection_id}: answered {as_text(result['decision'])}, reviewed "
                         f"{verdict}: {result['outcome']} (reviewer {as_text(result['reviewer'])}).")


@click.group()
def review() -> None:
    """The records most worth a person's verdict."""


@review.command("queue")
@filter_options
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Records shown.")
@models_dir_option
@json_option
def review_queue(limit: int, models_dir: Path | None, as_json: bool, **filters: Any) -> None:
    """Unreviewed records with a kept image, nearest their threshold first (GET /review/queue); review one with
    `bdi inspections review ID ok|ng`."""
    page = _reviews(open_models(models_dir)).queue(record_filter(**filters), limit)
    items = page["items"]
    if as_json:
        echo_json(items)
        return
    if not items:
        rich_console().print("No unreviewed record with a kept image matches.")
        return
    print_table(None, ("time (UTC)", "model", "version", "score", "threshold", "score / threshold", "decision", "part",
                       "id"),
                ((item["created_at"][:19].replace("T", " "), model_label(item["recipe_id"], item["role_id"],
                                                                         item["roi_id"]),
                  item["version"], item["score"], item["threshold"], item["score"] / item["threshold"],
                  item["decision"], item["part_id"], item["id"]) for item in items))


@click.command("shadow")
@click.argument("role_id")
@click.argument("roi_id")
@click.argument("version", type=click.IntRange(min=1), required=False)
@click.option("--stop", is_flag=True, help="Stop shadowing.")
@recipe_option
@models_dir_option
@json_option
def shadow(role_id: str, roi_id: str, version: int | None, stop: bool, recipe_id: str, models_dir: Path | None,
           as_json: bool) -> None:
    """Make the kept VERSION (not the active one) score every /infer of the model beside the active one, stop
    with --stop, or, with neither, show how its decisions compare with the answered ones since it was set."""
    if stop and version is not None:
        raise click.UsageError("Give VERSION or --stop, not both.")
    reviews = _reviews(open_models(models_dir))
    label = model_label(recipe_id, role_id, roi_id)
    if version is not None or stop:
        result = reviews.set_shadow(role_id, roi_id, version, cli_context(), recipe_id=recipe_id)
        if as_json:
            echo_json(result)
        elif result["version"] is None:
            rich_console().print(f"{label} has no shadow version now.")
        else:
            rich_console().print(f"Version {result['version']} of {label} scores its live traffic beside the active "
                                 f"one since {result['since']}; `bdi models shadow {role_id} {roi_id}` compares.")
        return
    summary = reviews.shadow(role_id, roi_id, recipe_id=recipe_id)
    if as_json:
        echo_json(summary)
    elif summary["version"] is None:
        rich_console().print(f"{label} has no shadow version; `bdi models shadow {role_id} {roi_id} VERSION` sets one.")
    else:
        print_table(f"Shadow version {summary['version']} of {label} since {summary['since']}",
                    ("scored", "agree", "ok -> ng", "ng -> ok"),
                    [(summary["n"], summary["agree"], summary["ok_to_ng"], summary["ng_to_ok"])])
