"""Servers on 127.0.0.1 for the API tests: one real (tiny model, real history), and fakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from api_helpers import TOKEN, Gate, Running, private_hashes, private_styles, start_fake
from heyim_desktop.api import ApiServer, ModelChoice, fixed_catalog
from heyim_desktop.core.host import EngineHost, WorkerThread
from heyim_desktop.core.jobs import JobQueue


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
    from heyim_desktop.core.lora import NetworkFinder
    from lora_helpers import write_lora

    loras = tmp_path_factory.mktemp("api-loras")
    write_lora(tiny_model, loras / "inkwash.safetensors", seed=4)
    finder = NetworkFinder(lambda name: (loras / f"{name}.safetensors") if (loras / f"{name}.safetensors").is_file() else None)
    server = ApiServer(queue, token=TOKEN, port=0, engine_host=host, default_model=str(tiny_model),
                       models=fixed_catalog(ModelChoice("tiny-sd", str(tiny_model), str(tiny_model))),
                       styles=private_styles("real-styles.csv"), hashes=private_hashes(), networks=finder)
    server.start()
    yield Running(server, queue, host, store)
    server.stop()
    worker.stop(timeout=30)
    store.close()


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
