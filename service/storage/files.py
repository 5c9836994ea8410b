"""The models dir's file names and the low-level file operations every part of the store shares: durable
and atomic writes (every byte goes through ``write_durably``), JSON files and append-only JSON logs, and
the folder names of ids (see ``artifacts`` for the layout)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InsufficientStorage
from ..validation import DEFAULT_RECIPE

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


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        write_durably(handle, data)


def _remove_folder(folder: Path) -> None:
    """Rename aside, then delete: readers see the folder or nothing, and a crash mid-delete leaves a temp
    folder that start-up removes."""
    aside = folder.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    os.rename(folder, aside)
    shutil.rmtree(aside, ignore_errors=True)
