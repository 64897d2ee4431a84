"""The diffusion-transformer families: our engine against diffusers' own pipeline on tiny models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.errors import InvalidRequest, ModelError
from heyim_desktop.core.families import ZIMAGE, check_family_folder, family_for_pipeline, read_family_index
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import Progress


def _req(**kw: Any) -> GenerationRequest:
    base: dict[str, Any] = dict(prompt="a red fox in the forest", steps=3, guidance=3.0, seed=7, width=64, height=64)
    base.update(kw)
    return GenerationRequest(**base)


def _reference(folder: Path, request: GenerationRequest, seed: int) -> np.ndarray:
    import torch
    from diffusers import ZImagePipeline

    pipe = ZImagePipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        request.prompt, negative_prompt=request.negative_prompt or None, height=request.height, width=request.width,
        num_inference_steps=request.steps, guidance_scale=request.guidance,
        generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
    ).images
    return np.asarray(out[0], dtype=np.float32)


@pytest.mark.parametrize("guidance,negative", [(3.0, "blurry, ugly"), (0.0, "")])
def test_zimage_equals_the_diffusers_pipeline(zimage_engine: Any, tiny_zimage: Path, guidance: float, negative: str) -> None:
    request = _req(guidance=guidance, negative_prompt=negative, count=2)
    out = zimage_engine.render(request)
    assert out.images.shape == (2, 64, 64, 3) and out.seeds == (7, 8)
    for i, seed in enumerate(out.seeds):
        ref = _reference(tiny_zimage, request, seed)
        assert float(np.abs(out.images[i] - ref).max()) <= 1e-4
    assert float(np.abs(out.images[0] - out.images[1]).max()) > 1e-2  # seed + i gives another image


def test_zimage_generates_with_progress_previews_and_timings(zimage_engine: Any) -> None:
    seen: list[Progress] = []
    result = zimage_engine.generate(_req(steps=3), progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3] and all(p.total == 3 for p in seen)
    preview = seen[0].preview
    assert preview is not None and preview.dtype == np.uint8 and preview.shape[2] == 3
    assert result.images[0].image.size == (64, 64) and result.images[0].seed == 7
    assert {"steps", "decode", "total"} <= set(result.timings)
    # The SD scheduler the request defaulted to does not apply: the family's sampler is recorded.
    assert result.request.scheduler == "Euler" and any("flow-matching" in w for w in result.warnings)
    assert zimage_engine.info.capabilities.family == "zimage"
    assert zimage_engine.info.capabilities.schedulers == ("Euler",)


def test_zimage_progress_counts_the_steps_of_the_whole_job(zimage_engine: Any) -> None:
    seen: list[Progress] = []
    zimage_engine.generate(_req(steps=2, count=2), progress=seen.append)
    # As core.loop counts them (the window and the Redis queue show them as they are).
    assert [(p.step, p.total, p.image_index) for p in seen] == [(1, 4, 0), (2, 4, 0), (3, 4, 1), (4, 4, 1)]
    assert seen[-1].fraction == 1.0


def test_zimage_cancel_within_a_step_saves_nothing(tiny_zimage: Path) -> None:
    from heyim_desktop.core.host import EngineHost
    from heyim_desktop.core.jobs import JobQueue, JobState
    from heyim_desktop.core.loading import load_engine

    q = JobQueue()
    host = EngineHost(lambda ref: load_engine(ref, device="cpu"), default_model=str(tiny_zimage))
    job = q.submit(_req(steps=20))
    q.add_listener(lambda j: j.progress is not None and j.progress.step == 2 and j.cancel.cancel())
    assert q.take(timeout=1) is job
    host.run_job(q, job, sink=lambda r, j: pytest.fail("a cancelled job must not be saved"))  # type: ignore[arg-type,return-value]
    assert job.state is JobState.CANCELLED and job.result is None
    assert job.progress is not None and job.progress.step == 2
    host.unload()


def test_zimage_interrupt_keeps_the_partial_image(zimage_engine: Any) -> None:
    token = CancelToken()

    def on_progress(p: Progress) -> None:
        if p.step == 1:
            token.interrupt()

    result = zimage_engine.generate(_req(steps=10, count=3), progress=on_progress, cancel=token)
    assert result.interrupted and len(result.images) == 1


def test_zimage_refuses_what_it_cannot_do(zimage_engine: Any) -> None:
    from heyim_desktop.core.request import HiresFix

    with pytest.raises(InvalidRequest, match="hires fix"):
        zimage_engine.generate(_req(hires=HiresFix()))
    assert zimage_engine.size_step == 8  # the tiny VAE halves twice; a real one gives 16


def test_family_table_and_folder_checks(tiny_zimage: Path, tmp_path: Path) -> None:
    assert family_for_pipeline("ZImagePipeline") is ZIMAGE
    assert family_for_pipeline("StableDiffusionPipeline") is None
    found = read_family_index(tiny_zimage)
    assert found is not None and found[0] is ZIMAGE
    assert check_family_folder(tiny_zimage, found[1]) is ZIMAGE
    broken = tmp_path / "broken"
    shutil.copytree(tiny_zimage, broken)
    for f in (broken / "transformer").glob("*.safetensors"):
        f.unlink()
    (broken / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(ModelError, match="pickle"):
        check_family_folder(broken, json.loads((broken / "model_index.json").read_text()))
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelError, match="missing vae/"):
        check_family_folder(broken, json.loads((broken / "model_index.json").read_text()))


def test_flux2_klein_equals_the_diffusers_pipeline(tiny_flux2: Path) -> None:
    import torch
    from diffusers import Flux2KleinPipeline

    from heyim_desktop.core.loading import load_engine

    engine: Any = load_engine(str(tiny_flux2), device="cpu")
    caps = engine.info.capabilities
    assert caps.family == "flux2" and caps.negative_prompt is False and caps.guidance == "cfg"
    request = _req(guidance=4.0, steps=2, negative_prompt="ugly")
    seen: list[Progress] = []
    out = engine.render(request, progress=seen.append)
    assert [p.step for p in seen] == [1, 2] and seen[0].preview is not None
    assert any("no negative prompt" in w for w in out.warnings)
    pipe = Flux2KleinPipeline.from_pretrained(tiny_flux2, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt=request.prompt, height=64, width=64, num_inference_steps=2, guidance_scale=4.0,
               generator=torch.Generator("cpu").manual_seed(7), output_type="np", text_encoder_out_layers=(1,)).images
    assert float(np.abs(out.images[0] - ref[0]).max()) <= 1e-4
    engine.close()


def test_sd3_equals_the_diffusers_pipeline(tiny_sd3: Path) -> None:
    import torch
    from diffusers import StableDiffusion3Pipeline

    from heyim_desktop.core.loading import load_engine

    engine: Any = load_engine(str(tiny_sd3), device="cpu")
    assert engine.info.capabilities.family == "sd3" and engine.info.capabilities.negative_prompt
    request = _req(guidance=5.0, steps=2, negative_prompt="blurry", count=2)
    out = engine.render(request)
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_sd3, local_files_only=True, text_encoder_3=None,
                                                    tokenizer_3=None, feature_extractor=None, image_encoder=None)
    pipe.set_progress_bar_config(disable=True)
    for i, seed in enumerate(out.seeds):
        ref = pipe(prompt=request.prompt, negative_prompt="blurry", height=64, width=64, num_inference_steps=2,
                   guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
        assert float(np.abs(out.images[i] - ref[0]).max()) <= 1e-4
    engine.close()


def test_zimage_runs_in_the_engine_process(tiny_zimage: Path, zimage_engine: Any) -> None:
    """The GUI and serve talk to a child process: the family engine's info, progress and images cross it."""
    from heyim_desktop.core.process.remote import ProcessLoader

    remote = ProcessLoader(device="cpu")(str(tiny_zimage))
    try:
        caps = remote.info.capabilities
        assert caps.family == "zimage" and caps.guidance_range == (0.0, 10.0) and caps.schedulers == ("Euler",)
        seen: list[Progress] = []
        result = remote.generate(_req(steps=2, model=str(tiny_zimage)), progress=seen.append)
        assert [p.step for p in seen] == [1, 2] and result.images[0].image.size == (64, 64)
        local = zimage_engine.generate(_req(steps=2))
        assert np.array_equal(np.asarray(result.images[0].image), np.asarray(local.images[0].image))
        # the family's own metadata keys cross the process too
        assert result.parameters_extra == local.parameters_extra and result.parameters_extra[0][0] == "Model family"
    finally:
        remote.close()


