"""A client that validates AUTOMATIC1111's schemas (a1111_schemas) connects, reads every
capability route, runs txt2img and img2img, and watches progress: every answer validates."""

from __future__ import annotations

import base64
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from pydantic import BaseModel, TypeAdapter

import a1111_schemas as A
from api_helpers import Gate, Running, call, decode_png, png_b64
from heyim_desktop.core.jobs import Job
from heyim_desktop.store.styles import PromptStyle

SMALL = {"steps": 3, "width": 64, "height": 64}

#: Every GET route of AUTOMATIC1111's API that HeyIm answers, with its response model.
READ_ROUTES: dict[str, Any] = {
    "sd-models": list[A.SDModelItem],
    "samplers": list[A.SamplerItem],
    "schedulers": list[A.SchedulerItem],
    "upscalers": list[A.UpscalerItem],
    "latent-upscale-modes": list[A.LatentUpscalerModeItem],
    "sd-vae": list[A.SDVaeItem],
    "sd-modules": list[A.SDModuleItem],
    "hypernetworks": list[A.HypernetworkItem],
    "face-restorers": list[A.FaceRestorerItem],
    "realesrgan-models": list[A.RealesrganItem],
    "prompt-styles": list[A.PromptStyleItem],
    "embeddings": A.EmbeddingsResponse,
    "loras": list[A.LoraItem],
    "memory": A.MemoryResponse,
    "scripts": A.ScriptsList,
    "script-info": list[A.ScriptInfo],
    "extensions": list[A.ExtensionItem],
    "options": A.Options,
    "progress": A.ProgressResponse,
    "cmd-flags": dict[str, Any],
}


def validate(model: Any, data: Any) -> Any:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_validate(data)
    return TypeAdapter(model).validate_python(data, strict=True)


def validate_images(reply: Any) -> A.Info:
    assert reply.status == 200, reply.body
    A.ImagesResponse.model_validate(reply.json)
    return A.Info.model_validate(json.loads(reply.json["info"]))


@pytest.fixture()
def styled(real_api: Running):  # type: ignore[no-untyped-def]
    book = real_api.server.context.styles
    book.save([PromptStyle("Cinematic", "cinematic still of {prompt}, film grain", "cartoon"),
               PromptStyle("Sharp", "sharp focus", "blur")])
    yield book
    book.save([])


@pytest.mark.parametrize("route", sorted(READ_ROUTES))
def test_every_read_route_validates(real_api: Running, route: str) -> None:
    reply = call(real_api.port, "GET", f"/sdapi/v1/{route}")
    assert reply.status == 200, reply.body
    validate(READ_ROUTES[route], reply.json)


def test_txt2img_info_is_schema_exact_with_styles_and_clip_skip(real_api: Running, styled) -> None:  # type: ignore[no-untyped-def]
    reply = call(real_api.port, "POST", "/sdapi/v1/txt2img", body={
        "prompt": "a red fox", "negative_prompt": "ugly", "seed": 5, "batch_size": 2, "styles": ["Cinematic", "Sharp"],
        "override_settings": {"CLIP_stop_at_last_layers": 2}, **SMALL})
    info = validate_images(reply)
    assert info.prompt == "cinematic still of a red fox, film grain, sharp focus"
    assert info.negative_prompt == "ugly, cartoon, blur" and info.all_prompts == [info.prompt] * 2
    assert info.styles == ["Cinematic", "Sharp"] and info.clip_skip == 2 and info.all_seeds == [5, 6]
    assert len(info.sd_model_hash) == 10 and info.batch_size == 2 and info.denoising_strength is None
    parameters = reply.json["parameters"]
    assert parameters["styles"] == ["Cinematic", "Sharp"] and parameters["prompt"] == "a red fox"
    assert parameters["n_iter"] == 1 and parameters["enable_hr"] is False  # defaults filled in, as AUTOMATIC1111
    text = decode_png(reply.json["images"][0]).info["parameters"]
    assert text == info.infotexts[0] and text.startswith(info.prompt)
    assert "Clip skip: 2" in text and f"Model hash: {info.sd_model_hash}" in text
    assert 'Styles: "[\\"Cinematic\\", \\"Sharp\\"]"' in text
    models = call(real_api.port, "GET", "/sdapi/v1/sd-models").json
    assert models[0]["hash"] == info.sd_model_hash  # the same short hash everywhere


