"""The registry (SQLAlchemy + Alembic) that indexes the artifact files."""

from .database import CalibrationInfo, ModelState, Registry, VersionInfo

__all__ = ["CalibrationInfo", "ModelState", "Registry", "VersionInfo"]