# -- image-to-image and inpainting on diffusers' own family pipelines --------------------------

_EDIT_REFERENCE = {
    # family: (image-to-image pipeline, inpainting pipeline, image-to-image by a white mask)
    "zimage": ("ZImageImg2ImgPipeline", "ZImageInpaintPipeline", False),
    "sd3": ("StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline", False),
    "flux2": ("Flux2KleinInpaintPipeline", "Flux2KleinInpaintPipeline", True),
}


def _source_image() -> Any:
    from PIL import Image

    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8), mode="RGB")  # fitted to 64x64


def _half_mask() -> Any:
    from PIL import Image

    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:48, 8:40] = 255
    return Image.fromarray(mask, mode="L")


def _edit_references(folder: Path, family: str) -> dict[str, Any]:
    """diffusers' own image-to-image and inpainting pipelines for a tiny folder (loaded once, shared)."""
    import diffusers

    img2img_cls, inpaint_cls, _full_mask = _EDIT_REFERENCE[family]
    extra: dict[str, Any] = {}
    if family == "sd3":
        extra = dict(text_encoder_3=None, tokenizer_3=None, feature_extractor=None, image_encoder=None)
    inpaint = getattr(diffusers, inpaint_cls).from_pretrained(folder, local_files_only=True, **extra)
    img2img = inpaint if img2img_cls == inpaint_cls else getattr(diffusers, img2img_cls).from_pipe(inpaint)
    for pipe in (inpaint, img2img):
        pipe.set_progress_bar_config(disable=True)
    return {"img2img": img2img, "inpaint": inpaint}


