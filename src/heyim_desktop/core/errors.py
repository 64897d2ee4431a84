"""Errors a person can act on, as opposed to bugs.

Anything raised as a :class:`UserFacingError` is shown to the user as its message alone.
Every other exception is a bug: it is logged with its traceback.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """An error caused by the world (input, files, memory), with an actionable message."""

    @property
    def message(self) -> str:
        return str(self)


class InvalidRequest(UserFacingError, ValueError):
    """A request field is out of range; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


class ImageError(UserFacingError):
    """An input image cannot be read or is not acceptable."""


class ModelError(UserFacingError):
    """A model folder or file is missing, incomplete, unsafe or unsupported."""


class DeviceUnavailable(ModelError):
    """The compute device asked for (a saved preference, ``--device``) is not on this computer."""


class OutOfMemory(UserFacingError):
    """The device ran out of memory for this request."""


class StorageError(UserFacingError):
    """Writing an image or the history failed (disk full, permissions)."""


class DiskFull(StorageError):
    """The disk or quota is full, or the file system is read-only: nothing was written.

    One kind for every writer (history, thumbnails, preferences, models, downloads, the API
    token), so a front end can say "free some space" whatever was being saved. ``folder`` is
    where the write failed; ``reason`` is ``"full"``, ``"quota"`` or ``"read-only"``.
    """

    def __init__(self, message: str, folder: object = None, reason: str = "full") -> None:
        super().__init__(message)
        self.folder = folder
        self.reason = reason


class EngineStopped(UserFacingError):
    """The engine process died (a signal, an exit) or was stopped while it ran a job."""
