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


def _fake_catalog(running: Running, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    info = ModelInfo("net", str(tmp_path / "net"), "controlnet", "unknown", 1, ModelStatus.READY)
    monkeypatch.setattr(running.server.context, "controlnets", lambda: [info], raising=False)


def test_control_images_count_in_the_pixel_budget(fake_api: Running, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    _fake_catalog(fake_api, monkeypatch, tmp_path)
    budget = fake_api.server.context.pixels
    budget.total = 100 * 100
    big = _b64(Image.new("RGB", (128, 128), (200, 10, 10)))
    body = {"prompt": "x", **SMALL, "alwayson_scripts": {"controlnet": {"args": [{"model": "net", "image": big}]}}}
    reply = call(fake_api.port, "POST", "/sdapi/v1/txt2img", body=body)
    assert reply.status == 413 and "at most 10,000 at once" in reply.json["error"], reply.body
    assert reply.json["field"] == "alwayson_scripts.controlnet.args[0].image" and budget.used == 0
    # An input image and a control image together: both are charged.
    budget.total = 128 * 128 + 64 * 64 - 1
    img2img = dict(body, init_images=[_b64(Image.new("RGB", (64, 64)))])
    reply = call(fake_api.port, "POST", "/sdapi/v1/img2img", body=img2img)
    assert reply.status == 413 and budget.used == 0
    budget.total = 128 * 128 + 64 * 64 + 64 * 64
    assert call(fake_api.port, "POST", "/sdapi/v1/img2img", body=img2img).status == 200
    assert budget.used == 0  # released when the job finished
    # A control image claiming too many pixels is refused before anything is decoded.
    from test_hostile import _png_claiming

    claim = _png_claiming(8192, 8192)
    budget.total = 10**9
    reply = call(fake_api.port, "POST", "/sdapi/v1/txt2img",
                 body=dict(body, alwayson_scripts={"controlnet": {"args": [{"model": "net", "image": claim}]}}))
    assert reply.status == 413 and "8192x8192" in reply.json["error"] and budget.used == 0
    # Inpainting builds the request again with the mask: the control image is decoded once and kept.
    mask = Image.new("L", (64, 64))
    mask.paste(255, (8, 8, 40, 40))
    perfect = {"controlnet": {"args": [{"model": "net", "image": big, "pixel_perfect": True}]}}
    reply = call(fake_api.port, "POST", "/sdapi/v1/img2img", body=dict(img2img, mask=_b64(mask), alwayson_scripts=perfect))
    assert reply.status == 200 and budget.used == 0, reply.body
    done = fake_api.queue.last_finished
    assert done is not None and done.request.inpaint is not None
    assert done.request.controlnets[0].image.size == (128, 128) and done.request.controlnets[0].model.endswith("net")
    assert done.request.controlnets[0].pixel_perfect is True


def test_a_queued_job_holds_its_control_images_pixels(gated_api: Running, gate, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                      tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _fake_catalog(gated_api, monkeypatch, tmp_path)
    unit = {"model": "net", "image": _b64(Image.new("RGB", (96, 80), (0, 0, 200)))}
    body = {"prompt": "x", **SMALL, "alwayson_scripts": {"controlnet": {"args": [unit, dict(unit)]}}}
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(call, gated_api.port, "POST", "/sdapi/v1/txt2img", body=body)
        assert gate.reached.wait(30)
        job = gated_api.queue.running
        assert job is not None and [u.image.size for u in job.request.controlnets] == [(96, 80)] * 2
        assert gated_api.server.context.pixels.used == 2 * 96 * 80
        gate.release.set()
        assert future.result(30).status == 200
    assert gated_api.server.context.pixels.used == 0


def test_detect_counts_its_images_in_the_pixel_budget(with_controlnet: Running) -> None:
    budget = with_controlnet.server.context.pixels
    total = budget.total
    try:
        budget.total = 64 * 64 + 10
        body = {"controlnet_module": "canny", "controlnet_input_images": [_b64(_hint()), _b64(_hint())]}
        reply = call(with_controlnet.port, "POST", "/controlnet/detect", body=body)
        assert reply.status == 413 and reply.json["field"] == "controlnet_input_images" and budget.used == 0
        budget.total = 2 * 64 * 64
        assert call(with_controlnet.port, "POST", "/controlnet/detect", body=body).status == 200
        assert budget.used == 0
    finally:
        budget.total = total


def test_depth_is_offered_and_detected_only_with_its_model(with_controlnet: Running, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from depth_layout import write_tiny_depth
    from heyim_desktop.core.control_preprocess import detect

    port, context = with_controlnet.port, with_controlnet.server.context
    body = {"controlnet_module": "depth_midas", "controlnet_input_images": [_b64(_hint())], "controlnet_processor_res": 64}
    monkeypatch.setattr(context, "annotator_folder", lambda name: None, raising=False)
    assert "depth_midas" not in call(port, "GET", "/controlnet/module_list").json["module_list"]
    refused = call(port, "POST", "/controlnet/detect", body=body)
    assert refused.status == 422 and "annotator" in refused.body.decode() and "model.safetensors" in refused.body.decode()

    folder = write_tiny_depth(tmp_path / "annotator" / "midas", "dpt")
    monkeypatch.setattr(context, "annotator_folder", lambda name: folder if name == "depth_midas" else None, raising=False)
    modules = call(port, "GET", "/controlnet/module_list").json
    assert "depth_midas" in modules["module_list"] and "depth_anything_v2" not in modules["module_list"]
    assert modules["module_detail"]["depth_midas"]["model_free"] is False
    types = call(port, "GET", "/controlnet/control_types").json["control_types"]
    assert types["Depth"]["module_list"] == ["none", "depth_midas"]
    reply = call(port, "POST", "/controlnet/detect", body=body)
    assert reply.status == 200, reply.body
    got = np.asarray(decode_png(reply.json["images"][0]))
    assert np.array_equal(got, np.asarray(detect(_hint(), "depth_midas", processor_res=64, annotator=folder)))
    title = call(port, "GET", "/controlnet/model_list").json["model_list"][0]
    unit = {"image": _b64(_hint()), "module": "depth_midas", "model": title, "processor_res": 64}
    guided = call(port, "POST", "/sdapi/v1/txt2img",
                  body={"prompt": "a fox", **SMALL, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert guided.status == 200, guided.body
    assert 'ControlNet 0: "Module: depth_midas, Model: tiny-controlnet [' in json.loads(guided.json["info"])["infotexts"][0]
    monkeypatch.setattr(context, "annotator_folder", lambda name: None, raising=False)
    missing = call(port, "POST", "/sdapi/v1/txt2img",
                   body={"prompt": "a fox", **SMALL, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert missing.status == 422 and "args[0].module" in missing.body.decode()


def test_openpose_is_offered_and_detected_only_with_its_weights(with_controlnet: Running, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.core.control_preprocess import detect
    from openpose_layout import write_body_model

    port, context = with_controlnet.port, with_controlnet.server.context
    photo = Image.fromarray((np.random.RandomState(8).rand(64, 96, 3) * 255).astype(np.uint8))
    body = {"controlnet_module": "openpose", "controlnet_input_images": [_b64(photo)], "controlnet_processor_res": 64}
    monkeypatch.setattr(context, "annotator_folder", lambda name: None, raising=False)
    assert "openpose" not in call(port, "GET", "/controlnet/module_list").json["module_list"]
    assert "openpose" not in call(port, "GET", "/controlnet/control_types").json["control_types"].get(
        "OpenPose", {"module_list": []})["module_list"]
    refused = call(port, "POST", "/controlnet/detect", body=body)
    assert refused.status == 422 and "body_pose_model.safetensors" in refused.body.decode()

    weights = write_body_model(tmp_path / "annotator" / "body_pose_model.safetensors")
    monkeypatch.setattr(context, "annotator_folder", lambda name: weights if name == "openpose" else None, raising=False)
    modules = call(port, "GET", "/controlnet/module_list").json
    assert "openpose" in modules["module_list"] and modules["module_detail"]["openpose"]["model_free"] is False
    types = call(port, "GET", "/controlnet/control_types").json["control_types"]
    assert types["OpenPose"]["module_list"] == ["none", "openpose"]
    reply = call(port, "POST", "/controlnet/detect", body=body)
    assert reply.status == 200, reply.body
    got = np.asarray(decode_png(reply.json["images"][0]))
    assert got.shape == (64, 96, 3)  # the input's size (its short side is the detector's resolution)
    assert np.array_equal(got, np.asarray(detect(photo, "openpose", processor_res=64, annotator=weights)))
    title = call(port, "GET", "/controlnet/model_list").json["model_list"][0]
    unit = {"image": _b64(photo), "module": "openpose", "model": title, "processor_res": 64}
    guided = call(port, "POST", "/sdapi/v1/txt2img",
                  body={"prompt": "a fox", **SMALL, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert guided.status == 200, guided.body
    assert 'ControlNet 0: "Module: openpose, Model: tiny-controlnet [' in json.loads(guided.json["info"])["infotexts"][0]
    monkeypatch.setattr(context, "annotator_folder", lambda name: None, raising=False)
    missing = call(port, "POST", "/sdapi/v1/img2img", body={"prompt": "a fox", **SMALL, "init_images": [_b64(photo)],
                                                            "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert missing.status == 422 and "body_pose_model.safetensors" in missing.body.decode()


def test_lama_is_offered_detected_and_run_only_with_its_model(with_controlnet: Running, tiny_lama: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.core.control_preprocess import LAMA
    from heyim_desktop.core.lama_preprocess import lama_fill
    from heyim_desktop.core.masking import mask_to_array

    port, context = with_controlnet.port, with_controlnet.server.context
    mask = Image.new("L", (64, 64))
    mask.paste(255, (16, 16, 44, 40))
    body = {"controlnet_module": LAMA, "controlnet_input_images": [_b64(_hint())], "controlnet_masks": [_b64(mask)]}
    monkeypatch.setattr(context, "annotator_folder", lambda name: None, raising=False)
    assert LAMA not in call(port, "GET", "/controlnet/module_list").json["module_list"]
    refused = call(port, "POST", "/controlnet/detect", body=body)
    assert refused.status == 422 and "ControlNetLama.safetensors" in refused.body.decode()

    monkeypatch.setattr(context, "annotator_folder", lambda name: tiny_lama if name == LAMA else None, raising=False)
    modules = call(port, "GET", "/controlnet/module_list").json
    assert LAMA in modules["module_list"] and modules["module_detail"][LAMA] == {"model_free": False, "sliders": []}
    types = call(port, "GET", "/controlnet/control_types").json["control_types"]
    assert LAMA in types["Inpaint"]["module_list"]
    no_mask = call(port, "POST", "/controlnet/detect", body=dict(body, controlnet_masks=[]))
    assert no_mask.status == 422 and "controlnet_masks" in no_mask.body.decode()
    reply = call(port, "POST", "/controlnet/detect", body=body)
    assert reply.status == 200, reply.body
    got = np.asarray(decode_png(reply.json["images"][0]))
    assert np.array_equal(got, lama_fill(np.asarray(_hint()), mask_to_array(mask), tiny_lama))

    title = call(port, "GET", "/controlnet/model_list").json["model_list"][0]
    unit = {"module": LAMA, "model": title}  # no image of its own: the input image and its mask
    img2img = {"prompt": "a fox", **SMALL, "init_images": [_b64(_hint())], "mask": _b64(mask), "mask_blur": 0,
               "denoising_strength": 0.8, "alwayson_scripts": {"controlnet": {"args": [unit]}}}
    guided = call(port, "POST", "/sdapi/v1/img2img", body=img2img)
    assert guided.status == 200, guided.body
    infotext = json.loads(guided.json["info"])["infotexts"][0]
    assert f'ControlNet 0: "Module: {LAMA}, Model: tiny-controlnet [' in infotext
    monkeypatch.setattr(context, "annotator_folder", lambda name: None, raising=False)
    missing = call(port, "POST", "/sdapi/v1/img2img", body=img2img)
    assert missing.status == 422 and "args[0].module" in missing.body.decode()


def test_openpose_full_is_offered_and_detected_only_with_all_three_files(with_controlnet: Running, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.core.control_preprocess import annotator_folder, detect
    from openpose_layout import write_body_model, write_face_model, write_hand_model

    port, context = with_controlnet.port, with_controlnet.server.context
    folder = tmp_path / "annotator"
    files = [write_body_model(folder / "body_pose_model.safetensors"), write_hand_model(folder / "hand_pose_model.safetensors")]
    monkeypatch.setattr(context, "annotator_folder", lambda name: annotator_folder(files, name), raising=False)
    photo = Image.fromarray((np.random.RandomState(8).rand(64, 80, 3) * 255).astype(np.uint8))
    body = {"controlnet_module": "openpose_full", "controlnet_input_images": [_b64(photo)], "controlnet_processor_res": 64}
    modules = call(port, "GET", "/controlnet/module_list").json["module_list"]
    assert "openpose_hand" in modules and "openpose_full" not in modules and "openpose_face" not in modules
    refused = call(port, "POST", "/controlnet/detect", body=body)
    assert refused.status == 422 and "facenet.safetensors" in refused.body.decode()

    files.append(write_face_model(folder / "facenet.safetensors"))
    types = call(port, "GET", "/controlnet/control_types").json["control_types"]
    assert types["OpenPose"]["module_list"] == ["none", "openpose", "openpose_hand", "openpose_face",
                                                "openpose_faceonly", "openpose_full"]
    reply = call(port, "POST", "/controlnet/detect", body=body)
    assert reply.status == 200, reply.body
    got = np.asarray(decode_png(reply.json["images"][0]))
    assert got.shape == (64, 80, 3)
    assert np.array_equal(got, np.asarray(detect(photo, "openpose_full", processor_res=64, annotator=files[0])))