def _edit_reference(pipes: dict[str, Any], family: str, request: GenerationRequest, seed: int) -> np.ndarray:
    import torch

    from heyim_desktop.core.images import fit_to_size

    assert request.init_image is not None
    kwargs: dict[str, Any] = dict(
        prompt=request.prompt, image=fit_to_size(request.init_image.convert("RGB"), 64, 64), strength=request.strength,
        height=64, width=64, num_inference_steps=request.steps, guidance_scale=request.effective_guidance,
        generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
    )
    if family == "flux2":
        kwargs["text_encoder_out_layers"] = (1,)
    else:
        kwargs["negative_prompt"] = request.negative_prompt or None
    if request.inpaint is not None:
        kwargs["mask_image"] = request.inpaint.mask
    elif _EDIT_REFERENCE[family][2]:  # image-to-image as inpainting everything
        from PIL import Image

        kwargs["mask_image"] = Image.new("L", (64, 64), 255)
    pipe = pipes["inpaint" if request.inpaint is not None else "img2img"]
    return np.asarray(pipe(**kwargs).images[0], dtype=np.float32)


@pytest.mark.slow  # two pipelines of a family on top of ours, ~3 s each on one core: the equality proof
@pytest.mark.parametrize("family", ["zimage", "sd3", "flux2"])
def test_family_image_to_image_and_inpainting_equal_diffusers(family: str, request: pytest.FixtureRequest) -> None:
    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.core.masking import InpaintSpec

    folder: Path = request.getfixturevalue(f"tiny_{family}")
    engine: Any = load_engine(str(folder), device="cpu")
    caps = engine.info.capabilities
    assert caps.img2img and caps.inpaint == "blend" and engine.supports_img2img
    refs = _edit_references(folder, family)
    base: dict[str, Any] = {"init_image": _source_image(), "strength": 0.7, "steps": 3, "negative_prompt": "ugly"}
    # blur 0 and no paste-back for inpainting: the pipeline's own output, to compare with diffusers as it is
    for edit in ({}, {"inpaint": InpaintSpec(mask=_half_mask(), blur=0, keep_unmasked=False)}):
        req = _req(guidance=2.0, guidance_boost=1.0, **base, **edit)
        seen: list[Progress] = []
        out = engine.render(req, progress=seen.append)
        assert [p.step for p in seen] == [1, 2, 3] and seen[0].total == 3  # 3 - int(3 - 3 * 0.7) steps run
        ref = _edit_reference(refs, family, req, out.seeds[0])
        assert float(np.abs(out.images[0] - ref).max()) <= 1e-4
    engine.close()


