"""SDXL models through the local API: listed by the model library, generated with a refiner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from api_helpers import TOKEN, Running, call, decode_png
from heyim_desktop.api import ApiServer, library_catalog
from heyim_desktop.core.host import EngineHost, WorkerThread
from heyim_desktop.core.jobs import JobQueue
from heyim_desktop.models.library import ModelLibrary


@pytest.fixture(scope="module")
def sdxl_api(tiny_sdxl: Path, tiny_sdxl_refiner: Path, tiny_sdxl_single_file: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    from heyim_desktop.core.loading import load_engine

    folder = tmp_path_factory.mktemp("sdxl-library")
    shutil.copytree(tiny_sdxl, folder / "tiny-xl")
    shutil.copytree(tiny_sdxl_refiner, folder / "tiny-xl-refiner")
    shutil.copy(tiny_sdxl_single_file, folder / "tiny-xl-file.safetensors")
    library = ModelLibrary([folder], include_demo=False, hf_cache=False)
    queue = JobQueue()
    host = EngineHost(lambda ref: load_engine(ref, device="cpu"), default_model=str(folder / "tiny-xl"))
    worker = WorkerThread(queue, host, None)
    worker.start()
    server = ApiServer(queue, token=TOKEN, port=0, engine_host=host, default_model=str(folder / "tiny-xl"),
                       models=library_catalog(library))
    server.start()
    yield Running(server, queue, host)
    server.stop()
    worker.stop(timeout=30)


def test_model_lists_show_sdxl_models_and_refiners(data_dir: Path, sdxl_api: Running) -> None:
    models = {m["name"]: m for m in call(sdxl_api.port, "GET", "/api/models").json["models"]}
    assert models["tiny-xl"]["base"] == "SDXL" and models["tiny-xl-file"]["base"] == "SDXL"
    assert models["tiny-xl-refiner"]["base"] == "SDXL-refiner"
    titles = {m["title"] for m in call(sdxl_api.port, "GET", "/sdapi/v1/sd-models").json}
    assert {"tiny-xl", "tiny-xl-file", "tiny-xl-refiner"} <= titles


def test_a1111_txt2img_on_a_single_file_sdxl_with_the_refiner(data_dir: Path, sdxl_api: Running) -> None:
    body = {"prompt": "a red fox", "steps": 4, "width": 64, "height": 64, "seed": 9, "sampler_name": "Euler a",
            "override_settings": {"sd_model_checkpoint": "tiny-xl-file"},
            "refiner_checkpoint": "tiny-xl-refiner", "refiner_switch_at": 0.5}
    reply = call(sdxl_api.port, "POST", "/sdapi/v1/txt2img", body=body)
    assert reply.status == 200, reply.body
    assert decode_png(reply.json["images"][0]).size == (64, 64)
    info = json.loads(reply.json["info"])
    assert "Refiner: tiny-xl-refiner, Refiner switch at: 0.5" in info["infotexts"][0]
    assert sdxl_api.host.refiner_ref is not None and sdxl_api.host.refiner_ref.endswith("tiny-xl-refiner")


def test_heyim_generate_with_a_refiner_and_bad_refiner_names(data_dir: Path, sdxl_api: Running) -> None:
    body = {"prompt": "a cat", "steps": 3, "width": 64, "height": 64, "seed": 1, "model": "tiny-xl",
            "refiner": "tiny-xl-refiner", "refinerSwitch": 0.7}
    reply = call(sdxl_api.port, "POST", "/api/generate", body=body)
    assert reply.status == 200, reply.body
    assert reply.json["metadata"]["model"] == "tiny-xl"
    bad = call(sdxl_api.port, "POST", "/api/generate", body=dict(body, refiner="nope"))
    assert bad.status == 422 and "refiner: unknown model 'nope'" in bad.json["error"]
    bad = call(sdxl_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "x", "refiner_checkpoint": "nope"})
    assert bad.status == 422 and "refiner_checkpoint" in bad.body.decode()
