"""The ``bdi`` console script: one module per command group (serve, models, datasets, fit/calibrate/eval, openapi)."""

from .main import main

__all__ = ["main"]
