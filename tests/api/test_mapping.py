"""Both dialects mapped onto GenerationRequest, with errors that name the client's field."""

from __future__ import annotations

from typing import Any

import pytest

from api_helpers import png_b64
from heyim_desktop.api.mapping import ApiError, build_request, parse_a1111, parse_heyim


def _a1111(body: dict[str, Any], img2img: bool = False):  # type: ignore[no-untyped-def]
    mapped = parse_a1111(body, img2img=img2img)
    return mapped, build_request(mapped, None)


def _error(fn: Any, *args: Any, **kw: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kw)
    return info.value


def test_a1111_txt2img_fields_and_defaults() -> None:
    _, req = _a1111({"prompt": "a fox", "negative_prompt": "blur", "steps": 4, "cfg_scale": 5, "seed": 7,
                     "width": 64, "height": 96, "sampler_name": "Euler a", "batch_size": 2, "n_iter": 3})
    assert (req.prompt, req.negative_prompt, req.steps, req.guidance, req.seed) == ("a fox", "blur", 4, 5.0, 7)
    assert (req.width, req.height, req.scheduler, req.count) == (64, 96, "Euler a", 6)
    _, plain = _a1111({"prompt": "a fox"})
    # AUTOMATIC1111's own defaults, not HeyIm's: 50 steps, cfg 7, 512x512, Euler, random seed.
    assert (plain.steps, plain.guidance, plain.width, plain.height, plain.scheduler, plain.seed) == (50, 7.0, 512, 512, "Euler", None)


def test_seed_minus_one_is_random_and_other_negatives_are_refused() -> None:
    assert _a1111({"prompt": "x", "seed": -1})[1].seed is None
    err = _error(_a1111, {"prompt": "x", "seed": -5})
    assert (err.status, err.field) == (422, "seed")
    assert _error(_a1111, {"prompt": "x", "seed": "12"}).field == "seed"


@pytest.mark.parametrize("body, field", [
    ({"prompt": "x", "cfg_scale": 31}, "cfg_scale"),
    ({"prompt": "x", "steps": 0}, "steps"),
    ({"prompt": "x", "steps": "4"}, "steps"),
    ({"prompt": "x", "width": 100}, "width"),
    ({"prompt": "x", "height": 4096}, "height"),
    ({"prompt": ""}, "prompt"),
    ({}, "prompt"),
    ({"prompt": "x", "sampler_name": "DPM++ 3M SDE"}, "sampler_name"),
    ({"prompt": "x", "sampler_index": "nope"}, "sampler_index"),
    ({"prompt": "x", "scheduler": "Exponential"}, "scheduler"),
    ({"prompt": "x", "batch_size": 8, "n_iter": 3}, "batch_size"),
    ({"prompt": "x", "n_iter": 0}, "n_iter"),
    ({"prompt": "x", "enable_hr": "yes"}, "enable_hr"),
    ({"prompt": "x", "enable_hr": True, "hr_scale": 9}, "hr_scale"),
    ({"prompt": "x", "enable_hr": True, "denoising_strength": 2}, "denoising_strength"),
    ({"prompt": "x", "enable_hr": True, "hr_second_pass_steps": -1}, "hr_second_pass_steps"),
    ({"prompt": "x", "restore_faces": True}, "restore_faces"),
    ({"prompt": "x", "alwayson_scripts": {"adetailer": {"args": []}}}, "alwayson_scripts.adetailer"),
    ({"prompt": "x", "override_settings": "no"}, "override_settings"),
])
def test_a1111_errors_name_the_clients_field(body: dict[str, Any], field: str) -> None:
    err = _error(_a1111, body)
    assert err.status == 422 and err.field == field and err.message.startswith(f"{field}:")


def test_a1111_defaults_of_unsupported_features_are_accepted_and_unknown_fields_noted() -> None:
    mapped, _ = _a1111({"prompt": "x", "enable_hr": False, "restore_faces": False, "tiling": False, "styles": [],
                        "alwayson_scripts": {}, "script_name": "", "save_images": True, "sampler_index": "Euler",
                        "my_extension_field": 1, "override_settings": {"CLIP_stop_at_last_layers": 2, "eta_ddim": 0}})
    notes = " ".join(mapped.notes)
    assert "my_extension_field" in notes and "eta_ddim" in notes
    assert "CLIP_stop_at_last_layers" not in notes and mapped.data["clip_skip"] == 2  # used, as clip skip