def test_img2img_info_is_schema_exact(real_api: Running) -> None:
    reply = call(real_api.port, "POST", "/sdapi/v1/img2img", body={
        "prompt": "a blue fox", "init_images": [png_b64((64, 64))], "denoising_strength": 0.6, "seed": 3, **SMALL})
    info = validate_images(reply)
    assert info.denoising_strength == 0.6 and info.clip_skip == 1 and info.styles == []
    assert reply.json["parameters"]["init_images"] is None and reply.json["parameters"]["resize_mode"] == 0


def test_unknown_style_is_a_422_naming_styles(real_api: Running) -> None:
    reply = call(real_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "x", "styles": ["Nope"], **SMALL})
    assert reply.status == 422 and reply.json["field"] == "styles" and "Nope" in reply.json["detail"]
    A.Error.model_validate(reply.json)


def test_options_writes_change_later_jobs(real_api: Running) -> None:
    ctx = real_api.server.context
    try:
        assert call(real_api.port, "POST", "/sdapi/v1/options", body={"CLIP_stop_at_last_layers": 2}).status == 200
        assert A.Options.model_validate(call(real_api.port, "GET", "/sdapi/v1/options").json).CLIP_stop_at_last_layers == 2
        info = validate_images(call(real_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "x", "seed": 1, **SMALL}))
        assert info.clip_skip == 2 and "Clip skip: 2" in info.infotexts[0]
        bad = call(real_api.port, "POST", "/sdapi/v1/options", body={"CLIP_stop_at_last_layers": 0,
                                                                      "sd_model_checkpoint": "tiny-sd"})
        assert bad.status == 422 and bad.json["field"] == "CLIP_stop_at_last_layers" and ctx.clip_skip == 2
        title = call(real_api.port, "GET", "/sdapi/v1/options").json["sd_model_checkpoint"]
        assert call(real_api.port, "POST", "/sdapi/v1/options", body={"sd_model_checkpoint": title}).status == 200
    finally:
        ctx.clip_skip = 1


@pytest.mark.parametrize("path", ["interrogate", "create/embedding", "create/hypernetwork", "train/embedding",
                                  "train/hypernetwork"])
def test_unsupported_posts_answer_in_a1111_error_shape(fake_api: Running, path: str) -> None:
    reply = call(fake_api.port, "POST", f"/sdapi/v1/{path}", body={"image": ""})
    assert reply.status == 501
    error = A.Error.model_validate(reply.json)
    assert "HeyIm" in error.detail and error.errors == error.detail


def test_refresh_routes_and_skip_answer_like_a1111(fake_api: Running) -> None:
    for path in ("refresh-checkpoints", "refresh-vae", "refresh-loras", "refresh-embeddings", "skip"):
        reply = call(fake_api.port, "POST", f"/sdapi/v1/{path}", body={})
        assert reply.status == 200 and reply.json is None, path


def test_png_info_reads_an_a1111_png(fake_api: Running) -> None:
    text = ("masterpiece, 1girl\nNegative prompt: lowres\nSteps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, "
            "Seed: 123, Size: 512x768, Model hash: 6ce0161689, Model: v1-5, Clip skip: 2, Version: v1.10.1")
    buf = io.BytesIO()
    meta = PngInfo()
    meta.add_text("parameters", text)
    meta.add_text("Software", "test")
    Image.new("RGB", (16, 16)).save(buf, format="PNG", pnginfo=meta)
    reply = call(fake_api.port, "POST", "/sdapi/v1/png-info",
                 body={"image": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()})
    assert reply.status == 200, reply.body
    data = A.PNGInfoResponse.model_validate(reply.json)
    assert data.info == text and data.items == {"Software": "test"}
    assert data.parameters["Prompt"] == "masterpiece, 1girl" and data.parameters["Negative prompt"] == "lowres"
    assert data.parameters["Clip skip"] == "2" and data.parameters["Size-1"] == "512" and data.parameters["Size-2"] == "768"
    plain = call(fake_api.port, "POST", "/sdapi/v1/png-info", body={"image": png_b64()})
    assert plain.status == 200 and plain.json == {"info": "", "items": {}, "parameters": {}}
    for body, status in (({"image": "not base64!"}, 422), ({"image": base64.b64encode(b"text").decode()}, 422), ({}, 422)):
        bad = call(fake_api.port, "POST", "/sdapi/v1/png-info", body=body)
        assert bad.status == status and bad.json["field"] == "image"


