"""``bdi models versions``, ``bdi models activate`` and ``bdi models learn``: a model's memory versions with their
statuses, activating one (a staged version, or a rollback), and learning a new one from the reviewed false rejects;
the same calls as GET /models/versions, POST /models/activate and POST /models/learn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import ServiceError
from .common import (
    CliError,
    cli_context,
    echo_json,
    json_option,
    model_label,
    models_dir_option,
    print_table,
    recipe_option,
)
from .fitting import _service


def _calling(method: str, *args: Any, **kwargs: Any) -> Any:
    """``method`` of the service (loaded with the backbone); a refusal is the CLI's error, with the same sentence."""
    service = _service(kwargs.pop("models_dir"))
    try:
        return getattr(service, method)(*args, **kwargs)
    except ServiceError as exc:
        raise CliError(exc.message) from None


@click.command("versions")
@click.argument("role_id")
@click.argument("roi_id")
@recipe_option
@models_dir_option
@json_option
def list_versions(role_id: str, roi_id: str, recipe_id: str, models_dir: Path | None, as_json: bool) -> None:
    """The kept memory versions of (ROLE_ID, ROI_ID), newest first: status (active, staged, retired), origin,
    rows, calibration threshold and whether it shadows the active one."""
    body = _calling("versions", role_id, roi_id, recipe_id=recipe_id, models_dir=models_dir)
    if as_json:
        echo_json(body)
        return
    print_table(
        f"Memory versions of {model_label(recipe_id, role_id, roi_id)}",
        ("version", "status", "parent", "origin", "rows", "created", "threshold", "shadow"),
        ((item["version"], item["status"], item["parent_version"], item["origin"], item["rows"], item["created_at"],
          (item["calibration"] or {}).get("threshold"), "yes" if item["shadow"] else "")
         for item in body["items"]),
    )


@click.command("activate")
@click.argument("role_id")
@click.argument("roi_id")
@click.argument("version", type=int)
@recipe_option
@models_dir_option
@json_option
def activate(role_id: str, roi_id: str, version: int, recipe_id: str, models_dir: Path | None, as_json: bool) -> None:
    """Make kept VERSION of (ROLE_ID, ROI_ID) the active one; the version active before is retired (activate it
    again to roll back). A learned version brings its own calibration."""
    state = _calling("activate", role_id, roi_id, version, cli_context(), recipe_id=recipe_id, models_dir=models_dir)
    if as_json:
        echo_json(state)
        return
    print_table(f"{model_label(recipe_id, role_id, roi_id)}: version {state['version']} is active",
                ("field", "value"), list(state.items()))


@click.command("learn")
@click.argument("role_id")
@click.argument("roi_id")
@click.option("--activate", "activate_now", is_flag=True,
              help="Make the learned version active at once, with its proposed calibration [staged].")
@recipe_option
@models_dir_option
@json_option
def learn(role_id: str, roi_id: str, activate_now: bool, recipe_id: str, models_dir: Path | None,
          as_json: bool) -> None:
    """Grow the active memory of (ROLE_ID, ROI_ID) with the kept images of its reviewed false rejects into a new
    version (staged unless --activate) and propose its calibration from every reviewed record."""
    body = _calling("learn", role_id, roi_id, activate_now, cli_context(), recipe_id=recipe_id, models_dir=models_dir)
    if as_json:
        echo_json(body)
        return
    calibration = body.pop("calibration")
    rows: list[tuple[str, Any]] = [(key, value) for key, value in body.items() if key != "records_used"]
    rows.append(("records_used", " ".join(body["records_used"])))
    rows += [(f"calibration.{key}", value) for key, value in (calibration or {}).items()] or [("calibration", None)]
    print_table(f"Learned {model_label(recipe_id, role_id, roi_id)}: version {body['version']} ({body['status']})",
                ("field", "value"), rows)
