"""Dramatiq on Redis: the broker, the render actor's name and queue, and sending a job.

A message carries one HeyIm job id (JSON, no pickle); the job's request lives in the job
record. Dramatiq keeps a fetched message in its worker's ack set until the actor returns;
workers heartbeat on every poll, and a live worker moves the messages of a worker silent
for ``dead_after_s`` back to the queue (at-least-once delivery). Only actors the worker
declares can be called, so a message cannot make a worker run arbitrary code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

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


def make_broker(client: "redis.Redis", *, dead_after_s: float = DEFAULT_DEAD_AFTER_S,
                job_timeout_s: float = DEFAULT_JOB_TIMEOUT_S) -> "RedisBroker":
    from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
    from dramatiq.middleware import CurrentMessage, Retries, ShutdownNotifications, TimeLimit

    middleware = [
        TimeLimit(time_limit=int(job_timeout_s * 1000), interval=1000),
        ShutdownNotifications(),
        # The actor bounds retries itself (it knows user errors from bugs); every raise it
        # lets through is meant to be retried, after a short backoff.
        # max_retries=None (no cap) is what Dramatiq documents; its annotation says int.
        Retries(max_retries=None, min_backoff=1000, max_backoff=60_000,  # type: ignore[arg-type]
                retry_when=lambda retries, exc: True),
        CurrentMessage(),
    ]
    broker = RedisBroker(  # type: ignore[no-untyped-call]  # dramatiq's __init__ is unannotated
        client=client,
        namespace=NAMESPACE,
        middleware=middleware,
        heartbeat_timeout=int(dead_after_s * 1000),
        # Dramatiq checks for dead workers on a random 0.1% of polls by default; a render
        # farm has few workers and few polls, so check on every poll (two cheap range reads).
        maintenance_chance=MAINTENANCE_SCALE,
    )
    broker.declare_queue(QUEUE_NAME)
    return broker


def declare_render_actor(broker: "RedisBroker", fn: Callable[[str], None]) -> "dramatiq.Actor[Any, Any]":
    import dramatiq

    return dramatiq.Actor(fn, broker=broker, actor_name=ACTOR_NAME, queue_name=QUEUE_NAME, priority=0, options={})


def send_job(broker: "RedisBroker", job_id: str) -> None:
    from dramatiq import Message

    broker.enqueue(Message(queue_name=QUEUE_NAME, actor_name=ACTOR_NAME, args=(job_id,), kwargs={}, options={}))


def retries_so_far() -> int:
    """How many times Dramatiq has already retried the message being processed."""
    from dramatiq.middleware import CurrentMessage

    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0
