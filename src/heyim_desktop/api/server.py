"""Serving the API from a background thread: the same object in the app and in `serve`."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from typing import TYPE_CHECKING, Iterable

from heyim_desktop.api.context import ApiContext, DefaultModel, ModelCatalog, fixed_catalog
from heyim_desktop.api.security import MAX_BODY_BYTES, allowed_hosts
from heyim_desktop.core.errors import UserFacingError
from heyim_desktop.core.jobs import JobQueue

if TYPE_CHECKING:
    import uvicorn

    from heyim_desktop.core.host import EngineHost
    from heyim_desktop.core.lora import NetworkFinder
    from heyim_desktop.models.hashes import ModelHashes
    from heyim_desktop.store.styles import StyleBook

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5858


class ApiStartError(UserFacingError):
    """The server cannot listen (port taken, address not on this machine)."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ApiStartError(f"Cannot serve on {host}: {exc.strerror or exc}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if hasattr(socket, "SO_REUSEADDR") and socket.SO_REUSEADDR:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        what = "the port is in use (another HeyIm or program?)" if exc.errno in (48, 98, 10048) else (exc.strerror or str(exc))
        raise ApiStartError(f"Cannot serve on {host}:{port}: {what}") from None
    sock.set_inheritable(False)
    return sock


class ApiServer:
    """The local HTTP API on a background thread. ``start()`` returns once it listens.

    It only submits jobs to ``queue``; whoever owns the queue's worker (the app's QThread, or
    :class:`~heyim_desktop.core.host.WorkerThread` in ``serve``) runs them and saves them.
    ``port=0`` picks a free port (tests); :attr:`port` tells which.
    """

    def __init__(
        self,
        queue: JobQueue,
        *,
        token: str,
        models: ModelCatalog | None = None,
        default_model: DefaultModel = None,
        engine_host: "EngineHost | None" = None,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        extra_hosts: Iterable[str] = (),
        max_body: int = MAX_BODY_BYTES,
        styles: "StyleBook | None" = None,
        hashes: "ModelHashes | None" = None,
        networks: "NetworkFinder | None" = None,
        header_timeout_s: float | None = None,
        body_timeout_s: float | None = None,
        max_connections: int | None = None,
    ) -> None:
        if not token:
            raise ValueError("the API needs a token")
        self.context = ApiContext(queue, models=models or fixed_catalog(), default_model=default_model, host=engine_host,
                                  networks=networks, styles=styles, hashes=hashes)
        self.host = host
        self._requested_port = port
        self._token = token
        self._extra_hosts = list(extra_hosts)
        self._max_body = max_body
        self._header_timeout_s = header_timeout_s
        self._body_timeout_s = body_timeout_s
        self._max_connections = max_connections
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        import uvicorn

        from heyim_desktop.api import front
        from heyim_desktop.api.app import create_asgi

        if self.running:
            return
        self.context.stopping.clear()
        if not is_loopback(self.host):
            log.warning("the API listens on %s: other machines on the network can reach it (token required)", self.host)
            if self.host in ("0.0.0.0", "::", "[::]") and not self._extra_hosts:
                log.warning("other machines must call it by a name or address given with --allow-host "
                            "(Host headers are checked against DNS rebinding)")
        sock = _bind(self.host, self._requested_port)
        self.port = sock.getsockname()[1]
        extra = list(self._extra_hosts)
        if self.host not in ("0.0.0.0", "::", "[::]") and not is_loopback(self.host):
            extra.append(self.host)
        asgi = create_asgi(self.context, token=self._token, hosts=allowed_hosts(self.port, extra), max_body=self._max_body)
        protocol = front.protocol_class(
            header_timeout_s=self._header_timeout_s or front.HEADER_TIMEOUT_S,
            body_timeout_s=self._body_timeout_s or front.BODY_TIMEOUT_S,
            max_connections=front.connection_cap(self._max_connections or front.MAX_CONNECTIONS),
        )
        config = uvicorn.Config(
            asgi, host=self.host, port=self.port, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=3, server_header=False, http=protocol, **front.uvicorn_limits(),
        )
        server = uvicorn.Server(config)
        started = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failed.append(exc)
                log.exception("the API server stopped with an error")
            finally:
                started.set()
                sock.close()

        self._server = server
        self._thread = threading.Thread(target=run, name="heyim-api", daemon=True)
        self._thread.start()
        # uvicorn sets `started` after its startup; poll the flag without sleeping in a busy loop.
        while not started.wait(0.02):
            if server.started:
                break
            timeout -= 0.02
            if timeout <= 0:
                self.stop()
                raise ApiStartError("The API server did not start in time")
        if not server.started:
            raise ApiStartError(f"The API server could not start: {failed[0] if failed else 'unknown error'}")
        log.info("API listening on %s", self.url)

    def stop(self, timeout: float = 10.0) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        cancelled = self.context.cancel_waiting()  # their clients get an answer at once, then the socket closes
        if cancelled:
            log.info("cancelled %d API job(s) on stop", cancelled)
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._server, self._thread = None, None
        log.info("API stopped")
