"""Exclusive locks of one models dir and its registry, shared by every thread and process that writes.

Two kinds of lock, both keyed by text that means the same on every host:

- ``model(folder)``: the write lock of one model; ``folder`` is the model folder's path relative to
  the models dir (``ModelStore.relative``), so it names the model whatever else a folder may hold.
- ``named(name)``: a lock of the whole models dir and registry: ``MIGRATIONS`` (schema migrations at
  start-up) and ``LEGACY_IMPORT`` (the import of earlier backends' files).

``FileLocks`` (here) are lock files in the models dir: right for one machine with a SQLite registry.
Across hosts a lock file on a network file system is not to be trusted, so with PostgreSQL the
registry hands out advisory locks instead (``service.storage.registry.engine.AdvisoryLocks``);
``ModelStore`` and the legacy import take whichever they are given.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

MIGRATIONS = "registry"
LEGACY_IMPORT = "migrate"
MODEL_LOCK_FILE = ".lock"


class Locks(abc.ABC):
    """Exclusive and blocking; released when the ``with`` block ends or the process dies. Not
    re-entrant: a holder that asks for a lock it holds waits for itself."""

    @abc.abstractmethod
    def model(self, folder: str) -> contextlib.AbstractContextManager[None]:
        """Serialise the writers of the model in ``folder`` (relative to the models dir)."""

    @abc.abstractmethod
    def named(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Serialise a whole-registry step (``MIGRATIONS``, ``LEGACY_IMPORT``)."""


class FileLocks(Locks):
    """Lock files: ``<models_dir>/<folder>/.lock`` per model, ``<models_dir>/.<name>.lock`` per name."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @contextlib.contextmanager
    def model(self, folder: str) -> Iterator[None]:
        with FileLock(str(self.root / folder / MODEL_LOCK_FILE)):
            yield

    @contextlib.contextmanager
    def named(self, name: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f".{name}.lock")):
            yield
