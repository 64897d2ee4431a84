"""SDXL on the Core ML engine: a tiny SDXL converted by our converter into Apple's layout, its real
specs, predicted by the source torch modules, against diffusers' StableDiffusionXLPipeline."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heyim_desktop.core import GenerationRequest
from heyim_desktop.core.coreml.detect import KIND_SDXL, detect_coreml_folder
from heyim_desktop.core.coreml.engine import load_coreml_engine
from heyim_desktop.core.coreml.reference import TorchReferencePredictor

pytestmark = pytest.mark.slow

MAX_LEVELS, MEAN_LEVELS = 4.0, 0.5


def _pipe(source: Path):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(source, local_files_only=True, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _theirs(pipe, engine, req: GenerationRequest) -> np.ndarray:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.schedulers import build_scheduler

    pipe.scheduler = build_scheduler(req.scheduler_name, engine.components.scheduler_config)
    kwargs = dict(
        prompt=req.prompt, negative_prompt=req.negative_prompt or None, num_inference_steps=req.steps,
        guidance_scale=req.guidance, generator=torch.Generator("cpu").manual_seed(req.seed), output_type="np",
    )
    if req.init_image is None:
        images = pipe(height=req.height, width=req.width, **kwargs).images
    else:
        from diffusers import StableDiffusionXLImg2ImgPipeline

        img2img = StableDiffusionXLImg2ImgPipeline(**pipe.components)
        img2img.set_progress_bar_config(disable=True)
        images = img2img(image=req.init_image.resize((req.width, req.height)), strength=req.strength, **kwargs).images
    return np.asarray(images[0] * 255.0, np.float32)


def _close(engine, req: GenerationRequest, theirs: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    ours = np.asarray(engine.generate(req).images[0].image, np.float32)
    diff = np.abs(ours - theirs)
    assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, (diff.max(), diff.mean())


def test_converter_writes_apples_sdxl_layout(coreml_sdxl: Path, conversion_log: dict[str, object]) -> None:
    labels = [s.label for s in conversion_log["sdxl"]]  # type: ignore[attr-defined]
    assert labels == ["Loading the model", "TextEncoder", "TextEncoder2", "Unet", "VAEDecoder", "VAEEncoder", "Saving", "Done"]
    info = detect_coreml_folder(coreml_sdxl)
    assert info.kind == KIND_SDXL and info.size == (256, 256) and info.batch == 2
    for name in ("TextEncoder", "TextEncoder2"):
        spec = info.model(name)
        assert [t.name for t in spec.outputs] == ["hidden_embeds", "pooled_outputs"]
    assert [t.describe() for t in info.model("TextEncoder2").outputs] == [
        "hidden_embeds float32 (1, 77, 32)", "pooled_outputs float32 (1, 32)"]
    assert [t.describe() for t in info.model("Unet").inputs] == [
        "sample float16 (2, 4, 32, 32)", "timestep float16 (2,)", "encoder_hidden_states float16 (2, 64, 1, 77)",
        "time_ids float16 (2, 6)", "text_embeds float16 (2, 32)",
    ]
    assert [t.describe() for t in info.model("Unet").outputs] == ["noise_pred float32 (2, 4, 32, 32)"]
    # The VAE is converted in fp32 (SDXL's overflows in fp16).
    assert [t.describe() for t in info.model("VAEDecoder").inputs] == ["z float32 (1, 4, 32, 32)"]
    assert info.model("VAEDecoder").meta("heyim.scaling_factor") == "0.13025"
    assert json.loads((coreml_sdxl / "tokenizer_2" / "tokenizer_config.json").read_text())["pad_token"] == "!"


def test_sdxl_program_has_the_neural_engine_layout(coreml_sdxl: Path) -> None:
    from heyim_desktop.core.coreml.program import package_figures

    figures = package_figures(coreml_sdxl / "Unet.mlpackage")
    assert figures.count("linear") == 0 and figures.count("matmul") == 0 and figures.rank3 == 0
    assert figures.count("transpose") == 24  # one per attention: 12 blocks x 2
    assert figures.output_dtypes == {"noise_pred": "fp32"}


@pytest.fixture(scope="module")
def sdxl_engine(coreml_sdxl: Path, coreml_sdxl_source: Path):  # type: ignore[no-untyped-def]
    info = detect_coreml_folder(coreml_sdxl)
    predictor = TorchReferencePredictor(coreml_sdxl_source, info)
    engine = load_coreml_engine(coreml_sdxl, predictor=predictor)
    yield engine, predictor
    engine.close()


@pytest.mark.parametrize("scheduler", ["Euler", "DPM++ 2M"])
def test_sdxl_matches_diffusers(sdxl_engine, coreml_sdxl_source: Path, scheduler: str) -> None:  # type: ignore[no-untyped-def]
    engine, predictor = sdxl_engine
    assert engine.info.capabilities.family == "sdxl" and engine.fixed_size == (256, 256)
    req = GenerationRequest(prompt="a red fox in the snow", negative_prompt="blurry", steps=4, seed=3, width=256,
                            height=256, scheduler=scheduler, guidance=6.0)
    predictor.calls.clear()
    _close(engine, req, _theirs(_pipe(coreml_sdxl_source), engine, req))
    names = [n for n, _ in predictor.calls]
    assert names == ["TextEncoder", "TextEncoder2", "TextEncoder", "TextEncoder2"] + ["Unet"] * 4 + ["VAEDecoder"]
    unet_feed = predictor.calls[4][1]
    assert unet_feed["time_ids"] == ((2, 6), "float16") and unet_feed["text_embeds"] == ((2, 32), "float16")
    assert unet_feed["encoder_hidden_states"] == ((2, 64, 1, 77), "float16")


def test_sdxl_empty_negative_is_zeros_and_img2img(sdxl_engine, coreml_sdxl_source: Path) -> None:  # type: ignore[no-untyped-def]
    engine, _ = sdxl_engine
    pipe = _pipe(coreml_sdxl_source)
    req = GenerationRequest(prompt="a lighthouse", steps=3, seed=8, width=256, height=256, scheduler="Euler", guidance=5.0)
    _close(engine, req, _theirs(pipe, engine, req))
    source = Image.fromarray(np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))).convert("RGB")
    img = req.replace(init_image=source, strength=0.6, steps=5, guidance_boost=0.0)  # no boost: as diffusers
    _close(engine, img, _theirs(pipe, engine, img))


def test_flat_time_ids_and_apple_names(coreml_sdxl: Path, coreml_sdxl_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Apple's own SDXL downloads: time_ids declared flat (12,), no tokenizer_2 folder (pad with "!")."""
    from heyim_desktop.core.coreml.components import CoreMLComponents
    from heyim_desktop.models.inspect import inspect_coreml
    from heyim_desktop.models.types import ModelStatus

    copy = tmp_path / "m"
    shutil.copytree(coreml_sdxl, copy)
    shutil.rmtree(copy / "tokenizer_2")
    info = detect_coreml_folder(copy)
    fed: list[tuple[int, ...]] = []

    def predict(name, inputs):  # type: ignore[no-untyped-def]
        if name == "Unet":
            fed.append(inputs["time_ids"].shape)
            return {"noise_pred": np.zeros((2, 4, 32, 32), np.float32)}
        spec = info.model(name)
        return {t.name: np.zeros(t.shape, np.float32) for t in spec.outputs}

    parts = CoreMLComponents(info, predict)
    assert parts.tokenizer_2.pad_token == "!" and parts.scaling_factor == 0.13025
    # A spec declaring (12,) gets the same ids, flattened.
    unet = info.model("Unet")
    flat = type(unet)(unet.name, unet.path, tuple(t if t.name != "time_ids" else type(t)("time_ids", (12,), t.dtype) for t in unet.inputs),
                      unet.outputs, unet.has_einsum, unet.user_metadata)
    parts.unets = (flat,)
    parts.time_id_count = 6
    enc = parts.encode_prompts(GenerationRequest(prompt="x", steps=1, seed=1, width=256, height=256), with_negative=True)
    from heyim_desktop.core.conditioning import TextCond, UNetCall

    text = TextCond.cat([enc.uncond, enc.cond])  # type: ignore[list-item]
    parts.unet(UNetCall(torch.zeros(2, 4, 32, 32), torch.tensor(999.0), text))
    assert fed == [(12,)]
    monkeypatch.setattr(sys, "platform", "darwin")
    listed = inspect_coreml(copy)
    assert listed is not None and listed.status == ModelStatus.READY and listed.base == "SDXL"


