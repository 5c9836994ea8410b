"""``bdi``: the admin console script. ``bdi serve`` runs the HTTP service."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .errors import ConfigError
from .logs import configure_logging
from .settings import Settings


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="brakedisc-inspection")
def main() -> None:
    """Brake-disc inspection backend (DINOv2 + PatchCore): serve and administer models."""


@main.command()
@click.option("--host", default=None, help="Bind address [BDI_BACKEND_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Bind port [BDI_BACKEND_PORT / PORT, default 8000].")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes (each loads the backbone once).")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Models folder [BDI_MODELS_DIR, default ./models].")
def serve(host: str | None, port: int | None, workers: int, models_dir: Path | None) -> None:
    """Start the HTTP service (uvicorn)."""
    import uvicorn

    from .app import create_app
    from .registry import Registry

    if models_dir is not None:
        os.environ["BDI_MODELS_DIR"] = str(models_dir)  # worker processes read the same settings
    try:
        settings = Settings.load(host=host, port=port)
    except ConfigError as exc:
        _fail(str(exc))
    configure_logging(settings.log_level)
    common = dict(host=settings.host, port=settings.port, log_config=None, access_log=False)
    try:
        if workers == 1:
            app = create_app(settings)
            uvicorn.run(app, **common)
            return
        # Migrate once before forking; each worker then builds its own app from the same environment.
        settings.models_dir.mkdir(parents=True, exist_ok=True)
        Registry(settings.database_url, settings.models_dir / ".registry.lock").upgrade()
        uvicorn.run("service.app:create_app", factory=True, workers=workers, **common)
    except ConfigError as exc:
        _fail(str(exc))


if __name__ == "__main__":
    main()
