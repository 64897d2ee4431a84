"""The connection front: slow or idle sockets are closed, and open sockets are capped.

uvicorn's own settings bound idle keep-alive connections (``timeout_keep_alive``) and the
size of an unfinished request head (``h11_max_incomplete_event_size``), but not how long a
client may take to send its head or body: a client trickling one byte every few seconds
keeps a socket (and a file descriptor) forever. :func:`protocol_class` returns uvicorn's h11
protocol with

* a deadline for the request head (``header_timeout_s`` from the connection's start, or from
  the end of the previous response on a kept-alive connection);
* a deadline for the body (``body_timeout_s`` from the end of the head);
* a cap on open connections (``max_connections``, kept well under the process's file
  descriptor limit): a new connection over the cap closes the oldest one that has not sent
  a whole request yet (what slow clients hold), or, when every connection is busy with a
  request, is answered 503 and closed. So ``/health`` and real clients still get in.

A socket past a deadline gets a 408 when nothing of its request reached the app, and is
closed; a request whose body stalls sees ``http.disconnect``, so its memory is freed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 200
#: File descriptors left for everything else (the model, the history, logs) under the cap.
FD_RESERVE = 64

_TIMEOUT_BODY = b'{"success": false, "error": "request timed out", "detail": "request timed out", "field": null}'
_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY)
_BUSY_503 = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
             b"retry-after: 1\r\ncontent-length: 0\r\n\r\n")


def connection_cap(wanted: int = MAX_CONNECTIONS) -> int:
    """``wanted``, lowered to fit the soft file-descriptor limit (with a reserve)."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return wanted
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return wanted
    return max(8, min(wanted, int(soft) - FD_RESERVE))


def protocol_class(*, header_timeout_s: float = HEADER_TIMEOUT_S, body_timeout_s: float = BODY_TIMEOUT_S,
                   max_connections: int = MAX_CONNECTIONS) -> type:
    """uvicorn's h11 protocol with read deadlines and a connection cap (see the module docstring)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._deadline: asyncio.TimerHandle | None = None
            self._opened = time.monotonic()
            self._reading: str | None = "head"
            self._cycles = 0
            super().connection_made(transport)
            if len(self.connections) > max_connections and not self._make_room():
                log.warning("API: %d connections open (at most %d), every one busy: refusing a new one",
                            len(self.connections) - 1, max_connections)
                transport.write(_BUSY_503)
                transport.close()
                return
            self._arm("head", header_timeout_s)

        def _make_room(self) -> bool:
            idle: list[GuardedH11Protocol] = [
                c for c in self.connections if isinstance(c, GuardedH11Protocol) and c is not self
                and c._reading == "head" and not c.transport.is_closing()]
            if not idle:
                return False
            oldest = min(idle, key=lambda c: c._opened)
            log.info("API: at the connection cap (%d); closing the oldest connection still sending its request",
                     max_connections)
            oldest._timed_out()
            return True

        def _arm(self, what: str, seconds: float) -> None:
            self._disarm()
            self._reading = what
            self._deadline = self.loop.call_later(seconds, self._timed_out)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _timed_out(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            log.info("API: closing a connection that took too long to send its request %s", self._reading)
            if self._reading == "head" and (self.cycle is None or self.cycle.response_complete):
                self.transport.write(_TIMEOUT_408)
            self._reading = None
            self.transport.close()
            # Closing does not tell the app at once; a request waiting for its body must hear now.
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True
                self.cycle.message_event.set()

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            cycle = self.cycle
            if cycle is None:
                return
            if self._reading == "head" and cycle is not before:  # a request head arrived
                if cycle.more_body:
                    self._arm("body", body_timeout_s)
                else:
                    self._disarm()
                    self._reading = "app"
            elif self._reading == "body" and not cycle.more_body:  # its body is complete
                self._disarm()
                self._reading = "app"

        def on_response_complete(self) -> None:
            # Armed first: a pipelined next request is handled inside super() and moves the state on.
            self._arm("head", header_timeout_s)
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._reading = None
            super().connection_lost(exc)

    return GuardedH11Protocol


def uvicorn_limits() -> dict[str, Any]:
    """uvicorn settings that go with the front (idle keep-alive, request head size)."""
    return {"timeout_keep_alive": 5, "h11_max_incomplete_event_size": 64 * 1024}