def test_sdxl_vae_runs_on_the_gpu(coreml_sdxl: Path) -> None:
    from heyim_desktop.core.coreml.runtime import CoreMLRuntime

    opened: list[tuple[str, str]] = []

    class Fake:
        def predict(self, inputs):  # type: ignore[no-untyped-def]
            return {}

    def factory(path: Path, units: str) -> Fake:
        opened.append((path.name.split(".")[0], units))
        return Fake()

    class Cache:
        def path_for(self, path: Path) -> Path:
            return path

        def compiled(self, path: Path):  # type: ignore[no-untyped-def]
            return path, False

    CoreMLRuntime(detect_coreml_folder(coreml_sdxl), "CPU_AND_NE", cache=Cache(), factory=factory)  # type: ignore[arg-type]
    assert dict(opened) == {"Unet": "CPU_AND_NE", "TextEncoder": "CPU_AND_NE", "TextEncoder2": "CPU_AND_NE", "VAEDecoder": "CPU_AND_GPU"}


# -- the SDXL refiner in Apple's layout: TextEncoder2 only, aesthetic-score time ids (2, 5) -------------

@pytest.fixture(scope="module")
def coreml_refiner(tiny_sdxl_refiner: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[object]]:
    from heyim_desktop.core.coreml.convert import convert_to_coreml

    stages: list[object] = []
    out = convert_to_coreml(tiny_sdxl_refiner, tmp_path_factory.mktemp("coreml") / "tiny-sdxl-refiner-coreml",
                            progress=stages.append)
    return out, stages


