"""``bdi``: the admin console script. Serve, administer the models on disk, fit and calibrate from
the GUI's dataset folders, write the OpenAPI document.

Exit codes: 0 ok; 1 problems found or the operation failed; 2 usage errors (options, settings, dataset
folders). A failure is one sentence on stderr; ``bdi --debug ...`` shows the traceback and the log.
Commands that only read or administer files open the store and the registry directly and never load
the backbone; only fit and calibrate build the InspectionService (the one code path of the routes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from .artifacts import ModelStore
from .datasets import Dataset, DatasetError, Sample, common_mm_per_px, load_dataset, relative_name, split_holdout
from .errors import ConfigError, ServiceError
from .legacy import FAILED, WOULD, LegacyError, migrate, recorded_files, remove_files
from .logs import configure_logging
from .registry import ModelState, Registry
from .settings import Settings

if TYPE_CHECKING:  # the service pulls in torch; admin commands never import it
    from .inspection import InspectionService, Upload

EXIT_PROBLEMS, EXIT_USAGE = 1, 2
DEFAULT_MM_PER_PX = 0.2
F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """One sentence for stderr, with the exit code it means."""

    def __init__(self, message: str, exit_code: int = EXIT_PROBLEMS) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Main(click.Group):
    """Turns any failure into one sentence and an exit code, unless ``--debug`` asks for the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise _as_cli_error(exc) from None


def _as_cli_error(exc: Exception) -> CliError:
    if isinstance(exc, (ConfigError, DatasetError, LegacyError)):
        return CliError(str(exc), EXIT_USAGE)
    if isinstance(exc, ServiceError):
        return CliError(exc.message)
    if isinstance(exc, SQLAlchemyError):
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return CliError(f"The registry can't be used ({reason}); `bdi models reindex` rebuilds it from the files.")
    if isinstance(exc, OSError) and exc.filename:
        return CliError(f"{exc.strerror or exc}: {exc.filename}.")
    return CliError(f"Unexpected {type(exc).__name__}: {exc}; run `bdi --debug ...` for the traceback.")


def _models_dir_option(command: F) -> F:
    return click.option(
        "--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Models folder [BDI_MODELS_DIR, default ./models].",
    )(command)


def _json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")(command)


@dataclasses.dataclass(frozen=True)
class _Models:
    """The files and the registry of one models dir, without the backbone."""

    settings: Settings
    store: ModelStore
    registry: Registry

    def state(self, role_id: str, roi_id: str) -> ModelState:
        state = self.registry.state_or_import(self.store, role_id, roi_id)
        if state is None:
            raise CliError(
                f"There is no model role_id={role_id!r} roi_id={roi_id!r} in {self.settings.models_dir}; "
                "`bdi models list` shows the known ones."
            )
        return state


def _open_models(models_dir: Path | None, check_registry: bool = True) -> _Models:
    settings = Settings.load(models_dir=models_dir)
    if not settings.models_dir.is_dir():
        raise CliError(
            f"Models folder {settings.models_dir} does not exist; pass --models-dir or set BDI_MODELS_DIR.", EXIT_USAGE
        )
    registry = Registry(settings.database_url, settings.models_dir / ".registry.lock")
    click.get_current_context().call_on_close(registry.dispose)
    models = _Models(settings, ModelStore(settings.models_dir, settings.keep_versions), registry)
    if check_registry:
        problem = registry.problem()
        if problem is not None:
            raise CliError(
                f"The registry {registry.url} can't be used ({problem}); "
                "`bdi models reindex` rebuilds it from the files."
            )
    return models


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def _grid(shape: Iterable[int] | None) -> str | None:
    return "×".join(map(str, shape)) if shape is not None else None


def _print_table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    """A titled table on stdout; the title is its own line so that a narrow table does not wrap it."""
    table = Table()
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_text(value) for value in row))
    console = _console()
    if title:
        console.print(title, soft_wrap=True)
    console.print(table)


def _echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False))


