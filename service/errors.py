"""Errors the service layer raises; the web layer turns them into the contract's JSON bodies.

Kept free of any web import so that the pipeline, the storage and the CLI can raise the same
errors the HTTP routes answer with.
"""

from __future__ import annotations


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


class NotFitted(ServiceError):
    """No memory bank exists for (role, roi); both old GUIs match one of the two phrases."""

    status_code = 400

    def __init__(self, role_id: str, roi_id: str) -> None:
        super().__init__(
            f"Memory not fitted for role_id={role_id!r}, roi_id={roi_id!r}. "
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


class ConfigError(Exception):
    """A setting can't be used; the service refuses to start and names the setting."""
