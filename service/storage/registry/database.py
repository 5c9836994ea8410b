"""The registry: answers /state, the token-grid check before decoding, the cache's "is my copy
current?" question and the CLI's listings. Rows are (re)built from the files by ``sync_folder``,
so a lost registry is rebuilt with ``reindex`` and nothing is ever only here."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import delete, event, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ...settings import Settings
from ...validation import DEFAULT_RECIPE
from ..artifacts import ModelStore
from ..files import utc_now
from ..keys import KeyStore
from ..locks import MIGRATIONS
from ..reading import ModelFolder
from ..versions import ACTIVE, RETIRED, STAGED, VersionFiles
from .audit import AuditEvent, AuditLog, write_audit
from .engine import is_sqlite, make_engine, make_locks, unavailable_as_503
from .recipe_rows import RecipeRows
from .shadow_rows import ShadowRows
from .tables import Calibration, InspectionRow, MemoryVersion, Model

logger = logging.getLogger(__name__)

CALIBRATION_KEYS = ("threshold", "ok_mean", "ng_mean", "p99_ok", "p5_ng", "mm_per_px", "area_mm2_thr", "score_percentile")


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    version: int
    token_grid: tuple[int, int]
    n_embeddings: int
    coreset_size: int
    coreset_rate_requested: float | None
    coreset_rate_applied: float | None
    embed_dim: int
    extractor: dict[str, Any] | None
    memory_sha256: str
    index_sha256: str | None
    source: str
    legacy_path: str | None
    created_at: str
    parent_version: int | None = None
    ancestors: tuple[int, ...] = ()
    covering_radius: float | None = None
    status: str = RETIRED  # active | staged | retired
    train_width: int | None = None  # the size of the images it was fitted on (None: fitted before 0008)
    train_height: int | None = None


@dataclasses.dataclass(frozen=True)
class CalibrationInfo:
    values: dict[str, Any]  # the calib.json keys, contract order
    memory_version: int | None
    source: str
    correlation_id: str | None
    client: str | None
    created_at: str | None
    uid: str | None = None  # the history entry's id: inspection records name the calibration that judged


@dataclasses.dataclass(frozen=True)
class ShadowInfo:
    """The version scoring a model's live traffic beside the active one (POST /models/shadow): since when, and
    the calibration made for it (the newest whose ``memory_version`` is the shadow's; None: the active one's
    threshold judges its scores)."""

    version: int
    since: str
    calibration: CalibrationInfo | None


@dataclasses.dataclass(frozen=True)
class ModelState:
    """A detached snapshot of one model's registry rows."""

    model_id: int
    role_id: str
    roi_id: str
    folder: str
    active_version: int | None
    active: VersionInfo | None
    calibration: CalibrationInfo | None
    recipe_id: str = DEFAULT_RECIPE
    shadow: ShadowInfo | None = None

    @property
    def calib_stale(self) -> bool:
        """The active calibration was made for a version the active memory grew from by appends: it still
        applies (same scale), but it has not seen the images appended since."""
        return (
            self.active is not None and self.calibration is not None
            and self.calibration.memory_version in self.active.ancestors
        )


@dataclasses.dataclass(frozen=True)
class RegisteredVersion:
    """Where the registry says one version's files are, and their sha256 (for ``bdi models verify``)."""

    role_id: str
    roi_id: str
    folder: str
    version: int
    memory_path: str
    memory_sha256: str
    index_path: str | None
    index_sha256: str | None
    recipe_id: str = DEFAULT_RECIPE


def migrations_dir() -> Path:
    """The Alembic scripts: top-level ``migrations/`` in a checkout, ``service/migrations`` when installed."""
    checkout = Path(__file__).resolve().parents[3] / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    spec = importlib.util.find_spec("service.migrations")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The Alembic migrations of the registry are not installed with the package.")
    return Path(next(iter(spec.submodule_search_locations)))


def open_storage(settings: Settings) -> tuple[ModelStore, Registry]:
    """The files and the registry of the settings' models dir, the store holding the registry's locks."""
    registry = Registry(
        settings.database_url, settings.models_dir, settings.database_connect_timeout,
        settings.database_statement_timeout,
    )
    return ModelStore(settings.models_dir, settings.keep_versions, registry.locks), registry