def _summary(state: ModelState) -> dict[str, Any]:
    """One model as ``models list --json`` prints it."""
    active, calibration = state.active, state.calibration
    return {
        "role_id": state.role_id,
        "roi_id": state.roi_id,
        "version": state.active_version if active is not None else None,
        "token_shape": list(active.token_grid) if active is not None else None,
        "n_embeddings": active.n_embeddings if active is not None else None,
        "coreset_size": active.coreset_size if active is not None else None,
        "threshold": calibration.values["threshold"] if calibration is not None else None,
        "calib_source": calibration.source if calibration is not None else None,
        "fitted_at": active.created_at if active is not None else None,
        "calibrated_at": calibration.created_at if calibration is not None else None,
        "folder": state.folder,
    }


# ---- bdi ---------------------------------------------------------------------------------------
@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="brakedisc-inspection")
@click.option("--debug", is_flag=True, help="Show tracebacks and the service's log lines.")
def main(debug: bool) -> None:
    """Brake-disc inspection backend (DINOv2 + PatchCore): serve and administer models.

    Exit codes: 0 ok, 1 problems found, 2 usage errors.
    """
    configure_logging("INFO" if debug else "WARNING")


@main.command()
@click.option("--host", default=None, help="Bind address [BDI_BACKEND_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Bind port [BDI_BACKEND_PORT / PORT, default 8000].")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes (each loads the backbone once).")
@_models_dir_option
def serve(host: str | None, port: int | None, workers: int, models_dir: Path | None) -> None:
    """Start the HTTP service (uvicorn)."""
    import uvicorn

    from .app import create_app

    if models_dir is not None:
        os.environ["BDI_MODELS_DIR"] = str(models_dir)  # worker processes read the same settings
    settings = Settings.load(host=host, port=port)
    configure_logging(settings.log_level)
    common = dict(host=settings.host, port=settings.port, log_config=None, access_log=False)
    if workers == 1:
        uvicorn.run(create_app(settings), **common)
        return
    # Migrate once before forking; each worker then builds its own app from the same environment.
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    Registry(settings.database_url, settings.models_dir / ".registry.lock").upgrade()
    uvicorn.run("service.app:create_app", factory=True, workers=workers, **common)


# ---- bdi models ... ----------------------------------------------------------------------------
@main.group()
def models() -> None:
    """List, inspect, roll back, delete, verify, reindex and migrate the stored models."""


@models.command("list")
@_models_dir_option
@_json_option
def list_models(models_dir: Path | None, as_json: bool) -> None:
    """Every model: active version, token grid, coreset size, threshold, last fit and calibration."""
    opened = _open_models(models_dir)
    rows = [_summary(state) for state in opened.registry.states()]
    if as_json:
        _echo_json(rows)
    elif not rows:
        _console().print(f"No models in {opened.settings.models_dir}.")
    else:
        columns = ("role_id", "roi_id", "version", "token_shape", "coreset_size", "threshold", "fitted_at",
                   "calibrated_at")
        headers = ("role", "roi", "version", "grid", "coreset", "threshold", "fitted", "calibrated")
        _print_table(None, headers, (
            [_grid(row[c]) if c == "token_shape" else row[c] for c in columns] for row in rows
        ))
    known = {(row["role_id"], row["roi_id"]) for row in rows}
    missing = sum((folder.role_id, folder.roi_id) not in known for folder in opened.store.scan())
    if missing:
        _console(stderr=True).print(
            f"note: {missing} model folder(s) on disk are not in the registry; `bdi models reindex` adds them."
        )


