"""What lasts: the model artifacts on disk (the source of truth), the registry that indexes them
(SQLAlchemy + Alembic), the recipes' mm_per_px locks, the dataset store of uploaded samples, the
import of what earlier backends wrote, the inspection records, and model bundles (export/import)."""

from .artifacts import ModelStore
from .bundles import (
    ACTIVATED,
    NEW_VERSION,
    UNCHANGED,
    Bundle,
    BundleError,
    ImportResult,
    IncompatibleBundle,
    export_bundle,
    import_bundle,
    read_bundle,
)
from .datasets import (
    LABELS,
    MEDIA_TYPES,
    DatasetFolder,
    DatasetStore,
    NewSample,
    StoredSample,
    fitted_by_content,
    normalize_label,
    prepare_sample,
    prepare_upload,
    sample_name,
    samples_provenance,
    sidecar_mm_per_px,
    sidecar_shape,
    split_holdout,
    store_samples,
)
from .files import sha256_file, utc_now
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
from .reading import ModelFolder
from .recipes import check_mm_per_px, claim_mm_per_px, set_mm_per_px
from .records import (
    MOMENT_FORMS,
    PUBLIC_FIELDS,
    InspectionRecord,
    PendingRecord,
    RecordFilter,
    RecordStore,
    RecordWriter,
    new_record_id,
    parse_moment,
)
from .registry import CalibrationInfo, ModelState, Registry, VersionInfo, open_storage
from .versions import VersionFiles

__all__ = [
    "ACTIVATED", "ADOPTED", "MOMENT_FORMS", "ALREADY_MIGRATED", "FAILED", "IMPORTED", "LABELS", "MEDIA_TYPES", "NEW_VERSION",
    "PUBLIC_FIELDS", "UNCHANGED", "WOULD", "Bundle", "BundleError", "CalibrationInfo", "DatasetFolder", "DatasetStore",
    "FileLocks", "ImportResult", "IncompatibleBundle", "InspectionRecord", "LegacyError", "Locks", "MigrationAction",
    "ModelFolder", "ModelState", "ModelStore", "NewSample", "PendingRecord", "RecordFilter", "RecordStore",
    "RecordWriter", "Registry", "StoredSample", "VersionFiles", "VersionInfo", "check_mm_per_px", "claim_mm_per_px",
    "export_bundle", "fitted_by_content", "import_bundle", "migrate", "new_record_id", "normalize_label", "open_storage", "parse_moment", "prepare_sample",
    "prepare_upload", "read_bundle", "recorded_files", "remove_files", "sample_name", "samples_provenance", "set_mm_per_px", "sha256_file", "sidecar_mm_per_px",
    "sidecar_shape", "split_holdout", "store_samples", "utc_now",
]
