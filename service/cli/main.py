"""``bdi``: the admin console script. Serve, administer the models on disk and the stored samples, fit and
calibrate from the GUI's dataset folders (or the stored samples), read the inspection records and their drift,
write the OpenAPI document.

Exit codes: 0 ok; 1 problems found or the operation failed; 2 usage errors (options, settings, dataset
folders). A failure is one sentence on stderr; ``bdi --debug ...`` shows the traceback and the log.
Commands that only read or administer files open the store and the registry directly and never load
the backbone; only fit, calibrate and eval build the InspectionService (the one code path of the routes).
"""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from ..errors import ConfigError, RegistryUnavailable, ServiceError
from ..logs import configure_logging
from ..quality import DatasetError
from ..storage import BundleError, IncompatibleBundle, LegacyError
from .audit import audit
from .common import EXIT_USAGE, CliError
from .datasets import datasets
from .fitting import calibrate, evaluate_command, fit
from .inspections import drift, inspections
from .keys import keys
from .models import models
from .openapi import openapi
from .recipes import recipes
from .reviews import review, review_inspection, shadow
from .serve import serve


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
            raise as_cli_error(exc) from None


def as_cli_error(exc: Exception) -> CliError:
    if isinstance(exc, IncompatibleBundle):  # a sound bundle that this host's settings can't serve
        return CliError(str(exc))
    if isinstance(exc, (ConfigError, DatasetError, LegacyError, BundleError)):
        return CliError(str(exc), EXIT_USAGE)
    if isinstance(exc, RegistryUnavailable):
        return CliError(
            f"The registry database is unavailable ({exc.reason}); check that it runs and that BDI_DATABASE_URL "
            "names it, then run the command again."
        )
    if isinstance(exc, ServiceError):
        return CliError(exc.message)
    if isinstance(exc, SQLAlchemyError):
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return CliError(f"The registry can't be used ({reason}); `bdi models reindex` rebuilds it from the files.")
    if isinstance(exc, OSError) and exc.filename:
        return CliError(f"{exc.strerror or exc}: {exc.filename}.")
    return CliError(f"Unexpected {type(exc).__name__}: {exc}; run `bdi --debug ...` for the traceback.")


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="brakedisc-inspection")
@click.option("--debug", is_flag=True, help="Show tracebacks and the service's log lines.")
def main(debug: bool) -> None:
    """Brake-disc inspection backend (DINOv2 + PatchCore): serve and administer models.

    Exit codes: 0 ok, 1 problems found, 2 usage errors.
    """
    configure_logging("INFO" if debug else "WARNING")


models.add_command(drift)
models.add_command(shadow)
inspections.add_command(review_inspection)
for command in (serve, models, datasets, inspections, review, fit, calibrate, evaluate_command, openapi, keys, audit,
                recipes):
    main.add_command(command)
