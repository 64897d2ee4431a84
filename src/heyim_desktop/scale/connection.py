"""Opening the Redis connection from a queue URL, with one-line errors.

``redis://[:password@]host:port/db``, ``rediss://`` for TLS (certificates are verified by
default; redis-py's ``ssl_cert_reqs``/``ssl_ca_certs`` query parameters adjust that) and
``unix:///path/to/redis.sock`` are accepted; passwords are never printed.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from heyim_desktop.scale.errors import QueueUnavailable

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss", "unix")


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and logs)."""
    url = re.sub(r"(://[^:@/]*:)[^@/]*@", r"\1***@", url)
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", url)


def check_url(url: str) -> str:
    url = (url or "").strip()
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise QueueUnavailable(
            f"The queue must be a redis://HOST:6379/0, rediss:// (TLS) or unix:// URL, got {redact(url)!r}."
        )
    return url


def open_redis(url: str, *, connect_timeout: float = 5.0) -> "redis.Redis":
    """A connected client for ``url`` (checked with PING), or :class:`QueueUnavailable`."""
    import redis

    url = check_url(url)
    try:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=60.0,
            socket_keepalive=True,
            health_check_interval=30,
            retry_on_timeout=True,
        )
    except ValueError as exc:
        raise QueueUnavailable(f"The queue URL {redact(url)} is not valid: {exc}.") from None
    try:
        client.ping()
    except redis.AuthenticationError:
        client.close()
        raise QueueUnavailable(f"Redis at {redact(url)} refused the password (check the URL's user and password).") from None
    except redis.ResponseError as exc:  # NOAUTH and friends
        client.close()
        raise QueueUnavailable(f"Redis at {redact(url)} refused the connection: {exc}.") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        client.close()
        reason = str(exc).rstrip(".") or type(exc).__name__
        raise QueueUnavailable(f"Cannot reach the Redis queue at {redact(url)}: {reason}.") from None
    return client
