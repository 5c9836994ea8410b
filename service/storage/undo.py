"""Undoing a failed write of one model folder (``ModelStore.writing``): what it replaced is kept by hard
links, logs are cut back, new versions removed, pruned ones restored."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InsufficientStorage
from .files import (
    ACTIVE_FILE,
    CALIB_FILE,
    HISTORY_FILE,
    ID_FILE,
    INDEX_FILE,
    MEMORY_FILE,
    MIGRATED_FILE,
    TMP_PREFIX,
    VERSIONS_DIR,
    reporting_full_disk,
    write_atomic,
)
from .locks import MODEL_LOCK_FILE

if TYPE_CHECKING:
    from .artifacts import ModelStore

logger = logging.getLogger(__name__)


class WriteUndo:
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