def test_family_inpainting_keeps_the_unmasked_pixels_and_outpaints(zimage_engine: Any) -> None:
    from heyim_desktop.core.masking import Extend, InpaintSpec

    source = _source_image()
    out = zimage_engine.render(_req(init_image=source, strength=0.8, steps=4,
                                    inpaint=InpaintSpec(mask=_half_mask(), blur=0)))
    from heyim_desktop.core.images import fit_to_size

    original = np.asarray(fit_to_size(source, 64, 64), dtype=np.float32) / 255.0
    keep = np.asarray(_half_mask()) == 0
    assert float(np.abs(out.images[0][keep] - original[keep]).max()) <= 1 / 255
    grown = zimage_engine.render(_req(init_image=source, steps=4, strength=1.0, extend=Extend(right=16)))
    assert grown.images.shape == (1, 64, 80, 3) and grown.request.width == 80
    with pytest.raises(InvalidRequest, match="original"):
        zimage_engine.render(_req(init_image=source, steps=4, inpaint=InpaintSpec(mask=_half_mask(), fill="latent noise")))


# -- LoRAs through the pipelines' own load_lora_weights -------------------------------------------


@pytest.mark.slow  # a LoRA'd run of ours and of diffusers' pipeline per family, ~3 s on one core
@pytest.mark.parametrize("family", ["zimage", "sd3", "flux2"])
def test_family_lora_equals_diffusers_load_lora_weights(family: str, request: pytest.FixtureRequest,
                                                        tmp_path: Path) -> None:
    import diffusers
    import torch

    from heyim_desktop.core.families import FAMILIES
    from heyim_desktop.core.families.tiny import write_tiny_lora
    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.core.lora import LoraUse, inspect_network_file

    folder: Path = request.getfixturevalue(f"tiny_{family}")
    lora = write_tiny_lora(folder, tmp_path / f"{family}-style.safetensors")
    assert inspect_network_file(lora).family == family  # recognised from its tensor names
    engine: Any = load_engine(str(folder), device="cpu")
    assert engine.info.capabilities.runtime_lora
    req = _req(prompt="a red fox <lora:style:0.7>", steps=2, guidance=2.0,
               loras=(LoraUse(str(lora), 0.7, "style"),))
    out = engine.render(req)
    extra: dict[str, Any] = {}
    if family == "sd3":
        extra = dict(text_encoder_3=None, tokenizer_3=None, feature_extractor=None, image_encoder=None)
    pipe = getattr(diffusers, FAMILIES[family].pipeline).from_pretrained(folder, local_files_only=True, **extra)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora), adapter_name="style")
    pipe.set_adapters(["style"], adapter_weights=[0.7])
    kwargs: dict[str, Any] = {"text_encoder_out_layers": (1,)} if family == "flux2" else {}
    ref = pipe(prompt="a red fox", height=64, width=64, num_inference_steps=2, guidance_scale=2.0,
               generator=torch.Generator("cpu").manual_seed(7), output_type="np", **kwargs).images[0]
    assert float(np.abs(out.images[0] - ref).max()) <= 1e-4
    plain = engine.render(req.replace(prompt="a red fox", loras=()))  # LoRAs come off again
    assert float(np.abs(plain.images[0] - out.images[0]).max()) > 1e-3
    again = engine.render(req)
    assert float(np.abs(again.images[0] - out.images[0]).max()) <= 1e-6
    engine.close()


def test_a_lora_for_another_family_is_refused(zimage_engine: Any, tiny_sd3: Path, tmp_path: Path) -> None:
    from heyim_desktop.core.families.tiny import write_tiny_lora
    from heyim_desktop.core.lora import LoraUse

    lora = write_tiny_lora(tiny_sd3, tmp_path / "sd3.safetensors")
    with pytest.raises(ModelError, match="LoRA for SD 3.5 models; the loaded model is Z-Image"):
        zimage_engine.render(_req(loras=(LoraUse(str(lora), 1.0),)))


