"""Model artifacts on disk: the spec's files stay the source of truth.

Layout of one model (role_id, roi_id)::

    <models_dir>/<role folder>/id.json                 {"role_id": ...}
    <models_dir>/<role folder>/<roi folder>/id.json    {"role_id": ..., "roi_id": ...}
        memory.npz, index.faiss   the active version's files (hard links, else copies)
        calib.json                the active calibration
        active.json               {"version": N}: the pointer, replaced atomically
        history.jsonl             append-only calibration log
        versions/000N/            immutable: memory.npz, index.faiss, version.json (sha256, numbers;
                                  an append's names its parent version and the images it added)

Why this shape: a version folder is complete before it is renamed into place and is never changed
afterwards, and the pointer is switched with one ``os.replace``, so a reader that follows the pointer
never sees a mix of two versions, and a process killed mid-fit leaves the previous version active.
The canonical ``memory.npz``/``index.faiss`` are refreshed after the switch for tools that read the
spec's paths; start-up repairs them if a crash came between. Every file needed to rebuild the
registry (versions, pointer, calibration history, real ids) is here.

Folder names: the id itself when it is short and plain (``[A-Za-z0-9_-][A-Za-z0-9._-]*``, no
Windows reserved name, no trailing dot) and no other entry of the parent differs from it only in
case; otherwise ``@`` + sha256 of the id. ``@`` never starts a plain name, so the two kinds can't
collide, and ``id.json`` makes the mapping reversible on any file system.

Recipes (the newer GUI's namespaces): the default namespace is the layout above, exactly as old tools
read it. A named recipe's models live under ``<models_dir>/@recipes/<recipe folder>/`` in the same
layout, every id.json there carrying ``recipe_id`` too, with the recipe's ``recipe.json`` (its locked
mm_per_px). ``@recipes`` (like ``@datasets``, the sample store) can't be a role folder (those are plain
names or ``@`` + 32 hex) nor the old backend's ``recipes/`` folder, which the legacy import reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import InsufficientStorage
from ..pipeline import patchcore
from ..validation import DEFAULT_RECIPE
from .locks import MODEL_LOCK_FILE, FileLocks, Locks

logger = logging.getLogger(__name__)

MEMORY_FILE = "memory.npz"
INDEX_FILE = "index.faiss"
CALIB_FILE = "calib.json"
ACTIVE_FILE = "active.json"
HISTORY_FILE = "history.jsonl"
ID_FILE = "id.json"
MIGRATED_FILE = "migrated.jsonl"
VERSION_FILE = "version.json"
VERSIONS_DIR = "versions"
TMP_PREFIX = ".tmp-"
RECIPES_DIR = "@recipes"
DATASETS_DIR = "@datasets"
RECIPE_FILE = "recipe.json"
RECORDS_DIR = "@records"
"""Kept inspection images (``service.storage.records``), beside the models, never inside a model folder; "@" and
a name that is not hex can't be a model's (hashed) folder, and the tree walks below skip it."""
RESERVED_DIRS = (RECIPES_DIR, DATASETS_DIR, RECORDS_DIR)  # top-level folders of the models dir that hold no role
STALE_TEMP_S = 3600  # a temp entry outside a model folder this old belongs to no write in progress

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_MAX_PLAIN_LEN = 64
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(handle: BinaryIO, data: bytes) -> None:
    """Write, flush and fsync: every byte the store puts in a file goes through here."""
    handle.write(data)
    handle.flush()
    os.fsync(handle.fileno())


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file + fsync + ``os.replace``: readers see the old or the new file, never a half."""
    tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}"
    try:
        with open(tmp, "wb") as handle:
            write_durably(handle, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_json_atomic(path: Path, payload: Any) -> None:
    write_atomic(path, (json.dumps(payload, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _json_line(entry: dict[str, Any]) -> bytes:
    return (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")


def _append_json_line(path: Path, entry: dict[str, Any]) -> None:
    """Append-only logs (calibration history, legacy imports): one fsynced JSON object per line. A failed
    append is cut off again, so the next line does not start on a torn one."""
    with open(path, "ab") as handle:
        size = handle.tell()
        try:
            write_durably(handle, _json_line(entry))
        except BaseException:
            handle.truncate(size)
            raise


@contextlib.contextmanager
def reporting_full_disk(what: str, where: Path, needed: int | None = None) -> Iterator[None]:
    """A write that ran out of space (ENOSPC, EDQUOT) becomes InsufficientStorage, the contract's 507."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in InsufficientStorage.ERRNOS:
            raise
        raise InsufficientStorage(what, where, needed) from exc


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    entries = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line torn by a crash mid-append
                if isinstance(entry, dict):
                    entries.append(entry)
    except FileNotFoundError:
        pass
    return entries


def is_plain_name(name: str) -> bool:
    return (
        len(name) <= _MAX_PLAIN_LEN
        and _PLAIN_NAME.fullmatch(name) is not None
        and not name.endswith(".")
        and name.split(".")[0].upper() not in _WINDOWS_RESERVED
    )


def hashed_name(identifier: str) -> str:
    return "@" + hashlib.sha256(identifier.encode("utf-8")).hexdigest()[:32]


def namespace_ids(recipe_id: str, **ids: str) -> dict[str, str]:
    """What an id.json holds: the ids, plus ``recipe_id`` outside the default namespace (whose id.json files
    stay exactly what old tools read)."""
    return ids if recipe_id == DEFAULT_RECIPE else {"recipe_id": recipe_id, **ids}


def id_children(parent: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(folder, its id.json) of every sub-folder of ``parent`` that has a readable id.json object."""
    for entry in sorted(parent.iterdir()) if parent.is_dir() else []:
        if entry.is_dir() and not entry.name.startswith("."):
            try:
                ids = read_json(entry / ID_FILE)
            except (OSError, ValueError):
                continue
            if isinstance(ids, dict):
                yield entry, ids


@dataclasses.dataclass(frozen=True)
class VersionFiles:
    """One stored memory version: its manifest (``version.json``) and where its files are."""

    version: int
    folder: Path
    manifest: dict[str, Any]

    @property
    def memory_path(self) -> Path:
        return self.folder / MEMORY_FILE

    @property
    def index_path(self) -> Path | None:
        path = self.folder / INDEX_FILE
        return path if self.manifest.get("index_sha256") else None


@dataclasses.dataclass(frozen=True)
class LoadedMemory:
    embeddings: np.ndarray
    token_grid: tuple[int, int]
    metadata: dict[str, Any]
    index_bytes: bytes | None


@dataclasses.dataclass(frozen=True)
class ModelFolder:
    """What the files of one model say, enough to (re)build its registry rows."""

    role_id: str
    roi_id: str
    path: Path
    active_version: int | None
    versions: list[VersionFiles]
    calibrations: list[dict[str, Any]]
    recipe_id: str = DEFAULT_RECIPE


class ModelStore:
    """Reads and writes the artifacts of every model under one models dir."""

    def __init__(self, root: Path, keep_versions: int = 5, locks: Locks | None = None) -> None:
        """``locks``: the registry's (``Registry.locks``); lock files in ``root`` by default."""
        self.root = Path(root)
        self.keep_versions = keep_versions
        self._undo: dict[Path, _Undo] = {}  # model folder -> how to undo the write in progress (see writing)
        self.locks = locks or FileLocks(self.root)

    # ---- folder names -------------------------------------------------------------------------
    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def child(self, parent: Path, identifier: str, ids: dict[str, str], create: bool) -> Path | None:
        """The folder of ``identifier`` under ``parent`` (created when asked), identified by id.json: a role,
        a model, a recipe, a dataset's folders."""
        plain = is_plain_name(identifier)
        candidates = ([identifier] if plain else []) + [hashed_name(identifier)]
        try:
            entries = set(os.listdir(parent))
        except FileNotFoundError:
            entries = set()
        for name in candidates:
            if name in entries and self._owns(parent / name, ids):
                return parent / name
        if not create:
            return None
        lowered = {entry.lower() for entry in entries}
        name = identifier if plain and identifier.lower() not in lowered else hashed_name(identifier)
        folder = parent / name
        # Build the folder with its id.json under a temp name and rename it into place, so a crash
        # never leaves a folder without ids and two processes creating the same model agree.
        tmp = parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        with reporting_full_disk(f"the folder of {identifier!r}", self.root):
            try:
                # The models dir and its @recipes/@datasets are made as needed; a role folder that vanished
                # meanwhile is not re-created without its id.json.
                if parent == self.root or (parent.parent == self.root and parent.name in RESERVED_DIRS):
                    parent.mkdir(parents=True, exist_ok=True)
                tmp.mkdir()
                write_json_atomic(tmp / ID_FILE, ids)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        try:
            os.rename(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not self._owns(folder, ids):
                raise RuntimeError(f"{folder} exists but its id.json does not name {ids}") from None
        _fsync_dir(parent)
        return folder

    @staticmethod
    def _owns(folder: Path, ids: dict[str, str]) -> bool:
        try:
            return read_json(folder / ID_FILE) == ids
        except (OSError, ValueError):
            return False

    def namespace_dir(self, recipe_id: str = DEFAULT_RECIPE, create: bool = False) -> Path | None:
        """Where a recipe's models live: the models dir itself for the default namespace."""
        if recipe_id == DEFAULT_RECIPE:
            return self.root
        return self.child(self.root / RECIPES_DIR, recipe_id, {"recipe_id": recipe_id}, create)

    def model_dir(
        self, role_id: str, roi_id: str, create: bool = False, *, recipe_id: str = DEFAULT_RECIPE
    ) -> Path | None:
        namespace = self.namespace_dir(recipe_id, create)
        if namespace is None:
            return None
        role_dir = self.child(namespace, role_id, namespace_ids(recipe_id, role_id=role_id), create)
        if role_dir is None:
            return None
        return self.child(role_dir, roi_id, namespace_ids(recipe_id, role_id=role_id, roi_id=roi_id), create)

    def claim(self, folder: Path, ids: dict[str, str]) -> bool:
        """Give an existing folder without id.json (an earlier backend's) the ids it is the plain name of.

        Lets a migrated model keep its spec path ``models/<role>/<roi>/`` instead of a hashed one.
        Refused (False) when the name is not the plain name of the id or a sibling differs only in case.
        """
        identifier = ids.get("roi_id", ids["role_id"])
        if folder.name != identifier or not is_plain_name(identifier) or not folder.is_dir():
            return False
        if (folder / ID_FILE).exists():
            return self._owns(folder, ids)
        if any(entry != identifier and entry.lower() == identifier.lower() for entry in os.listdir(folder.parent)):
            return False
        with reporting_full_disk(f"the id.json of {folder}", self.root):
            write_json_atomic(folder / ID_FILE, ids)
        return True

    def delete_model(self, role_id: str, roi_id: str, *, recipe_id: str = DEFAULT_RECIPE) -> Path | None:
        """Remove a model's folder, and its role folder when no other model is left in it (a recipe's
        folder stays: its recipe.json holds the locked mm_per_px).

        Each folder is renamed to a temp name first: readers see the model or nothing, and a crash
        mid-delete leaves a temp folder that start-up removes.
        """
        folder = self.model_dir(role_id, roi_id, recipe_id=recipe_id)
        if folder is None:
            return None
        with self.locked(folder):
            _remove_folder(folder)
        self._drop_empty_role(folder.parent)
        return folder

    @staticmethod
    def _drop_empty_role(role_dir: Path) -> None:
        """Remove a role folder that holds no model any more."""
        if all(entry == ID_FILE or entry.startswith(TMP_PREFIX) for entry in os.listdir(role_dir)):
            _remove_folder(role_dir)

    def locked(self, folder: Path) -> contextlib.AbstractContextManager[None]:
        """Serialise writers of one model across threads, processes and (with PostgreSQL) hosts."""
        return self.locks.model(self.relative(folder))

    @contextlib.contextmanager
    def writing(self, role_id: str, roi_id: str, *, recipe_id: str = DEFAULT_RECIPE) -> Iterator[Path]:
        """The model's folder (created when new), locked, for one write of its files and registry rows.

        When the block fails (a full disk, a registry that refused the rows, anything), the folder is put
        back as it was: new versions removed, versions pruned meanwhile restored, pointer, calibration,
        canonical files and logs as before, and a model folder left with nothing in it removed. So the
        previous version stays served, the registry (rolled back by its own transaction) still matches
        the files, and a failed first write leaves no model behind.
        """
        ids = namespace_ids(recipe_id, role_id=role_id, roi_id=roi_id)
        for attempt in range(10):
            try:
                folder = self.model_dir(role_id, roi_id, create=True, recipe_id=recipe_id)
                assert folder is not None
                lock = contextlib.ExitStack()
                lock.enter_context(self.locked(folder))
            except FileNotFoundError:
                if attempt == 9:
                    raise
                continue  # a failed first write removed the folder while this one waited: create it again
            except BaseException:
                namespace = self.namespace_dir(recipe_id)
                role_ids = namespace_ids(recipe_id, role_id=role_id)
                role_dir = None if namespace is None else self.child(namespace, role_id, role_ids, create=False)
                if role_dir is not None:
                    self._drop_empty_role(role_dir)
                raise
            with lock:
                if not self._owns(folder, ids):
                    continue
                undo = _Undo(self, folder)
                self._undo[folder] = undo
                try:
                    yield folder
                except BaseException:
                    self._undo.pop(folder, None)
                    undo.restore()
                    if undo.left_empty():
                        _remove_folder(folder)
                        self._drop_empty_role(folder.parent)
                    raise
                self._undo.pop(folder, None)
                undo.commit()
                return
        raise RuntimeError(f"The folder of recipe_id={recipe_id!r} role_id={role_id!r} roi_id={roi_id!r} was removed by "
                           "other failed writes 10 times in a row; try again.")

    # ---- memory versions ----------------------------------------------------------------------
    def versions(self, folder: Path) -> list[VersionFiles]:
        base = folder / VERSIONS_DIR
        found = []
        for entry in sorted(base.iterdir()) if base.is_dir() else []:
            if entry.name.isdigit() and (entry / VERSION_FILE).is_file():
                try:
                    found.append(VersionFiles(int(entry.name), entry, read_json(entry / VERSION_FILE)))
                except (OSError, ValueError):
                    logger.warning("Skipping unreadable version manifest %s", entry / VERSION_FILE)
        return found

    def active_version(self, folder: Path) -> int | None:
        try:
            return int(read_json(folder / ACTIVE_FILE)["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def version_files(self, folder: Path, version: int) -> VersionFiles:
        path = folder / VERSIONS_DIR / f"{version:06d}"
        return VersionFiles(version, path, read_json(path / VERSION_FILE))

    def write_version(
        self,
        folder: Path,
        embeddings: np.ndarray,
        token_grid: tuple[int, int],
        metadata: dict[str, Any],
        index_bytes: bytes | None,
        source: str = "fit",
        legacy_path: str | None = None,
    ) -> VersionFiles:
        """Write a new immutable version and make it active. Call inside ``writing()`` (or ``locked(folder)``)."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            emb=np.ascontiguousarray(embeddings, dtype=np.float32),
            token_h=np.array(token_grid[0]),
            token_w=np.array(token_grid[1]),
            metadata=np.array(json.dumps(metadata, sort_keys=True)),
        )
        memory = buffer.getvalue()
        del buffer
        fields = {
            "source": source,
            "legacy_path": legacy_path,
            "n_embeddings": int(metadata.get("n_embeddings", embeddings.shape[0])),
            "coreset_size": int(embeddings.shape[0]),
            "coreset_rate_requested": metadata.get("coreset_rate_requested"),
            "coreset_rate_applied": metadata.get("coreset_rate_applied"),
            "token_h": int(token_grid[0]),
            "token_w": int(token_grid[1]),
            "embed_dim": int(embeddings.shape[1]),
            "extractor": metadata.get("extractor"),
            "dataset": metadata.get("dataset"),  # provenance of a CLI fit: which samples were held out
            # what an append needs: the radius its admission test uses, measured with this seed's projection
            "covering_radius": metadata.get("covering_radius"),
            "coreset_seed": metadata.get("coreset_seed"),
            "projection_dim": metadata.get("projection_dim"),
            "parent_version": metadata.get("parent_version"),  # an append's: the version it grew from
            "ancestors": metadata.get("ancestors") or [],  # parent first, back to the fit
            "append": metadata.get("append"),  # an append's: images added (name, sha256) and patch counts
        }
        return self.add_version_files(folder, memory, index_bytes, fields)

    def add_version_files(
        self, folder: Path, memory: bytes, index_bytes: bytes | None, fields: dict[str, Any], activate: bool = True
    ) -> VersionFiles:
        """Write a new immutable version from its files' bytes and ``fields`` (version.json's numbers and
        provenance; the number, time, sha256s and sizes are added here), and make it active unless told not to
        (a bundle imported with --no-activate). Call inside ``writing()`` (or ``locked(folder)``)."""
        existing = self.versions(folder)
        number = max([v.version for v in existing] + [self.active_version(folder) or 0]) + 1
        manifest = {
            "version": number,
            "created_at": utc_now(),
            **fields,
            "memory_sha256": hashlib.sha256(memory).hexdigest(),
            "memory_bytes": len(memory),
            "index_sha256": hashlib.sha256(index_bytes).hexdigest() if index_bytes is not None else None,
            "index_bytes": len(index_bytes) if index_bytes is not None else None,
        }
        manifest_bytes = json.dumps(manifest, indent=2).encode("utf-8")
        needed = len(memory) + len(index_bytes or b"") + len(manifest_bytes)
        base = folder / VERSIONS_DIR
        tmp = base / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        final = base / f"{number:06d}"
        with reporting_full_disk(f"the new memory version ({MEMORY_FILE} + {INDEX_FILE})", self.root, needed):
            try:
                base.mkdir(exist_ok=True)
                tmp.mkdir()
                self._write_synced(tmp / MEMORY_FILE, memory)
                if index_bytes is not None:
                    self._write_synced(tmp / INDEX_FILE, index_bytes)
                self._write_synced(tmp / VERSION_FILE, manifest_bytes)
                _fsync_dir(tmp)
                os.rename(tmp, final)
                _fsync_dir(base)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if activate:
                self.activate(folder, number)
        self.prune(folder, keep=number)
        return VersionFiles(number, final, manifest)

    @staticmethod
    def _write_synced(path: Path, data: bytes) -> None:
        with open(path, "wb") as handle:
            write_durably(handle, data)

    def activate(self, folder: Path, version: int) -> None:
        """Switch the pointer to ``version`` (one atomic replace), then refresh the canonical files."""
        self.version_files(folder, version)  # raises when the version is not complete on disk
        write_json_atomic(folder / ACTIVE_FILE, {"version": version, "activated_at": utc_now()})
        self.refresh_canonical(folder, version)

    def refresh_canonical(self, folder: Path, version: int) -> None:
        files = self.version_files(folder, version)
        for name in (MEMORY_FILE, INDEX_FILE):
            source, target = files.folder / name, folder / name
            if not source.is_file():
                target.unlink(missing_ok=True)
                continue
            if target.is_file() and os.path.samefile(source, target):
                continue
            tmp = folder / f"{TMP_PREFIX}{uuid.uuid4().hex}-{name}"
            try:
                try:
                    os.link(source, tmp)
                except OSError:
                    shutil.copyfile(source, tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)

    def canonical_is_current(self, folder: Path, version: int) -> bool:
        files = self.version_files(folder, version)
        for name in (MEMORY_FILE, INDEX_FILE):
            source, target = files.folder / name, folder / name
            if source.is_file() != target.is_file():
                return False
            if source.is_file() and not os.path.samefile(source, target):
                key = "memory_sha256" if name == MEMORY_FILE else "index_sha256"
                if sha256_file(target) != files.manifest.get(key):
                    return False
        return True

    def prune(self, folder: Path, keep: int | None = None) -> list[int]:
        """Drop the oldest versions beyond ``keep_versions``; the active one (and ``keep``, a version just
        written without activating it) always stays."""
        protected = {self.active_version(folder), keep} - {None}
        stale = [v for v in self.versions(folder) if v.version not in protected]
        removed = []
        undo = self._undo.get(folder)
        for item in stale[: max(0, len(stale) - max(0, self.keep_versions - max(1, len(protected))))]:
            if undo is not None:  # inside writing(): set aside, deleted once the whole write succeeded
                undo.set_aside(item.folder)
            else:
                shutil.rmtree(item.folder, ignore_errors=True)
            removed.append(item.version)
        return removed

    def load_memory(self, folder: Path, version: int) -> LoadedMemory:
        files = self.version_files(folder, version)
        with np.load(files.memory_path, allow_pickle=False) as data:
            embeddings = np.ascontiguousarray(data["emb"], dtype=np.float32)
            grid = (int(data["token_h"]), int(data["token_w"]))
            metadata = json.loads(str(data["metadata"])) if "metadata" in data.files else {}
        index_path = files.index_path
        index_bytes = index_path.read_bytes() if index_path is not None and index_path.is_file() else None
        return LoadedMemory(embeddings, grid, metadata, index_bytes)

    # ---- calibrations -------------------------------------------------------------------------
    def write_calibration(self, folder: Path, calibration: dict[str, Any], record: dict[str, Any]) -> None:
        """Log first (the log is the truth the registry is rebuilt from), then calib.json."""
        entry = {**record, "calibration": calibration}
        needed = len(_json_line(entry)) + len(json.dumps(calibration, ensure_ascii=False, indent=2)) + 1
        with reporting_full_disk("the calibration (history.jsonl + calib.json)", self.root, needed):
            _append_json_line(folder / HISTORY_FILE, entry)
            write_json_atomic(folder / CALIB_FILE, calibration)

    def calibration_history(self, folder: Path) -> list[dict[str, Any]]:
        entries = _read_json_lines(folder / HISTORY_FILE)
        return [entry for entry in entries if isinstance(entry.get("calibration"), dict)]

    def read_calibration(self, folder: Path) -> dict[str, Any] | None:
        try:
            data = read_json(folder / CALIB_FILE)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # ---- legacy imports -------------------------------------------------------------------------
    def legacy_imports(self, folder: Path) -> list[dict[str, Any]]:
        """What was imported into this model from earlier backends' files (path + sha256): makes
        migration idempotent even after the imported version has been pruned."""
        return _read_json_lines(folder / MIGRATED_FILE)

    def record_legacy_import(self, folder: Path, entry: dict[str, Any]) -> None:
        with reporting_full_disk(f"the record of a legacy import ({MIGRATED_FILE})", self.root, len(_json_line(entry))):
            _append_json_line(folder / MIGRATED_FILE, entry)

    # ---- consistency ----------------------------------------------------------------------------
    def verify_folder(self, folder: Path) -> list[str]:
        """Sentences for whatever in one model folder disagrees: files vs their manifests (sha256,
        embedding dims, token grid), index vs memory, pointer vs versions, canonical copies vs the
        active version."""
        problems = []
        versions = self.versions(folder)
        kept = [files.version for files in versions]
        active = self.active_version(folder)
        if (folder / ACTIVE_FILE).exists() and active is None:
            problems.append(f"{ACTIVE_FILE} can't be read")
        for files in versions:
            problems += [f"version {files.version}: {problem}" for problem in _verify_version(files)]
        if active is not None and active not in kept:
            problems.append(f"{ACTIVE_FILE} points to version {active}, which is not on disk (kept: {kept or 'none'})")
        elif active is not None and not self.canonical_is_current(folder, active):
            problems.append(f"the canonical {MEMORY_FILE}/{INDEX_FILE} are not those of the active version {active}")
        if (folder / CALIB_FILE).exists() and self.read_calibration(folder) is None:
            problems.append(f"{CALIB_FILE} can't be read")
        return problems

    # ---- recipes --------------------------------------------------------------------------------
    def recipes(self) -> Iterator[tuple[str, Path]]:
        """(recipe_id, folder) of every named recipe on disk."""
        for folder, ids in id_children(self.root / RECIPES_DIR):
            recipe_id = ids.get("recipe_id")
            if isinstance(recipe_id, str) and set(ids) == {"recipe_id"}:
                yield recipe_id, folder

    def read_recipe(self, folder: Path) -> dict[str, Any]:
        """A recipe's recipe.json (``{"recipe_id", "mm_per_px", "created_at_utc", ...}``), empty when absent."""
        try:
            data = read_json(folder / RECIPE_FILE)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_recipe(self, folder: Path, payload: dict[str, Any]) -> None:
        with reporting_full_disk(f"the recipe's {RECIPE_FILE}", self.root):
            write_json_atomic(folder / RECIPE_FILE, payload)

    # ---- whole-tree operations ----------------------------------------------------------------
    def scan(self) -> Iterator[ModelFolder]:
        """Every model folder of the canonical layout, default namespace first, then each recipe's."""
        namespaces = [(DEFAULT_RECIPE, self.root), *self.recipes()] if self.root.is_dir() else []
        for recipe_id, namespace in namespaces:
            for role_dir, role_ids in id_children(namespace):
                if role_ids != namespace_ids(recipe_id, role_id=role_ids.get("role_id")):
                    continue
                for model_dir in sorted(role_dir.iterdir()):
                    if model_dir.is_dir():
                        folder = self.describe(model_dir)
                        if folder is not None and folder.recipe_id == recipe_id:
                            yield folder

    def describe(self, model_dir: Path) -> ModelFolder | None:
        try:
            ids = read_json(model_dir / ID_FILE)
            role_id, roi_id = ids["role_id"], ids["roi_id"]
            recipe_id = ids.get("recipe_id", DEFAULT_RECIPE)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        calibrations = self.calibration_history(model_dir)
        if not calibrations:
            legacy = self.read_calibration(model_dir)
            if legacy is not None:
                calibrations = [{"source": "legacy", "calibration": legacy}]
        return ModelFolder(
            role_id, roi_id, model_dir, self.active_version(model_dir), self.versions(model_dir), calibrations,
            recipe_id,
        )

    def cleanup_leftovers(self) -> int:
        """Remove temp files and half-written version folders of killed writes; repair canonical files;
        drop versions beyond ``keep_versions`` (so lowering BDI_KEEP_VERSIONS frees space at the next start).

        Other hosts may be writing the same models dir: inside a model folder this happens under the
        model's lock (a write in progress holds it); anywhere else (a model folder being created, a
        deleted one being removed) only to entries older than ``STALE_TEMP_S``.
        """
        removed = 0
        folders = [folder.path for folder in self.scan()]
        inside = {folder.resolve() for folder in folders}
        now = time.time()
        for path in _temp_entries(self.root):
            if inside.isdisjoint(path.resolve().parents) and _age(path, now) > STALE_TEMP_S:
                removed += _remove_entry(path)
        for path in folders:
            with self.locked(path):
                removed += sum(_remove_entry(entry) for entry in list(path.rglob(f"{TMP_PREFIX}*")))
                folder = self.describe(path)
                if folder is None:
                    continue
                if folder.active_version is not None and not self.canonical_is_current(path, folder.active_version):
                    logger.warning("Repairing the canonical files of %s (a write was interrupted)", path)
                    self.refresh_canonical(path, folder.active_version)
                calib = folder.calibrations[-1]["calibration"] if folder.calibrations else None
                if calib is not None and self.read_calibration(path) != calib:
                    write_json_atomic(path / CALIB_FILE, calib)
                if len(folder.versions) > self.keep_versions:
                    pruned = self.prune(path)
                    logger.info("Removed old version(s) %s of %s (BDI_KEEP_VERSIONS=%d)", pruned, path,
                                self.keep_versions)
        if removed:
            logger.warning("Removed %d leftover temp file(s) of interrupted writes under %s", removed, self.root)
        return removed


def _remove_folder(folder: Path) -> None:
    """Rename aside, then delete: readers see the folder or nothing, and a crash mid-delete leaves a temp
    folder that start-up removes."""
    aside = folder.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    os.rename(folder, aside)
    shutil.rmtree(aside, ignore_errors=True)


class _Undo:
    """How to put one model folder back as it was before a write (see ``ModelStore.writing``).

    Files a write replaces (pointer, calibration, canonical memory and index) are kept by a hard link to
    the old file, which needs no space on a full disk (without hard links: the small files' bytes, and the
    canonical files are linked again from the active version); append-only logs are cut back to their old
    size; version folders the write added are removed, those it pruned are set aside until it succeeded.
    Links and set-aside folders left by a killed process carry the temp prefix: start-up removes them.
    """

    _REPLACED = (ACTIVE_FILE, CALIB_FILE, MEMORY_FILE, INDEX_FILE)
    _APPENDED = (HISTORY_FILE, MIGRATED_FILE)

    def __init__(self, store: ModelStore, folder: Path) -> None:
        self.store = store
        self.folder = folder
        self.versions = set(self._version_names())
        self.sizes = {name: _size_or_none(folder / name) for name in self._APPENDED}
        self.links: dict[str, Path] = {}  # replaced file -> hard link to its old content
        self.copies: dict[str, bytes] = {}  # the same where hard links fail (small files only)
        self.absent = [name for name in self._REPLACED if not (folder / name).is_file()]
        self.relink = False
        self.aside: list[tuple[Path, Path]] = []  # (set-aside folder, where it was)
        with reporting_full_disk("the undo record of a write", store.root):
            try:
                for name in self._REPLACED:
                    if name not in self.absent:
                        self._keep(name)
            except BaseException:
                self._drop_links()
                raise

    def _keep(self, name: str) -> None:
        link = self.folder / f"{TMP_PREFIX}{uuid.uuid4().hex}-{name}"
        try:
            os.link(self.folder / name, link)
        except OSError as exc:
            if exc.errno in InsufficientStorage.ERRNOS:
                raise
            if name in (ACTIVE_FILE, CALIB_FILE):
                self.copies[name] = (self.folder / name).read_bytes()
            else:
                self.relink = True
            return
        self.links[name] = link

    def _version_names(self) -> list[str]:
        base = self.folder / VERSIONS_DIR
        return [entry for entry in os.listdir(base) if entry.isdigit()] if base.is_dir() else []

    def set_aside(self, version_folder: Path) -> None:
        aside = version_folder.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        os.rename(version_folder, aside)
        self.aside.append((aside, version_folder))

    def commit(self) -> None:
        for aside, _ in self.aside:
            shutil.rmtree(aside, ignore_errors=True)
        self._drop_links()

    def _drop_links(self) -> None:
        for link in self.links.values():
            link.unlink(missing_ok=True)

    def restore(self) -> None:
        """Best effort, removals first (they free space); a step that fails is logged and the next one
        still runs, so the caller sees the write's own error."""
        for name in self._version_names():
            if name not in self.versions:
                self._step(shutil.rmtree, self.folder / VERSIONS_DIR / name)
        for aside, original in self.aside:
            self._step(os.rename, aside, original)
        for name, size in self.sizes.items():
            self._step(_cut_back, self.folder / name, size)
        for name in self.absent:
            self._step((self.folder / name).unlink, missing_ok=True)
        for name, link in self.links.items():
            self._step(_put_back, link, self.folder / name)
        for name, data in self.copies.items():
            self._step(write_atomic, self.folder / name, data)
        active = self.store.active_version(self.folder)
        if self.relink and active is not None:
            self._step(self.store.refresh_canonical, self.folder, active)

    def _step(self, action: Any, *args: Any, **kwargs: Any) -> None:
        try:
            action(*args, **kwargs)
        except OSError:
            logger.exception("Could not undo part of a failed write in %s", self.folder)

    def left_empty(self) -> bool:
        """Nothing but its id.json (and the lock, an empty versions/ or temp leftovers) is in the folder."""
        for entry in os.listdir(self.folder):
            if entry in (ID_FILE, MODEL_LOCK_FILE) or entry.startswith(TMP_PREFIX):
                continue
            if entry == VERSIONS_DIR and not os.listdir(self.folder / entry):
                continue
            return False
        return True


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _put_back(link: Path, path: Path) -> None:
    """Make ``path`` the file ``link`` holds (rename does nothing when both already are the same file)."""
    if path.is_file() and os.path.samefile(link, path):
        link.unlink()
    else:
        os.replace(link, path)


def _cut_back(path: Path, size: int | None) -> None:
    if size is None:
        path.unlink(missing_ok=True)
    elif path.is_file() and path.stat().st_size != size:
        os.truncate(path, size)


def _temp_entries(root: Path) -> list[Path]:
    """Every temp file or folder under ``root`` (not what is inside a temp folder), skipping the kept inspection
    images (possibly millions of files, written as ``<name>.partial`` then renamed; the records' pruner removes a
    day folder past the retention as a whole)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and RECORDS_DIR in dirnames:
            dirnames.remove(RECORDS_DIR)
        found += [Path(dirpath) / name for name in [*dirnames, *filenames] if name.startswith(TMP_PREFIX)]
        dirnames[:] = [name for name in dirnames if not name.startswith(TMP_PREFIX)]
    return found


def _age(path: Path, now: float) -> float:
    try:
        return now - path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove_entry(path: Path) -> int:
    """Remove a file or a folder tree; 1 when something was there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        return 0
    return 1


def _verify_version(files: VersionFiles) -> list[str]:
    """What is wrong with one version folder, checked against its own manifest."""
    manifest = files.manifest
    if not files.memory_path.is_file():
        return [f"{MEMORY_FILE} is missing"]
    problems = []
    if sha256_file(files.memory_path) != manifest.get("memory_sha256"):
        problems.append(f"{MEMORY_FILE} does not match the sha256 in {VERSION_FILE} (changed after it was written)")
    try:
        with np.load(files.memory_path, allow_pickle=False) as data:
            shape = data["emb"].shape
            grid = (int(data["token_h"]), int(data["token_w"]))
    except Exception as exc:  # noqa: BLE001 - a damaged npz raises many kinds of errors
        return [*problems, f"{MEMORY_FILE} can't be read ({type(exc).__name__})"]
    expected = (manifest.get("coreset_size"), manifest.get("embed_dim"))
    if len(shape) != 2 or tuple(shape) != expected:
        problems.append(f"{MEMORY_FILE} holds embeddings of shape {tuple(shape)}, {VERSION_FILE} says {expected}")
    expected_grid = (manifest.get("token_h"), manifest.get("token_w"))
    if grid != expected_grid:
        problems.append(f"{MEMORY_FILE} has token grid {grid}, {VERSION_FILE} says {expected_grid}")
    index_path = files.folder / INDEX_FILE
    if manifest.get("index_sha256") and not index_path.is_file():
        problems.append(f"{INDEX_FILE} is missing")
    elif index_path.is_file():
        if sha256_file(index_path) != manifest.get("index_sha256"):
            problems.append(f"{INDEX_FILE} does not match the sha256 in {VERSION_FILE}")
        problems += index_problems(index_path.read_bytes(), shape)
    return problems


def index_problems(data: bytes, memory_shape: tuple[int, ...]) -> list[str]:
    """The faiss index must hold exactly as many vectors, of the same dim, as the memory."""
    if not patchcore.FAISS_AVAILABLE:
        return []
    try:
        index = patchcore.faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError:
        return [f"{INDEX_FILE} can't be read by faiss"]
    if len(memory_shape) == 2 and (index.ntotal, index.d) != tuple(memory_shape):
        rows, dim = memory_shape
        return [f"{INDEX_FILE} holds {index.ntotal} vectors of dim {index.d}, {MEMORY_FILE} holds {rows} of dim {dim}"]
    return []