@pytest.fixture(scope="module")
def refiner_engine(coreml_refiner: tuple[Path, list[object]], tiny_sdxl_refiner: Path):  # type: ignore[no-untyped-def]
    folder, _ = coreml_refiner
    predictor = TorchReferencePredictor(tiny_sdxl_refiner, detect_coreml_folder(folder))
    engine = load_coreml_engine(folder, predictor=predictor)
    yield engine, predictor
    engine.close()


def test_converter_writes_apples_refiner_layout(coreml_refiner: tuple[Path, list[object]], monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.models.inspect import inspect_coreml
    from heyim_desktop.models.types import ModelStatus

    folder, stages = coreml_refiner
    assert [s.label for s in stages] == ["Loading the model", "TextEncoder2", "Unet", "VAEDecoder", "VAEEncoder", "Saving", "Done"]  # type: ignore[attr-defined]
    assert not (folder / "TextEncoder.mlpackage").exists()
    info = detect_coreml_folder(folder)
    assert info.kind == KIND_SDXL and info.refiner and info.text_encoder_names == ("TextEncoder2",)
    assert [t.describe() for t in info.model("Unet").inputs] == [
        "sample float16 (2, 4, 32, 32)", "timestep float16 (2,)", "encoder_hidden_states float16 (2, 64, 1, 77)",
        "time_ids float16 (2, 5)", "text_embeds float16 (2, 32)",
    ]
    assert info.model("Unet").meta("heyim.force_zeros_for_empty_prompt") == "false"
    monkeypatch.setattr(sys, "platform", "darwin")
    listed = inspect_coreml(folder)
    assert listed is not None and listed.status == ModelStatus.READY and listed.base == "SDXL-refiner"


def test_refiner_img2img_matches_the_torch_refiner(refiner_engine, tiny_sdxl_refiner: Path) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.torch_engine import load_torch_engine

    engine, predictor = refiner_engine
    assert engine.info.capabilities.family == "sdxl-refiner" and engine.supports_img2img
    source = Image.fromarray(np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))).convert("RGB")
    req = GenerationRequest(prompt="a red fox in the snow", negative_prompt="blurry", steps=5, seed=4, width=256,
                            height=256, scheduler="Euler", guidance=5.0, init_image=source, strength=0.5,
                            guidance_boost=0.0)
    torch_engine = load_torch_engine(tiny_sdxl_refiner, device="cpu")
    try:
        theirs = np.asarray(torch_engine.generate(req).images[0].image, np.float32)
    finally:
        torch_engine.close()
    predictor.calls.clear()
    _close(engine, req, theirs)
    names = [n for n, _ in predictor.calls]
    assert names[:3] == ["TextEncoder2", "TextEncoder2", "VAEEncoder"] and "TextEncoder" not in names
    unet_feed = next(feed for n, feed in predictor.calls if n == "Unet")
    assert unet_feed["time_ids"] == ((2, 5), "float16") and unet_feed["encoder_hidden_states"] == ((2, 64, 1, 77), "float16")


