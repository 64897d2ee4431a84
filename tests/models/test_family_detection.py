"""The model library recognises the diffusion-transformer families from headers alone (no torch)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

FAMILY_KEYS = {
    "Z-Image": ["noise_refiner.0.attention.to_q.weight", "context_refiner.0.attention.to_q.weight",
                "cap_embedder.1.weight", "t_embedder.mlp.0.weight"],
    "FLUX.2 [klein]": ["double_stream_modulation_img.linear.weight", "single_stream_modulation.linear.weight",
                       "x_embedder.weight", "transformer_blocks.0.attn.to_q.weight"],
    "SD 3.5": ["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "model.diffusion_model.x_embedder.proj.weight"],
    "SD 3.5 (diffusers layout)": ["time_text_embed.timestep_embedder.linear_1.weight", "context_embedder.weight",
                                  "transformer_blocks.0.attn.add_q_proj.weight"],
}


def _write_safetensors(path: Path, keys: list[str]) -> None:
    header = {k: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, k in enumerate(keys)}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (4 * len(keys)))


_PROBE = """
import json, sys
from pathlib import Path
from heyim_desktop.models.inspect import inspect_file, inspect_folder
out = {}
for p in sorted([*Path(sys.argv[1]).glob("*.safetensors"), *Path(sys.argv[1]).glob("*.gguf")]):
    info = inspect_file(p)
    out[p.stem] = [info.base, info.status.value, info.problem, info.kind, info.quantization]
info = inspect_folder(Path(sys.argv[2]))
out["folder"] = [info.base, info.status.value, info.problem, info.size_bytes]
out["torch"] = "torch" in sys.modules
print(json.dumps(out))
"""


def _write_gguf(path: Path, keys: list[str], quantization: str = "Q8_0", arch: str = "heyim-test") -> None:
    """A small GGUF file written by the gguf package (numpy only), its 2-D weights quantized."""
    import gguf
    import numpy as np
    from gguf import quants

    qtype = gguf.GGMLQuantizationType[quantization]
    writer = gguf.GGUFWriter(str(path), arch)
    for key in keys:
        packed = quants.quantize(np.ones((4, 32), dtype=np.float32), qtype)
        writer.add_tensor(key, packed, raw_shape=packed.shape, raw_dtype=qtype)
    writer.add_tensor("norm.bias", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_families_are_recognised_from_headers_without_torch(tmp_path: Path, tiny_zimage: Path) -> None:
    import shutil

    files = tmp_path / "files"
    files.mkdir()
    for i, keys in enumerate(FAMILY_KEYS.values()):
        _write_safetensors(files / f"f{i}.safetensors", keys)
    _write_gguf(files / "z-q8.gguf", FAMILY_KEYS["Z-Image"])
    _write_gguf(files / "flux-q4.gguf", FAMILY_KEYS["FLUX.2 [klein]"], "Q4_0")
    _write_gguf(files / "llm.gguf", ["token_embd.weight", "blk.0.attn_q.weight"], arch="llama")
    (files / "cut.gguf").write_bytes((files / "z-q8.gguf").read_bytes()[:40])
    shutil.copytree(tiny_zimage, files / "z-base")  # lends its other parts to the Z-Image files beside it
    src = Path(__file__).resolve().parents[2] / "src"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(files), str(tiny_zimage)], capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    assert [out[f"f{i}"][0] for i in range(4)] == ["Z-Image", "FLUX.2 [klein]", "SD 3.5", "SD 3.5"]
    assert out["f0"][1] == "ready"  # the Z-Image folder beside it lends the text encoder, VAE and tokenizer
    assert all(out[f"f{i}"][1] == "unsupported" and "diffusers folder" in out[f"f{i}"][2] for i in range(1, 4))
    assert out["z-q8"] == ["Z-Image", "ready", "", "gguf", "Q8_0"]
    assert out["flux-q4"][:2] == ["FLUX.2 [klein]", "unsupported"] and out["flux-q4"][4] == "Q4_0"
    assert "FLUX.2 [klein] diffusers folder" in out["flux-q4"][2]
    assert out["llm"][:2] == ["unknown", "unsupported"] and "GGUF llama model" in out["llm"][2]
    assert out["cut"][:2] == ["unknown", "corrupt"] and "truncated" in out["cut"][2]
    assert out["folder"][:2] == ["Z-Image", "ready"] and out["folder"][3] > 0


def test_an_sd_checkpoint_is_not_mistaken_for_a_family() -> None:
    from heyim_desktop.core.families import family_of_keys

    assert family_of_keys(["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.decoder.conv_in.weight",
                           "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"]) is None
