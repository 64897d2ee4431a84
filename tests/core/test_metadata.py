from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from heyim_desktop.core.metadata import format_parameters, parse_parameters, read_parameters
from heyim_desktop.core.output import save_result, write_png_atomic
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult

A1111_TXT2IMG = (
    "masterpiece, a castle on a hill,\nsunset, (detailed:1.2)\n"
    "Negative prompt: lowres, bad anatomy\nworst quality\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3053925683, "
    'Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, '
    'Lora hashes: "add_detail: 7c6bad76eb54, style: abc", Version: v1.9.4'
)
A1111_IMG2IMG = (
    "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: abc, "
    "Model: anything, Denoising strength: 0.55, Version: v1.6.0"
)


def test_parses_automatic1111_text() -> None:
    p = parse_parameters(A1111_TXT2IMG)
    assert p.prompt == "masterpiece, a castle on a hill,\nsunset, (detailed:1.2)"
    assert p.negative_prompt == "lowres, bad anatomy\nworst quality"
    assert p.steps == 28 and p.seed == 3053925683 and p.cfg_scale == 6.5
    assert p.size == (512, 768)
    assert p.sampler == "DPM++ 2M Karras"
    assert p.params["Lora hashes"] == "add_detail: 7c6bad76eb54, style: abc"
    settings = p.request_settings()
    assert settings["scheduler"] == "DPM++ 2M Karras"
    assert (settings["width"], settings["height"]) == (512, 768)
    assert settings["guidance"] == 6.5
    req = GenerationRequest(**settings)
    assert req.seed == 3053925683 and req.model == "v1-5-pruned-emaonly"


def test_other_tools_img2img_keeps_its_cfg() -> None:
    settings = parse_parameters(A1111_IMG2IMG).request_settings()
    assert settings["strength"] == 0.55
    assert settings["guidance"] == 7 and settings["guidance_boost"] == 0.0
    req = GenerationRequest(**settings, init_image=Image.new("RGB", (8, 8)))
    assert req.effective_guidance == 7


def test_prompt_only_text() -> None:
    p = parse_parameters("just a prompt, with commas")
    assert p.prompt == "just a prompt, with commas" and p.params == {}


def test_unusable_values_are_dropped_not_fatal() -> None:
    p = parse_parameters("x\nSteps: 500, Sampler: Heun++ 9000, CFG scale: 99, Seed: -5, Size: 513x512")
    assert p.request_settings() == {"prompt": "x", "negative_prompt": ""}


def _request(**kw: object) -> GenerationRequest:
    base = dict(prompt='a "quoted", red fox: at night\nsecond line', negative_prompt="blurry, ugly",
                steps=12, guidance=6.0, seed=77, width=64, height=128, scheduler="Euler a")
    base.update(kw)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def test_format_then_parse_round_trip() -> None:
    req = _request()
    text = format_parameters(req, 77, "my-model")
    p = parse_parameters(text)
    assert p.prompt == req.prompt and p.negative_prompt == req.negative_prompt
    rebuilt = GenerationRequest(**p.request_settings())
    assert rebuilt.settings() == dict(req.settings(), model="my-model")


def test_img2img_round_trip_keeps_guidance_and_boost() -> None:
    req = _request(init_image=Image.new("RGB", (8, 8)), strength=0.4, guidance=5.0)
    text = format_parameters(req, 77, "m")
    assert "CFG scale: 6.5" in text and "Denoising strength: 0.4" in text and "Guidance boost: 1.5" in text
    settings = parse_parameters(text).request_settings()
    assert settings["guidance"] == 5.0 and settings["guidance_boost"] == 1.5 and settings["strength"] == 0.4


def _result(req: GenerationRequest) -> GenerationResult:
    req = req.with_seed()
    images = tuple(GeneratedImage(Image.new("RGB", (req.width, req.height), (i * 40, 0, 0)), s, i)
                   for i, s in enumerate(req.image_seeds()))
    return GenerationResult(req, images, "tiny", "torch-cpu", {"total": 1.0})


def test_saved_png_is_read_back_by_us_and_by_a_third_party_reader(tmp_path: Path) -> None:
    sd_parsers = pytest.importorskip("sd_parsers")
    paths = save_result(_result(_request(count=2)), tmp_path)
    assert len(paths) == 2 and all(p.suffix == ".png" for p in paths)
    ours = read_parameters(paths[1])
    assert ours is not None and ours.seed == 78 and ours.prompt.startswith('a "quoted"')
    info = sd_parsers.ParserManager().parse(paths[0])
    assert info.generator.name == "AUTOMATIC1111"
    sampler = info.samplers[0]
    assert sampler.prompts[0].value == _request().prompt
    assert sampler.negative_prompts[0].value == "blurry, ugly"
    assert sampler.parameters["seed"] == "77" and sampler.parameters["steps"] == "12"
    assert info.metadata["Size"] == "64x128"


def test_reads_parameters_from_jpeg_exif_user_comment(tmp_path: Path) -> None:
    text = "a dog\nSteps: 5, Sampler: Euler, CFG scale: 4, Seed: 9, Size: 64x64"
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[0x9286] = b"UNICODE\x00" + text.encode("utf-16-be")
    path = tmp_path / "a1111.jpg"
    Image.new("RGB", (64, 64)).save(path, "JPEG", exif=exif.tobytes())
    p = read_parameters(path)
    assert p is not None and p.prompt == "a dog" and p.seed == 9


def test_image_without_parameters(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(path)
    assert read_parameters(path) is None


def test_atomic_write_never_overwrites_and_leaves_no_temp_files(tmp_path: Path) -> None:
    img = Image.new("RGB", (8, 8))
    a = write_png_atomic(img, tmp_path / "x.png", "p\nSteps: 1, Seed: 1, Size: 8x8")
    b = write_png_atomic(img, tmp_path / "x.png", "p\nSteps: 1, Seed: 2, Size: 8x8")
    assert a.name == "x.png" and b.name == "x-1.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-1.png", "x.png"]


def test_disk_full_is_a_clear_error_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    from heyim_desktop.core.errors import StorageError

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", full)
    with pytest.raises(StorageError, match="disk is full"):
        write_png_atomic(Image.new("RGB", (8, 8)), tmp_path / "x.png", "p")
    assert list(tmp_path.iterdir()) == []


def test_refiner_settings_round_trip_without_the_path() -> None:
    from heyim_desktop.core.metadata import format_parameters, parse_parameters
    from heyim_desktop.core.request import GenerationRequest

    req = GenerationRequest(prompt="a fox", seed=3, width=1024, height=1024, refiner="/models/sd_xl_refiner_1.0",
                            refiner_switch=0.7)
    text = format_parameters(req, 3, "sd_xl_base_1.0")
    assert "Refiner: sd_xl_refiner_1.0, Refiner switch at: 0.7" in text and "/models" not in text
    settings = parse_parameters(text).request_settings()
    assert (settings["refiner"], settings["refiner_switch"], settings["width"]) == ("sd_xl_refiner_1.0", 0.7, 1024)
    a1111 = parse_parameters("x\nSteps: 20, Refiner: sd_xl_refiner_1.0 [7440042bbd], Refiner switch at: 0.8")
    assert a1111.refiner == "sd_xl_refiner_1.0" and a1111.request_settings()["refiner_switch"] == 0.8
