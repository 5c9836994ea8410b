"""Brake-disc inspection backend: DINOv2 ViT-S/14 patch features + PatchCore, served over HTTP."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("brakedisc-inspection")
except PackageNotFoundError:  # running from a checkout that was not installed
    __version__ = "0.0.0+unknown"
