"""The wire format between the parent and the engine child: framed JSON plus raw byte blobs.

One message is ``<u32 JSON length><u32 blob count>``, the UTF-8 JSON object, then per blob
``<u64 length>`` and its bytes. JSON carries everything but pixels; blobs carry PNG input
images and raw RGB previews. Both sides only ever decode JSON and bytes: no pickles.
"""

from __future__ import annotations

import json
import struct
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, BinaryIO

#: Bumped when a message changes shape; the child says its version in its first message.
PROTOCOL_VERSION = 1

_HEADER = struct.Struct("<II")
_BLOB = struct.Struct("<Q")
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_BLOB_BYTES = 2 * 1024 * 1024 * 1024
MAX_BLOBS = 64


class ProtocolError(Exception):
    """The other side sent something that is not a well-formed message."""


@dataclass(frozen=True)
class Message:
    data: dict[str, Any]
    blobs: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def kind(self) -> str:
        return str(self.data.get("ev") or self.data.get("op") or "")


class MessageWriter:
    """Writes whole messages; several threads may send (the lock keeps frames whole)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, data: dict[str, Any], blobs: tuple[bytes | memoryview, ...] = ()) -> None:
        payload = json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")
        head = [_HEADER.pack(len(payload), len(blobs)), payload]
        with self._lock:
            self._stream.write(b"".join(head))
            for blob in blobs:
                self._stream.write(_BLOB.pack(len(blob)))
                self._stream.write(blob)
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            try:
                self._stream.close()
            except OSError:
                pass


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    """``n`` bytes, or None at a clean end of stream before the first byte."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        chunk = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not chunk:
            if got == 0:
                return None
            raise ProtocolError(f"stream ended inside a message ({got} of {n} bytes)")
        got += chunk
    return bytes(buf)


def read_message(stream: BinaryIO) -> Message | None:
    """The next message, or None when the other side closed the stream."""
    head = _read_exactly(stream, _HEADER.size)
    if head is None:
        return None
    json_len, blob_count = _HEADER.unpack(head)
    if json_len > MAX_JSON_BYTES or blob_count > MAX_BLOBS:
        raise ProtocolError(f"message header out of range ({json_len} bytes, {blob_count} blobs)")
    payload = _read_exactly(stream, json_len) if json_len else b""
    if payload is None:
        raise ProtocolError("stream ended inside a message")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"message is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("message is not a JSON object")
    blobs = []
    for _ in range(blob_count):
        raw = _read_exactly(stream, _BLOB.size)
        if raw is None:
            raise ProtocolError("stream ended inside a message")
        (size,) = _BLOB.unpack(raw)
        if size > MAX_BLOB_BYTES:
            raise ProtocolError(f"blob of {size} bytes is too large")
        blob = _read_exactly(stream, size) if size else b""
        if blob is None:
            raise ProtocolError("stream ended inside a message")
        blobs.append(blob)
    return Message(data, tuple(blobs))


# -- errors as data ----------------------------------------------------------------------

def error_to_data(exc: BaseException) -> dict[str, Any]:
    """A failure as plain data: user-facing errors by class name, anything else as a bug."""
    from heyim_desktop.core import errors

    for cls in type(exc).__mro__:
        if cls.__module__ == errors.__name__ and issubclass(cls, errors.UserFacingError):
            out: dict[str, Any] = {"kind": cls.__name__, "message": str(exc)}
            if isinstance(exc, errors.InvalidRequest):
                out.update(field=exc.field, detail=exc.detail)
            return out
    return {"kind": "bug", "type": type(exc).__name__, "message": str(exc)}


class EngineBug(Exception):
    """An unexpected error inside the engine process (its traceback is in the log)."""


def error_from_data(data: Any) -> Exception:
    """The exception the parent raises for a child's failure (only known classes are made)."""
    from heyim_desktop.core import errors

    if not isinstance(data, dict):
        return EngineBug("the engine reported a failure without details")
    kind, message = str(data.get("kind", "")), str(data.get("message", ""))
    if kind == "InvalidRequest":
        return errors.InvalidRequest(str(data.get("field", "request")), str(data.get("detail", message)))
    cls = getattr(errors, kind, None) if kind != "bug" else None
    if isinstance(cls, type) and issubclass(cls, errors.UserFacingError):
        return cls(message)
    return EngineBug(f"{data.get('type', 'Error')}: {message}")


# -- how a child ended ---------------------------------------------------------------------------

def describe_exit(returncode: int) -> str:
    """How a child ended, in words a person can act on."""
    if returncode < 0:
        import signal

        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        if number == getattr(signal, "SIGKILL", 9):
            return f"killed by signal {number}, likely out of memory"
        if name in ("SIGSEGV", "SIGBUS", "SIGILL", "SIGABRT", "SIGFPE"):
            return f"killed by signal {number} ({name}), a crash in native code"
        return f"killed by signal {number} ({name})"
    if sys.platform == "win32" and returncode > 0xFFFF:
        return f"exited with code 0x{returncode:08X}"
    return f"exited with code {returncode}"
