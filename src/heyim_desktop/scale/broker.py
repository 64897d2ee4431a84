"""Dramatiq on Redis: the broker, the render actor's name and queue, and sending a job.

A message carries one HeyIm job id (JSON, no pickle); the job's request lives in the job
record. Dramatiq keeps a fetched message in its worker's ack set until the actor returns;
workers heartbeat on every poll, and a live worker moves the messages of a worker silent
for ``dead_after_s`` back to the queue (at-least-once delivery). Only actors the worker
declares can be called, so a message cannot make a worker run arbitrary code.

Poison: a message that does not decode is dead-lettered when it is fetched (Dramatiq alone
would crash its consumer on it and leave it in the ack set); one with the wrong arguments
raises :class:`PoisonMessage`, which is never retried. Both land in Dramatiq's dead-letter
set (``heyim-render.XQ``) with the reason in the worker's log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from heyim_desktop.scale.errors import PoisonMessage

if TYPE_CHECKING:
    import dramatiq
    import redis
    from dramatiq.brokers.redis import RedisBroker

NAMESPACE = "heyim-dq"
QUEUE_NAME = "heyim-render"
ACTOR_NAME = "heyim_render"
#: A worker whose heartbeat is older than this is taken for dead and its job is retried elsewhere.
DEFAULT_DEAD_AFTER_S = 60.0
#: The longest one job may run before it is interrupted (and retried, a bounded number of times).
DEFAULT_JOB_TIMEOUT_S = 3600.0
#: Retries after an unexpected error (bugs, out of memory) before a job is marked failed.
MAX_ERROR_RETRIES = 2
#: Times a job may be started (workers dying under it) before it is marked failed.
MAX_ATTEMPTS = 4

log = logging.getLogger(__name__)


def _retry_when(retries: int, exc: BaseException) -> bool:
    return not isinstance(exc, PoisonMessage)


def _broker_class() -> type:
    from dramatiq import Message
    from dramatiq.brokers.redis import RedisBroker

    class HeyImRedisBroker(RedisBroker):
        """Dramatiq's Redis broker, dead-lettering messages that do not decode when fetched."""

        def do_fetch(self, queue_name: str, prefetch: int) -> list[Any]:
            fetched = list(self._dispatch("fetch")(queue_name, prefetch))  # type: ignore[no-untyped-call]
            good: list[Any] = []
            bad: list[Any] = []
            for data in fetched:
                if data is None:
                    good.append(data)
                    continue
                try:
                    Message.decode(data)
                except Exception:  # noqa: BLE001 - DecodeError, or fields Message does not take
                    bad.append(data)
                    continue
                good.append(data)
            if bad:
                self._dead_letter_undecodable(queue_name, bad)
            return good

        def _dead_letter_undecodable(self, queue_name: str, bad: list[Any]) -> None:
            acks = f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"
            ids = [m for m in self.client.smembers(acks)]
            if not ids:
                return
            values = self.client.hmget(f"{self.namespace}:{queue_name}.msgs", ids)
            for message_id, value in zip(ids, values):
                if value is not None and value in bad:
                    mid = message_id.decode("utf-8", "replace") if isinstance(message_id, bytes) else str(message_id)
                    log.error("dead-lettering queue message %s: it is not a message HeyIm sends (cannot be decoded)", mid)
                    self._dispatch("nack")(queue_name, mid)  # type: ignore[no-untyped-call]

    return HeyImRedisBroker


def make_broker(client: "redis.Redis", *, dead_after_s: float = DEFAULT_DEAD_AFTER_S,
                job_timeout_s: float = DEFAULT_JOB_TIMEOUT_S) -> "RedisBroker":
    from dramatiq.brokers.redis import MAINTENANCE_SCALE
    from dramatiq.middleware import CurrentMessage, Retries, ShutdownNotifications, TimeLimit

    middleware = [
        TimeLimit(time_limit=int(job_timeout_s * 1000), interval=1000),
        ShutdownNotifications(),
        # The actor bounds retries itself (it knows user errors from bugs); every raise it
        # lets through is meant to be retried, after a short backoff, except a poison message.
        # max_retries=None (no cap) is what Dramatiq documents; its annotation says int.
        Retries(max_retries=None, min_backoff=1000, max_backoff=60_000,  # type: ignore[arg-type]
                retry_when=_retry_when),
        CurrentMessage(),
    ]
    broker = _broker_class()(
        client=client,
        namespace=NAMESPACE,
        middleware=middleware,
        heartbeat_timeout=int(dead_after_s * 1000),
        # Dramatiq checks for dead workers on a random 0.1% of polls by default; a render
        # farm has few workers and few polls, so check on every poll (two cheap range reads).
        maintenance_chance=MAINTENANCE_SCALE,
    )
    broker.declare_queue(QUEUE_NAME)
    return broker  # type: ignore[no-any-return]


def declare_render_actor(broker: "RedisBroker", fn: Callable[..., None]) -> "dramatiq.Actor[Any, Any]":
    import dramatiq

    return dramatiq.Actor(fn, broker=broker, actor_name=ACTOR_NAME, queue_name=QUEUE_NAME, priority=0, options={})


def send_job(broker: "RedisBroker", job_id: str) -> str:
    """Queue one message for ``job_id``; return its Redis message id."""
    from dramatiq import Message

    sent = broker.enqueue(Message(queue_name=QUEUE_NAME, actor_name=ACTOR_NAME, args=(job_id,), kwargs={}, options={}))
    return str(sent.options.get("redis_message_id", ""))


def current_message_id() -> str:
    """The Redis id of the message being processed ("" outside an actor)."""
    from dramatiq.middleware import CurrentMessage

    message = CurrentMessage.get_current_message()
    return str(message.options.get("redis_message_id", "")) if message is not None else ""


def message_alive(client: "redis.Redis", message_id: str) -> bool:
    """Whether a message is still somewhere Dramatiq will deliver it from.

    That is: in the queue (or delay queue) list, or held in the ack set of a Dramatiq
    worker that is in the heartbeat set (a dead one's acks go back on its next check).
    A message in none of those is lost for good, whatever its data hash says.
    """
    if not message_id:
        return False
    heartbeats = f"{NAMESPACE}:__heartbeats__"
    for queue in (QUEUE_NAME, f"{QUEUE_NAME}.DQ"):
        if not client.hexists(f"{NAMESPACE}:{queue}.msgs", message_id):
            continue
        if client.lpos(f"{NAMESPACE}:{queue}", message_id) is not None:
            return True
        prefix = f"{NAMESPACE}:__acks__."
        for key in client.scan_iter(match=f"{prefix}*.{queue}", count=500):
            name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            owner = name[len(prefix):-(len(queue) + 1)]
            if client.sismember(name, message_id) and client.zscore(heartbeats, owner) is not None:
                return True
    return False


def retries_so_far() -> int:
    """How many times Dramatiq has already retried the message being processed."""
    from dramatiq.middleware import CurrentMessage

    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0
