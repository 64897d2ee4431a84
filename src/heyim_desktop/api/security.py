"""The API's front door: token, Host allowlist, Origin policy, JSON-only POSTs, 10 MB bodies.

A POST without a body (no Content-Length, or 0, and not chunked) needs no Content-Type on the
routes AUTOMATIC1111 takes without one (:data:`BODYLESS_POSTS`): its clients send
``POST /sdapi/v1/interrupt`` that way.

One pure ASGI middleware does every check before a route runs, so no route can forget one
(the 404 for an unknown path also needs the token). Order matters: Host first (DNS
rebinding), then Origin, then the token, then the request's shape and size.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hmac
import json
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, MutableMapping

from heyim_desktop.core.errors import StorageError
from heyim_desktop.core.storage import new_temp_file, writing

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_ENV = "HEYIM_API_TOKEN"
TOKEN_FILE = "api-token"
MAX_BODY_BYTES = 10 * 1024 * 1024
#: Pages served from this machine may call the API from a browser; no other origin may.
LOCAL_ORIGIN_RE = r"^http://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$"
_LOCAL_ORIGIN = re.compile(LOCAL_ORIGIN_RE)
PUBLIC_PATHS = frozenset({"/health"})
#: POST routes AUTOMATIC1111 accepts without a body (and so without a Content-Type).
BODYLESS_POSTS = frozenset({
    "/sdapi/v1/interrupt", "/sdapi/v1/skip", "/sdapi/v1/refresh-checkpoints", "/sdapi/v1/refresh-vae",
    "/sdapi/v1/refresh-loras", "/sdapi/v1/refresh-embeddings",
})
#: AUTOMATIC1111's --api-auth uses HTTP basic auth; its clients send the token as the password.
BASIC_AUTH_PREFIX = "/sdapi/"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK)
#: What a token file holds: one line of URL-safe text (ours are 43 characters; users may set their own).
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,4096}")


def token_file(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def resolve_token(flag: str | None, data_dir: Path) -> tuple[str, str]:
    """The token and where it came from: the flag, the environment, or the per-install file.

    The file is created on first use with a random token, readable by the owner only, and
    written atomically: it is whole or absent. A damaged one (empty, not text) is replaced.
    """
    if flag:
        return flag, "--token"
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env, TOKEN_ENV
    path = token_file(data_dir)
    for _attempt in range(3):
        text = _read_token(path)
        if text:
            if os.name == "posix" and path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)  # someone loosened it: the token is a password
            return text, str(path)
        # Read back rather than trust our own: another process may have written its token meanwhile.
        _write_token(path, secrets.token_urlsafe(32), replace=path.exists())
    raise StorageError(f"Cannot create the API token file {path}: it keeps changing; is another program writing it?")


def _read_token(path: Path) -> str:
    """The token in ``path``, or "" when there is none or the file is damaged (then it is replaced)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise StorageError(f"Cannot read the API token file {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        text = ""
    if not _TOKEN_RE.fullmatch(text):
        log.warning("the API token file %s is damaged (%d bytes); writing a new token", path, len(raw))
        return ""
    return text


def _write_token(path: Path, token: str, *, replace: bool) -> bool:
    """Write a new token file atomically. Returns False if another process created one meanwhile."""
    with writing(path.parent, "the API token"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = new_temp_file(path.parent, ".api-token", 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(token + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            if replace:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)  # two processes starting at once must not both write different tokens
                except FileExistsError:
                    return False
                except OSError as exc:
                    if exc.errno not in _NO_HARD_LINKS or path.exists():
                        raise
                    os.replace(tmp, path)  # a file system without hard links: a narrow race, read back below
        finally:
            tmp.unlink(missing_ok=True)
    log.info("%s the API token in %s", "replaced" if replace else "created", path)
    return True


def allowed_hosts(port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """Host header values accepted: the loopback names with the port, plus explicit extras."""
    names = list(LOOPBACK_NAMES) + [h for h in extra if h]
    hosts = set()
    for name in names:
        name = name.lower()
        if ":" in name and not name.startswith("["):
            name = f"[{name}]"  # a bare IPv6 address
        hosts.add(f"{name}:{port}")
        if port == 80:
            hosts.add(name)
    return frozenset(hosts)


def is_local_origin(origin: str) -> bool:
    return bool(_LOCAL_ORIGIN.match(origin))


def error_body(message: str, field: str | None = None) -> bytes:
    """The one error shape of every route: HeyIm's ``success/error`` plus FastAPI's ``detail``."""
    return json.dumps({"success": False, "error": message, "detail": message, "field": field}).encode()


async def send_error(send: Send, status: int, message: str, field: str | None = None,
                     headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = error_body(message, field)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware enforcing the API's security rules (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, token: str, hosts: frozenset[str], max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self._token = token.encode()
        self.hosts = hosts
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path: str = scope["path"]
        method: str = scope["method"]
        host = headers.get("host", "").lower()
        if host not in self.hosts:
            log.warning("refused a request with Host %r (allowed: %s)", host, ", ".join(sorted(self.hosts)))
            await send_error(send, 400, f"Host {host!r} is not allowed: use 127.0.0.1 or localhost", "Host")
            return
        origin = headers.get("origin")
        if origin is not None and not is_local_origin(origin):
            await send_error(send, 403, f"Origin {origin!r} is not allowed: only pages on this machine may call the API", "Origin")
            return
        if method == "OPTIONS" and origin and "access-control-request-method" in headers:
            await self.app(scope, receive, send)  # CORS preflight: browsers send no credentials
            return
        if path not in PUBLIC_PATHS and not self._authorised(headers.get("authorization", ""), path):
            challenge = b'Bearer realm="HeyIm"'
            extra = [(b"www-authenticate", challenge)]
            if path.startswith(BASIC_AUTH_PREFIX):
                extra.append((b"www-authenticate", b'Basic realm="HeyIm"'))
            await send_error(send, 401, "Missing or wrong API token (send 'Authorization: Bearer TOKEN')",
                             "Authorization", extra)
            return
        if method == "POST":
            ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            bodyless = headers.get("content-length", "0").strip() == "0" and "transfer-encoding" not in headers
            if bodyless and path in BODYLESS_POSTS:  # what AUTOMATIC1111 clients send to /interrupt and /skip
                await self.app(scope, _replay(b"", receive), send)
                return
            if ctype != "application/json":
                await send_error(send, 415, "POST bodies must be JSON (Content-Type: application/json)", "Content-Type")
                return
            body = await self._read_body(headers, receive, send)
            if body is None:
                return
            await self.app(scope, _replay(body, receive), send)
            return
        await self.app(scope, receive, send)

    def _authorised(self, header: str, path: str) -> bool:
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer":
            return hmac.compare_digest(value.encode(), self._token)
        if scheme == "basic" and path.startswith(BASIC_AUTH_PREFIX):
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                return False
            _user, sep, password = decoded.partition(":")
            return bool(sep) and hmac.compare_digest(password.encode(), self._token)
        return False

    async def _read_body(self, headers: dict[str, str], receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None after answering 413 (by Content-Length, or counting a chunked one)."""
        too_big = f"The request body is larger than {self.max_body // (1024 * 1024)} MB"
        declared = headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_body:
                    await send_error(send, 413, too_big)
                    return None
            except ValueError:
                await send_error(send, 400, "Content-Length is not a number", "Content-Length")
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await send_error(send, 413, too_big)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that yields the already-read body once, then the client's later messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