# -- memory: VAE tiling for large images, model CPU offload -----------------------------------------


def test_large_images_decode_in_tiles_as_diffusers_does(zimage_engine: Any, tiny_zimage: Path) -> None:
    import torch
    from diffusers import ZImagePipeline

    zimage_engine.tile_above_pixels = 48 * 48  # the tiny VAE tiles at 32 px: 64x64 counts as large here
    try:
        out = zimage_engine.render(_req(steps=2))
    finally:
        zimage_engine.tile_above_pixels = 1280 * 1280
    assert any("in tiles" in w for w in out.warnings)
    pipe = ZImagePipeline.from_pretrained(tiny_zimage, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.enable_tiling()
    ref = pipe("a red fox in the forest", height=64, width=64, num_inference_steps=2, guidance_scale=3.0,
               generator=torch.Generator("cpu").manual_seed(7), output_type="np").images[0]
    assert float(np.abs(out.images[0] - ref).max()) <= 1e-4
    whole = zimage_engine.render(_req(steps=2))  # below the threshold: decoded whole again
    assert not any("in tiles" in w for w in whole.warnings)
    assert float(np.abs(whole.images[0] - out.images[0]).max()) > 1e-3


def test_model_cpu_offload_gives_the_same_images(tiny_zimage: Path, zimage_engine: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from heyim_desktop.core.families import read_family_index
    from heyim_desktop.core.families.engine import load_family_engine
    from heyim_desktop.core.families.memory import wants_offload

    cpu = torch.device("cpu")
    assert not wants_offload(cpu, 10**12) and wants_offload(cpu, 1, True)
    monkeypatch.setenv("HEYIM_OFFLOAD", "on")
    assert wants_offload(torch.device("cuda"), 1) and not wants_offload(torch.device("cuda"), 1, False)
    assert not wants_offload(cpu, 1)  # the variable is ignored on the CPU, where offload only costs
    found = read_family_index(tiny_zimage)
    assert found is not None
    # accelerate's hooks with the CPU standing in for the device (asked for explicitly)
    engine = load_family_engine(tiny_zimage, found[1], device="cpu", offload=True)
    assert engine.offloaded and engine.pipe._all_hooks
    out = engine.render(_req(steps=2))
    engine.close()
    assert float(np.abs(out.images[0] - zimage_engine.render(_req(steps=2)).images[0]).max()) <= 1e-6


def test_the_offload_estimate_weighs_sd35s_t5_and_counts_weights_at_the_load_dtype(tmp_path: Path) -> None:
    import json

    from heyim_desktop.core.families import FAMILIES
    from heyim_desktop.core.families.memory import weights_bytes
    from heyim_desktop.core.families.tiny import build_tiny_model

    folder = build_tiny_model("sd3", tmp_path / "sd3", t5=True)
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    sd3 = FAMILIES["sd3"]

    def files(*parts: str) -> int:  # the tiny model is saved in fp32
        return sum(f.stat().st_size for p in parts for f in (folder / p).glob("*.safetensors"))

    base = ("transformer", "vae", "text_encoder", "text_encoder_2")
    with_t5 = weights_bytes(folder, sd3, None, (), 4, index)
    assert weights_bytes(folder, sd3, None, (), 4) < with_t5  # without the index: the T5 was left out
    # fp32 at 4 bytes a weight is the files' size less their headers (a few KB)
    assert 0 <= files(*base, "text_encoder_3") - with_t5 < 64 * 1024
    assert abs(weights_bytes(folder, sd3, None, (), 2, index) * 2 - with_t5) <= 8  # bf16: half
    del index["text_encoder_3"]  # a folder run without T5
    assert 0 <= files(*base) - weights_bytes(folder, sd3, None, (), 4, index) < 64 * 1024


def test_the_token_counter_shows_the_familys_window_not_clips(zimage_engine: Any) -> None:
    """The window shows ``N/<window>``: 512 for these models' text encoders, not CLIP's 77."""
    count = zimage_engine.count_tokens("a red fox in the forest")
    assert count.exact and count.tokens > 0
    assert (count.limit, count.window, count.cut_at) == (512, 512, None)