class Registry(RecipeRows, ShadowRows):
    """The registry database. ``locks`` are the ones fit for it (``engine.make_locks``); a connection
    failure or timeout of a database server is ``RegistryUnavailable`` (503) wherever it happens."""

    def __init__(
        self, url: str, models_dir: Path, connect_timeout: int = 5, statement_timeout: float = 15.0
    ) -> None:
        self.url = url
        self.engine = make_engine(url, connect_timeout, statement_timeout)
        self._writer = self.engine.execution_options(sqlite_immediate=True)
        # Migrations and lock waits may take long: on a server they get connections without the timeout.
        self._unbounded = self.engine if is_sqlite(url) else make_engine(url, connect_timeout, None)
        self.locks = make_locks(self._unbounded, Path(models_dir))
        self.audit_log = AuditLog(self.engine)
        self.keys = KeyStore(self.engine)

    @property
    def display_url(self) -> str:
        """The URL without its password, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    def upgrade(self) -> None:
        """Apply the migrations once; the migrations lock serialises several workers or hosts starting together."""
        config = Config()
        config.set_main_option("script_location", str(migrations_dir()))
        config.attributes["engine"] = self._unbounded
        with self.locks.named(MIGRATIONS), unavailable_as_503(self._unbounded):
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()
        self._unbounded.dispose()

    def problem(self) -> str | None:
        """Why the registry can't be used (not a database, failed integrity check), or None when it can.

        Migrates first, so a missing file is simply created.
        """
        try:
            self.upgrade()
            with unavailable_as_503(self.engine), self.engine.connect() as connection:
                if self.engine.dialect.name == "sqlite":
                    rows = [row[0] for row in connection.exec_driver_sql("PRAGMA quick_check")]
                    if rows != ["ok"]:
                        return "integrity check failed: " + "; ".join(map(str, rows[:3]))
                connection.execute(text("SELECT 1 FROM models LIMIT 1"))
        except SQLAlchemyError as exc:
            return str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return None

    @property
    def sqlite_path(self) -> Path | None:
        """The database file when the registry is a SQLite file, else None."""
        database = self.engine.url.database
        if self.engine.dialect.name != "sqlite" or not database or database == ":memory:":
            return None
        return Path(database)

    def set_aside(self) -> Path:
        """Move a damaged SQLite file (with its -wal/-shm) to ``<name>.damaged-<UTC time>``: kept for
        inspection, out of the way of a fresh registry rebuilt from the files."""
        path = self.sqlite_path
        if path is None:
            raise RuntimeError(f"The registry {self.url} is not a SQLite file; repair or recreate it by hand.")
        self.engine.dispose()
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = path.with_name(f"{path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{path}{suffix}")
            if source.exists():
                os.replace(source, f"{target}{suffix}")
        return target

    @contextlib.contextmanager
    def _read(self) -> Iterator[Session]:
        with unavailable_as_503(self.engine), Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        with unavailable_as_503(self.engine), Session(self._writer, expire_on_commit=False) as session:
            event.listen(session, "before_commit", lambda _session: self.locks.confirm_held())
            yield session

    # ---- reads ----------------------------------------------------------------------------------
    @staticmethod
    def _find(session: Session, recipe_id: str, role_id: str, roi_id: str) -> Model | None:
        """The one model of (recipe, role, roi): never another recipe's."""
        return session.scalar(
            select(Model).where(Model.recipe_id == recipe_id, Model.role_id == role_id, Model.roi_id == roi_id)
        )

    def state(self, role_id: str, roi_id: str, *, recipe_id: str = DEFAULT_RECIPE) -> ModelState | None:
        with self._read() as session, session.begin():
            model = self._find(session, recipe_id, role_id, roi_id)
            return self._snapshot(session, model) if model is not None else None

    def states(self, recipe_id: str | None = None) -> Iterator[ModelState]:
        """Every model (of one recipe when given), the default namespace first, then by recipe, role, roi."""
        query = select(Model).order_by(Model.recipe_id != DEFAULT_RECIPE, Model.recipe_id, Model.role_id, Model.roi_id)
        if recipe_id is not None:
            query = query.where(Model.recipe_id == recipe_id)
        with self._read() as session, session.begin():
            for model in session.scalars(query).all():
                yield self._snapshot(session, model)

    def _snapshot(self, session: Session, model: Model) -> ModelState:
        active = None
        if model.active_version is not None:
            row = session.scalar(
                select(MemoryVersion).where(
                    MemoryVersion.model_id == model.id, MemoryVersion.version == model.active_version
                )
            )
            active = _version_info(row) if row is not None else None
        calibration = session.scalar(
            select(Calibration).where(Calibration.model_id == model.id).order_by(Calibration.id.desc()).limit(1)
        )
        return ModelState(
            model.id, model.role_id, model.roi_id, model.folder, model.active_version, active,
            _calibration_info(calibration) if calibration is not None else None, model.recipe_id,
            self._shadow(session, model),
        )

    @staticmethod
    def _shadow(session: Session, model: Model) -> ShadowInfo | None:
        if model.shadow_version is None or model.shadow_since is None:
            return None
        own = session.scalar(
            select(Calibration).where(Calibration.model_id == model.id,
                                      Calibration.memory_version == model.shadow_version)
            .order_by(Calibration.id.desc()).limit(1)
        )
        return ShadowInfo(model.shadow_version, model.shadow_since, _calibration_info(own) if own is not None else None)

    def history(
        self, role_id: str, roi_id: str, *, recipe_id: str = DEFAULT_RECIPE
    ) -> tuple[list[VersionInfo], list[CalibrationInfo]]:
        """Memory versions and calibrations, newest first."""
        with self._read() as session, session.begin():
            model = self._find(session, recipe_id, role_id, roi_id)
            if model is None:
                return [], []
            versions = session.scalars(
                select(MemoryVersion).where(MemoryVersion.model_id == model.id).order_by(MemoryVersion.version.desc())
            ).all()
            calibrations = session.scalars(
                select(Calibration).where(Calibration.model_id == model.id).order_by(Calibration.id.desc())
            ).all()
            return [_version_info(v) for v in versions], [_calibration_info(c) for c in calibrations]

    def registered_versions(self) -> list[RegisteredVersion]:
        with self._read() as session, session.begin():
            rows = session.execute(
                select(Model, MemoryVersion).join(MemoryVersion, MemoryVersion.model_id == Model.id)
                .order_by(Model.recipe_id, Model.role_id, Model.roi_id, MemoryVersion.version)
            ).all()
            return [
                RegisteredVersion(
                    model.role_id, model.roi_id, model.folder, row.version, row.memory_path, row.memory_sha256,
                    row.index_path, row.index_sha256, model.recipe_id,
                )
                for model, row in rows
            ]

    def state_or_import(
        self, store: ModelStore, role_id: str, roi_id: str, *, recipe_id: str = DEFAULT_RECIPE
    ) -> ModelState | None:
        """The registry's rows; a folder on disk the registry does not know is imported on first use."""
        state = self.state(role_id, roi_id, recipe_id=recipe_id)
        if state is None:
            folder = store.model_dir(role_id, roi_id, recipe_id=recipe_id)
            if folder is not None and self.resync(store, folder) is not None:
                logger.info("Imported model folder %s into the registry", folder)
                state = self.state(role_id, roi_id, recipe_id=recipe_id)
        return state

    def count_models(self) -> int:
        with self._read() as session, session.begin():
            return int(session.scalar(select(func.count(Model.id))) or 0)

    # ---- writes ---------------------------------------------------------------------------------
    def resync(self, store: ModelStore, path: Path) -> ModelFolder | None:
        """``sync_folder`` of the model folder at ``path`` under the model's lock, so that what it reads
        from the files is still true when the rows are written (another host may be writing the model)."""
        with store.locked(path):
            folder = store.describe(path)
            if folder is not None:
                self.sync_folder(store, folder)
            return folder

    def sync_folder(self, store: ModelStore, folder: ModelFolder, audit: AuditEvent | None = None) -> None:
        """Make the rows of one model say exactly what its files say (import, repair, reindex, rollback);
        ``audit``'s row (active version before and after) commits with them."""
        with self._write() as session, session.begin():
            model = self._model_row(session, folder.recipe_id, folder.role_id, folder.roi_id, store.relative(folder.path))
            if audit is not None:
                write_audit(session, audit.about(
                    recipe_id=folder.recipe_id, role_id=folder.role_id, roi_id=folder.roi_id,
                    version_before=model.active_version, version_after=folder.active_version,
                    threshold_before=self._threshold(session, model), threshold_after=self._threshold(session, model),
                ))
            model.active_version = folder.active_version
            on_disk = {v.version: v for v in folder.versions}
            for row in session.scalars(select(MemoryVersion).where(MemoryVersion.model_id == model.id)).all():
                if row.version not in on_disk:
                    session.delete(row)
                else:
                    on_disk.pop(row.version)
            for files in on_disk.values():
                session.add(_version_row(model.id, store, files))
            session.flush()
            self._set_statuses(session, model, store, folder.path)
            known = set(session.scalars(select(Calibration.uid).where(Calibration.model_id == model.id)).all())
            for entry in folder.calibrations:
                uid = calibration_uid(store.relative(folder.path), entry)
                if uid not in known:
                    session.add(_calibration_row(model.id, uid, entry))
                    known.add(uid)
            model.updated_at = utc_now()

    def add_version(
        self, store: ModelStore, role_id: str, roi_id: str, folder: Path, files: VersionFiles, *,
        recipe_id: str = DEFAULT_RECIPE, audit: AuditEvent | None = None, activate: bool = True,
        learned: Sequence[str] = (), calibration: dict[str, Any] | None = None,
    ) -> None:
        """Register a new version, active (or staged without ``activate``), and any kept version not registered
        yet (``_register_versions``); ``audit``'s row (version before and after filled in) commits with it, as do
        the inspection records ``learned`` into it (their ``learned_version``) and the history ``calibration``
        entry written with it (a learn activated at once)."""
        with self._write() as session, session.begin():
            model = self._model_row(session, recipe_id, role_id, roi_id, store.relative(folder))
            before = model.active_version
            threshold_before = self._threshold(session, model)
            self._register_versions(session, model, store, folder)
            if activate:
                model.active_version = files.version
            model.updated_at = utc_now()
            self._set_statuses(session, model, store, folder)
            if learned:
                session.execute(
                    update(InspectionRow).where(InspectionRow.id.in_(list(learned)))
                    .values(learned_version=files.version)
                )
            if calibration is not None:
                session.add(_calibration_row(model.id, calibration_uid(store.relative(folder), calibration), calibration))
                session.flush()
            if audit is not None:
                write_audit(session, audit.about(
                    recipe_id=recipe_id, role_id=role_id, roi_id=roi_id, version_before=before,
                    version_after=files.version, threshold_before=threshold_before,
                    threshold_after=self._threshold(session, model),
                ))

    def activate_version(
        self, store: ModelStore, role_id: str, roi_id: str, folder: Path, version: int, audit: AuditEvent, *,
        recipe_id: str = DEFAULT_RECIPE, calibration: dict[str, Any] | None = None,
    ) -> None:
        """Register what an activation wrote to the files: ``version`` active, the one before retired, the
        version's own calibration (its history entry) when it brought one, and ``audit``'s row, in one
        transaction."""
        with self._write() as session, session.begin():
            model = self._model_row(session, recipe_id, role_id, roi_id, store.relative(folder))
            before = model.active_version
            threshold_before = self._threshold(session, model)
            self._register_versions(session, model, store, folder)
            model.active_version = version
            model.updated_at = utc_now()
            self._set_statuses(session, model, store, folder)
            if calibration is not None:
                session.add(_calibration_row(model.id, calibration_uid(store.relative(folder), calibration), calibration))
                session.flush()
            write_audit(session, audit.about(
                recipe_id=recipe_id, role_id=role_id, roi_id=roi_id, version_before=before, version_after=version,
                threshold_before=threshold_before, threshold_after=self._threshold(session, model),
            ))

    def add_import(
        self, store: ModelStore, role_id: str, roi_id: str, folder: Path, calibrations: list[dict[str, Any]], *,
        recipe_id: str = DEFAULT_RECIPE, audit: AuditEvent | None = None,
    ) -> None:
        """Register what a bundle import wrote, in one transaction (so a failure leaves none of it): the kept
        versions as ``add_version`` does, the active version the files name (the import's, or the previous
        one with --no-activate) and the history entries it appended, as ``add_calibration`` does."""
        with self._write() as session, session.begin():
            model = self._model_row(session, recipe_id, role_id, roi_id, store.relative(folder))
            before = model.active_version
            threshold_before = self._threshold(session, model)
            self._register_versions(session, model, store, folder)
            model.active_version = store.active_version(folder)
            self._set_statuses(session, model, store, folder)
            for entry in calibrations:
                session.add(_calibration_row(model.id, calibration_uid(store.relative(folder), entry), entry))
            model.updated_at = utc_now()
            if audit is not None:
                session.flush()
                write_audit(session, audit.about(
                    recipe_id=recipe_id, role_id=role_id, roi_id=roi_id, version_before=before,
                    version_after=model.active_version, threshold_before=threshold_before,
                    threshold_after=self._threshold(session, model),
                ))

    @staticmethod
    def _register_versions(session: Session, model: Model, store: ModelStore, folder: Path) -> None:
        """The version rows matched to the kept version folders, so a version whose registration failed
        earlier (the database was down) is registered now."""
        on_disk = {v.version: v for v in store.versions(folder)}
        session.execute(
            delete(MemoryVersion).where(MemoryVersion.model_id == model.id, MemoryVersion.version.not_in(on_disk))
        )
        registered = set(session.scalars(select(MemoryVersion.version).where(MemoryVersion.model_id == model.id)))
        for number in sorted(set(on_disk) - registered):
            session.add(_version_row(model.id, store, on_disk[number]))
        session.flush()

    @staticmethod
    def _set_statuses(session: Session, model: Model, store: ModelStore, folder: Path) -> None:
        """Each version row's status: the model's active version is active, those the files say are staged
        staged, every other retired. A shadow version that became active (activate, rollback) stops shadowing:
        it would only be compared with itself."""
        if model.shadow_version is not None and model.shadow_version == model.active_version:
            model.shadow_version = model.shadow_since = None
        staged = store.staged_versions(folder)
        for row in session.scalars(select(MemoryVersion).where(MemoryVersion.model_id == model.id)).all():
            row.status = ACTIVE if row.version == model.active_version else STAGED if row.version in staged else RETIRED

    def add_calibration(
        self, store: ModelStore, role_id: str, roi_id: str, folder: Path, entry: dict[str, Any], *,
        recipe_id: str = DEFAULT_RECIPE, audit: AuditEvent | None = None,
    ) -> None:
        """Register one calibration; ``audit``'s row (thresholds before and after filled in) commits with it."""
        with self._write() as session, session.begin():
            model = self._model_row(session, recipe_id, role_id, roi_id, store.relative(folder))
            threshold_before = self._threshold(session, model)
            session.add(_calibration_row(model.id, calibration_uid(store.relative(folder), entry), entry))
            model.updated_at = utc_now()
            if audit is not None:
                write_audit(session, audit.about(
                    recipe_id=recipe_id, role_id=role_id, roi_id=roi_id, version_after=entry.get("memory_version"),
                    threshold_before=threshold_before, threshold_after=float(entry["calibration"]["threshold"]),
                ))

    def remove_missing(self, store: ModelStore) -> list[tuple[str, str, str]]:
        """Drop the rows of models whose folder is gone from disk (the files are the truth); (recipe, role, roi)
        of each."""
        removed = []
        with self._write() as session, session.begin():
            for model in session.scalars(select(Model)).all():
                if not (store.root / model.folder / "id.json").is_file():
                    removed.append((model.recipe_id, model.role_id, model.roi_id))
                    session.delete(model)
        return removed

    def remove_model(
        self, role_id: str, roi_id: str, *, recipe_id: str = DEFAULT_RECIPE, audit: AuditEvent | None = None
    ) -> bool:
        """Drop one model's rows (versions and calibrations go with it); False when there were none. ``audit``'s
        row (the last version and threshold) commits with it, even when the registry had no rows."""
        with self._write() as session, session.begin():
            model = self._find(session, recipe_id, role_id, roi_id)
            if audit is not None:
                write_audit(session, audit.about(
                    recipe_id=recipe_id, role_id=role_id, roi_id=roi_id,
                    version_before=model.active_version if model is not None else None,
                    threshold_before=self._threshold(session, model) if model is not None else None,
                ))
            if model is None:
                return False
            session.delete(model)
            return True

    def record(self, event: AuditEvent) -> None:
        """The audit row of a change made in files only (a dataset upload), written once the change is done."""
        with self._write() as session, session.begin():
            write_audit(session, event)

    @staticmethod
    def _threshold(session: Session, model: Model) -> float | None:
        """The threshold of the model's newest calibration (None: uncalibrated)."""
        return session.scalar(
            select(Calibration.threshold).where(Calibration.model_id == model.id)
            .order_by(Calibration.id.desc()).limit(1)
        )

    @classmethod
    def _model_row(cls, session: Session, recipe_id: str, role_id: str, roi_id: str, folder: str) -> Model:
        model = cls._find(session, recipe_id, role_id, roi_id)
        if model is None:
            now = utc_now()
            model = Model(
                recipe_id=recipe_id, role_id=role_id, roi_id=roi_id, folder=folder, created_at=now, updated_at=now
            )
            session.add(model)
            session.flush()
        model.folder = folder
        return model


