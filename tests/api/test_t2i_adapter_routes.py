"""T2I-Adapters through the A1111 ControlNet extension's API: listed, and run from alwayson_scripts."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

from api_helpers import TOKEN, Running, call, decode_png
from heyim_desktop.api import ApiServer, ModelChoice, fixed_catalog
from heyim_desktop.core.host import EngineHost, WorkerThread
from heyim_desktop.core.jobs import JobQueue

SMALL = {"steps": 2, "width": 64, "height": 64, "seed": 9}


def _b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _hint() -> Image.Image:
    rng = np.random.RandomState(3)
    return Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def adapter_api(adapter_sd: Path, tiny_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A server on the adapter-ready tiny SD whose library holds the tiny adapter (found by detection)."""
    import shutil

    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.models.controlnets import ControlNetLibrary
    from heyim_desktop.models.library import ModelLibrary
    from heyim_desktop.store import HistoryStore

    root = tmp_path_factory.mktemp("adapter-lib")
    shutil.copytree(tiny_adapter, root / "models" / "ControlNet" / "t2iadapter_canny_sd15v2")
    store = HistoryStore.open(root=tmp_path_factory.mktemp("adapter-history"))

    def sink(result: Any, job: Any) -> tuple[object, ...]:
        return tuple(store.save_result(result, job))

    queue = JobQueue()
    host = EngineHost(lambda ref: load_engine(ref, device="cpu"), default_model=str(adapter_sd))
    worker = WorkerThread(queue, host, sink)
    worker.start()
    server = ApiServer(queue, token=TOKEN, port=0, engine_host=host, default_model=str(adapter_sd),
                       models=fixed_catalog(ModelChoice("adapter-sd", str(adapter_sd), str(adapter_sd))))
    library = ControlNetLibrary(ModelLibrary([root], include_demo=False, hf_cache=False))
    server.context.controlnets = library.ready  # type: ignore[attr-defined]
    server.start()
    yield Running(server, queue, host, store)
    server.stop()
    worker.stop(timeout=30)
    store.close()


def test_model_list_and_control_types_include_the_adapter(adapter_api: Running) -> None:
    titles = call(adapter_api.port, "GET", "/controlnet/model_list").json["model_list"]
    assert len(titles) == 1 and titles[0].startswith("t2iadapter_canny_sd15v2 [")
    types = call(adapter_api.port, "GET", "/controlnet/control_types").json["control_types"]
    assert types["T2I-Adapter"]["model_list"] == ["None", titles[0]]
    assert types["T2I-Adapter"]["module_list"] == ["none", "t2ia_color_grid"]


@pytest.mark.parametrize("route", ["txt2img", "img2img"])
def test_generate_with_an_adapter_unit(adapter_api: Running, route: str) -> None:
    port = adapter_api.port
    title = call(port, "GET", "/controlnet/model_list").json["model_list"][0]
    body: dict[str, Any] = {"prompt": "a fox", **SMALL}
    if route == "img2img":
        body.update(init_images=[_b64(Image.new("RGB", (64, 64), (90, 120, 40)))], denoising_strength=0.8)
    plain = call(port, "POST", f"/sdapi/v1/{route}", body=body)
    unit = {"enabled": True, "image": _b64(_hint()), "module": "none", "model": title, "weight": 0.7,
            "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": 0}
    guided = call(port, "POST", f"/sdapi/v1/{route}", body={**body, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert plain.status == guided.status == 200, guided.body
    assert decode_png(plain.json["images"][0]).tobytes() != decode_png(guided.json["images"][0]).tobytes()
    infotext = json.loads(guided.json["info"])["infotexts"][0]
    assert 'ControlNet 0: "Module: none, Model: t2iadapter_canny_sd15v2 [' in infotext and "Weight: 0.7" in infotext
    soft = call(port, "POST", f"/sdapi/v1/{route}", body={**body, "alwayson_scripts": {"controlnet": {"args": [
        dict(unit, control_mode="My prompt is more important")]}}})
    assert soft.status == 200 and "Control Mode: My prompt is more important" in json.loads(soft.json["info"])["infotexts"][0]
    assert soft.json["images"][0] != guided.json["images"][0]
