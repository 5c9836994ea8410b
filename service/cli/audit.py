"""``bdi audit ...``: the trail of every change (who, when, what before and after), as GET /audit reads it."""

from __future__ import annotations

import csv
import json
import os
import uuid
from pathlib import Path
from typing import Any

import click

from ..storage.audit import ACTIONS, AuditFilter, AuditItem
from .common import Moment, echo_json, json_option, models_dir_option, open_models, print_table, recipe_filter_option

FIELDS = [field for field in AuditItem.__dataclass_fields__]


def _filter_options(command: Any) -> Any:
    for option in reversed([
        click.option("--action", type=click.Choice(ACTIONS), help="Only this action."),
        recipe_filter_option,
        click.option("--role", "role_id", help="Only this role."),
        click.option("--roi", "roi_id", help="Only this ROI."),
        click.option("--actor", help="Only the changes of this key name (or cli:<user>)."),
        click.option("--since", type=Moment(), help="From this time: ISO 8601 or an age (7d, 12h)."),
        click.option("--until", type=Moment(), help="Before this time (same forms)."),
    ]):
        command = option(command)
    return command


def _where(**options: Any) -> AuditFilter:
    return AuditFilter(**{key: options[key] for key in ("action", "recipe_id", "role_id", "roi_id", "actor", "since",
                                                        "until")})


@click.group()
def audit() -> None:
    """The audit trail: list, export."""


@audit.command("list")
@_filter_options
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True, help="Newest changes shown.")
@models_dir_option
@json_option
def list_audit(limit: int, models_dir: Path | None, as_json: bool, **filters: Any) -> None:
    """The newest changes (filters as GET /audit)."""
    items, _ = open_models(models_dir).registry.audit_log.page(_where(**filters), limit)
    if as_json:
        echo_json([item.as_dict() for item in items])
        return
    print_table(None, ("time (UTC)", "actor", "role", "action", "recipe", "role_id", "roi", "version", "threshold"),
                ((item.at.strftime("%Y-%m-%d %H:%M:%S"), item.actor, item.role, item.action, item.recipe_id,
                  item.role_id, item.roi_id, _change(item.version_before, item.version_after),
                  _change(item.threshold_before, item.threshold_after)) for item in items))


def _change(before: Any, after: Any) -> str:
    return "" if before is None and after is None else f"{before} -> {after}"


@audit.command()
@_filter_options
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File to write.")
@models_dir_option
def export(fmt: str, output: Path, models_dir: Path | None, **filters: Any) -> None:
    """Write every matching change, newest first, as CSV (details as JSON text) or JSON lines; the file appears
    complete or not at all."""
    log = open_models(models_dir).registry.audit_log
    tmp = output.with_name(f".tmp-{uuid.uuid4().hex}-{output.name}")
    written = 0
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, FIELDS) if fmt == "csv" else None
            if writer is not None:
                writer.writeheader()
            for item in log.iterate(_where(**filters)):
                row = item.as_dict()
                if writer is not None:
                    writer.writerow({**row, "details": json.dumps(row["details"]) if row["details"] else ""})
                else:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                written += 1
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    click.echo(f"Wrote {written} change(s) to {output}.", err=True)