def calibration_uid(folder: str, entry: dict[str, Any]) -> str:
    """History entries carry their own uid; a legacy calib.json gets a stable one from its content."""
    if entry.get("uid"):
        return str(entry["uid"])
    digest = hashlib.sha256((folder + json.dumps(entry.get("calibration"), sort_keys=True)).encode("utf-8"))
    return digest.hexdigest()[:32]


def _version_row(model_id: int, store: ModelStore, files: VersionFiles) -> MemoryVersion:
    manifest = files.manifest
    index_path = files.index_path
    return MemoryVersion(
        model_id=model_id,
        version=files.version,
        n_embeddings=int(manifest["n_embeddings"]),
        coreset_size=int(manifest["coreset_size"]),
        coreset_rate_requested=manifest.get("coreset_rate_requested"),
        coreset_rate_applied=manifest.get("coreset_rate_applied"),
        token_h=int(manifest["token_h"]),
        token_w=int(manifest["token_w"]),
        embed_dim=int(manifest["embed_dim"]),
        extractor=manifest.get("extractor"),
        memory_path=store.relative(files.memory_path),
        memory_sha256=manifest["memory_sha256"],
        memory_bytes=int(manifest["memory_bytes"]),
        index_path=store.relative(index_path) if index_path is not None else None,
        index_sha256=manifest.get("index_sha256"),
        index_bytes=manifest.get("index_bytes"),
        source=manifest.get("source") or "fit",
        legacy_path=manifest.get("legacy_path"),
        created_at=manifest.get("created_at") or utc_now(),
        parent_version=manifest.get("parent_version"),
        ancestors=manifest.get("ancestors") or [],
        covering_radius=manifest.get("covering_radius"),
        train_width=manifest.get("train_width"),
        train_height=manifest.get("train_height"),
    )


