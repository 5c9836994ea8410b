"""``bdi openapi``: write the service's OpenAPI document (3.1, or a 3.0.3 copy for C# generators)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from ..settings import Settings
from .common import models_dir_option, rich_console


@click.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File to write [stdout].")
@click.option("--openapi-3.0", "as_30", is_flag=True,
              help="Write an OpenAPI 3.0.3 copy (for C# generators that do not read 3.1).")
@models_dir_option
def openapi(output: Path | None, as_30: bool, models_dir: Path | None) -> None:
    """Write the service's OpenAPI document (JSON).

    The document does not depend on the weights or the models, so the app is built with the seeded
    random backbone on the CPU over a temporary models dir: writing it needs no model hub and
    touches no models dir. ``--models-dir`` is accepted for symmetry and ignored.
    """
    from ..core import InspectionService
    from ..pipeline import FeatureExtractor
    from ..web import create_app

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
        from ..web.openapi import openapi_30

        document = openapi_30(document)
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        rich_console(stderr=True).print(f"Wrote the OpenAPI document to {output}.")
