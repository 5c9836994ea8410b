"""What every ``bdi`` command shares: exit codes, the one-sentence error, options, opening a models
dir without the backbone, and rich tables / JSON output."""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import json
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from ..errors import BadRequest
from ..settings import Settings
from ..storage import ModelState, ModelStore, RecordStore, Registry, open_storage, parse_moment
from ..storage.audit import AuditEvent
from ..validation import DEFAULT_RECIPE, normalize_recipe

if TYPE_CHECKING:
    from ..core import RequestContext

EXIT_PROBLEMS, EXIT_USAGE = 1, 2
F = TypeVar("F", bound=Callable[..., Any])


def cli_actor() -> str:
    """Who the audit trail names for a change made from the command line: ``cli:<OS user>`` (no role)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a passwd entry
        user = str(os.getuid())
    return f"cli:{user}"


def cli_audit(action: str, **fields: Any) -> AuditEvent:
    """The audit event of a change an admin command makes (they never load the core, which pulls in torch)."""
    return AuditEvent(action, actor=cli_actor(), correlation_id=uuid.uuid4().hex, **fields)


def cli_context(**fields: Any) -> RequestContext:
    """The request context of a command that runs the service's core (fit, calibrate, eval)."""
    from ..core import RequestContext  # the core pulls in torch: only the commands that run the backbone

    return RequestContext(correlation_id=uuid.uuid4().hex, source="cli", actor=cli_actor(), **fields)


class CliError(click.ClickException):
    """One sentence for stderr, with the exit code it means."""

    def __init__(self, message: str, exit_code: int = EXIT_PROBLEMS) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def models_dir_option(command: F) -> F:
    return click.option(
        "--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Models folder [BDI_MODELS_DIR, default ./models].",
    )(command)


def _recipe(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
    """``--recipe`` as stored (the contract's rule); without it: the default namespace."""
    try:
        return normalize_recipe(value)
    except BadRequest as exc:
        raise click.BadParameter(exc.message) from None


def _recipe_filter(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A filtering ``--recipe``: without it, None (every recipe)."""
    return None if value is None else _recipe(ctx, param, value)


def recipe_option(command: F) -> F:
    return click.option(
        "--recipe", "recipe_id", default=None, callback=_recipe, metavar="RECIPE",
        help="The recipe (the newer GUI's namespace of models and samples) [default: the default namespace, "
        "the models old GUIs use].",
    )(command)


def recipe_filter_option(command: F) -> F:
    return click.option("--recipe", "recipe_id", default=None, callback=_recipe_filter, metavar="RECIPE",
                        help="Only this recipe ('default': the default namespace) [default: every recipe].")(command)


def model_label(recipe_id: str, role_id: str, roi_id: str) -> str:
    """How a model is named in tables and messages: ``role / roi``, prefixed by its recipe outside the default."""
    return f"{role_id} / {roi_id}" if recipe_id == DEFAULT_RECIPE else f"{recipe_id}: {role_id} / {roi_id}"


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")(command)


@dataclasses.dataclass(frozen=True)
class OpenedModels:
    """The files and the registry of one models dir, without the backbone."""

    settings: Settings
    store: ModelStore
    registry: Registry

    @property
    def records(self) -> RecordStore:
        return RecordStore(self.registry.engine, self.settings.models_dir)

    def state(self, role_id: str, roi_id: str, recipe_id: str = DEFAULT_RECIPE) -> ModelState:
        state = self.registry.state_or_import(self.store, role_id, roi_id, recipe_id=recipe_id)
        if state is None:
            where = f" of recipe {recipe_id!r}" if recipe_id != DEFAULT_RECIPE else ""
            raise CliError(
                f"There is no model role_id={role_id!r} roi_id={roi_id!r}{where} in {self.settings.models_dir}; "
                "`bdi models list` shows the known ones."
            )
        return state


def open_models(models_dir: Path | None, check_registry: bool = True) -> OpenedModels:
    settings = Settings.load(models_dir=models_dir)
    if not settings.models_dir.is_dir():
        raise CliError(
            f"Models folder {settings.models_dir} does not exist; pass --models-dir or set BDI_MODELS_DIR.", EXIT_USAGE
        )
    store, registry = open_storage(settings)
    click.get_current_context().call_on_close(registry.dispose)
    models = OpenedModels(settings, store, registry)
    if check_registry:
        problem = registry.problem()
        if problem is not None:
            raise CliError(
                f"The registry {registry.display_url} can't be used ({problem}); "
                "`bdi models reindex` rebuilds it from the files."
            )
    return models


class Moment(click.ParamType):
    """A point in time as ``storage.parse_moment`` reads it (the same forms GET /inspections takes)."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            return parse_moment(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def rich_console(stderr: bool = False) -> Console:
    """A console for messages: word-wrapped on a terminal, one line per message anywhere else (a log, a pipe),
    where a guessed width would only break sentences."""
    console = Console(stderr=stderr, highlight=False)
    console.soft_wrap = not console.is_terminal
    return console


def as_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def grid_text(shape: Iterable[int] | None) -> str | None:
    return "×".join(map(str, shape)) if shape is not None else None


def print_table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    """A titled table on stdout; the title is its own line so that a narrow table does not wrap it.

    On a terminal the table fits its width (long cells fold); anywhere else (a pipe, a file, a CI log) it
    is as wide as its content, so every row stays on one line whatever width the console guesses.
    """
    table = Table()
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(as_text(value) for value in row))
    console = rich_console()
    if not console.is_terminal:
        natural = console.measure(table, options=console.options.update_width(1_000_000)).maximum
        console = Console(highlight=False, width=max(natural, 20))
    if title:
        console.print(title, soft_wrap=True)
    console.print(table)


def echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False))


def model_summary(state: ModelState, imported: dict[str, Any] | None = None) -> dict[str, Any]:
    """One model as ``models list --json`` prints it. ``imported``: the active version's import record (its
    version.json's ``imported``), so an imported model shows when its source fitted it and when it came here."""
    active, calibration = state.active, state.calibration
    fitted_at = active.created_at if active is not None else None
    if imported is not None and imported.get("created_at"):
        fitted_at = imported["created_at"]
    return {
        "recipe_id": state.recipe_id,
        "role_id": state.role_id,
        "roi_id": state.roi_id,
        "version": state.active_version if active is not None else None,
        "token_shape": list(active.token_grid) if active is not None else None,
        "n_embeddings": active.n_embeddings if active is not None else None,
        "coreset_size": active.coreset_size if active is not None else None,
        "threshold": calibration.values["threshold"] if calibration is not None else None,
        "calib_source": calibration.source if calibration is not None else None,
        "calib_stale": state.calib_stale,
        "fitted_at": fitted_at,
        "imported_at": active.created_at if active is not None and imported is not None else None,
        "calibrated_at": calibration.created_at if calibration is not None else None,
        "folder": state.folder,
    }
