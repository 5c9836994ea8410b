"""``bdi models replay``: what would change if a version of a model were active, scored on the recorded
inspections in this process (the service's replay job, run here) with a progress bar, then a table of the flips."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import click

from ..errors import ServiceError
from .common import CliError, echo_json, json_option, model_label, models_dir_option, print_table, recipe_option
from .fitting import _progress, _service

DEFAULT_LAST = 500  # the service's default (core.replay.DEFAULT_LAST); the CLI does not import the core at load


@click.command("replay")
@click.argument("role_id")
@click.argument("roi_id")
@click.argument("version", type=int)
@click.option("--last", type=click.IntRange(1, 10_000), default=DEFAULT_LAST, show_default=True,
              help="How many of the model's newest records to replay (those whose image was kept); every reviewed "
              "record with a kept image is replayed besides.")
@recipe_option
@models_dir_option
@json_option
def replay(role_id: str, roi_id: str, version: int, last: int, recipe_id: str, models_dir: Path | None,
           as_json: bool) -> None:
    """Score VERSION of (ROLE_ID, ROI_ID) on the recorded inspections and compare with what was answered then;
    nothing changes. The job is recorded like one started over HTTP (GET /jobs/{id} shows it)."""
    from ..core import RequestContext

    service = _service(models_dir)
    context = RequestContext(correlation_id=uuid.uuid4().hex, source="cli")
    with _progress() as bar:
        task = bar.add_task(f"replay v{version} of {model_label(recipe_id, role_id, roi_id)}", total=None)
        try:
            job = service.replay_here(role_id, roi_id, version, last, context, recipe_id=recipe_id,
                                      on_progress=lambda done, total: bar.update(task, completed=done, total=total))
        except ServiceError as exc:
            raise CliError(exc.message) from None
    body = job.as_dict()
    if job.status != "done":
        raise CliError(f"The replay failed: {job.error}")
    if as_json:
        echo_json(body)
        return
    _print_result(body["result"])


def _print_result(result: dict[str, Any]) -> None:
    compared = result["compared_with"]
    flips, reviews = result["flips"], result["reviews"]
    print_table(
        f"Version {result['version']} on {result['n']} recorded inspection(s), against the active version "
        f"{compared['version']} (threshold {compared['threshold']}): {flips['ok_to_ng']} ok -> ng, "
        f"{flips['ng_to_ok']} ng -> ok",
        ["inspection", "old score", "old", "new score", "new", "review"],
        [(item["inspection_id"], item["old_score"], item["old_decision"], item["new_score"], item["new_decision"],
          item["verdict"]) for item in result["items"] if item["old_decision"] != item["new_decision"]],
    )
    print_table("Reviewed records", list(reviews), [list(reviews.values())])
