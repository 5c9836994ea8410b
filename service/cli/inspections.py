"""``bdi inspections list|export|show`` (the records of every answered /infer) and ``bdi models drift``.
They read the registry and the kept files only; they never load the backbone."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..storage import PUBLIC_FIELDS, RecordFilter
from ..storage.reviews import OUTCOMES
from .common import (
    EXIT_PROBLEMS,
    CliError,
    Moment,
    echo_json,
    json_option,
    model_label,
    models_dir_option,
    open_models,
    print_table,
    recipe_filter_option,
    recipe_option,
    rich_console,
)

F = TypeVar("F", bound=Callable[..., Any])
PROGRESS_STEP = 1000


def filter_options(command: F) -> F:
    """The filters of GET /inspections, as options."""
    for option in reversed([
        click.option("--role", "role_id", help="Only this role."),
        click.option("--roi", "roi_id", help="Only this ROI."),
        recipe_filter_option,
        click.option("--decision", type=click.Choice(["ok", "ng", "none"]), help="Only this decision (none: "
                     "uncalibrated)."),
        click.option("--since", type=Moment(), help="From this time: ISO 8601 (UTC unless an offset is given) or an "
                     "age (7d, 12h), as GET /inspections takes."),
        click.option("--until", type=Moment(), help="Before this time (same forms)."),
        click.option("--part", "part_id", help="Only this part id."),
    ]):
        command = option(command)
    return command


def review_options(command: F) -> F:
    """The review filters of GET /inspections, as options."""
    command = click.option("--outcome", type=click.Choice(OUTCOMES),
                           help="Only the records whose current review has this outcome.")(command)
    return click.option("--review", type=click.Choice(["pending", "reviewed"]),
                        help="Only the records not reviewed yet (pending), or only the reviewed ones.")(command)


def record_filter(**options: Any) -> RecordFilter:
    """The records the filter options select (options a command does not take select any)."""
    return RecordFilter(**{key: options.get(key) for key in ("role_id", "roi_id", "recipe_id", "decision", "since",
                                                             "until", "part_id", "review", "outcome")})


@click.group()
def inspections() -> None:
    """The record of every answered /infer: list, export, show."""


@inspections.command("list")
@filter_options
@review_options
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True, help="Newest records shown.")
@click.option("--after-seq", type=click.IntRange(0), default=None,
              help="Follow instead: the records written after this sequence number (0: from the first), oldest write "
              "first, and the --after-seq to run with next (on stderr; with --json, {items, next_after_seq}). Misses "
              "no record written late, which --since can.")
@models_dir_option
@json_option
def list_inspections(limit: int, after_seq: int | None, models_dir: Path | None, as_json: bool,
                     **filters: Any) -> None:
    """The newest records of every recipe, or of --recipe (filters as GET /inspections); or, with --after-seq,
    those written since the last run."""
    opened = open_models(models_dir)
    if after_seq is None:
        items, _ = opened.records.page(record_filter(**filters), limit)
    else:
        items, next_after_seq = opened.records.follow(record_filter(**filters), after_seq, limit)
        click.echo(f"Next: bdi inspections list --after-seq {next_after_seq}", err=True)
    if as_json:
        items_json = [item.as_dict() for item in items]
        echo_json(items_json if after_seq is None else {"items": items_json, "next_after_seq": next_after_seq})
        return
    if not items:
        rich_console().print("No inspection records match.")
        return
    columns = ("time (UTC)", "recipe", "role", "roi", "version", "score", "threshold", "decision", "regions", "review",
               "part", "id")
    print_table(None, columns,
                ((item.created_at.strftime("%Y-%m-%d %H:%M:%S"), item.recipe_id, item.role_id, item.roi_id,
                  item.version, item.score,
                  item.threshold, item.decision, item.n_regions, item.review_outcome, item.part_id, item.id)
                 for item in items))


@inspections.command()
@filter_options
@review_options
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File to write.")
@models_dir_option
def export(fmt: str, output: Path, models_dir: Path | None, **filters: Any) -> None:
    """Write every matching record, newest first, as CSV or JSON lines. Streams: memory stays bounded
    whatever the number of rows; the file appears complete or not at all."""
    opened = open_models(models_dir)
    where = record_filter(**filters)
    total = opened.records.count(where)
    tmp = output.with_name(f".tmp-{uuid.uuid4().hex}-{output.name}")
    written = 0
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), console=rich_console(stderr=True),
        ) as progress:
            task = progress.add_task(f"Exporting to {output.name}", total=total)
            writer = csv.DictWriter(handle, PUBLIC_FIELDS) if fmt == "csv" else None
            if writer is not None:
                writer.writeheader()
            for record in opened.records.iterate(where):
                row = record.as_dict()
                if writer is not None:  # the nested fields (shape, regions, review) as JSON text in their cell
                    writer.writerow({key: json.dumps(value) if isinstance(value, (dict, list)) else value
                                     for key, value in row.items()})
                else:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                written += 1
                if written % PROGRESS_STEP == 0:
                    progress.update(task, completed=written)
            progress.update(task, completed=written, total=max(total, written))
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    rich_console(stderr=True).print(f"Wrote {written} record(s) to {output}.")


@inspections.command()
@click.argument("inspection_id")
@models_dir_option
@json_option
def show(inspection_id: str, models_dir: Path | None, as_json: bool) -> None:
    """One record, with where its kept image and heatmap are."""
    opened = open_models(models_dir)
    record = opened.records.get(inspection_id)
    if record is None:
        raise CliError(f"There is no inspection record {inspection_id!r}; `bdi inspections list` shows the newest.")
    root = opened.settings.models_dir
    payload = {**record.as_dict(),
               "image_file": str(root / record.image_path) if record.image_path else None,
               "heatmap_file": str(root / record.heatmap_path) if record.heatmap_path else None}
    if as_json:
        echo_json(payload)
    else:
        print_table(f"Inspection {record.id}", ("field", "value"), payload.items())


@click.command()
@click.argument("role_id")
@click.argument("roi_id")
@click.option("--since", type=Moment(), default="7d", show_default=True,
              help="Window start: ISO 8601 or an age (7d, 12h).")
@click.option("--until", type=Moment(), default=None, help="Window end [now].")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write the score-over-time plot (PNG).")
@click.option("--min-inspections", type=click.IntRange(1), default=None,
              help="Fewer inspections (of every decision) give 'too few inspections' [BDI_DRIFT_MIN_INSPECTIONS, 30].")
@click.option("--max-shift", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Largest move of the median of all scores, as a fraction of the gap between the calibration's OK "
                   "median and the threshold [BDI_DRIFT_MAX_SHIFT, 0.25].")
@click.option("--max-near-increase", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Largest growth of the share of scores within 10%% below the threshold "
                   "[BDI_DRIFT_MAX_NEAR_INCREASE, 0.10].")
@recipe_option
@models_dir_option
@json_option
def drift(role_id: str, roi_id: str, since: dt.datetime, until: dt.datetime | None, plot: Path | None,
          min_inspections: int | None, max_shift: float | None, max_near_increase: float | None, recipe_id: str,
          models_dir: Path | None, as_json: bool) -> None:
    """Do recent scores of ROLE_ID / ROI_ID still look like its calibration? Verdict: stable, drifting
    (exit 1: refit or recalibrate) or too few inspections."""
    from ..quality import DriftLimits, analyse_drift, plot_drift

    opened = open_models(models_dir)
    settings = opened.settings
    state = opened.state(role_id, roi_id, recipe_id)
    if state.active is None or state.calibration is None:
        raise CliError(f"{model_label(recipe_id, role_id, roi_id)} is not " + ("fitted" if state.active is None else
                       "calibrated") + "; drift compares recent scores with the active calibration.")
    limits = DriftLimits(
        min_inspections=min_inspections or settings.drift_min_inspections,
        max_shift=max_shift or settings.drift_max_shift,
        max_near_increase=max_near_increase or settings.drift_max_near_increase,
    )
    report, series = analyse_drift(opened.store, opened.records, state, since,
                                   until or dt.datetime.now(dt.timezone.utc), limits)
    if plot is not None:
        plot_drift(series, report, plot)
    if as_json:
        echo_json(report)
    else:
        calibration, recent = report["calibration"], report["recent"]
        rows: list[tuple[str, Any, Any]] = [("threshold", report["threshold"], report["threshold"])]
        rows += [(f"OK {key}", recent[key], calibration.get(key)) for key in ("median", "p95", "p99")]
        if not calibration["ok_scores_stored"]:  # only the summary numbers were stored: show what there is
            rows += [(f"OK {key} (stored)", None, value) for key, value in calibration.items()
                     if key == "mean" or key.startswith("p") and key[1:].isdigit()]
        rows += [("median of all scores", recent["median_all"], calibration.get("median", calibration.get("mean"))),
                 ("share within 10% below threshold", recent["near_threshold_share"],
                  calibration["near_threshold_share"]),
                 ("inspections, all (OK-decided)", f"{recent['n']} ({recent['n_ok']})", calibration["n"]),
                 ("NG / uncalibrated", f"{recent['n_ng']} / {recent['n_uncalibrated']}", None)]
        print_table(f"Drift of {role_id} / {roi_id} in recipe '{recipe_id}', version {report['version']}, "
                    f"{report['since']} .. {report['until']}", ("", "recent", "calibration"), rows)
        if report["ng_rate_per_day"]:
            print_table("NG rate per day", ("day", "inspections", "NG", "rate"),
                        ((day["day"], day["n"], day["ng"], f"{day['rate']:.1%}") for day in report["ng_rate_per_day"]))
        console = rich_console()
        for line in report["notes"]:
            console.print(f"[yellow]Note:[/] {line}")
        console.print(f"Verdict: [bold]{report['verdict']}[/]")
        for line in report["reasons"]:
            console.print(f"  {line}")
        if plot is not None:
            console.print(f"Plot: {plot}")
    if report["verdict"] == "drifting":
        raise click.exceptions.Exit(EXIT_PROBLEMS)