@models.command()
@click.argument("role_id")
@click.argument("roi_id")
@_models_dir_option
@_json_option
def show(role_id: str, roi_id: str, models_dir: Path | None, as_json: bool) -> None:
    """One model: its active memory version, calibration and kept versions."""
    opened = _open_models(models_dir)
    state = opened.state(role_id, roi_id)
    versions, _ = opened.registry.history(role_id, roi_id)
    payload = {
        **_summary(state),
        "kept_versions": [v.version for v in versions],
        "active": dataclasses.asdict(state.active) if state.active is not None else None,
        "calibration": dataclasses.asdict(state.calibration) if state.calibration is not None else None,
    }
    if as_json:
        _echo_json(payload)
        return
    keys = ("role_id", "roi_id", "folder", "version", "kept_versions")
    rows: list[tuple[str, Any]] = [(key, payload[key]) for key in keys]
    if state.active is not None:
        active = dataclasses.asdict(state.active)
        active["token_grid"] = _grid(active["token_grid"])
        active["extractor"] = json.dumps(active["extractor"], sort_keys=True) if active["extractor"] else None
        rows += [(f"memory.{key}", value) for key, value in active.items() if key != "version"]
    if state.calibration is not None:
        rows += [(f"calibration.{key}", value) for key, value in state.calibration.values.items()]
        rows += [(f"calibration.{key}", getattr(state.calibration, key))
                 for key in ("memory_version", "source", "correlation_id", "client", "created_at")]
    _print_table(f"{role_id} / {roi_id}", ("field", "value"), rows)


@models.command()
@click.argument("role_id")
@click.argument("roi_id")
@_models_dir_option
@_json_option
def history(role_id: str, roi_id: str, models_dir: Path | None, as_json: bool) -> None:
    """Memory versions and calibrations of one model, newest first."""
    opened = _open_models(models_dir)
    state = opened.state(role_id, roi_id)
    versions, calibrations = opened.registry.history(role_id, roi_id)
    if as_json:
        _echo_json({
            "role_id": role_id, "roi_id": roi_id, "active_version": state.active_version,
            "versions": [dataclasses.asdict(v) for v in versions],
            "calibrations": [dataclasses.asdict(c) for c in calibrations],
        })
        return
    _print_table(
        f"Memory versions of {role_id} / {roi_id}",
        ("version", "active", "created", "source", "patches", "coreset", "grid", "legacy path"),
        ((v.version, "*" if v.version == state.active_version else "", v.created_at, v.source, v.n_embeddings,
          v.coreset_size, _grid(v.token_grid), v.legacy_path) for v in versions),
    )
    _print_table(
        f"Calibrations of {role_id} / {roi_id}",
        ("created", "threshold", "p99_ok", "p5_ng", "percentile", "for version", "source", "correlation id", "client"),
        ((c.created_at, c.values["threshold"], c.values["p99_ok"], c.values["p5_ng"], c.values["score_percentile"],
          c.memory_version, c.source, c.correlation_id, c.client) for c in calibrations),
    )


@models.command()
@click.argument("role_id")
@click.argument("roi_id")
@click.argument("version", type=int)
@_models_dir_option
def rollback(role_id: str, roi_id: str, version: int, models_dir: Path | None) -> None:
    """Make a kept memory VERSION the active one (the calibration stays as it is)."""
    opened = _open_models(models_dir)
    store = opened.store
    state = opened.state(role_id, roi_id)
    folder = store.root / state.folder
    with store.locked(folder):
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
        opened.registry.sync_folder(store, described)
    console = _console()
    console.print(f"Version {version} of {role_id} / {roi_id} is active (was {_text(previous)}).")
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
@_models_dir_option
def delete(role_id: str, roi_id: str, yes: bool, models_dir: Path | None) -> None:
    """Delete a model: its folder (every version, the calibration history), the legacy files it was
    imported from, and its registry rows."""
    opened = _open_models(models_dir)
    store = opened.store
    folder = store.model_dir(role_id, roi_id)
    if folder is None and opened.registry.state(role_id, roi_id) is None:
        raise CliError(f"There is no model role_id={role_id!r} roi_id={roi_id!r} in {opened.settings.models_dir}.")
    legacy = recorded_files(store, folder) if folder is not None else []
    if not yes:
        where = store.relative(folder) if folder is not None else "no folder on disk"
        extra = f" and the legacy files {', '.join(map(store.relative, legacy))}" if legacy else ""
        click.confirm(f"Delete model {role_id} / {roi_id} ({where}){extra}? This can't be undone", abort=True)
    remove_files(store.root, legacy)
    store.delete_model(role_id, roi_id)
    opened.registry.remove_model(role_id, roi_id)
    note = f" and {len(legacy)} legacy file(s)" if legacy else ""
    _console().print(f"Deleted model {role_id} / {roi_id}{note}.")


