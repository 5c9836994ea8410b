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

The store is built in layers, one module each: ``files`` (names and durable writes), ``versions``
(version folders and the pointer), ``reading`` (what the folders say), ``undo`` (putting a folder back
after a failed write), and here ``ModelStore``: folder names, the ``writing()`` lock, the writes of
calibrations, recipes and legacy records, and start-up cleanup.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..validation import DEFAULT_RECIPE
from .files import (
    CALIB_FILE,
    HISTORY_FILE,
    ID_FILE,
    MIGRATED_FILE,
    RECIPE_FILE,
    RECIPES_DIR,
    RECORDS_DIR,
    RESERVED_DIRS,
    STALE_TEMP_S,
    TMP_PREFIX,
    _append_json_line,
    _fsync_dir,
    _json_line,
    _remove_folder,
    hashed_name,
    is_plain_name,
    namespace_ids,
    read_json,
    reporting_full_disk,
    write_json_atomic,
)
from .locks import FileLocks, Locks
from .reading import ModelReading
from .undo import WriteUndo

logger = logging.getLogger(__name__)


class ModelStore(ModelReading):
    """Reads and writes the artifacts of every model under one models dir."""

    def __init__(self, root: Path, keep_versions: int = 5, locks: Locks | None = None) -> None:
        """``locks``: the registry's (``Registry.locks``); lock files in ``root`` by default."""
        self.root = Path(root)
        self.keep_versions = keep_versions
        self._undo: dict[Path, WriteUndo] = {}  # model folder -> how to undo the write in progress (see writing)
        self.locks = locks or FileLocks(self.root)

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
                undo = WriteUndo(self, folder)
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

    def write_calibration(self, folder: Path, calibration: dict[str, Any], record: dict[str, Any]) -> None:
        """Log first (the log is the truth the registry is rebuilt from), then calib.json."""
        entry = {**record, "calibration": calibration}
        needed = len(_json_line(entry)) + len(json.dumps(calibration, ensure_ascii=False, indent=2)) + 1
        with reporting_full_disk("the calibration (history.jsonl + calib.json)", self.root, needed):
            _append_json_line(folder / HISTORY_FILE, entry)
            write_json_atomic(folder / CALIB_FILE, calibration)

    def record_legacy_import(self, folder: Path, entry: dict[str, Any]) -> None:
        with reporting_full_disk(f"the record of a legacy import ({MIGRATED_FILE})", self.root, len(_json_line(entry))):
            _append_json_line(folder / MIGRATED_FILE, entry)

    def write_recipe(self, folder: Path, payload: dict[str, Any]) -> None:
        with reporting_full_disk(f"the recipe's {RECIPE_FILE}", self.root):
            write_json_atomic(folder / RECIPE_FILE, payload)

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
