"""Errors the service layer raises; the web layer turns them into the contract's JSON bodies.

Kept free of any web import so that the pipeline, the storage and the CLI can raise the same
errors the HTTP routes answer with.
"""

from __future__ import annotations

import errno
import math
import shutil
from pathlib import Path


class ServiceError(Exception):
    """An error with an HTTP status and one sentence that tells the caller what to do."""

    status_code: int = 400

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code


class BadRequest(ServiceError):
    """The request is well-formed but its content can't be used (400)."""

    status_code = 400


class PayloadTooLarge(ServiceError):
    """The request or one of its images is over a configured size limit (413)."""

    status_code = 413


class InsufficientStorage(ServiceError):
    """A write ran out of disk space (ENOSPC/EDQUOT, SQLite's "database or disk is full") (507).

    Raised by the storage layer where the write failed; the write as a whole (``ModelStore.writing``) then
    puts back what it had changed, so the sentence can say that nothing was changed.
    """

    status_code = 507
    ERRNOS = frozenset(filter(None, (errno.ENOSPC, getattr(errno, "EDQUOT", None))))

    def __init__(self, what: str, where: Path, needed: int | None = None) -> None:
        try:
            free: int | None = shutil.disk_usage(where).free
        except OSError:
            free = None
        super().__init__(self.sentence(what, str(where), needed, free))

    @staticmethod
    def sentence(what: str, where: str, needed: int | None, free: int | None) -> str:
        need = f"needs {_size(needed)} and " if needed is not None else ""
        left = f"{_size(free)} is free there" if free is not None else "the free space is unknown"
        return (
            f"The disk of {where} is full: {what} {need}could not be written ({left}); nothing was changed. "
            "Free space on that disk: delete models no longer used (`bdi models delete ROLE ROI`), lower "
            "BDI_KEEP_VERSIONS (memory versions kept per model; the extra old ones are removed at the next start "
            "of the service) or move other files off it, then try again."
        )


def _size(n_bytes: int) -> str:
    power = min(int(math.log(max(n_bytes, 1), 1024)), len(_UNITS) - 1)
    return f"{n_bytes} bytes" if power == 0 else f"{n_bytes / 1024**power:.1f} {_UNITS[power]}"


_UNITS = ("bytes", "KB", "MB", "GB", "TB")
class NotFound(ServiceError):
    """A stored thing the request names (a dataset sample, its sidecar, an inspection record or its kept image)
    does not exist (404)."""

    status_code = 404


class Conflict(ServiceError):
    """The request contradicts what is already stored, e.g. a recipe's locked mm_per_px (409)."""

    status_code = 409


class NotFitted(ServiceError):
    """No memory bank exists for (role, roi); both old GUIs match one of the two phrases."""

    status_code = 400

    def __init__(self, role_id: str, roi_id: str, recipe_id: str | None = None) -> None:
        where = f" in recipe {recipe_id!r}" if recipe_id not in (None, "default") else ""
        super().__init__(
            f"Memory not fitted for role_id={role_id!r}, roi_id={roi_id!r}{where}. "
            "Memoria no encontrada. Ejecuta /fit_ok primero."
        )


class TokenGridMismatch(ServiceError):
    """The stored memory was built on another token grid than the running extractor's."""

    status_code = 400

    def __init__(self, got: tuple[int, int], expected: tuple[int, int]) -> None:
        super().__init__(
            f"Token grid mismatch: got ({got[0]}, {got[1]}), expected ({expected[0]}, {expected[1]}). "
            "The memory was fitted at another input size: serve with the input size it was fitted at "
            "(BDI_INPUT_SIZE) or refit it with /fit_ok."
        )


class ExtractorMismatch(ServiceError):
    """The stored memory was built with other backbone weights than the running extractor's: its patches and
    the new ones are not comparable. Worded like ``TokenGridMismatch``."""

    status_code = 400

    def __init__(self, got: str, expected: str) -> None:
        super().__init__(
            f"Extractor mismatch: got weights {got}, expected {expected}. The memory was fitted with other "
            "backbone weights: serve with the weights it was fitted with (BDI_WEIGHTS) or refit it with /fit_ok."
        )


class ConfigError(Exception):
    """A setting can't be used; the service refuses to start and names the setting."""


class RegistryUnavailable(ServiceError):
    """The registry database can't be reached or did not answer in time (PostgreSQL down or restarting):
    503, and the service recovers by itself once the database is back."""

    status_code = 503

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"The registry database is unavailable ({reason}); retry in a few seconds: the service recovers by "
            "itself when the database is back."
        )
        self.reason = reason