@models.command()
@_models_dir_option
@_json_option
def verify(models_dir: Path | None, as_json: bool) -> None:
    """Check files against the registry and against each other; exit 1 and list what is wrong."""
    opened = _open_models(models_dir, check_registry=False)
    store, registry = opened.store, opened.registry
    problems: list[tuple[str, str]] = []
    on_disk = {(folder.role_id, folder.roi_id): folder for folder in store.scan()}
    for (role_id, roi_id), folder in on_disk.items():
        problems += [(f"{role_id} / {roi_id}", problem) for problem in store.verify_folder(folder.path)]
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
        _echo_json({"ok": not problems, "models": len(on_disk), "versions": n_versions,
                    "problems": [{"model": model, "problem": problem} for model, problem in problems]})
    elif problems:
        _print_table(f"{len(problems)} problem(s) in {store.root}", ("model", "problem"), problems)
    else:
        _console().print(f"OK: {len(on_disk)} model(s), {n_versions} version(s) in {store.root} verified.")
    if problems:
        raise click.exceptions.Exit(EXIT_PROBLEMS)


def _registry_problems(opened: _Models, on_disk: dict[tuple[str, str], Any]) -> list[tuple[str, str]]:
    """Registry rows vs the files: every registered file exists with the sha256 its manifest has,
    every model folder is registered, active versions and thresholds agree."""
    store, registry = opened.store, opened.registry
    problems = []
    states = {(state.role_id, state.roi_id): state for state in registry.states()}
    for key, folder in on_disk.items():
        state = states.get(key)
        if state is None:
            problems.append((" / ".join(key), "the folder is not in the registry; run `bdi models reindex`"))
            continue
        if state.active_version != folder.active_version:
            problems.append((" / ".join(key), (f"the registry says version {state.active_version} is active, "
                                               f"the files say {folder.active_version}; run `bdi models reindex`")))
        calib = store.read_calibration(folder.path)
        registered = state.calibration.values["threshold"] if state.calibration is not None else None
        if (calib or {}).get("threshold") != registered:
            problems.append((" / ".join(key), (f"calib.json's threshold is {_text((calib or {}).get('threshold'))}, "
                                               f"the registry's latest calibration says {_text(registered)}")))
    for key, state in states.items():
        if key not in on_disk:
            problems.append((" / ".join(key), (f"registered, but its folder {state.folder} is gone; "
                                               "run `bdi models reindex`")))
    for row in registry.registered_versions():
        label = f"{row.role_id} / {row.roi_id}"
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
@_models_dir_option
def reindex(models_dir: Path | None) -> None:
    """Rebuild the registry from the files (after it was lost or damaged)."""
    opened = _open_models(models_dir, check_registry=False)
    store, registry = opened.store, opened.registry
    console = _console()
    problem = registry.problem()
    if problem is not None:
        if registry.sqlite_path is None:
            raise CliError(f"The registry {registry.url} can't be used ({problem}); repair or recreate it by hand.")
        aside = registry.set_aside()
        console.print(f"The registry was damaged ({problem}); moved it to {aside}.")
        registry.upgrade()
    dropped = registry.remove_missing(store)
    folders = list(store.scan())
    for folder in folders:
        registry.sync_folder(store, folder)
    versions = sum(len(folder.versions) for folder in folders)
    calibrations = sum(len(folder.calibrations) for folder in folders)
    console.print(
        f"Reindexed {len(folders)} model(s) ({versions} version(s), {calibrations} calibration(s)) from {store.root}"
        + (f"; dropped {len(dropped)} model(s) whose folders are gone: "
           + ", ".join(f"{role} / {roi}" for role, roi in dropped) if dropped else "") + "."
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
@_models_dir_option
def migrate_models(
    dry_run: bool, remove_legacy: bool, mapping: dict[str, tuple[str, str]], models_dir: Path | None
) -> None:
    """Import the models that earlier backends wrote (every legacy layout) into the canonical layout."""
    opened = _open_models(models_dir)
    actions = migrate(opened.store, opened.registry, dry_run=dry_run, remove_legacy=remove_legacy, mapping=mapping)
    console = _console()
    if not actions:
        console.print(f"No legacy models in {opened.store.root}.")
        return
    _print_table(
        f"Legacy models in {opened.store.root}" + (" (dry run: nothing changed)" if dry_run else ""),
        ("legacy", "layout", "role", "roi", "action", "version", "notes"),
        ((a.legacy.name, a.legacy.layout, a.legacy.role_id, a.legacy.roi_id, a.outcome, a.version,
          "; ".join(filter(None, (a.detail, a.legacy.note)))) for a in actions),
    )
    if any(action.outcome == FAILED for action in actions):
        raise click.exceptions.Exit(EXIT_PROBLEMS)


# ---- bdi fit / calibrate -----------------------------------------------------------------------
def _service(models_dir: Path | None) -> InspectionService:
    """The InspectionService of the current settings (loads the backbone), started like the app's."""
    from .inspection import InspectionService

    service = InspectionService(Settings.load(models_dir=models_dir))
    click.get_current_context().call_on_close(service.close)
    service.start()
    return service


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=_console(stderr=True))


