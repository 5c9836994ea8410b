"""``bdi models ...``: list, show, history, rollback, delete, verify, reindex, migrate, export and import the
stored models. These commands read the files and the registry only; they never load the backbone (import
loads its weights once, to fingerprint them: ``bundles``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from ..storage import FAILED, WOULD, ModelState, migrate, recorded_files, remove_files
from ..storage.files import reporting_full_disk
from ..validation import DEFAULT_RECIPE
from .bundles import export_model, import_model
from .common import (
    EXIT_PROBLEMS,
    CliError,
    OpenedModels,
    as_text,
    cli_audit,
    echo_json,
    grid_text,
    json_option,
    model_label,
    model_summary,
    models_dir_option,
    open_models,
    print_table,
    recipe_filter_option,
    recipe_option,
    rich_console,
)
from .replay import replay
from .versions import activate, learn, list_versions

WEIGHTS_FINGERPRINT = "weights_sha256"  # the stored key, compared by the service: never renamed on disk
WEIGHTS_DISPLAYED = "weights_tensor_sha256"
WEIGHTS_NOTE = (f"{WEIGHTS_DISPLAYED} hashes the loaded weights' tensors (names, shapes, float32 values), so the "
                "same weights match in any file format; it is not the checkpoint file's sha256sum.")


@click.group()
def models() -> None:
    """List, inspect, roll back, delete, verify, reindex, migrate, export and import the stored models."""


models.add_command(export_model)
models.add_command(import_model)
models.add_command(replay)
models.add_command(list_versions)
models.add_command(activate)
models.add_command(learn)


@models.command("list")
@recipe_filter_option
@models_dir_option
@json_option
def list_models(recipe_id: str | None, models_dir: Path | None, as_json: bool) -> None:
    """Every model (default namespace first, then each recipe's): active version, token grid, coreset size,
    threshold, last fit and calibration."""
    opened = open_models(models_dir)
    rows = [model_summary(state, _import_record(opened, state)) for state in opened.registry.states(recipe_id)]
    if as_json:
        echo_json(rows)
    elif not rows:
        rich_console().print(f"No models in {opened.settings.models_dir}.")
    else:
        columns = ("recipe_id", "role_id", "roi_id", "version", "token_shape", "coreset_size", "threshold",
                   "fitted_at", "imported_at", "calibrated_at", "calib_stale")
        headers = ("recipe", "role", "roi", "version", "grid", "coreset", "threshold", "fitted", "imported",
                   "calibrated", "calib stale")
        print_table(None, headers, (
            [grid_text(row[c]) if c == "token_shape" else row[c] for c in columns] for row in rows
        ))
    known = {(row["recipe_id"], row["role_id"], row["roi_id"]) for row in rows}
    missing = sum((folder.recipe_id, folder.role_id, folder.roi_id) not in known for folder in opened.store.scan()
                  if recipe_id in (None, folder.recipe_id))
    if missing:
        rich_console(stderr=True).print(
            f"note: {missing} model folder(s) on disk are not in the registry; `bdi models reindex` adds them."
        )


def _import_record(opened: OpenedModels, state: ModelState) -> dict[str, Any] | None:
    """The active version's import record (None unless it came from a bundle)."""
    if state.active is None or state.active.source != "imported":
        return None
    manifest = opened.store.version_files(opened.store.root / state.folder, state.active_version).manifest
    return manifest.get("imported") if isinstance(manifest.get("imported"), dict) else None


@models.command()
@click.argument("role_id")
@click.argument("roi_id")
@recipe_option
@models_dir_option
@json_option
def show(role_id: str, roi_id: str, recipe_id: str, models_dir: Path | None, as_json: bool) -> None:
    """One model: its active memory version, calibration and kept versions."""
    opened = open_models(models_dir)
    state = opened.state(role_id, roi_id, recipe_id)
    versions, _ = opened.registry.history(role_id, roi_id, recipe_id=recipe_id)
    payload = {
        **model_summary(state, _import_record(opened, state)),
        "kept_versions": [v.version for v in versions],
        "active": _displayed_version(state.active) if state.active is not None else None,
        "calibration": dataclasses.asdict(state.calibration) if state.calibration is not None else None,
    }
    if as_json:
        echo_json(payload)
        return
    keys = ("recipe_id", "role_id", "roi_id", "folder", "version", "kept_versions", "calib_stale")
    rows: list[tuple[str, Any]] = [(key, payload[key]) for key in keys]
    if state.active is not None:
        active = _displayed_version(state.active)
        active["token_grid"] = grid_text(active["token_grid"])
        extractor = active.pop("extractor") or {}
        rows += [(f"memory.{key}", value) for key, value in active.items() if key != "version"]
        rows += [(f"memory.extractor.{key}", json.dumps(value) if isinstance(value, list) else value)
                 for key, value in sorted(extractor.items())]
    if state.calibration is not None:
        rows += [(f"calibration.{key}", value) for key, value in state.calibration.values.items()]
        rows += [(f"calibration.{key}", getattr(state.calibration, key))
                 for key in ("memory_version", "source", "correlation_id", "client", "created_at")]
    print_table(model_label(recipe_id, role_id, roi_id), ("field", "value"), rows)
    if state.active is not None and (state.active.extractor or {}).get(WEIGHTS_FINGERPRINT):
        rich_console().print(WEIGHTS_NOTE)



def _displayed_version(version: Any) -> dict[str, Any]:
    """A version as the commands show it: the extractor's weight fingerprint under a name that says what it
    hashes (``WEIGHTS_NOTE``), so nobody compares it with a file's ``sha256sum``."""
    shown = dataclasses.asdict(version)
    if shown["extractor"] and WEIGHTS_FINGERPRINT in shown["extractor"]:
        extractor = dict(shown["extractor"])
        extractor[WEIGHTS_DISPLAYED] = extractor.pop(WEIGHTS_FINGERPRINT)
        shown["extractor"] = extractor
    return shown


@models.command()
@click.argument("role_id")
@click.argument("roi_id")
@recipe_option
@models_dir_option
@json_option
def history(role_id: str, roi_id: str, recipe_id: str, models_dir: Path | None, as_json: bool) -> None:
    """Memory versions and calibrations of one model, newest first."""
    opened = open_models(models_dir)
    state = opened.state(role_id, roi_id, recipe_id)
    versions, calibrations = opened.registry.history(role_id, roi_id, recipe_id=recipe_id)
    label = model_label(recipe_id, role_id, roi_id)
    if as_json:
        echo_json({
            "recipe_id": recipe_id, "role_id": role_id, "roi_id": roi_id, "active_version": state.active_version,
            "versions": [_displayed_version(v) for v in versions],
            "calibrations": [dataclasses.asdict(c) for c in calibrations],
        })
        return
    print_table(
        f"Memory versions of {label}",
        ("version", "active", "parent", "created", "source", "patches", "coreset", "radius", "grid", "legacy path"),
        ((v.version, "*" if v.version == state.active_version else "", v.parent_version, v.created_at, v.source,
          v.n_embeddings, v.coreset_size, v.covering_radius, grid_text(v.token_grid), v.legacy_path)
         for v in versions),
    )
    print_table(
        f"Calibrations of {label}",
        ("created", "threshold", "p99_ok", "p5_ng", "percentile", "for version", "source", "correlation id", "client"),
        ((c.created_at, c.values["threshold"], c.values["p99_ok"], c.values["p5_ng"], c.values["score_percentile"],
          c.memory_version, c.source, c.correlation_id, c.client) for c in calibrations),
    )


@models.command()
@click.argument("role_id")
@click.argument("roi_id")
@click.argument("version", type=int)
@recipe_option
@models_dir_option
def rollback(role_id: str, roi_id: str, version: int, recipe_id: str, models_dir: Path | None) -> None:
    """Make a kept memory VERSION the active one (the calibration stays as it is)."""
    opened = open_models(models_dir)
    store = opened.store
    state = opened.state(role_id, roi_id, recipe_id)
    # writing(): a pointer or registry change that fails (a full disk: the 507 sentence) is put back
    with store.writing(role_id, roi_id, recipe_id=recipe_id) as folder, reporting_full_disk("the rollback", folder):
        kept = [files.version for files in store.versions(folder)]
        if version not in kept:
            raise CliError(
                f"Version {version} of role_id={role_id!r} roi_id={roi_id!r} is not kept; "
                f"kept versions: {', '.join(map(str, kept)) or 'none'}."
            )
        previous = store.active_version(folder)
        store.activate(folder, version)
        described = store.describe(folder)
        assert described is not None  # the folder's id.json was just read by state_or_import
        opened.registry.sync_folder(store, described, cli_audit("rollback"))
    console = rich_console()
    console.print(f"Version {version} of {model_label(recipe_id, role_id, roi_id)} is active (was {as_text(previous)}).")
    calibration = state.calibration
    if calibration is not None and calibration.memory_version not in (None, version):
        console.print(
            f"The active calibration was made for version {calibration.memory_version}; "
            f"recalibrate with `bdi calibrate` if the threshold no longer fits."
        )


@models.command()
@click.argument("role_id")
@click.argument("roi_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@recipe_option
@models_dir_option
def delete(role_id: str, roi_id: str, yes: bool, recipe_id: str, models_dir: Path | None) -> None:
    """Delete a model: its folder (every version, the calibration history), the legacy files it was
    imported from, and its registry rows. Its stored samples stay (`bdi datasets`)."""
    opened = open_models(models_dir)
    store = opened.store
    label = model_label(recipe_id, role_id, roi_id)
    folder = store.model_dir(role_id, roi_id, recipe_id=recipe_id)
    if folder is None and opened.registry.state(role_id, roi_id, recipe_id=recipe_id) is None:
        where = f" of recipe {recipe_id!r}" if recipe_id != DEFAULT_RECIPE else ""
        raise CliError(
            f"There is no model role_id={role_id!r} roi_id={roi_id!r}{where} in {opened.settings.models_dir}."
        )
    legacy = recorded_files(store, folder) if folder is not None else []
    if not yes:
        where = store.relative(folder) if folder is not None else "no folder on disk"
        extra = f" and the legacy files {', '.join(map(store.relative, legacy))}" if legacy else ""
        click.confirm(f"Delete model {label} ({where}){extra}? This can't be undone", abort=True)
    remove_files(store.root, legacy)
    store.delete_model(role_id, roi_id, recipe_id=recipe_id)
    opened.registry.remove_model(role_id, roi_id, recipe_id=recipe_id, audit=cli_audit(
        "delete", details={"legacy_files": len(legacy)}))
    note = f" and {len(legacy)} legacy file(s)" if legacy else ""
    rich_console().print(f"Deleted model {label}{note}.")


@models.command()
@models_dir_option
@json_option
def verify(models_dir: Path | None, as_json: bool) -> None:
    """Check files against the registry and against each other; exit 1 and list what is wrong."""
    opened = open_models(models_dir, check_registry=False)
    store, registry = opened.store, opened.registry
    problems: list[tuple[str, str]] = []
    on_disk = {(folder.recipe_id, folder.role_id, folder.roi_id): folder for folder in store.scan()}
    for key, folder in on_disk.items():
        problems += [(model_label(*key), problem) for problem in store.verify_folder(folder.path)]
    registry_problem = registry.problem()
    if registry_problem is not None:
        problems.append(("registry", f"can't be used ({registry_problem}); run `bdi models reindex`"))
    else:
        problems += _registry_problems(opened, on_disk)
    for action in migrate(store, registry, dry_run=True):
        if action.outcome in {*WOULD.values(), FAILED}:
            problem = f"legacy model not migrated ({action.describe()}); run `bdi models migrate`"
            problems.append((action.legacy.name, problem))
    n_versions = sum(len(folder.versions) for folder in on_disk.values())
    if as_json:
        echo_json({"ok": not problems, "models": len(on_disk), "versions": n_versions,
                    "problems": [{"model": model, "problem": problem} for model, problem in problems]})
    elif problems:
        print_table(f"{len(problems)} problem(s) in {store.root}", ("model", "problem"), problems)
    else:
        rich_console().print(f"OK: {len(on_disk)} model(s), {n_versions} version(s) in {store.root} verified.")
    if problems:
        raise click.exceptions.Exit(EXIT_PROBLEMS)


def _registry_problems(
    opened: OpenedModels, on_disk: dict[tuple[str, str, str], Any]
) -> list[tuple[str, str]]:
    """Registry rows vs the files: every registered file exists with the sha256 its manifest has,
    every model folder is registered, active versions and thresholds agree."""
    store, registry = opened.store, opened.registry
    problems = []
    states = {(state.recipe_id, state.role_id, state.roi_id): state for state in registry.states()}
    for key, folder in on_disk.items():
        state = states.get(key)
        if state is None:
            problems.append((model_label(*key), "the folder is not in the registry; run `bdi models reindex`"))
            continue
        if state.active_version != folder.active_version:
            problems.append((model_label(*key), (f"the registry says version {state.active_version} is active, "
                                                 f"the files say {folder.active_version}; run `bdi models reindex`")))
        calib = store.read_calibration(folder.path)
        registered = state.calibration.values["threshold"] if state.calibration is not None else None
        if (calib or {}).get("threshold") != registered:
            problems.append((model_label(*key), (f"calib.json's threshold is {as_text((calib or {}).get('threshold'))}, "
                                                 f"the registry's latest calibration says {as_text(registered)}")))
    for key, state in states.items():
        if key not in on_disk:
            problems.append((model_label(*key), (f"registered, but its folder {state.folder} is gone; "
                                                 "run `bdi models reindex`")))
    for row in registry.registered_versions():
        label = model_label(row.recipe_id, row.role_id, row.roi_id)
        try:
            manifest = store.version_files(store.root / row.folder, row.version).manifest
        except (OSError, ValueError):
            manifest = {}
        for path, sha, key in ((row.memory_path, row.memory_sha256, "memory_sha256"),
                               (row.index_path, row.index_sha256, "index_sha256")):
            if path is None:
                continue
            if not (store.root / path).is_file():
                problems.append((label, f"registered file {path} is missing"))
            elif manifest.get(key) != sha:
                problems.append((label, (f"registered file {path}: the registry's sha256 differs from "
                                         "version.json's; run `bdi models reindex`")))
    return problems


@models.command()
@models_dir_option
def reindex(models_dir: Path | None) -> None:
    """Rebuild the registry from the files (after it was lost or damaged)."""
    opened = open_models(models_dir, check_registry=False)
    store, registry = opened.store, opened.registry
    console = rich_console()
    problem = registry.problem()
    if problem is not None:
        if registry.sqlite_path is None:
            raise CliError(
                f"The registry database {registry.display_url} can't be used ({problem}). A database server's "
                "registry is not set aside automatically: restore it from a backup, or drop and create that database "
                "again (dropdb, createdb), then run `bdi models reindex` to rebuild it from the files."
            )
        aside = registry.set_aside()
        console.print(f"The registry was damaged ({problem}); moved it to {aside}.")
        registry.upgrade()
    dropped = registry.remove_missing(store)
    folders = [folder for folder in (registry.resync(store, found.path) for found in store.scan()) if folder is not None]
    registry.sync_recipes(store)
    versions = sum(len(folder.versions) for folder in folders)
    calibrations = sum(len(folder.calibrations) for folder in folders)
    console.print(
        f"Reindexed {len(folders)} model(s) ({versions} version(s), {calibrations} calibration(s)) from {store.root}"
        + (f"; dropped {len(dropped)} model(s) whose folders are gone: "
           + ", ".join(model_label(*key) for key in dropped) if dropped else "") + "."
    )


def _parse_map(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    mapping = {}
    for value in values:
        old, _, ids = value.partition("=")
        role_id, _, roi_id = ids.partition("/")
        if not old or not role_id or not roi_id:
            raise click.BadParameter(f"{value!r} is not OLD=ROLE/ROI (e.g. Master1_inspection_1=Master1/inspection_1).")
        mapping[old] = (role_id, roi_id)
    return mapping


@models.command("migrate")
@click.option("--dry-run", is_flag=True, help="Only say what would be done.")
@click.option("--remove-legacy", is_flag=True, help="Delete legacy files once everything in them is imported.")
@click.option("--map", "mapping", multiple=True, callback=_parse_map, metavar="OLD=ROLE/ROI",
              help="Ids of the legacy model named OLD (its name in the report); the role can't contain '/'.")
@models_dir_option
def migrate_models(
    dry_run: bool, remove_legacy: bool, mapping: dict[str, tuple[str, str]], models_dir: Path | None
) -> None:
    """Import the models that earlier backends wrote (every legacy layout) into the canonical layout."""
    opened = open_models(models_dir)
    actions = migrate(opened.store, opened.registry, dry_run=dry_run, remove_legacy=remove_legacy, mapping=mapping)
    console = rich_console()
    if not actions:
        console.print(f"No legacy models in {opened.store.root}.")
        return
    print_table(
        f"Legacy models in {opened.store.root}" + (" (dry run: nothing changed)" if dry_run else ""),
        ("legacy", "layout", "recipe", "role", "roi", "action", "version", "notes"),
        ((a.legacy.name, a.legacy.layout, a.legacy.recipe_id, a.legacy.role_id, a.legacy.roi_id, a.outcome, a.version,
          "; ".join(filter(None, (a.detail, a.legacy.note)))) for a in actions),
    )
    if any(action.outcome == FAILED for action in actions):
        raise click.exceptions.Exit(EXIT_PROBLEMS)