def test_karras_schedule_and_override_model() -> None:
    mapped, req = _a1111({"prompt": "x", "sampler_name": "DPM++ 2M", "scheduler": "Karras",
                          "override_settings": {"sd_model_checkpoint": "Beta"}})
    assert req.scheduler == "DPM++ 2M Karras" and mapped.model == "Beta"
    assert _a1111({"prompt": "x", "sampler_name": "Euler", "scheduler": "Automatic"})[1].scheduler == "Euler"
    assert _error(_a1111, {"prompt": "x", "sampler_name": "Euler", "scheduler": "Karras"}).field == "scheduler"


def test_img2img_uses_the_first_init_image_and_cfg_as_given() -> None:
    mapped, req = _a1111({"prompt": "x", "init_images": [png_b64(), png_b64()], "denoising_strength": 0.5,
                          "cfg_scale": 6, "steps": 4}, img2img=True)
    assert req.is_img2img and req.strength == 0.5 and req.effective_guidance == 6.0
    assert any("first of init_images" in n for n in mapped.notes)
    for bad in ({"prompt": "x"}, {"prompt": "x", "init_images": []}, {"prompt": "x", "init_images": [3]}):
        assert _error(_a1111, bad, img2img=True).field == "init_images"
    err = _error(_a1111, {"prompt": "x", "init_images": ["not base64!"]}, img2img=True)
    assert err.field == "init_images" and "base64" in err.message
    err = _error(_a1111, {"prompt": "x", "init_images": [png_b64()], "denoising_strength": 1.5}, img2img=True)
    assert err.field == "denoising_strength"


def test_heyim_original_fields() -> None:
    mapped = parse_heyim({"prompt": "a fox", "negativePrompt": "blur", "steps": 4, "cfgScale": 6.5, "seed": 3,
                          "width": 64, "height": 64, "scheduler": "euler", "inputImage": png_b64(), "strength": 0.5,
                          "count": 2, "model": "Beta", "modelType": "fast"})
    req = build_request(mapped, "beta")
    assert (req.prompt, req.negative_prompt, req.steps, req.guidance, req.seed) == ("a fox", "blur", 4, 6.5, 3)
    assert (req.scheduler, req.strength, req.count, req.model) == ("Euler", 0.5, 2, "beta")
    assert req.effective_guidance == 8.0  # the original design's +1.5 for image-to-image
    assert mapped.model == "Beta" and any("modelType" in n for n in mapped.notes)
    assert build_request(parse_heyim({"prompt": "x", "cfg": 3}), None).guidance == 3.0


@pytest.mark.parametrize("body, field", [
    ({"prompt": "x", "cfgScale": -1}, "cfgScale"),
    ({"prompt": "x", "cfg": 50}, "cfg"),
    ({"prompt": "x", "cfg": 5, "cfgScale": 5}, "cfg"),
    ({"prompt": "x", "negativePrompt": 3}, "negativePrompt"),
    ({"prompt": "x", "inputImage": "@@"}, "inputImage"),
    ({"prompt": "x", "inputImage": png_b64(), "strength": 0}, "strength"),
    ({"prompt": "x", "count": 17}, "count"),
    ({"prompt": "x", "negative_prompt": "snake case is the other dialect"}, "negative_prompt"),
    ({"prompt": "x", "model": 5}, "model"),
    ([1, 2], "body"),
])
def test_heyim_errors_name_the_clients_field(body: Any, field: str) -> None:
    def run() -> None:
        build_request(parse_heyim(body), None)

    err = _error(run)
    assert err.status == 422 and err.field == field


def test_a1111_mask_fields_take_its_api_defaults() -> None:
    """AUTOMATIC1111's img2img API defaults: inpaint_full_res True with padding 0, fill 0 ("fill"), blur 4."""
    base = {"prompt": "a fox", "init_images": [png_b64()], "mask": png_b64(color=(255, 255, 255)), "width": 64, "height": 64}
    _, req = _a1111(base, img2img=True)
    assert req.inpaint is not None
    assert (req.inpaint.only_masked, req.inpaint.padding, req.inpaint.fill, req.inpaint.blur) == (True, 0, "fill", 4)
    _, whole = _a1111(dict(base, inpaint_full_res=False, inpaint_full_res_padding=24, inpainting_fill=1,
                           mask_blur=2, inpainting_mask_invert=1), img2img=True)
    assert whole.inpaint is not None
    assert (whole.inpaint.only_masked, whole.inpaint.padding, whole.inpaint.fill, whole.inpaint.blur,
            whole.inpaint.invert) == (False, 24, "original", 2, True)