def _dataset(dataset_dir: Path, role_id: str, roi_id: str) -> Dataset:
    dataset = load_dataset(dataset_dir, role_id, roi_id)
    for path, reason in dataset.skipped:
        _console(stderr=True).print(f"skipped {path}: {reason}")
    if not dataset.ok:
        raise CliError(f"Dataset {dataset.root} has no OK samples (PNG/JPG/BMP in ok/).", EXIT_USAGE)
    return dataset


def _fitted_state(service: InspectionService, role_id: str, roi_id: str) -> ModelState:
    state = service.model_state(role_id, roi_id)
    if state is None or state.active is None:
        raise CliError(f"There is no memory for role_id={role_id!r} roi_id={roi_id!r}; "
                       f"run `bdi fit {role_id} {roi_id} --dataset DIR` first.")
    return state


def _provenance(service: InspectionService, state: ModelState) -> dict[str, Any]:
    """What the active version recorded about the dataset it was fitted on (empty for HTTP fits)."""
    manifest = service.store.version_files(service.store.root / state.folder, state.active_version).manifest
    return manifest.get("dataset") or {}


def _upload(sample: Sample) -> Upload:
    from .inspection import Upload

    return Upload(sample.path.name, sample.path.read_bytes())


@main.command()
@click.argument("role_id")
@click.argument("roi_id")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), required=True,
              help="Folder with ok/ (and ng/) samples, or with <role>/<roi>/ok/.")
