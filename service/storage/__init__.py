"""What lasts: the model artifacts on disk (the source of truth), the registry that indexes them
(SQLAlchemy + Alembic) and the import of what earlier backends wrote."""

from .artifacts import ModelFolder, ModelStore, VersionFiles, utc_now
from .legacy import (
    ADOPTED,
    ALREADY_MIGRATED,
    FAILED,
    IMPORTED,
    WOULD,
    LegacyError,
    MigrationAction,
    migrate,
    recorded_files,
    remove_files,
)
from .locks import FileLocks, Locks
from .registry import CalibrationInfo, ModelState, Registry, VersionInfo, open_storage

__all__ = [
    "ADOPTED", "ALREADY_MIGRATED", "FAILED", "IMPORTED", "WOULD", "CalibrationInfo", "FileLocks", "LegacyError", "Locks",
    "MigrationAction", "ModelFolder", "ModelState", "ModelStore", "Registry", "VersionFiles", "VersionInfo", "migrate",
    "open_storage", "recorded_files", "remove_files", "utc_now",
]
