"""Helpers for the Redis job queue tests: a real redis-server on 127.0.0.1, worker processes, waiting."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=db)


def launch_redis(folder: Path, *extra: str, tls: bool = False) -> RedisServer:
    """Start redis-server on a free 127.0.0.1 port and return once it accepts connections.

    With ``tls`` the port speaks only TLS (pass the certificate options in ``extra``).
    """
    exe = find_redis_server()
    if exe is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run does it)")
    lines: list[str] = []
    for _ in range(3):  # a free port may be taken between the probe and redis binding it
        port = _free_port()
        proc = subprocess.Popen(
            [exe, *(("--port", "0", "--tls-port", str(port)) if tls else ("--port", str(port))), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(folder), "--notify-keyspace-events", "Kgh$", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        for raw in proc.stdout:  # blocks until redis says it is ready (or exits)
            lines.append(raw.decode("utf-8", "replace"))
            if "Ready to accept connections" in lines[-1]:
                break
        if proc.poll() is None:
            import threading

            # Keep draining its output so a full pipe never blocks the server.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return RedisServer(port, proc)
        proc.wait()
    pytest.fail("redis-server did not start:\n" + "".join(lines[-20:]))


def stop_redis(server: RedisServer) -> None:
    server.process.terminate()
    server.process.wait(10)


class Waiter:
    """Waits for a condition on Redis, waking on every change of a ``heyim:`` key (no sleeps)."""

    def __init__(self, client: Any) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("__keyspace@*__:heyim:*")

    def until(self, predicate: Callable[[], Any], timeout: float, what: str, explain: Callable[[], str] = lambda: "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{explain()}")
            self.pubsub.get_message(timeout=min(remaining, 0.5))

    def close(self) -> None:
        self.pubsub.close()


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


@dataclass
class Farm:
    """Starts worker subprocesses; stops them all at the end."""

    data_dir: Path
    folder: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start(self, url: str, name: str, *extra: str, dead_after: float = 3.0) -> WorkerProcess:
        env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", HEYIM_DATA_DIR=str(self.data_dir),
                   HF_HUB_OFFLINE="1")
        env.pop("HEYIM_QUEUE", None)
        log = self.folder / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "heyim_desktop.cli", "worker", "--queue", url, "--id", name,
                 "--dead-after", str(dead_after), *extra],
                stdout=fh, stderr=subprocess.STDOUT, env=env,
            )
        worker = WorkerProcess(name, proc, log)
        self.workers.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- {w.name} (exit {w.process.poll()}):\n{w.output()}" for w in self.workers)

    def stop_all(self) -> None:
        for w in self.workers:
            if w.process.poll() is None:
                w.process.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.process.wait(30)
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait(10)