@click.option("--memory-fit", is_flag=True, help="Keep every patch (coreset rate 1.0).")
@click.option("--mm-per-px", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Millimetres per pixel [the sidecars' value, else 0.2].")
@click.option("--holdout", type=click.FloatRange(0, 0.9), default=0.0, show_default=True,
              help="Fraction of the OK samples kept out of the memory (seeded) for `bdi calibrate` to score.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the holdout split.")
@_models_dir_option
def fit(role_id: str, roi_id: str, dataset_dir: Path, memory_fit: bool, mm_per_px: float | None,
        holdout: float, seed: int, models_dir: Path | None) -> None:
    """Fit the memory of ROLE_ID / ROI_ID from the OK samples of a dataset folder.

    With --holdout the held-out samples are recorded with the version, and `bdi calibrate` on the same
    dataset scores those instead of the images the memory was built from.
    """
    from .inspection import RequestContext

    dataset = _dataset(dataset_dir, role_id, roi_id)
    fit_samples, held_out = split_holdout(dataset.ok, holdout, seed)
    mm_per_px = mm_per_px or common_mm_per_px(dataset.ok, DEFAULT_MM_PER_PX)
    service = _service(models_dir)
    with _progress() as progress:
        uploads = [_upload(sample) for sample in progress.track(fit_samples, description="Reading OK samples")]
    provenance = {
        "dataset": str(dataset.root.resolve()),
        "holdout_rate": holdout,
        "seed": seed,
        "fit_files": [relative_name(sample, dataset.root) for sample in fit_samples],
        "holdout_files": [relative_name(sample, dataset.root) for sample in held_out],
    }
    with _console(stderr=True).status(f"Fitting {role_id} / {roi_id} on {len(uploads)} image(s)"):
        result = service.fit(role_id, roi_id, mm_per_px, uploads, memory_fit=memory_fit,
                             context=RequestContext(correlation_id=uuid.uuid4().hex, source="cli"),
                             provenance=provenance)
    state = service.model_state(role_id, roi_id)
    _print_table(
        f"Fitted {role_id} / {roi_id}: version {state.active_version if state else '-'}", ("field", "value"),
        [("images", len(uploads)), ("held out", len(held_out)), ("mm_per_px", mm_per_px), *result.items()],
    )


@main.command()
@click.argument("role_id")
@click.argument("roi_id")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), required=True,
              help="Folder with ok/ and ng/ (or ko/) samples, or with <role>/<roi>/ok/.")
@click.option("--mm-per-px", type=click.FloatRange(min=0, min_open=True), default=None,
              help="mm_per_px stored with the calibration [the sidecars' value, else 0.2].")
@click.option("--area-mm2-thr", type=click.FloatRange(min=0), default=None,
              help="Smallest region area in mm² [BDI_AREA_MM2_THR].")
@click.option("--score-percentile", type=click.IntRange(1, 100), default=None,
              help="Percentile of the OK scores [BDI_SCORE_PERCENTILE].")
@_models_dir_option
def calibrate(role_id: str, roi_id: str, dataset_dir: Path, mm_per_px: float | None, area_mm2_thr: float | None,
              score_percentile: int | None, models_dir: Path | None) -> None:
    """Score every OK and NG sample of a dataset folder, then calibrate the threshold of ROLE_ID / ROI_ID."""
    from .inspection import RequestContext

    dataset = _dataset(dataset_dir, role_id, roi_id)
    service = _service(models_dir)
    ok, ng = _calibration_samples(dataset, _provenance(service, _fitted_state(service, role_id, roi_id)))
    context = RequestContext(correlation_id=uuid.uuid4().hex, source="cli")
    scores: dict[str, list[float]] = {"ok": [], "ng": []}
    with _progress() as progress:
        for sample in progress.track(ok + ng, description="Scoring samples"):
            try:
                result = service.infer(role_id, roi_id, sample.mm_per_px or DEFAULT_MM_PER_PX, _upload(sample),
                                       shape=sample.shape, context=context)
            except ServiceError as exc:
                raise CliError(f"{sample.path}: {exc.message}") from None
            scores[sample.label].append(result["score"])
    values = service.calibrate(
        role_id, roi_id, scores["ok"], scores["ng"] or None,
        mm_per_px=mm_per_px or common_mm_per_px(ok + ng, DEFAULT_MM_PER_PX),
        area_mm2_thr=area_mm2_thr, score_percentile=score_percentile, context=context,
    )
    _print_table(
        f"Calibrated {role_id} / {roi_id} on {len(ok)} OK and {len(ng)} NG sample(s)", ("field", "value"),
        values.items(),
    )


