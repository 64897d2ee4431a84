"""Single-file family transformers: GGUF (quantized, diffusers' GGUFQuantizationConfig) and .safetensors."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.request import GenerationRequest


def _req(**kw: Any) -> GenerationRequest:
    base: dict[str, Any] = dict(prompt="a red fox in the forest", steps=2, guidance=3.0, seed=7, width=64, height=64)
    base.update(kw)
    return GenerationRequest(**base)


def _pipe_with_weights(folder: Path, weights: dict[str, Any]) -> np.ndarray:
    """diffusers' own Z-Image pipeline with its transformer's weights replaced, for the request above."""
    import torch
    from diffusers import ZImagePipeline

    pipe = ZImagePipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    state = pipe.transformer.state_dict()
    with torch.no_grad():
        for name, value in weights.items():
            state[name].copy_(torch.from_numpy(np.array(value, dtype=np.float32)).reshape(state[name].shape))
    out = pipe("a red fox in the forest", height=64, width=64, num_inference_steps=2, guidance_scale=3.0,
               generator=torch.Generator("cpu").manual_seed(7), output_type="np").images
    return np.asarray(out[0], dtype=np.float32)


@pytest.fixture(scope="module")
def zimage_gguf_folder(tiny_zimage: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Z-Image with its transformer as a Q8_0 GGUF file in transformer/ (the catalogue's layout)."""
    from heyim_desktop.core.families.tiny import write_tiny_gguf

    folder = tmp_path_factory.mktemp("gguf") / "tiny-zimage-q8"
    shutil.copytree(tiny_zimage, folder)
    write_tiny_gguf(tiny_zimage, folder / "transformer" / "tiny-zimage-Q8_0.gguf")
    for weights in (folder / "transformer").glob("*.safetensors"):
        weights.unlink()
    return folder


@pytest.mark.slow  # two GGUF loads and diffusers' pipeline twice, ~4 s on one core: the quantization proof
@pytest.mark.parametrize("quantization", ["Q8_0", "Q4_0"])
def test_gguf_transformer_equals_its_dequantized_weights(tiny_zimage: Path, zimage_gguf_folder: Path,
                                                        tmp_path: Path, quantization: str) -> None:
    from gguf import GGMLQuantizationType, GGUFReader, quants

    from heyim_desktop.core.families.tiny import write_tiny_gguf
    from heyim_desktop.core.gguf_header import read_gguf_header
    from heyim_desktop.core.loading import load_engine

    if quantization == "Q8_0":
        folder, file = zimage_gguf_folder, zimage_gguf_folder / "transformer" / "tiny-zimage-Q8_0.gguf"
        engine: Any = load_engine(str(folder), device="cpu")
    else:  # a file beside the folder: the folder lends its other parts
        shutil.copytree(tiny_zimage, tmp_path / "tiny-zimage")
        file = write_tiny_gguf(tiny_zimage, tmp_path / f"z-{quantization}.gguf", quantization=quantization)
        engine = load_engine(str(file), device="cpu")
    header = read_gguf_header(file)
    assert header.quantization == quantization and "noise_refiner.0.attention.to_q.weight" in header.tensors
    import torch

    q_params = [p for p in engine.pipe.transformer.parameters() if type(p).__name__ == "GGUFParameter"]
    assert q_params and all(p.dtype == torch.uint8 for p in q_params)  # stays quantized in memory
    out = engine.render(_req())
    assert engine.info.model_name == file.stem
    engine.close()
    dequantized = {}
    for tensor in GGUFReader(str(file)).tensors:
        qtype = GGMLQuantizationType(tensor.tensor_type)
        values = quants.dequantize(np.asarray(tensor.data), qtype)
        # diffusers' CPU dequantizer multiplies a block's fp16 scale in fp16: the same weights, rounded so
        dequantized[tensor.name] = values.astype(np.float16) if qtype.name != "F32" else values
    ref = _pipe_with_weights(tiny_zimage, dequantized)
    assert float(np.abs(out.images[0] - ref).max()) <= 1e-4
    from safetensors.numpy import load_file

    full = _pipe_with_weights(tiny_zimage, load_file(str(tiny_zimage / "transformer" / "diffusion_pytorch_model.safetensors")))
    bound = {"Q8_0": 0.05, "Q4_0": 0.3}[quantization]  # against the unquantized twin: the quantization's error
    assert 0.0 < float(np.abs(out.images[0] - full).max()) <= bound


def test_single_file_safetensors_transformer_beside_its_folder(tiny_zimage: Path, zimage_engine: Any,
                                                               tmp_path: Path) -> None:
    from heyim_desktop.core.loading import load_engine

    shutil.copytree(tiny_zimage, tmp_path / "z-base")
    file = tmp_path / "z-finetune.safetensors"
    shutil.copyfile(tiny_zimage / "transformer" / "diffusion_pytorch_model.safetensors", file)
    engine: Any = load_engine(str(file), device="cpu")
    assert engine.info.capabilities.family == "zimage" and engine.info.model_name == "z-finetune"
    ours = engine.render(_req()).images[0]
    engine.close()
    assert float(np.abs(ours - zimage_engine.render(_req()).images[0]).max()) <= 1e-6
    shutil.rmtree(tmp_path / "z-base")
    with pytest.raises(ModelError, match="needs the text encoder, VAE and tokenizer of a Z-Image diffusers folder"):
        load_engine(str(file), device="cpu")


def test_the_tiny_gguf_writer_never_replaces_a_file(tiny_zimage: Path, tmp_path: Path) -> None:
    from heyim_desktop.core.families.tiny import write_tiny_gguf

    taken = tmp_path / "mine.gguf"
    taken.write_bytes(b"a user's file")
    with pytest.raises(FileExistsError):
        write_tiny_gguf(tiny_zimage, taken)
    assert taken.read_bytes() == b"a user's file" and sorted(p.name for p in tmp_path.iterdir()) == ["mine.gguf"]
