"""The Core ML engine's adapters against real converted specs, predicted by the source torch modules.

The predictor runs the same modules the .mlpackage files were traced from, with the specs'
names and dtypes (fp16 in and out), so these tests check everything the engine does except
Core ML's own arithmetic (see test_coreml_macos.py for that).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heyim_desktop.core import GenerationRequest, InvalidRequest, ModelError
from heyim_desktop.core.coreml.components import check_inputs
from heyim_desktop.core.coreml.detect import detect_coreml_folder
from heyim_desktop.core.coreml.engine import load_coreml_engine
from heyim_desktop.core.coreml.reference import TorchReferencePredictor

# fp16 inputs and outputs against the fp32 torch engine: a level or two out of 255 at most.
MAX_LEVELS = 4.0
MEAN_LEVELS = 0.5


def _pixels(result) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.stack([np.asarray(g.image, dtype=np.float32) for g in result.images])


def _engine(folder: Path, source: Path):  # type: ignore[no-untyped-def]
    info = detect_coreml_folder(folder)
    predictor = TorchReferencePredictor(source, info)
    return load_coreml_engine(folder, predictor=predictor), predictor


def _close(a: np.ndarray, b: np.ndarray) -> None:
    diff = np.abs(a - b)
    assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, (diff.max(), diff.mean())


@pytest.fixture(scope="module")
def request_() -> GenerationRequest:
    return GenerationRequest(prompt="a red fox in the forest", negative_prompt="blurry", steps=4, seed=11, width=256, height=256)


def test_batch2_matches_torch_engine(coreml_model: Path, tiny_model: Path, tiny_engine, request_: GenerationRequest) -> None:  # type: ignore[no-untyped-def]
    engine, predictor = _engine(coreml_model, tiny_model)
    assert engine.fixed_size == (256, 256) and engine.default_size == (256, 256)
    assert engine.name == "coreml-cpu_and_ne" and engine.model_name == coreml_model.name
    result = engine.generate(request_)
    _close(_pixels(result), _pixels(tiny_engine.generate(request_)))
    names = [name for name, _ in predictor.calls]
    # Text twice (prompt, negative), one batch-2 UNet call per step, one decode.
    assert names == ["TextEncoder", "TextEncoder"] + ["Unet"] * 4 + ["VAEDecoder"]
    assert predictor.calls[0][1] == {"input_ids": ((1, 77), "float32")}
    assert predictor.calls[2][1] == {
        "sample": ((2, 4, 32, 32), "float16"),
        "timestep": ((2,), "float16"),
        "encoder_hidden_states": ((2, 32, 1, 77), "float16"),
    }
    assert predictor.calls[-1][1] == {"z": ((1, 4, 32, 32), "float16")}
    engine.close()


def test_chunked_batch1_matches_torch_engine(coreml_chunked: Path, tiny_model: Path, tiny_engine, request_: GenerationRequest) -> None:  # type: ignore[no-untyped-def]
    engine, predictor = _engine(coreml_chunked, tiny_model)
    assert engine.name == "coreml-cpu_and_gpu"  # original attention defaults to the GPU
    _close(_pixels(engine.generate(request_)), _pixels(tiny_engine.generate(request_)))
    unet_calls = [(n, feed) for n, feed in predictor.calls if n.startswith("Unet")]
    # Guidance with a batch-1 UNet: two calls a step, each chunk 1 then chunk 2.
    assert [n for n, _ in unet_calls] == ["UnetChunk1", "UnetChunk2"] * 8
    chunk1, chunk2 = unet_calls[0][1], unet_calls[1][1]
    assert chunk1["encoder_hidden_states"] == ((1, 32, 1, 77), "float16")
    info = detect_coreml_folder(coreml_chunked)
    expected = {t.name: (t.shape, "float16") for t in info.model("UnetChunk2").inputs}
    assert chunk2 == expected and "res_5" in chunk2 and "mid" in chunk2


def test_no_guidance_on_a_batch2_unet(coreml_model: Path, tiny_model: Path, tiny_engine, request_: GenerationRequest) -> None:  # type: ignore[no-untyped-def]
    req = request_.replace(guidance=1.0, count=2)
    engine, predictor = _engine(coreml_model, tiny_model)
    result = engine.generate(req)
    _close(_pixels(result), _pixels(tiny_engine.generate(req)))
    assert [g.seed for g in result.images] == [11, 12]
    # One text encoding; the single image fills the batch-2 UNet (static shape) each step.
    assert [n for n, _ in predictor.calls].count("TextEncoder") == 1
    assert all(feed["sample"][0] == (2, 4, 32, 32) for n, feed in predictor.calls if n == "Unet")


def test_img2img_matches_torch_engine(coreml_model: Path, tiny_model: Path, tiny_engine, request_: GenerationRequest) -> None:  # type: ignore[no-untyped-def]
    source = Image.fromarray(np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (200, 1))).convert("RGB")
    req = request_.replace(init_image=source, strength=0.5, steps=6)
    engine, predictor = _engine(coreml_model, tiny_model)
    _close(_pixels(engine.generate(req)), _pixels(tiny_engine.generate(req)))
    encodes = [feed for n, feed in predictor.calls if n == "VAEEncoder"]
    assert encodes == [{"x": ((1, 3, 256, 256), "float16")}]


def test_model_limits_are_clear_errors(coreml_model: Path, coreml_chunked: Path, tiny_model: Path, request_: GenerationRequest) -> None:
    engine, _ = _engine(coreml_model, tiny_model)
    with pytest.raises(InvalidRequest, match="only makes 256x256 images, got 512x512"):
        engine.generate(request_.replace(width=512, height=512))
    chunked, _ = _engine(coreml_chunked, tiny_model)
    assert not chunked.supports_img2img
    with pytest.raises(InvalidRequest, match="no image encoder"):
        chunked.generate(request_.replace(init_image=Image.new("RGB", (64, 64))))


def test_inputs_are_checked_against_the_spec(coreml_model: Path) -> None:
    unet = detect_coreml_folder(coreml_model).model("Unet")
    good = {
        "sample": np.zeros((2, 4, 32, 32), np.float32),
        "timestep": np.zeros((2,), np.float32),
        "encoder_hidden_states": np.zeros((2, 32, 1, 77), np.float32),
    }
    checked = check_inputs(unet, good)
    assert {k: v.dtype for k, v in checked.items()} == {k: np.dtype(np.float16) for k in good}
    with pytest.raises(ModelError, match=r"Unet.mlpackage: input 'encoder_hidden_states' has shape \(2, 77, 32\), the model expects \(2, 32, 1, 77\)"):
        check_inputs(unet, {**good, "encoder_hidden_states": np.zeros((2, 77, 32), np.float32)})
    with pytest.raises(ModelError, match="input 'timestep' was not supplied"):
        check_inputs(unet, {k: v for k, v in good.items() if k != "timestep"})


def test_missing_output_is_named(coreml_model: Path) -> None:
    def predict(name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"a": np.zeros(1), "b": np.zeros(1)}

    engine = load_coreml_engine(coreml_model, predictor=predict)
    with pytest.raises(ModelError, match="output 'last_hidden_state' is missing"):
        engine.generate(GenerationRequest(prompt="x", steps=1, seed=1, width=256, height=256))


def test_linux_refuses_real_core_ml(coreml_model: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from heyim_desktop.core.loading import load_engine

    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(ModelError, match="Core ML models run only on macOS"):
        load_coreml_engine(coreml_model)
    with pytest.raises(ModelError, match="Core ML models run only on macOS"):
        load_engine(str(coreml_model))
    with pytest.raises(ModelError, match="Core ML models run only on macOS"):
        load_engine(str(coreml_model), device="coreml:CPU_AND_GPU")
    with pytest.raises(ModelError, match="runs on the coreml device, not cpu"):
        load_engine(str(coreml_model), device="cpu")
    with pytest.raises(ModelError, match="not a Core ML model folder"):
        load_engine(str(tiny_model), device="coreml")
    with pytest.raises(ModelError, match="Unknown compute units 'NPU'"):
        load_coreml_engine(coreml_model, "NPU", predictor=lambda n, i: {})


def _inpaint_request(request_: GenerationRequest) -> GenerationRequest:
    from heyim_desktop.core.masking import InpaintSpec

    rng = np.random.RandomState(5)
    image = Image.fromarray((rng.rand(256, 256, 3) * 255).astype(np.uint8))
    mask = np.zeros((256, 256), np.uint8)
    mask[64:160, 32:200] = 255
    return request_.replace(init_image=image, strength=1.0, guidance_boost=0.0,
                            inpaint=InpaintSpec(mask=Image.fromarray(mask, mode="L"), blur=0))


def test_inpaint_blend_matches_torch_engine(coreml_model: Path, tiny_model: Path, tiny_engine, request_: GenerationRequest) -> None:  # type: ignore[no-untyped-def]
    engine, _ = _engine(coreml_model, tiny_model)
    assert engine.info.capabilities.inpaint == "blend"
    req = _inpaint_request(request_)
    ours = _pixels(engine.generate(req))
    _close(ours, _pixels(tiny_engine.generate(req)))
    keep = np.asarray(req.inpaint.mask) == 0  # type: ignore[union-attr]
    assert np.array_equal(ours[0][keep], np.asarray(req.init_image, dtype=np.float32)[keep])  # type: ignore[arg-type]


@pytest.mark.slow
def test_inpainting_unet_converts_with_nine_channels_and_matches_torch(
    tiny_inpaint_model: Path, tmp_path: Path, request_: GenerationRequest
) -> None:
    from heyim_desktop.core.coreml.convert import convert_to_coreml
    from heyim_desktop.core.torch_engine import load_torch_engine

    out = convert_to_coreml(tiny_inpaint_model, tmp_path / "inpaint-coreml", size=(256, 256))
    info = detect_coreml_folder(out)
    assert info.model("Unet").input("sample").shape[1] == 9  # type: ignore[union-attr]
    engine, predictor = _engine(out, tiny_inpaint_model)
    assert engine.info.capabilities.inpaint == "concat"
    req = _inpaint_request(request_)
    torch_engine = load_torch_engine(tiny_inpaint_model, device="cpu")
    try:
        _close(_pixels(engine.generate(req)), _pixels(torch_engine.generate(req)))
    finally:
        torch_engine.close()
    unet_calls = [shapes for name, shapes in predictor.calls if name == "Unet"]
    assert unet_calls[0]["sample"] == ((2, 9, 32, 32), "float16")


@pytest.mark.slow  # two 256x256 runs (the converted model's fixed size), like the tests above
def test_scheduled_and_composed_prompts_match_torch_engine(coreml_model: Path, tiny_model: Path, tiny_engine,  # type: ignore[no-untyped-def]
                                                           request_: GenerationRequest) -> None:
    # AUTOMATIC1111's prompt editing and AND run through the same loop: the negative and the
    # two parts are 3 rows a step, so the batch-2 UNet runs twice (the last batch filled).
    req = request_.replace(prompt="a [red:blue:0.5] fox AND a forest:0.6", negative_prompt="[blurry|dark]")
    engine, predictor = _engine(coreml_model, tiny_model)
    result = engine.generate(req)
    _close(_pixels(result), _pixels(tiny_engine.generate(req)))
    names = [name for name, _ in predictor.calls]
    assert names.count("Unet") == 2 * 4 and names[-1] == "VAEDecoder"
    engine.close()