def _calibration_row(model_id: int, uid: str, entry: dict[str, Any]) -> Calibration:
    values = entry["calibration"]

    def number(key: str) -> float | None:
        value = values.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    percentile = values.get("score_percentile")
    return Calibration(
        uid=uid,
        model_id=model_id,
        memory_version=entry.get("memory_version"),
        threshold=float(values["threshold"]),
        ok_mean=number("ok_mean"),
        ng_mean=number("ng_mean"),
        p99_ok=number("p99_ok"),
        p5_ng=number("p5_ng"),
        mm_per_px=number("mm_per_px"),
        area_mm2_thr=number("area_mm2_thr"),
        score_percentile=int(percentile) if isinstance(percentile, (int, float)) else None,
        source=entry.get("source") or "api",
        correlation_id=entry.get("correlation_id"),
        client=entry.get("client"),
        created_at=entry.get("created_at") or values.get("created_at_utc"),
    )


def _version_info(row: MemoryVersion) -> VersionInfo:
    return VersionInfo(
        row.version, (row.token_h, row.token_w), row.n_embeddings, row.coreset_size,
        row.coreset_rate_requested, row.coreset_rate_applied, row.embed_dim, row.extractor,
        row.memory_sha256, row.index_sha256, row.source, row.legacy_path, row.created_at,
        row.parent_version, tuple(row.ancestors or ()), row.covering_radius, row.status, row.train_width,
        row.train_height,
    )


def _calibration_info(row: Calibration) -> CalibrationInfo:
    values = {key: getattr(row, key) for key in CALIBRATION_KEYS}
    return CalibrationInfo(values, row.memory_version, row.source, row.correlation_id, row.client, row.created_at,
                           row.uid)
