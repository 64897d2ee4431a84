"""A few-step model behind the real API: its recommended settings fill what a client leaves out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from api_helpers import TOKEN, Running, call, private_hashes, private_styles
from heyim_desktop.api import ApiServer, ModelChoice, fixed_catalog
from heyim_desktop.core.host import EngineHost, WorkerThread
from heyim_desktop.core.jobs import JobQueue


@pytest.fixture(scope="module")
def turbo_api(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.store import HistoryStore

    turbo = tmp_path_factory.mktemp("turbo") / "sd-turbo"  # SD-Turbo by name: 1 step, guidance 0, Euler a
    shutil.copytree(tiny_model, turbo)
    store = HistoryStore.open(root=tmp_path_factory.mktemp("turbo-history"))
    queue = JobQueue()
    host = EngineHost(lambda ref: load_engine(ref, device="cpu"), default_model=str(turbo))
    worker = WorkerThread(queue, host, lambda result, job: tuple(store.save_result(result, job)))
    worker.start()
    server = ApiServer(queue, token=TOKEN, port=0, engine_host=host, default_model=str(turbo),
                       models=fixed_catalog(ModelChoice("sd-turbo", str(turbo), str(turbo))),
                       styles=private_styles("turbo-styles.csv"), hashes=private_hashes())
    server.start()
    yield Running(server, queue, host, store)
    server.stop()
    worker.stop(timeout=30)
    store.close()


def test_generate_route_applies_what_the_client_left_out(turbo_api: Running) -> None:
    reply = call(turbo_api.port, "POST", "/api/generate", body={"prompt": "a fox", "seed": 1, "width": 64, "height": 64})
    assert reply.status == 200, reply.body
    meta = reply.json["metadata"]
    assert (meta["steps"], meta["cfgScale"], meta["scheduler"]) == (1, 0.0, "Euler a")
    assert any("recommended settings: 1 step, guidance 0, Euler a" in w for w in meta["warnings"]), meta["warnings"]
    reply = call(turbo_api.port, "POST", "/api/generate",
                 body={"prompt": "a fox", "seed": 1, "width": 64, "height": 64, "steps": 2, "scheduler": "DDIM"})
    meta = reply.json["metadata"]
    assert (meta["steps"], meta["cfgScale"], meta["scheduler"]) == (2, 0.0, "DDIM")  # only guidance was left out
    assert any("guidance 0" in w and "steps, cfgScale, scheduler" in w for w in meta["warnings"]), meta["warnings"]


def test_a1111_txt2img_applies_them_and_says_so_in_info(turbo_api: Running) -> None:
    reply = call(turbo_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "a fox", "seed": 2, "width": 64, "height": 64})
    assert reply.status == 200, reply.body
    info = json.loads(reply.json["info"])
    assert (info["steps"], info["cfg_scale"], info["sampler_name"]) == (1, 0.0, "Euler a")
    assert any("recommended settings" in w and "sampler_name" in w for w in info["warnings"]), info["warnings"]
    reply = call(turbo_api.port, "POST", "/sdapi/v1/txt2img", body={
        "prompt": "a fox", "seed": 2, "width": 64, "height": 64, "steps": 2, "cfg_scale": 3, "sampler_name": "Euler"})
    info = json.loads(reply.json["info"])
    assert (info["steps"], info["cfg_scale"], info["sampler_name"]) == (2, 3.0, "Euler")
    assert not any("recommended" in w for w in info["warnings"])
