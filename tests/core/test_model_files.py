"""Content-based recognition of model files: corrupt and pickle files are refused, never loaded."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest

from heyim_desktop.core.checkpoint import detect_architecture
from heyim_desktop.core.model_files import (
    CorruptModel,
    FileKind,
    SafetensorsHeader,
    TensorInfo,
    UnsafeModel,
    read_safetensors_header,
    sniff,
)


def _safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], *, extra: bytes = b"") -> Path:
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = {"F32": 4, "F16": 2}[dtype] * (1 if not shape else __import__("math").prod(shape))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset + extra)
    return path


def test_valid_header_is_read(tmp_path: Path) -> None:
    f = _safetensors(tmp_path / "ok.safetensors", {"a": ("F32", [2, 3]), "b": ("F16", [4])})
    h = read_safetensors_header(f)
    assert sniff(f) is FileKind.SAFETENSORS
    assert h.tensors["a"] == TensorInfo("F32", (2, 3)) and h.data_bytes == 32


def test_bogus_header_length_is_corrupt(tmp_path: Path) -> None:
    f = _safetensors(tmp_path / "bogus.safetensors", {"a": ("F32", [2])})
    data = bytearray(f.read_bytes())
    data[:8] = struct.pack("<Q", 2**40)
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptModel, match="header length"):
        read_safetensors_header(f)


def test_truncated_file_is_corrupt(tmp_path: Path) -> None:
    f = _safetensors(tmp_path / "cut.safetensors", {"a": ("F32", [64])})
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(CorruptModel, match="truncated"):
        read_safetensors_header(f)


def test_pickle_renamed_safetensors_is_unsafe_and_never_unpickled(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("owned",))

    f = tmp_path / "evil.safetensors"
    f.write_bytes(pickle.dumps(Boom(), protocol=2))
    assert sniff(f) is FileKind.PICKLE
    with pytest.raises(UnsafeModel, match="pickle"):
        read_safetensors_header(f)


def test_torch_zip_checkpoint_is_a_pickle(tmp_path: Path) -> None:
    import torch

    f = tmp_path / "model.ckpt"
    torch.save({"w": torch.zeros(2)}, f)
    assert sniff(f) is FileKind.PICKLE


@pytest.mark.parametrize("junk", [b"", b"short", b"<html><body>502 Bad Gateway</body></html>"])
def test_junk_is_corrupt(tmp_path: Path, junk: bytes) -> None:
    f = tmp_path / "junk.safetensors"
    f.write_bytes(junk)
    with pytest.raises(CorruptModel):
        read_safetensors_header(f)


def _header(shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None) -> SafetensorsHeader:
    return SafetensorsHeader({k: TensorInfo("F16", v) for k, v in shapes.items()}, metadata or {}, 0)


UNET = {"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3), "first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3)}


@pytest.mark.parametrize(
    ("extra", "metadata", "base", "profile"),
    [
        ({"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768)}, {}, "SD1", "sd1"),
        ({"cond_stage_model.model.token_embedding.weight": (49408, 1024)}, {}, "SD2", "sd2-v"),
        ({"cond_stage_model.model.token_embedding.weight": (49408, 1024)}, {"modelspec.prediction_type": "epsilon"}, "SD2", "sd2"),
        ({"conditioner.embedders.1.model.positional_embedding": (77, 1280)}, {}, "SDXL", ""),
        ({"conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
          "conditioner.embedders.1.model.token_embedding.weight": (49408, 1280)}, {}, "SDXL", "sdxl"),
        ({"conditioner.embedders.0.model.token_embedding.weight": (49408, 1280)}, {}, "SDXL", ""),  # UNet 320: no refiner
    ],
)
def test_architecture_from_header(extra: dict[str, tuple[int, ...]], metadata: dict[str, str], base: str, profile: str) -> None:
    arch = detect_architecture(_header({**UNET, **extra}, metadata))
    assert (arch.base, arch.profile) == (base, profile)
    if base == "SDXL" and not profile:
        assert "SDXL" in arch.problem


def test_sd2_sidecar_yaml_picks_eps(tmp_path: Path) -> None:
    f = tmp_path / "m.safetensors"
    (tmp_path / "m.yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n", encoding="utf-8")
    arch = detect_architecture(_header({**UNET, "cond_stage_model.model.token_embedding.weight": (49408, 1024)}), f)
    assert arch.profile == "sd2"


def test_inpainting_checkpoints_are_recognised_and_lora_and_pix2pix_explained() -> None:
    inpaint = dict(UNET, **{"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3),
                            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768)})
    arch = detect_architecture(_header(inpaint))
    assert (arch.base, arch.profile, arch.unet_in_channels) == ("SD1", "sd1", 9)
    assert detect_architecture(_header(dict(inpaint, **{"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)}))
                               ).unet_in_channels == 4
    pix2pix = dict(inpaint, **{"model.diffusion_model.input_blocks.0.0.weight": (320, 8, 3, 3)})
    assert "instruct-pix2pix" in detect_architecture(_header(pix2pix)).problem
    assert "LoRA" in detect_architecture(_header({"lora_unet_down.alpha": ()})).problem


def test_sdxl_refiner_from_header() -> None:
    unet = {"model.diffusion_model.input_blocks.0.0.weight": (384, 4, 3, 3), "first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3)}
    arch = detect_architecture(_header({**unet, "conditioner.embedders.0.model.token_embedding.weight": (49408, 1280)}))
    assert (arch.base, arch.profile) == ("SDXL", "sdxl-refiner")
    inpaint = {**UNET, "model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3),
               "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
               "conditioner.embedders.1.model.token_embedding.weight": (49408, 1280)}
    arch = detect_architecture(_header(inpaint))  # SDXL inpainting (sd_xl_base_1.0_inpainting_0.1)
    assert (arch.base, arch.profile, arch.unet_in_channels) == ("SDXL", "sdxl", 9)
