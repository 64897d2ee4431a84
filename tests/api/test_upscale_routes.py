"""AUTOMATIC1111's upscaling routes and txt2img's hires fix fields, over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from api_helpers import Running, call, decode_png, png_b64
from heyim_desktop.core.metadata import parse_parameters
from heyim_desktop.models.library import ModelLibrary
from tiny_upscaler import make_esrgan


@pytest.fixture()
def with_model(real_api: Running, tmp_path: Path) -> Iterator[str]:
    folder = tmp_path / "ESRGAN"
    folder.mkdir()
    st, _ = make_esrgan(folder, 2)
    ctx = real_api.server.context
    before = getattr(ctx, "upscaler_library", None)
    ctx.upscaler_library = ModelLibrary([folder], include_demo=False, hf_cache=False)  # type: ignore[attr-defined]
    yield st.stem
    ctx.upscaler_library = before  # type: ignore[attr-defined]


def test_upscalers_and_latent_modes_in_a1111_shapes(real_api: Running, with_model: str) -> None:
    reply = call(real_api.port, "GET", "/sdapi/v1/upscalers")
    assert reply.status == 200
    items = reply.json
    assert [i["name"] for i in items[:3]] == ["None", "Lanczos", "Nearest"]
    model = next(i for i in items if i["name"] == with_model)
    assert model["scale"] == 2 and model["model_path"].endswith(".safetensors")
    assert set(items[0]) == {"name", "model_name", "model_path", "model_url", "scale"}
    modes = call(real_api.port, "GET", "/sdapi/v1/latent-upscale-modes").json
    assert modes[0] == {"name": "Latent"} and {"name": "Latent (nearest-exact)"} in modes


def test_extra_single_image_by_factor_and_to_a_size(real_api: Running, with_model: str) -> None:
    reply = call(real_api.port, "POST", "/sdapi/v1/extra-single-image",
                 body={"image": png_b64((40, 30)), "upscaling_resize": 2, "upscaler_1": with_model})
    assert reply.status == 200, reply.body
    assert set(reply.json) == {"html_info", "image"}
    image = decode_png(reply.json["image"])
    assert image.size == (80, 60)
    params = parse_parameters(image.info["parameters"])
    assert params.params.get("Postprocess upscaler") == with_model or with_model in image.info["parameters"]
    sized = call(real_api.port, "POST", "/sdapi/v1/extra-single-image",
                 body={"image": png_b64((40, 30)), "resize_mode": 1, "upscaling_resize_w": 100, "upscaling_resize_h": 60,
                       "upscaler_1": "Lanczos", "upscaler_2": "Nearest", "extras_upscaler_2_visibility": 0.5})
    assert sized.status == 200, sized.body
    assert decode_png(sized.json["image"]).size == (100, 60)  # cropped to fit, as AUTOMATIC1111 does
    entries = real_api.store.page(0, 3)
    assert any(e.source == "upscale" and e.settings.get("postprocess_upscaler") == "Lanczos" for e in entries)


def test_extra_batch_images(real_api: Running) -> None:
    reply = call(real_api.port, "POST", "/sdapi/v1/extra-batch-images",
                 body={"imageList": [{"data": png_b64((16, 16)), "name": "a.png"},
                                     {"data": png_b64((20, 12)), "name": "b.png"}],
                       "upscaling_resize": 4, "upscaler_1": "Nearest"})
    assert reply.status == 200, reply.body
    assert [decode_png(i).size for i in reply.json["images"]] == [(64, 64), (80, 48)]


@pytest.mark.parametrize("body, field", [
    ({"upscaler_1": "4x-Nothing"}, "upscaler_1"),
    ({"upscaling_resize": 20, "upscaler_1": "Lanczos"}, "upscaling_resize"),
    ({"gfpgan_visibility": 0.5}, "gfpgan_visibility"),
    ({"image": "not base64!"}, "image"),
])
def test_extras_errors_name_the_field(real_api: Running, body: dict[str, object], field: str) -> None:
    reply = call(real_api.port, "POST", "/sdapi/v1/extra-single-image", body={"image": png_b64((8, 8)), **body})
    assert reply.status == 422 and reply.json["field"] == field, reply.body


def test_txt2img_with_hires_fix(real_api: Running, with_model: str) -> None:
    body = {"prompt": "a red fox", "seed": 3, "steps": 2, "width": 64, "height": 64, "enable_hr": True,
            "hr_scale": 1.5, "hr_upscaler": "Latent (nearest)", "hr_second_pass_steps": 2, "denoising_strength": 0.5}
    reply = call(real_api.port, "POST", "/sdapi/v1/txt2img", body=body)
    assert reply.status == 200, reply.body
    image = decode_png(reply.json["images"][0])
    assert image.size == (96, 96)
    params = parse_parameters(image.info["parameters"]).params
    assert (params["Hires upscale"], params["Hires upscaler"], params["Denoising strength"]) == ("1.5", "Latent (nearest)", "0.5")
    # info carries hires fix as AUTOMATIC1111's Processed.js() does: in extra_generation_params
    # (as its txt2img sets them) and the second pass's denoising_strength; still its schema.
    import a1111_schemas as A  # noqa: N812 - the schemas module, short in long expressions

    info = A.Info.model_validate_json(reply.json["info"])
    assert info.extra_generation_params == {"Hires upscale": 1.5, "Hires steps": 2, "Hires upscaler": "Latent (nearest)"}
    assert info.denoising_strength == 0.5 and (info.width, info.height) == (64, 64)
    assert reply.json["parameters"]["enable_hr"] is True and reply.json["parameters"]["hr_scale"] == 1.5
    resized = call(real_api.port, "POST", "/sdapi/v1/txt2img",
                   body=dict(body, hr_upscaler=with_model, hr_resize_x=128, hr_resize_y=0, hr_scale=None,
                             hr_second_pass_steps=0, denoising_strength=None))
    assert resized.status == 200, resized.body
    assert decode_png(resized.json["images"][0]).size == (128, 128)
    assert len(json.loads(resized.json["info"])["history_ids"]) == 1
    info = A.Info.model_validate_json(resized.json["info"])
    assert info.extra_generation_params == {"Hires resize": "128x0", "Hires upscaler": with_model}
    assert info.denoising_strength == 0.75  # AUTOMATIC1111 txt2img's default denoising_strength
    plain = call(real_api.port, "POST", "/sdapi/v1/txt2img", body={k: body[k] for k in ("prompt", "seed", "steps", "width", "height")})
    assert A.Info.model_validate_json(plain.json["info"]).extra_generation_params == {}
    bad = call(real_api.port, "POST", "/sdapi/v1/txt2img", body=dict(body, hr_upscaler="4x-Nothing"))
    assert bad.status == 422 and bad.json["field"] == "hr_upscaler"
