"""Errors of the Redis queue a person can act on."""

from __future__ import annotations

from heyim_desktop.core.errors import UserFacingError


class QueueUnavailable(UserFacingError):
    """The Redis queue cannot be reached, refuses the password, or the URL is malformed."""


class BatchFileError(UserFacingError):
    """A batch file line is wrong; the message names the file, the line and the field."""

    def __init__(self, source: str, line: int, field: str, message: str) -> None:
        where = f"{source} line {line}" if line else source
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")
        self.line = line
        self.field = field


class UnknownBatch(UserFacingError):
    """No batch with this id is on the queue (never submitted, expired, or the server lost its data)."""


class MalformedRecord(UserFacingError, ValueError):
    """A record or result in Redis is not what HeyIm writes (damaged, or written by someone else)."""


class PoisonMessage(Exception):
    """A queue message no attempt can ever process (not one HeyIm sends): dead-lettered at once."""
