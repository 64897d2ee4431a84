"""Servers on 127.0.0.1 for the API tests: one real (tiny model, real history), and fakes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from api_helpers import TOKEN, FakeEngine, Gate
from heyim_desktop.api import ApiServer, ModelChoice, fixed_catalog
from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.host import EngineHost, WorkerThread
from heyim_desktop.core.jobs import JobQueue


@dataclass
class Running:
    server: ApiServer
    queue: JobQueue
    host: EngineHost
    store: Any = None

    @property
    def port(self) -> int:
        return self.server.port


def _history(root: Path) -> tuple[Any, Any]:
    from heyim_desktop.store import HistoryStore

    store = HistoryStore.open(root=root)

    def sink(result: Any, job: Any) -> tuple[object, ...]:
        return tuple(store.save_result(result, job))

    return store, sink


@pytest.fixture(scope="session")
def real_api(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The tiny random model behind the real worker and the real history store."""
    from heyim_desktop.core.loading import load_engine

    store, sink = _history(tmp_path_factory.mktemp("api-history"))
    queue = JobQueue()
    host = EngineHost(lambda ref: load_engine(ref, device="cpu"), default_model=str(tiny_model))
    worker = WorkerThread(queue, host, sink)
    worker.start()
    server = ApiServer(queue, token=TOKEN, port=0, engine_host=host, default_model=str(tiny_model),
                       models=fixed_catalog(ModelChoice("tiny-sd", str(tiny_model), str(tiny_model))))
    server.start()
    yield Running(server, queue, host, store)
    server.stop()
    worker.stop(timeout=30)
    store.close()


def fake_loader(gate: Gate | None = None):  # type: ignore[no-untyped-def]
    def load(ref: str) -> FakeEngine:
        if ref not in ("alpha", "beta"):
            raise ModelError(f"Model not found: {ref}")
        return FakeEngine(ref, gate)

    return load


FAKE_MODELS = fixed_catalog(ModelChoice("Alpha", "alpha"), ModelChoice("Beta", "beta", "/models/beta"))


def start_fake(gate: Gate | None = None, **server_kw: Any) -> tuple[Running, WorkerThread]:
    queue = JobQueue()
    host = EngineHost(fake_loader(gate), default_model="alpha")
    saved: list[Any] = []
    worker = WorkerThread(queue, host, lambda result, job: tuple(saved.append(result) or [f"fake-{job.id}"]))
    worker.start()
    kw: dict[str, Any] = dict(token=TOKEN, port=0, engine_host=host, default_model="alpha", models=FAKE_MODELS)
    kw.update(server_kw)
    server = ApiServer(queue, **kw)
    server.start()
    return Running(server, queue, host, saved), worker


@pytest.fixture()
def fake_api() -> Iterator[Running]:
    running, worker = start_fake()
    yield running
    running.server.stop()
    worker.stop(timeout=10)


@pytest.fixture()
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release.set()


@pytest.fixture()
def gated_api(gate: Gate) -> Iterator[Running]:
    running, worker = start_fake(gate)
    yield running
    gate.release.set()
    running.server.stop()
    worker.stop(timeout=10)
