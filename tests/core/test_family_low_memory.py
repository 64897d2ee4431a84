"""The family engines' low-memory mode: text encoders loaded only while a prompt is encoded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.request import GenerationRequest


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from heyim_desktop.core.families.tiny import build_tiny_model
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    root = tmp_path_factory.mktemp("low-memory")
    return {"zimage": build_tiny_model("zimage", root / "z"), "flux2": build_tiny_model("flux2", root / "f"),
            "sd3": build_tiny_model("sd3", root / "s", t5=True)}


def _diffusers(folder: Path, prompt: str, negative: str | None, seed: int, **extra: Any) -> np.ndarray:
    import diffusers
    import torch

    from heyim_desktop.core.families import read_family_index
    from heyim_desktop.core.families.engine import flux2_text_layers

    found = read_family_index(folder)
    assert found is not None
    family = found[0]
    pipe = getattr(diffusers, family.pipeline).from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    kwargs: dict[str, Any] = dict(prompt=prompt, height=64, width=64, num_inference_steps=2, guidance_scale=3.0,
                                  output_type="np", **extra)
    if family.negative_prompt:
        kwargs["negative_prompt"] = negative
    if family.key == "flux2":
        kwargs["text_encoder_out_layers"] = flux2_text_layers(pipe.text_encoder.config.num_hidden_layers)
    images: np.ndarray = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed)).images[0]
    return images


@pytest.mark.parametrize("family", ["zimage", "flux2", "sd3"])
def test_low_memory_equals_diffusers_and_loads_each_part_in_turn(models: dict[str, Path], family: str) -> None:
    from heyim_desktop.core.loading import load_engine

    engine: Any = load_engine(str(models[family]), device="cpu", memory="low")
    try:
        low = engine.low
        assert low is not None and (low.text_loads, low.transformer_loads) == (0, 0)
        parts = sorted(low.text_loaders)
        # SD 3.5 keeps CLIP-L, CLIP-G and its T5 off; the Qwen3 families their one encoder
        assert parts == (["text_encoder", "text_encoder_2", "text_encoder_3"] if family == "sd3" else ["text_encoder"])
        assert all(getattr(engine.pipe, p) is None for p in (*parts, "transformer"))  # nothing big loaded yet

        negative = "blurry" if family == "sd3" else ""
        request = GenerationRequest("a red fox in the forest", negative_prompt=negative, steps=2, guidance=3.0,
                                    seed=5, width=64, height=64)
        during_steps: list[tuple[bool, bool]] = []

        def seen(_p: Any) -> None:
            during_steps.append((low.text_encoders_loaded, engine.pipe.transformer is not None))

        first = engine.render(request, progress=seen)
        assert during_steps == [(False, True), (False, True)]  # the encoders were gone before the first step
        assert (low.text_loads, low.transformer_loads) == (1, 1)
        assert all(getattr(engine.pipe, p) is None for p in parts)
        reference = _diffusers(models[family], "a red fox in the forest", negative or None, 5)
        assert float(np.abs(first.images[0] - reference).max()) <= 1e-4

        again = engine.render(request.replace(seed=6))  # same prompt: its features are reused, nothing loads
        assert (low.text_loads, low.transformer_loads) == (1, 1)
        assert float(np.abs(again.images[0] - _diffusers(models[family], "a red fox in the forest",
                                                         negative or None, 6)).max()) <= 1e-4
        other = engine.render(request.replace(prompt="a photo of a cat"))  # new prompt: encoders, then transformer
        assert (low.text_loads, low.transformer_loads) == (2, 2)
        assert float(np.abs(other.images[0] - _diffusers(models[family], "a photo of a cat",
                                                         negative or None, 5)).max()) <= 1e-4
        assert engine.info.memory == "saving memory: text encoders and transformer load in turn"
    finally:
        engine.close()


def test_low_memory_image_to_image_shares_the_released_encoders(models: dict[str, Path]) -> None:
    import torch
    from diffusers import ZImageImg2ImgPipeline
    from PIL import Image

    from heyim_desktop.core.loading import load_engine

    start = Image.fromarray((np.indices((64, 64)).sum(axis=0) % 255).astype(np.uint8)).convert("RGB")
    engine: Any = load_engine(str(models["zimage"]), device="cpu", memory="low")
    try:
        request = GenerationRequest("a red fox in the forest", steps=4, guidance=3.0, seed=3, width=64, height=64,
                                    init_image=start, strength=0.5)
        out = engine.render(request)
        engine.render(request.replace(seed=4))  # the same prompt: no probe, no VAE encoding for it
        assert engine.low.probes == 1
        edit = engine._edit_pipes["ZImageImg2ImgPipeline"]
        assert edit.text_encoder is None and engine.pipe.text_encoder is None and engine.low.text_loads == 1
        assert edit.transformer is engine.pipe.transformer is engine.low.transformer is not None
    finally:
        engine.close()
    pipe = ZImageImg2ImgPipeline.from_pretrained(models["zimage"], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a red fox in the forest", image=start, strength=0.5, height=64, width=64, num_inference_steps=4,
               guidance_scale=request.effective_guidance,
               generator=torch.Generator("cpu").manual_seed(3), output_type="np").images[0]
    assert float(np.abs(out.images[0] - ref).max()) <= 1e-4


def test_a_gguf_text_encoder_is_loaded_on_demand_too(models: dict[str, Path], tmp_path: Path) -> None:
    from heyim_desktop.core.families.tiny import build_tiny_model, write_tiny_text_encoder_gguf
    from heyim_desktop.core.loading import load_engine

    folder = build_tiny_model("zimage", tmp_path / "z32", text_width=32)
    gguf = write_tiny_text_encoder_gguf(folder, tmp_path / "qwen3-q8.gguf")
    full: Any = load_engine(str(folder), device="cpu", text_encoder=str(gguf))
    low: Any = load_engine(str(folder), device="cpu", text_encoder=str(gguf), memory="low")
    try:
        request = GenerationRequest("a red fox in the forest", steps=2, guidance=3.0, seed=1, width=64, height=64)
        expected = full.render(request).images[0]
        got = low.render(request).images[0]
        assert low.pipe.text_encoder is None and low.low.text_loads == 1
        assert float(np.abs(expected - got).max()) <= 1e-5
        assert ("Text encoder", "qwen3-q8.gguf") in low.parameters_extra  # the metadata still names it
    finally:
        full.close()
        low.close()


def test_the_memory_plan_per_device_and_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from heyim_desktop.core.families import memory as family_memory
    from heyim_desktop.core.families.memory import memory_plan

    monkeypatch.delenv("HEYIM_OFFLOAD", raising=False)
    monkeypatch.setattr(family_memory, "system_memory_bytes", lambda: 16 * 10**9)
    monkeypatch.setattr(family_memory, "device_memory_bytes", lambda dev: 24 * 10**9)
    cpu, mps, cuda = torch.device("cpu"), torch.device("mps"), torch.device("cuda")
    gb = 10**9
    assert memory_plan(cpu, 8 * gb) == (False, False)  # fits in 3/4 of 16 GB: everything stays
    assert memory_plan(cpu, 13 * gb) == (False, True) and memory_plan(mps, 13 * gb) == (False, True)
    assert memory_plan(mps, 13 * gb, "full") == (False, False)
    assert memory_plan(mps, 1 * gb, "low") == (False, True)
    assert memory_plan(cuda, 13 * gb) == (False, False)  # 24 GB card
    assert memory_plan(cuda, 20 * gb) == (True, False)  # crowded card: offload, which frees the GPU of them
    assert memory_plan(cuda, 1 * gb, "low") == (True, False)
    assert memory_plan(cuda, 20 * gb, "full") == (False, False)
    assert memory_plan(cuda, 1 * gb, "full", offload=True) == (True, False)  # an explicit offload wins
    monkeypatch.setenv("HEYIM_OFFLOAD", "on")
    assert memory_plan(cuda, 1 * gb, "full") == (False, False)  # full is explicit too
    assert memory_plan(cuda, 1 * gb) == (True, False)


def test_an_unknown_memory_setting_is_refused_before_loading(models: dict[str, Path]) -> None:
    from heyim_desktop.core.loading import load_engine

    with pytest.raises(ModelError, match="Unknown memory setting 'tiny'; choose one of auto, low, full"):
        load_engine(str(models["zimage"]), device="cpu", memory="tiny")


def test_low_memory_is_written_nowhere_in_the_model_folder(models: dict[str, Path]) -> None:
    """Releasing the encoders changes the loaded pipeline only, never the folder's model_index.json."""
    from heyim_desktop.core.loading import load_engine

    before = (models["sd3"] / "model_index.json").read_bytes()
    engine: Any = load_engine(str(models["sd3"]), device="cpu", memory="low")
    engine.render(GenerationRequest("a cat", steps=1, guidance=3.0, seed=1, width=64, height=64))
    engine.close()
    assert (models["sd3"] / "model_index.json").read_bytes() == before
    assert json.loads(before)["text_encoder_3"] == ["transformers", "T5EncoderModel"]


