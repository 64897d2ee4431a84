"""A family image's own parameters keys: written by the engine, carried to the PNG, read back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heyim_desktop.core.families import FLUX2_KLEIN, SD3, ZIMAGE
from heyim_desktop.core.metadata import FAMILY_KEYS, format_parameters, parse_parameters, read_parameters
from heyim_desktop.core.request import GenerationRequest


def _req(**kw: Any) -> GenerationRequest:
    base: dict[str, Any] = dict(prompt="a red fox", steps=2, guidance=3.0, seed=7, width=64, height=64)
    base.update(kw)
    return GenerationRequest(**base)


def test_family_keys_round_trip_through_the_parameters_text() -> None:
    from heyim_desktop.core.families.engine import family_parameters

    klein = family_parameters(FLUX2_KLEIN, "none", {"use_dynamic_shifting": True, "shift": 3.0},
                              Path("/models/flux-2-klein-4b-Q4_K_M.safetensors"))
    assert klein == (("Model family", "FLUX.2 [klein]"), ("Guidance kind", "none"), ("Shift", "dynamic"),
                     ("Transformer", "flux-2-klein-4b-Q4_K_M.safetensors"))
    text = format_parameters(_req(scheduler="Euler"), 7, "flux-2-klein-4b-Q4_K_M", extra=dict(klein))
    assert 'Model family: FLUX.2 [klein], Guidance kind: none, Shift: dynamic' in text
    parsed = parse_parameters(text)
    assert parsed.family_settings() == {"family": "flux2", "guidance_kind": "none", "shift": "dynamic",
                                        "transformer": "flux-2-klein-4b-Q4_K_M.safetensors"}
    settings = parsed.request_settings()
    assert settings["model"] == "flux-2-klein-4b-Q4_K_M" and settings["steps"] == 2 and settings["scheduler"] == "Euler"

    sd3 = dict(family_parameters(SD3, "cfg", {"shift": 3.0}))
    parsed = parse_parameters(format_parameters(_req(), 7, "sd35", extra=sd3))
    assert parsed.family_settings() == {"family": "sd3", "guidance_kind": "cfg", "shift": 3.0}
    # Only the model is restored from Model when the image names one; without it, from the transformer file.
    no_model = parse_parameters("a fox\nSteps: 9, Seed: 1, Model family: Z-Image, Transformer: z-image-turbo-Q8_0.gguf, "
                                "Quantization: q8_0, Shift: 3")
    assert no_model.request_settings()["model"] == "z-image-turbo-Q8_0"
    assert no_model.family_settings()["quantization"] == "Q8_0" and no_model.family_settings()["family"] == "zimage"


def test_hostile_family_values_are_left_out() -> None:
    text = ('x\nSteps: 2, Seed: 1, Model family: Stable Cascade, Guidance kind: "rm -rf", Shift: inf, '
            'Transformer: "../../etc/passwd", Quantization: "Q8_0; drop"')
    parsed = parse_parameters(text)
    assert parsed.family_settings() == {}
    assert "model" not in parsed.request_settings()
    assert parse_parameters("x\nSteps: 2, Seed: 1, Shift: 0, Transformer: ..").family_settings() == {}
    assert set(FAMILY_KEYS) == {"Model family", "Guidance kind", "Shift", "Transformer", "Quantization",
                                "Text encoder", "Text encoder quantization"}


def test_zimage_images_carry_the_family_keys(zimage_engine: Any, tiny_zimage: Path, tmp_path: Path) -> None:
    from heyim_desktop.core.output import save_result

    result = zimage_engine.generate(_req())
    shift = zimage_engine.pipe.scheduler.config["shift"]
    assert dict(result.parameters_extra) == {"Model family": "Z-Image", "Guidance kind": "cfg",
                                             "Shift": format(shift, "g")}
    parsed = read_parameters(save_result(result, tmp_path)[0])
    assert parsed is not None
    assert parsed.family_settings() == {"family": "zimage", "guidance_kind": "cfg", "shift": shift}
    assert parsed.request_settings()["model"] == result.model_name


def test_a_gguf_transformer_records_its_file_and_quantization(tiny_zimage: Path, tmp_path: Path) -> None:
    from heyim_desktop.core.families.engine import family_parameters
    from heyim_desktop.core.families.tiny import write_tiny_gguf

    file = write_tiny_gguf(tiny_zimage, tmp_path / "z-Q4_0.gguf", quantization="Q4_0")
    pairs = dict(family_parameters(ZIMAGE, "cfg", {"shift": 6.0}, file))
    assert pairs["Transformer"] == "z-Q4_0.gguf" and pairs["Quantization"] == "Q4_0" and pairs["Shift"] == "6"
    parsed = parse_parameters(format_parameters(_req(), 7, "z-Q4_0", extra=pairs))
    assert parsed.family_settings()["quantization"] == "Q4_0"
