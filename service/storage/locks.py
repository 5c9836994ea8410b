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
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock

MIGRATIONS = "registry"
LEGACY_IMPORT = "migrate"
MODEL_LOCK_FILE = ".lock"


class Locks(abc.ABC):
    """Exclusive and blocking; released when the outermost ``with`` block ends or the process dies.

    Re-entrant per thread and ``Locks`` object: a thread that asks again for a lock it holds gets it at
    once (nothing is acquired twice), so a recovery step called under a writer's lock (re-indexing a model
    whose files changed) can't wait for that writer, i.e. for itself, for ever. Other threads and other
    ``Locks`` objects (other processes and hosts) wait as before."""

    def __init__(self) -> None:
        self._held_by_thread = threading.local()

    def model(self, folder: str) -> contextlib.AbstractContextManager[None]:
        """Serialise the writers of the model in ``folder`` (relative to the models dir)."""
        return self._reentrant(f"model:{folder}", lambda: self._acquire_model(folder))

    def named(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Serialise a whole-registry step (``MIGRATIONS``, ``LEGACY_IMPORT``)."""
        return self._reentrant(f"named:{name}", lambda: self._acquire_named(name))

    def confirm_held(self) -> None:
        """Raise ``RegistryUnavailable`` when a lock this thread holds has been lost meanwhile; called right
        before each registry commit, so that a writer that no longer excludes the others changes nothing. A
        lock file is held as long as its process lives: nothing to check."""

    @abc.abstractmethod
    def _acquire_model(self, folder: str) -> contextlib.AbstractContextManager[None]:
        """Take the model's lock itself (called once per outermost holder)."""

    @abc.abstractmethod
    def _acquire_named(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Take the named lock itself (called once per outermost holder)."""

    def _held_here(self) -> set[str]:
        held = getattr(self._held_by_thread, "keys", None)
        if held is None:
            held = self._held_by_thread.keys = set()
        return held

    @contextlib.contextmanager
    def _reentrant(self, key: str, acquire: Callable[[], contextlib.AbstractContextManager[None]]) -> Iterator[None]:
        held = self._held_here()
        if key in held:
            yield
            return
        with acquire():
            held.add(key)
            try:
                yield
            finally:
                held.discard(key)


class FileLocks(Locks):
    """Lock files: ``<models_dir>/<folder>/.lock`` per model, ``<models_dir>/.<name>.lock`` per name."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = Path(root)

    @contextlib.contextmanager
    def _acquire_model(self, folder: str) -> Iterator[None]:
        with FileLock(str(self.root / folder / MODEL_LOCK_FILE)):
            yield

    @contextlib.contextmanager
    def _acquire_named(self, name: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f".{name}.lock")):
            yield
