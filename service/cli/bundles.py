"""``bdi models export`` and ``bdi models import``: move a model between hosts as one bundle file
(``service.storage.bundles``). Export reads files only; import loads the backbone's weights once, to check
the bundle's extractor fingerprint against this host's settings (the model itself is not built)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from ..errors import BadRequest
from ..storage import ACTIVATED, UNCHANGED, Bundle, ImportResult, export_bundle, import_bundle, read_bundle
from ..validation import validate_id
from .common import (
    EXIT_USAGE,
    CliError,
    as_text,
    cli_audit,
    echo_json,
    json_option,
    model_label,
    models_dir_option,
    open_models,
    recipe_filter_option,
    recipe_option,
    rich_console,
)


@click.command("export")
@click.argument("role_id")
@click.argument("roi_id")
@recipe_option
@click.option("--output", "-o", "output", required=True, metavar="FILE.bdimodel",
              type=click.Path(dir_okay=False, path_type=Path),
              help="The bundle to write (replaced when it exists, only once the new one is complete).")
@models_dir_option
def export_model(role_id: str, roi_id: str, recipe_id: str, output: Path, models_dir: Path | None) -> None:
    """Write the active version of a model, its calibration and calibration history to one bundle file."""
    if not output.parent.is_dir():
        raise CliError(f"The folder of {output} does not exist; create it or pass another --output.", EXIT_USAGE)
    opened = open_models(models_dir)
    state = opened.state(role_id, roi_id, recipe_id)
    manifest = export_bundle(opened.store, opened.store.root / state.folder, output)
    calibration = manifest["calibration"]
    calibrated = f"threshold {as_text(calibration['threshold'])}" if calibration is not None else "not calibrated"
    rich_console().print(
        f"Exported version {manifest['version']} of {model_label(recipe_id, role_id, roi_id)} ({calibrated}) to "
        f"{output} ({output.stat().st_size} bytes)."
    )


def _parse_target(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    role_id, _, roi_id = value.partition("/")
    if not role_id or not roi_id:
        raise click.BadParameter(f"{value!r} is not ROLE/ROI (e.g. Master1/inspection-2); the role can't contain '/'.")
    try:
        return validate_id("role_id", role_id), validate_id("roi_id", roi_id)
    except BadRequest as exc:
        raise click.BadParameter(exc.message) from None


@click.command("import")
@click.argument("bundle_path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--as", "target", metavar="ROLE/ROI", callback=_parse_target,
              help="Import into this model instead of the bundle's own ids.")
@recipe_filter_option
@click.option("--activate/--no-activate", default=True, show_default=True,
              help="Make the imported version active, with its calibration; --no-activate only keeps it.")
@click.option("--force", is_flag=True,
              help="Import even when this host's input size or backbone weights differ from the bundle's.")
@models_dir_option
@json_option
def import_model(
    bundle_path: Path, target: tuple[str, str] | None, recipe_id: str | None, activate: bool, force: bool,
    models_dir: Path | None, as_json: bool,
) -> None:
    """Add a bundle's memory as a new version of a model (its own ids, or --as / --recipe), after checking every
    file and that this host's input size and backbone weights are the ones it was built with."""
    from ..pipeline import offline_extractor_fingerprint  # the weights only (never the backbone, never the network)

    bundle = read_bundle(bundle_path)  # a foreign or damaged file is refused before anything is opened
    opened = open_models(models_dir)
    settings = opened.settings
    running = offline_extractor_fingerprint(settings.input_size, settings.weights, settings.precision)
    if running["weights_sha256"] is None:
        rich_console(stderr=True).print("warning: BDI_WEIGHTS=hub and the weights are not in the local cache: the "
                                        "import can't check the bundle's backbone weights (see the note below).")
    role_id, roi_id = target or (None, None)
    result = import_bundle(opened.store, opened.registry, bundle, running, role_id=role_id, roi_id=roi_id,
                           recipe_id=recipe_id, activate=activate, force=force, audit=cli_audit("import"))
    if as_json:
        echo_json(dataclasses.asdict(result))
        return
    console = rich_console()
    console.print(_sentence(bundle, result))
    for note in result.notes:
        console.print(f"note: {note}")


def _sentence(bundle: Bundle, result: ImportResult) -> str:
    manifest = bundle.manifest
    label = model_label(result.recipe_id, result.role_id, result.roi_id)
    state = "active" if result.active else "not active"
    if result.outcome == UNCHANGED:
        return (f"{bundle.path.name} was imported before as version {result.version} of {label} ({state}); nothing "
                "changed.")
    source = model_label(manifest.recipe_id, manifest.role_id, manifest.roi_id)
    origin = f"version {manifest.version} of {source} on {manifest.source_host}, exported {manifest.created_at}"
    calibrations = f", with {result.calibrations} calibration(s)" if result.calibrations else ""
    if result.outcome == ACTIVATED:
        return (f"Activated version {result.version} of {label}, imported earlier from {bundle.path.name} "
                f"({origin}){calibrations}.")
    return f"Imported {bundle.path.name} ({origin}) as version {result.version} of {label}, {state}{calibrations}."
