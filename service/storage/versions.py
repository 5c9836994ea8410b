"""A model's memory versions on disk: writing a version folder (complete before it is renamed into place),
switching the pointer to it, refreshing the canonical copies, listing and pruning versions."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .files import (
    ACTIVE_FILE,
    HISTORY_FILE,
    INDEX_FILE,
    MEMORY_FILE,
    TMP_PREFIX,
    VERSION_FILE,
    VERSIONS_DIR,
    _append_json_line,
    _fsync_dir,
    _read_json_lines,
    read_json,
    reporting_full_disk,
    sha256_file,
    utc_now,
    write_json_atomic,
    write_synced,
)

if TYPE_CHECKING:
    from .undo import WriteUndo

logger = logging.getLogger(__name__)

ACTIVE, STAGED, RETIRED = "active", "staged", "retired"
LEARN_FIELDS = ("learn", "calibration")
VERSION_STATUS_KEY = "version_status"  # history.jsonl entries that stage or activate a version (not calibrations)


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


class ModelVersions:
    """The version files of the model folders under ``root`` (the base of ``ModelStore``)."""

    root: Path
    keep_versions: int
    _undo: dict[Path, WriteUndo]  # model folder -> how to undo the write in progress (see ModelStore.writing)

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
        activate: bool = True,
    ) -> VersionFiles:
        """Write a new immutable version and make it active, or ``staged`` without ``activate``. Call inside
        ``writing()`` (or ``locked(folder)``)."""
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
            # the size of the images it was fitted on: /infer warns about images of another size
            "train_width": metadata.get("train_width"),
            "train_height": metadata.get("train_height"),
        }
        for key in LEARN_FIELDS:  # a learn's: the records it learned, and the calibration it proposes
            if metadata.get(key) is not None:
                fields[key] = metadata[key]
        return self.add_version_files(folder, memory, index_bytes, fields, activate)

    def add_version_files(
        self, folder: Path, memory: bytes, index_bytes: bytes | None, fields: dict[str, Any], activate: bool = True
    ) -> VersionFiles:
        """Write a new immutable version from its files' bytes and ``fields`` (version.json's numbers and
        provenance; the number, time, sha256s and sizes are added here), and make it active unless told not to
        (a bundle imported with --no-activate, a fit with activate=false): then it is ``staged``, which
        history.jsonl records (the files alone rebuild the statuses). Call inside ``writing()`` (or ``locked``)."""
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
                write_synced(tmp / MEMORY_FILE, memory)
                if index_bytes is not None:
                    write_synced(tmp / INDEX_FILE, index_bytes)
                write_synced(tmp / VERSION_FILE, manifest_bytes)
                _fsync_dir(tmp)
                os.rename(tmp, final)
                _fsync_dir(base)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if activate:
                self.activate(folder, number)
            else:
                self._log_version_status(folder, number, STAGED)
        self.prune(folder, keep=number)
        return VersionFiles(number, final, manifest)

    def staged_versions(self, folder: Path) -> set[int]:
        """The versions written without being activated and never activated since (history.jsonl's word)."""
        staged: set[int] = set()
        for entry in _read_json_lines(folder / HISTORY_FILE):
            version = entry.get("version")
            if isinstance(version, int) and entry.get(VERSION_STATUS_KEY) == STAGED:
                staged.add(version)
            elif isinstance(version, int) and entry.get(VERSION_STATUS_KEY) == ACTIVE:
                staged.discard(version)
        return staged

    def version_statuses(self, folder: Path) -> dict[int, str]:
        """Each kept version's status: the pointer's is active, a staged one staged, every other retired."""
        active, staged = self.active_version(folder), self.staged_versions(folder)
        return {
            files.version: ACTIVE if files.version == active else STAGED if files.version in staged else RETIRED
            for files in self.versions(folder)
        }

    def _log_version_status(self, folder: Path, version: int, status: str) -> None:
        entry = {VERSION_STATUS_KEY: status, "version": version, "created_at": utc_now()}
        with reporting_full_disk(f"the status of version {version} ({HISTORY_FILE})", self.root, 200):
            _append_json_line(folder / HISTORY_FILE, entry)

    def activate(self, folder: Path, version: int) -> None:
        """Switch the pointer to ``version`` (one atomic replace), then refresh the canonical files. A staged
        version stops being staged (logged first: a pointer that fails to move is put back by ``writing()``)."""
        self.version_files(folder, version)  # raises when the version is not complete on disk
        if version in self.staged_versions(folder):
            self._log_version_status(folder, version, ACTIVE)
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
        """Drop the oldest versions beyond ``keep_versions``; the active one, the staged ones (and ``keep``, a
        version just written without activating it) always stay."""
        protected = ({self.active_version(folder), keep} | self.staged_versions(folder)) - {None}
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
