"""The registry (SQLAlchemy + Alembic) that indexes the artifact files."""

from .database import CalibrationInfo, ModelState, Registry, VersionInfo, open_storage

__all__ = ["CalibrationInfo", "ModelState", "Registry", "VersionInfo", "open_storage"]