def _calibration_samples(dataset: Dataset, provenance: dict[str, Any]) -> tuple[list[Sample], list[Sample]]:
    """The OK samples the memory has not seen when the fit recorded a holdout of this dataset; else
    every OK sample, with a warning: a memory scores its own images low, so the threshold comes out low."""
    err = _console(stderr=True)
    names = {relative_name(sample, dataset.root): sample for sample in dataset.ok}
    held_out = [names[name] for name in provenance.get("holdout_files") or [] if name in names]
    if held_out:
        err.print(f"Scoring the {len(held_out)} OK sample(s) held out of the fit (of {len(dataset.ok)}) "
                  f"and every NG sample.")
        return held_out, dataset.ng
    seen = len(set(provenance.get("fit_files") or []) & set(names))
    if seen:
        err.print(f"[yellow]Warning:[/] {seen} of the {len(dataset.ok)} OK samples were used to fit this memory; "
                  "their scores are biased low, so the threshold will be too low. "
                  "Fit with --holdout 0.3 and calibrate again.")
    elif not provenance:
        err.print("[yellow]Note:[/] this memory records no holdout; if these OK samples were used to fit it, "
                  "their scores are biased low and so is the threshold (`bdi fit --holdout 0.3` avoids it).")
    return dataset.ok, dataset.ng


# ---- bdi eval ----------------------------------------------------------------------------------
@main.command("eval")
@click.argument("role_id")
@click.argument("roi_id")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), required=True,
              help="Folder with ok/ and ng/ (or ko/) samples, or with <role>/<roi>/ok/.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for summary.json, scores.png, overlays/ and README.md.")
@_models_dir_option
def evaluate_command(role_id: str, roi_id: str, dataset_dir: Path, report_dir: Path, models_dir: Path | None) -> None:
    """Score every sample of a labelled dataset like /infer and write a quality report."""
    from .evaluation import evaluate

    dataset = _dataset(dataset_dir, role_id, roi_id)
    service = _service(models_dir)
    provenance = _provenance(service, _fitted_state(service, role_id, roi_id))
    seen = len(set(provenance.get("fit_files") or []) & {relative_name(s, dataset.root) for s in dataset.ok})
    if seen:
        _console(stderr=True).print(f"[yellow]Note:[/] {seen} OK sample(s) were used to fit this memory; "
                                    "they score lower than new parts would.")
    samples = dataset.ok + dataset.ng
    with _progress() as progress:
        task = progress.add_task("Scoring samples", total=len(samples))
        try:
            summary = evaluate(service, role_id, roi_id, samples, report_dir,
                               progress=lambda done, _total: progress.update(task, completed=done))
        except ServiceError as exc:
            raise CliError(exc.message) from None
    confusion = summary.get("confusion") or {}
    _print_table(
        f"Evaluation of {role_id} / {roi_id}", ("metric", "value"),
        [(key, summary[key]) for key in ("n_ok", "n_ng", "image_auroc", "pixel_auroc", "threshold", "precision",
                                         "recall", "f1")]
        + [(f"confusion {key}", value) for key, value in confusion.items()],
    )
    _console().print(f"Report: {report_dir / 'README.md'}")


# ---- bdi openapi -------------------------------------------------------------------------------
@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File to write [stdout].")
@click.option("--openapi-3.0", "as_30", is_flag=True,
              help="Write an OpenAPI 3.0.3 copy (for C# generators that do not read 3.1).")
@_models_dir_option
def openapi(output: Path | None, as_30: bool, models_dir: Path | None) -> None:
    """Write the service's OpenAPI document (JSON).

    The document does not depend on the weights or the models, so the app is built with the seeded
    random backbone on the CPU over a temporary models dir: writing it needs no model hub and
    touches no models dir. ``--models-dir`` is accepted for symmetry and ignored.
    """
    from .app import create_app
    from .features import FeatureExtractor
    from .inspection import InspectionService

    with tempfile.TemporaryDirectory() as scratch:
        # database_url="" derives the registry from the scratch models dir, whatever BDI_DATABASE_URL says.
        settings = Settings.load(models_dir=Path(scratch), database_url="", log_level="WARNING", precision="fp32")
        extractor = FeatureExtractor(input_size=settings.input_size, weights="random", device="cpu",
                                     precision=settings.precision)
        service = InspectionService(settings, extractor=extractor)
        try:
            document = create_app(settings, service).openapi_schema.to_schema()
        finally:
            service.close()
    if as_30:
        from .openapi import openapi_30

        document = openapi_30(document)
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        _console(stderr=True).print(f"Wrote the OpenAPI document to {output}.")


if __name__ == "__main__":
    main()
