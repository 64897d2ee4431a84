"""A Z-Image model behind the real worker, history and API: both generate routes work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from api_helpers import TOKEN, Running, call, decode_png, png_b64, private_hashes, private_styles
from heyim_desktop.api import ApiServer, ModelChoice, fixed_catalog
from heyim_desktop.core.host import EngineHost, WorkerThread
from heyim_desktop.core.jobs import JobQueue


@pytest.fixture()
def zimage_api(tiny_zimage: Path, tmp_path: Path) -> Iterator[Running]:
    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.store import HistoryStore

    store = HistoryStore.open(root=tmp_path / "history")
    queue = JobQueue()
    host = EngineHost(lambda ref: load_engine(ref, device="cpu"), default_model=str(tiny_zimage))
    worker = WorkerThread(queue, host, lambda result, job: tuple(store.save_result(result, job)))
    worker.start()
    server = ApiServer(queue, token=TOKEN, port=0, engine_host=host, default_model=str(tiny_zimage),
                       models=fixed_catalog(ModelChoice("tiny-zimage", str(tiny_zimage), str(tiny_zimage))),
                       styles=private_styles("z-styles.csv"), hashes=private_hashes())
    server.start()
    yield Running(server, queue, host, store)
    server.stop()
    worker.stop(timeout=30)
    store.close()


def test_zimage_through_both_generate_routes(zimage_api: Running) -> None:
    reply = call(zimage_api.port, "POST", "/sdapi/v1/txt2img", body={
        "prompt": "a red fox", "negative_prompt": "blurry", "steps": 2, "cfg_scale": 2.5, "seed": 4,
        "width": 64, "height": 64, "sampler_name": "DPM++ 2M"})
    assert reply.status == 200, reply.body
    info = json.loads(reply.json["info"])
    assert info["seed"] == 4 and info["sampler_name"] == "Euler"  # the family's own sampler ran
    assert "Sampler: Euler" in info["infotexts"][0] and "CFG scale: 2.5" in info["infotexts"][0]
    assert decode_png(reply.json["images"][0]).size == (64, 64)
    reply = call(zimage_api.port, "POST", "/api/generate",
                 body={"prompt": "a red fox", "steps": 2, "seed": 5, "cfgScale": 0, "width": 64, "height": 64})
    assert reply.status == 200, reply.body
    meta = reply.json["metadata"]
    assert meta["seed"] == 5 and len(meta["historyIds"]) == 1


def test_zimage_inpaints_through_the_a1111_img2img_route(zimage_api: Running) -> None:
    import base64
    import io

    from PIL import Image

    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    reply = call(zimage_api.port, "POST", "/sdapi/v1/img2img", body={
        "prompt": "a red fox", "init_images": [png_b64((64, 64), (20, 200, 40))], "denoising_strength": 0.8,
        "mask": base64.b64encode(buf.getvalue()).decode(), "mask_blur": 0, "inpainting_fill": 1,
        "steps": 3, "cfg_scale": 0, "seed": 2, "width": 64, "height": 64})
    assert reply.status == 200, reply.body
    out = decode_png(reply.json["images"][0]).convert("RGB")
    assert out.getpixel((60, 10)) == (20, 200, 40)  # the kept half is pasted back exactly
    assert out.getpixel((10, 10)) != (20, 200, 40)
    assert json.loads(reply.json["info"])["denoising_strength"] == 0.8


def test_cli_generates_with_a_zimage_folder(tiny_zimage: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from heyim_desktop.cli import main
    from heyim_desktop.core.metadata import read_parameters

    out = tmp_path / "out"
    code = main(["generate", "--model", str(tiny_zimage), "--prompt", "a red fox", "--seed", "3",
                 "--size", "64x64", "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    paths = [Path(line) for line in captured.out.split()]
    params = read_parameters(paths[0])
    assert params is not None and params.seed == 3 and params.size == (64, 64)
    # No --steps/--cfg: the family's recommended 9 steps at guidance 0 with its flow-matching sampler.
    assert params.steps == 9 and params.cfg_scale == 0 and params.sampler == "Euler"
    assert "9/9 steps" in captured.err