def test_refiner_time_ids_carry_the_aesthetic_scores(refiner_engine) -> None:  # type: ignore[no-untyped-def]
    engine, _ = refiner_engine
    enc = engine.components.encode_prompts(GenerationRequest(prompt="x", steps=1, seed=1, width=256, height=192),
                                           with_negative=True)
    assert enc.cond.extras["time_ids"].tolist() == [[192.0, 256.0, 0.0, 0.0, 6.0]]
    assert enc.uncond.extras["time_ids"].tolist() == [[192.0, 256.0, 0.0, 0.0, 2.5]]


def test_coreml_base_hands_over_to_the_coreml_refiner(sdxl_engine, refiner_engine, coreml_sdxl_source: Path,
                                                      tiny_sdxl_refiner: Path) -> None:  # type: ignore[no-untyped-def]
    """Base and refiner both on Core ML, handed over as on torch (diffusers' denoising_end/start)."""
    from heyim_desktop.core.refine import stage_steps
    from heyim_desktop.core.torch_engine import load_torch_engine

    base, _ = sdxl_engine
    refiner, predictor = refiner_engine
    req = GenerationRequest(prompt="a lighthouse at dusk", negative_prompt="blurry", steps=6, seed=9, width=256,
                            height=256, scheduler="Euler", guidance=5.0, refiner=str(tiny_sdxl_refiner), refiner_switch=0.5)
    torch_base = load_torch_engine(coreml_sdxl_source, device="cpu")
    torch_refiner = load_torch_engine(tiny_sdxl_refiner, device="cpu")
    try:
        theirs = np.asarray(torch_base.generate(req, refiner=torch_refiner).images[0].image, np.float32)
    finally:
        torch_base.close()
        torch_refiner.close()
    predictor.calls.clear()
    ours = np.asarray(base.generate(req, refiner=refiner).images[0].image, np.float32)
    diff = np.abs(ours - theirs)
    assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, (diff.max(), diff.mean())
    names = [n for n, _ in predictor.calls]
    # The refiner resumes at the switch (no VAEEncoder: the base's latents are handed over) and decodes.
    assert names.count("Unet") == stage_steps(refiner.components, req, start=0.5) == 4
    assert names[:2] == ["TextEncoder2", "TextEncoder2"] and names[-1] == "VAEDecoder" and "VAEEncoder" not in names


def test_refiner_of_another_size_is_refused_before_the_base_runs(tiny_sdxl_engine, refiner_engine) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.errors import InvalidRequest

    refiner, predictor = refiner_engine
    predictor.calls.clear()
    req = GenerationRequest(prompt="x", steps=4, seed=1, width=64, height=64, scheduler="Euler", refiner_switch=0.5)
    with pytest.raises(InvalidRequest, match="only makes 256x256"):
        tiny_sdxl_engine.generate(req, refiner=refiner)
    assert predictor.calls == []


def test_chunked_sdxl_and_refiner_loras_are_refused(tiny_sdxl_refiner: Path, tmp_path: Path) -> None:
    from heyim_desktop.core.coreml.convert import convert_to_coreml
    from heyim_desktop.core.errors import InvalidRequest
    from heyim_desktop.core.lora import LoraUse

    with pytest.raises(InvalidRequest, match="chunked UNets"):
        convert_to_coreml(tiny_sdxl_refiner, tmp_path / "out", chunk_unet=True)
    with pytest.raises(InvalidRequest, match="without --lora"):
        convert_to_coreml(tiny_sdxl_refiner, tmp_path / "out", loras=[LoraUse(str(tmp_path / "x.safetensors"), 1.0)])
    assert not (tmp_path / "out").exists()


def test_a_folder_with_neither_text_encoder_is_incomplete(coreml_refiner: tuple[Path, list[object]], tmp_path: Path) -> None:
    from heyim_desktop.core.errors import ModelError

    copy = tmp_path / "m"
    shutil.copytree(coreml_refiner[0], copy)
    shutil.rmtree(copy / "TextEncoder2.mlpackage")
    with pytest.raises(ModelError, match="TextEncoder.mlmodelc"):
        detect_coreml_folder(copy)