def test_progress_during_a_job_and_after(gated_api: Running, gate: Gate) -> None:
    idle = A.ProgressResponse.model_validate(call(gated_api.port, "GET", "/sdapi/v1/progress").json)
    assert idle.progress == 0 and idle.state.job_count == 0
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(call, gated_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "x", **SMALL})
        assert gate.reached.wait(30)
        busy = A.ProgressResponse.model_validate(call(gated_api.port, "GET", "/sdapi/v1/progress").json)
        assert 0 < busy.progress < 1 and busy.state.sampling_steps == 3 and busy.current_image
        call(gated_api.port, "POST", "/sdapi/v1/skip", body={})
        assert call(gated_api.port, "GET", "/sdapi/v1/progress").json["state"]["skipped"] is True
        gate.release.set()
        validate_images(future.result(30))
    after = A.ProgressResponse.model_validate(call(gated_api.port, "GET", "/sdapi/v1/progress").json)
    assert after.progress == 0 and after.state.job_count == 0


def test_interrupt_before_anything_is_made_still_answers_a_full_info(gated_api: Running, gate: Gate) -> None:
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(call, gated_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "x", **SMALL})
        assert gate.reached.wait(30)
        assert call(gated_api.port, "POST", "/sdapi/v1/interrupt", body={}).json == {}
        gate.release.set()  # the fake engine cannot decode early: it stops with nothing
        reply = future.result(30)
    info = validate_images(reply)
    assert reply.json["images"] == [] and json.loads(reply.json["info"])["interrupted"] is True
    assert info.prompt == "x" and info.infotexts == []


def test_interrupt_returns_the_partial_image_of_the_real_model(real_api: Running) -> None:
    reached, release = threading.Event(), threading.Event()

    def hold(job: Job) -> None:  # on the worker thread: pause the real job after its second step
        if job.progress is not None and job.progress.step == 2 and not reached.is_set():
            reached.set()
            release.wait(30)

    real_api.queue.add_listener(hold)
    try:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(call, real_api.port, "POST", "/sdapi/v1/txt2img",
                                 body={"prompt": "a fox", "seed": 11, "batch_size": 2, "steps": 6, "width": 64, "height": 64})
            assert reached.wait(60)
            assert call(real_api.port, "POST", "/sdapi/v1/interrupt", body={}).json == {}
            release.set()
            reply = future.result(60)
    finally:
        release.set()
        real_api.queue.remove_listener(hold)
    info = validate_images(reply)
    extra = json.loads(reply.json["info"])
    assert len(reply.json["images"]) == 1 and extra["interrupted"] is True and extra["history_ids"] == []
    assert info.all_seeds == [11, 12] and len(info.infotexts) == 1  # the first image, stopped after 2 of 6 steps
    assert decode_png(reply.json["images"][0]).size == (64, 64)


def test_heyim_route_takes_styles_and_clip_skip_too(real_api: Running, styled) -> None:  # type: ignore[no-untyped-def]
    reply = call(real_api.port, "POST", "/api/generate",
                 body={"prompt": "a cat", "styles": ["Sharp"], "clipSkip": 2, "seed": 2, **SMALL})
    assert reply.status == 200, reply.body
    text = decode_png(reply.json["imageBase64"]).info["parameters"]
    assert text.startswith("a cat, sharp focus\nNegative prompt: blur") and "Clip skip: 2" in text
    bad = call(real_api.port, "POST", "/api/generate", body={"prompt": "a cat", "clipSkip": 13, **SMALL})
    assert bad.status == 422 and bad.json["field"] == "clipSkip"
