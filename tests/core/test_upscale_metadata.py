"""Hires fix and upscale keys in AUTOMATIC1111's parameters text, and hires fix as codec data."""

from __future__ import annotations

import pytest

from heyim_desktop.core.codec import request_from_data, request_to_data
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.metadata import format_parameters, parse_parameters, postprocess_parameters
from heyim_desktop.core.request import GenerationRequest, HiresFix


def test_hires_keys_as_automatic1111_writes_them_and_read_back() -> None:
    req = GenerationRequest(prompt="a fox", steps=20, seed=3, width=512, height=512, guidance=7.0, scheduler="Euler a",
                            hires=HiresFix(scale=2, upscaler="R-ESRGAN 4x+", steps=10, denoising_strength=0.45))
    text = format_parameters(req, 3, "sd15")
    last = text.splitlines()[-1]
    assert "Size: 512x512" in last and "CFG scale: 7," in last
    assert "Denoising strength: 0.45, Hires upscale: 2, Hires steps: 10, Hires upscaler: R-ESRGAN 4x+" in last
    parsed = parse_parameters(text)
    settings = parsed.request_settings()
    assert settings["hires"] == HiresFix(scale=2, upscaler="R-ESRGAN 4x+", steps=10, denoising_strength=0.45)
    assert "strength" not in settings and "guidance_boost" not in settings and settings["guidance"] == 7.0
    assert GenerationRequest(**settings).hires is not None
    resized = req.replace(hires=HiresFix(resize_x=768, resize_y=640))
    assert "Hires resize: 768x640" in format_parameters(resized, 3, "sd15")
    assert parse_parameters(format_parameters(resized, 3, "sd15")).hires_settings().target_size(512, 512) == (768, 640)


def test_a1111_hires_text_from_another_tool() -> None:
    text = ("a castle\nNegative prompt: ugly\nSteps: 25, Sampler: DPM++ 2M, CFG scale: 6, Seed: 9, Size: 512x768, "
            "Model: x, Denoising strength: 0.7, Hires upscale: 1.5, Hires upscaler: Latent")
    settings = parse_parameters(text).request_settings()
    assert settings["hires"].scale == 1.5 and settings["hires"].upscaler == "Latent" and settings["hires"].steps == 0
    assert "strength" not in settings


def test_postprocess_keys_are_appended_to_the_source_parameters() -> None:
    source = "a fox\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64"
    text = postprocess_parameters(source, 4, "RealESRGAN_x4plus")
    assert text == source + ", Postprocess upscale by: 4, Postprocess upscaler: RealESRGAN_x4plus"
    parsed = parse_parameters(text)
    assert parsed.seed == 1 and parsed.params["Postprocess upscale by"] == "4"
    assert postprocess_parameters(None, 2.5, "Lanczos") == "Postprocess upscale by: 2.5, Postprocess upscaler: Lanczos"
    assert postprocess_parameters("just a prompt", 2, "Nearest") == "just a prompt\nPostprocess upscale by: 2, Postprocess upscaler: Nearest"


def test_hires_travels_as_data_by_name_only() -> None:
    req = GenerationRequest(prompt="x", seed=1, width=64, height=64,
                            hires=HiresFix(scale=1.5, upscaler="4x_model", upscaler_path="/models/4x_model.safetensors"))
    data = request_to_data(req)
    assert data["hires"]["upscaler"] == "4x_model" and "upscaler_path" not in data["hires"]
    back = request_from_data(data)
    assert back.hires == req.hires and back.hires is not None and back.hires.upscaler_path is None
    with pytest.raises(InvalidRequest, match="hires"):
        request_from_data({"prompt": "x", "hires": {"scale": 2, "upscaler_path": "/etc/passwd"}})
    with pytest.raises(InvalidRequest, match="hires_scale"):
        request_from_data({"prompt": "x", "hires": {"scale": "big"}})
