"""``bdi serve``: the HTTP service under uvicorn, with one or several worker processes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import click

from ..errors import RegistryUnavailable
from ..logs import configure_logging
from ..metrics import MULTIPROC_ENV, prepare_multiprocess_dir
from ..settings import Settings
from ..storage import open_storage
from .common import CliError, models_dir_option


@click.command()
@click.option("--host", default=None, help="Bind address [BDI_BACKEND_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Bind port [BDI_BACKEND_PORT / PORT, default 8000].")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes (each loads the backbone once).")
@models_dir_option
def serve(host: str | None, port: int | None, workers: int, models_dir: Path | None) -> None:
    """Start the HTTP service (uvicorn)."""
    if models_dir is not None:
        os.environ["BDI_MODELS_DIR"] = str(models_dir)  # worker processes read the same settings
    settings = Settings.load(host=host, port=port)
    configure_logging(settings.log_level, settings.log_format)
    # Migrate before loading the backbone (an unreachable database stops here, at once) and before
    # forking workers; each worker then builds its own app from the same environment.
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    _, registry = open_storage(settings)
    try:
        registry.upgrade()
    except RegistryUnavailable as exc:
        raise CliError(
            f"The registry database BDI_DATABASE_URL={registry.display_url} can't be reached ({exc.reason}); "
            "start it, or correct BDI_DATABASE_URL, then start `bdi serve` again."
        ) from None
    finally:
        registry.dispose()

    import uvicorn

    from ..web import create_app

    common = {"host": settings.host, "port": settings.port, "log_config": None, "access_log": False}
    given = os.environ.get(MULTIPROC_ENV)
    if given:  # metrics in multiprocess mode: what an earlier server left there must not be summed in
        prepare_multiprocess_dir(Path(given))
    if workers == 1:
        uvicorn.run(create_app(settings), **common)
        return
    # Workers are fresh processes (spawned): prometheus-client reads this before any of them counts anything.
    folder = given or tempfile.mkdtemp(prefix="bdi-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    try:
        uvicorn.run("service.web:create_app", factory=True, workers=workers, **common)
    finally:
        if not given:
            shutil.rmtree(folder, ignore_errors=True)
