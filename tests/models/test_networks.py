"""LoRAs and embeddings in the model library: AUTOMATIC1111 and ComfyUI folders, the finder."""

from __future__ import annotations

from pathlib import Path

from lora_helpers import write_embedding, write_lora

from heyim_desktop.models.library import ModelLibrary
from heyim_desktop.models.networks import NetworkLibrary


def test_a1111_and_comfyui_folders_are_listed_and_found(data_dir: Path, tmp_path: Path, tiny_model: Path) -> None:
    a1111 = tmp_path / "stable-diffusion-webui"
    write_lora(tiny_model, a1111 / "models" / "Lora" / "sub" / "inkwash.safetensors", seed=1)
    write_embedding(a1111 / "embeddings" / "easyneg.safetensors")
    comfy = tmp_path / "ComfyUI"
    write_lora(tiny_model, comfy / "models" / "loras" / "Paper.safetensors", layout="kohya", seed=2)
    networks = NetworkLibrary(ModelLibrary([a1111, comfy], hf_cache=False))
    kinds = {(m.name, m.kind) for m in networks.all()}
    assert {("inkwash", "lora"), ("Paper", "lora"), ("easyneg", "embedding")} <= kinds
    finder = networks.finder()
    assert set(finder.loras()) == {"inkwash", "Paper"}
    assert finder.find_lora("paper") == comfy / "models" / "loras" / "Paper.safetensors"
    assert finder.embeddings() == {"easyneg": a1111 / "embeddings" / "easyneg.safetensors"}
    assert finder.find_lora("missing") is None