def test_the_cli_takes_memory_low_and_says_so(models: dict[str, Path], tmp_path: Path, data_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from heyim_desktop.cli import main
    from heyim_desktop.core.metadata import read_parameters

    code = main(["generate", "--model", str(models["zimage"]), "--memory", "low", "-p", "a red fox", "--steps", "2",
                 "--size", "64x64", "--seed", "3", "--out", str(tmp_path / "out"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "saving memory: text encoders and transformer load in turn" in captured.err
    params = read_parameters(Path(captured.out.split()[0]))
    assert params is not None and params.seed == 3  # the image and its metadata as ever
    assert main(["generate", "--model", str(models["zimage"]), "--memory", "tiny", "-p", "x"]) == 2
    assert "invalid choice: 'tiny' (choose from 'auto', 'low', 'full')" in capsys.readouterr().err


@pytest.mark.slow  # an engine process (its own torch import): ~15 s here
def test_the_engine_process_loads_with_the_memory_setting(models: dict[str, Path]) -> None:
    """Preferences.memory (and serve's / worker's --memory) reach the engine process with the load."""
    from heyim_desktop.core.process.remote import ProcessLoader

    loader = ProcessLoader(device="cpu", memory="low")
    remote = loader.load(str(models["flux2"]))
    try:
        assert remote.info.memory == "saving memory: text encoders and transformer load in turn"
        result = remote.generate(GenerationRequest("a red fox", steps=1, guidance=3.0, seed=2, width=64, height=64,
                                                   model=str(models["flux2"])))
        assert len(result.images) == 1
    finally:
        remote.close()
    remote = loader.load(str(models["flux2"]), memory="full")  # a load may choose over the loader's own
    try:
        assert remote.info.memory == ""
    finally:
        remote.close()


def test_loras_go_back_on_the_transformer_each_time_it_is_loaded(models: dict[str, Path], tmp_path: Path) -> None:
    from heyim_desktop.core.families.tiny import write_tiny_lora
    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.core.lora import LoraUse

    lora = write_tiny_lora(models["zimage"], tmp_path / "style.safetensors")
    full: Any = load_engine(str(models["zimage"]), device="cpu", memory="full")
    low: Any = load_engine(str(models["zimage"]), device="cpu", memory="low")
    try:
        for prompt in ("a red fox <lora:style:0.7>", "a cat <lora:style:0.7>"):  # the second reloads the transformer
            request = GenerationRequest(prompt, steps=2, guidance=3.0, seed=4, width=64, height=64,
                                        loras=(LoraUse(str(lora), 0.7, "style"),))
            expected, got = full.render(request).images[0], low.render(request).images[0]
            assert float(np.abs(expected - got).max()) <= 1e-5
        assert low.low.transformer_loads == 2
        plain = low.render(GenerationRequest("a cat", steps=2, guidance=3.0, seed=4, width=64, height=64))
        assert float(np.abs(plain.images[0] - got).max()) > 1e-3  # and off again without it
    finally:
        full.close()
        low.close()


def test_a_gguf_transformer_loads_in_turn_too(models: dict[str, Path]) -> None:
    from heyim_desktop.core.families.tiny import write_tiny_gguf
    from heyim_desktop.core.loading import load_engine

    file = models["flux2"].parent / "klein-Q8_0.gguf"  # beside the folder that lends the other parts
    if not file.exists():
        write_tiny_gguf(models["flux2"], file)
    full: Any = load_engine(str(file), device="cpu", memory="full")
    low: Any = load_engine(str(file), device="cpu", memory="low")
    try:
        request = GenerationRequest("a red fox", steps=2, guidance=3.0, seed=2, width=64, height=64)
        got = low.render(request).images[0]
        assert low.low.transformer_loads == 1 and type(low.pipe.transformer).__name__ == "Flux2Transformer2DModel"
        assert float(np.abs(full.render(request).images[0] - got).max()) <= 1e-5
        assert ("Transformer", "klein-Q8_0.gguf") in low.parameters_extra
    finally:
        full.close()
        low.close()


@pytest.mark.parametrize("family", ["zimage", "flux2", "sd3"])
def test_low_memory_edits_equal_the_full_engine(models: dict[str, Path], family: str) -> None:
    """Image-to-image and inpainting (diffusers' edit pipelines, which share the parts) in low memory."""
    from PIL import Image

    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.core.masking import InpaintSpec

    source = Image.fromarray((np.indices((64, 64)).sum(axis=0) * 2 % 255).astype(np.uint8)).convert("RGB")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    full: Any = load_engine(str(models[family]), device="cpu", memory="full")
    low: Any = load_engine(str(models[family]), device="cpu", memory="low")
    try:
        for edit in ({}, {"inpaint": InpaintSpec(mask=mask, blur=0, keep_unmasked=False)}):
            request = GenerationRequest("a red fox", steps=4, guidance=3.0, seed=8, width=64, height=64,
                                        init_image=source, strength=0.6, **edit)
            expected, got = full.render(request).images[0], low.render(request).images[0]
            assert float(np.abs(expected - got).max()) <= 1e-5
        # one prompt for both edits; SD 3.5's two edit pipelines ask for it with different arguments
        assert low.low.text_loads == (2 if family == "sd3" else 1)
    finally:
        full.close()
        low.close()


@pytest.mark.parametrize("family", ["zimage", "flux2", "sd3"])
def test_every_engine_keeps_the_last_prompts_features(models: dict[str, Path], family: str) -> None:
    """A job's images (one pipeline call per seed) and the same prompt again encode once; the images
    still equal diffusers', which encodes every time."""
    from heyim_desktop.core.loading import load_engine

    engine: Any = load_engine(str(models[family]), device="cpu", memory="full")
    try:
        negative = "blurry" if family == "sd3" else ""
        # one encode_prompt call a pipeline call; FLUX.2 [klein] with true CFG makes a second, for its negative
        per = 2 if family == "flux2" else 1
        request = GenerationRequest("a red fox in the forest", negative_prompt=negative, steps=2, guidance=3.0,
                                    seed=5, width=64, height=64, count=2)
        out = engine.render(request)
        assert (engine.features.encoded, engine.features.reused) == (per, per)  # two images, one encoding
        for i, seed in enumerate(out.seeds):
            reference = _diffusers(models[family], "a red fox in the forest", negative or None, seed)
            assert float(np.abs(out.images[i] - reference).max()) <= 1e-4
        engine.render(request.replace(count=1, seed=9))
        assert engine.features.encoded == per
        other = engine.render(request.replace(count=1, prompt="a photo of a cat"))
        expected = per + 1 if family == "flux2" else per * 2  # FLUX.2's empty negative prompt is kept
        assert engine.features.encoded == expected
        assert float(np.abs(other.images[0] - _diffusers(models[family], "a photo of a cat", negative or None,
                                                         other.seeds[0])).max()) <= 1e-4
    finally:
        engine.close()


def test_a_text_encoder_damaged_after_loading_is_a_clear_error_and_the_engine_goes_on(
        models: dict[str, Path], tmp_path: Path) -> None:
    """Save memory reads the text encoders at the first job: a file damaged since the load says so."""
    import shutil

    from heyim_desktop.core.loading import load_engine

    folder = tmp_path / "z"
    shutil.copytree(models["zimage"], folder)
    weights = next((folder / "text_encoder").glob("*.safetensors"))
    engine: Any = load_engine(str(folder), device="cpu", memory="low")
    try:
        intact = weights.read_bytes()
        weights.write_bytes(intact[: len(intact) // 2])
        request = GenerationRequest("a red fox", steps=2, guidance=3.0, seed=1, width=64, height=64)
        with pytest.raises(ModelError, match=r"^z/text_encoder could not be loaded: "):
            engine.render(request)
        assert not engine.low.text_encoders_loaded
        weights.write_bytes(intact)  # put back: the next job loads it and runs
        out = engine.render(request)
        assert float(np.abs(out.images[0] - _diffusers(folder, "a red fox", None, 1)).max()) <= 1e-4
    finally:
        engine.close()
