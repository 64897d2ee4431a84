"""The A1111 ControlNet extension's API: units in alwayson_scripts and the /controlnet routes."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
from PIL import Image

from api_helpers import Running, call, decode_png
from heyim_desktop.models.types import ModelInfo, ModelStatus

SMALL = {"steps": 2, "width": 64, "height": 64, "seed": 9}


def _b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _hint() -> Image.Image:
    rng = np.random.RandomState(3)
    return Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8))


@pytest.fixture()
def with_controlnet(real_api: Running, tiny_controlnet: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    info = ModelInfo("tiny-controlnet", str(tiny_controlnet), "controlnet", "unknown", 1, ModelStatus.READY)
    monkeypatch.setattr(real_api.server.context, "controlnets", lambda: [info], raising=False)
    yield real_api


def test_txt2img_with_a_controlnet_unit(with_controlnet: Running) -> None:
    port = with_controlnet.port
    plain = call(port, "POST", "/sdapi/v1/txt2img", body={"prompt": "a fox", **SMALL})
    titles = call(port, "GET", "/controlnet/model_list").json["model_list"]
    assert len(titles) == 1 and titles[0].startswith("tiny-controlnet [")
    unit = {"enabled": True, "image": _b64(_hint()), "module": "canny", "model": titles[0], "weight": 0.9,
            "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": "My prompt is more important",
            "resize_mode": 1, "processor_res": 64, "threshold_a": 50, "threshold_b": 150, "pixel_perfect": False}
    guided = call(port, "POST", "/sdapi/v1/txt2img",
                  body={"prompt": "a fox", **SMALL, "alwayson_scripts": {"controlnet": {"args": [unit, {"enabled": False}]}}})
    assert plain.status == guided.status == 200, guided.body
    assert decode_png(plain.json["images"][0]).tobytes() != decode_png(guided.json["images"][0]).tobytes()
    infotext = json.loads(guided.json["info"])["infotexts"][0]
    assert 'ControlNet 0: "Module: canny, Model: tiny-controlnet [' in infotext
    assert "Threshold A: 50.0, Threshold B: 150.0" in infotext and "Control Mode: My prompt is more important" in infotext
    legacy = dict(unit, input_image=unit.pop("image"), model="tiny-controlnet")
    again = call(port, "POST", "/sdapi/v1/txt2img",
                 body={"prompt": "a fox", **SMALL, "alwayson_scripts": {"ControlNet": {"args": [legacy]}}})
    assert again.status == 200 and again.json["images"][0] == guided.json["images"][0]


def test_controlnet_unit_errors_name_the_field(with_controlnet: Running) -> None:
    port = with_controlnet.port

    def post(unit: dict) -> tuple[int, str]:  # type: ignore[type-arg]
        reply = call(port, "POST", "/sdapi/v1/txt2img",
                     body={"prompt": "a fox", **SMALL, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
        return reply.status, reply.body.decode()

    status, text = post({"model": "nope", "image": _b64(_hint())})
    assert status == 422 and "args[0].model: unknown ControlNet 'nope'" in text and "tiny-controlnet [" in text
    status, text = post({"model": "tiny-controlnet", "image": _b64(_hint()), "weight": 5})
    assert status == 422 and "args[0].weight" in text
    status, text = post({"model": "tiny-controlnet", "image": _b64(_hint()), "resize_mode": 7})
    assert status == 422 and "resize_mode" in text
    status, text = post({"model": "tiny-controlnet"})
    assert status == 422 and "no control image" in text
    status, text = post({"model": "../../etc/passwd", "image": _b64(_hint())})
    assert status == 422 and "unknown ControlNet 'passwd'" in text  # a path is only ever a name


def test_controlnet_info_routes(with_controlnet: Running) -> None:
    port = with_controlnet.port
    assert call(port, "GET", "/controlnet/version").json == {"version": 3}
    modules = call(port, "GET", "/controlnet/module_list").json
    assert "canny" in modules["module_list"] and "none" in modules["module_list"]
    sliders = modules["module_detail"]["canny"]["sliders"]
    assert [s["name"] for s in sliders] == ["Preprocessor Resolution", "Canny Low Threshold", "Canny High Threshold"]
    assert sliders[1] == {"name": "Canny Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1.0}
    assert modules["module_detail"]["canny"]["model_free"] is True
    aliases = call(port, "GET", "/controlnet/module_list?alias_names=true").json
    assert "Canny edges" in aliases["module_list"]
    types = call(port, "GET", "/controlnet/control_types").json["control_types"]
    assert types["Canny"]["module_list"] == ["none", "canny"] and types["Canny"]["default_option"] == "canny"
    assert types["All"]["model_list"][0] == "None" and types["All"]["model_list"][1].startswith("tiny-controlnet [")


def test_detect_runs_the_preprocessor(with_controlnet: Running) -> None:
    port = with_controlnet.port
    hint = _hint()
    reply = call(port, "POST", "/controlnet/detect", body={
        "controlnet_module": "canny", "controlnet_input_images": [_b64(hint)], "controlnet_processor_res": 64,
        "controlnet_threshold_a": 80, "controlnet_threshold_b": 160})
    assert reply.status == 200 and reply.json["info"] == "Success"
    edges = np.asarray(decode_png(reply.json["images"][0]))
    assert np.array_equal(edges[:, :, 0], cv2.Canny(np.asarray(hint), 80, 160))
    bad = call(port, "POST", "/controlnet/detect", body={"controlnet_module": "magic", "controlnet_input_images": [_b64(hint)]})
    assert bad.status == 422 and "controlnet_module" in bad.body.decode()
    empty = call(port, "POST", "/controlnet/detect", body={"controlnet_module": "canny"})
    assert empty.status == 422 and "No image selected" in empty.body.decode()
    need_mask = call(port, "POST", "/controlnet/detect", body={"controlnet_module": "inpaint", "controlnet_input_images": [_b64(hint)]})
    assert need_mask.status == 422 and "controlnet_masks" in need_mask.body.decode()
