"""LoRAs and embeddings in the model library: AUTOMATIC1111 and ComfyUI folders, the finder."""

from __future__ import annotations

from pathlib import Path

from heyim_desktop.models.library import ModelLibrary
from heyim_desktop.models.networks import NetworkLibrary
from lora_helpers import write_embedding, write_lora


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


def test_models_import_puts_loras_and_embeddings_in_their_folders(data_dir: Path, tmp_path: Path, tiny_model: Path,
                                                                   capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    import pytest
    import torch
    from safetensors.torch import load_file

    from heyim_desktop.cli import main
    from heyim_desktop.core.errors import ModelError
    from heyim_desktop.models.importer import import_model
    from heyim_desktop.models.library import app_models_dir

    lora = write_lora(tiny_model, tmp_path / "inkwash.safetensors", layout="kohya", seed=3)
    assert main(["models", "import", str(lora)]) == 0
    landed = app_models_dir() / "Lora" / "inkwash.safetensors"
    assert capsys.readouterr().out.strip() == str(landed) and landed.read_bytes() == lora.read_bytes()
    emb = import_model(write_embedding(tmp_path / "easyneg.safetensors"))
    assert (emb.kind, Path(emb.ref)) == ("embedding", app_models_dir() / "embeddings" / "easyneg.safetensors")
    with pytest.raises(ModelError, match="already exists"):
        import_model(lora)

    # Pickles go through the child-process conversion and land as .safetensors in the right folder.
    state = load_file(str(lora))
    torch.save(state, tmp_path / "paper.pt")
    info = import_model(tmp_path / "paper.pt", convert=True)
    assert Path(info.ref) == app_models_dir() / "Lora" / "paper.safetensors" and info.kind == "lora" and info.ready
    converted = load_file(info.ref)
    assert set(converted) == set(state) and all(torch.equal(converted[k], state[k]) for k in state)
    vectors = torch.randn(3, 32)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "badhands", "step": 300},
               tmp_path / "badhands.pt")
    info = import_model(tmp_path / "badhands.pt", convert=True)
    assert Path(info.ref) == app_models_dir() / "embeddings" / "badhands.safetensors" and info.kind == "embedding"
    assert torch.equal(load_file(info.ref)["emb_params"], vectors)
    assert not list(app_models_dir().rglob(".*partial"))

    # `models list` shows them with their kind.
    assert main(["models", "list", "--json"]) == 0
    listed = {(m["name"], m["kind"]) for m in json.loads(capsys.readouterr().out)}
    assert {("inkwash", "lora"), ("paper", "lora"), ("easyneg", "embedding"), ("badhands", "embedding")} <= listed


def test_lycoris_loha_is_imported_and_other_algorithms_refused(data_dir: Path, tmp_path: Path) -> None:
    import pytest
    import torch
    from safetensors.torch import save_file

    from heyim_desktop.core.errors import ModelError
    from heyim_desktop.models.importer import import_model
    from heyim_desktop.models.library import app_models_dir

    parts = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
    save_file({f"lora_unet_x.{p}": torch.zeros(2, 2) for p in parts}, str(tmp_path / "loha.safetensors"))
    info = import_model(tmp_path / "loha.safetensors")
    assert Path(info.ref) == app_models_dir() / "Lora" / "loha.safetensors" and info.kind == "lora" and info.ready
    save_file({"lora_unet_x.oft_blocks": torch.zeros(2, 2, 2)}, str(tmp_path / "oft.safetensors"))
    with pytest.raises(ModelError, match="LyCORIS OFT/BOFT file; HeyIm loads LoRA"):
        import_model(tmp_path / "oft.safetensors")
    assert not (app_models_dir() / "Lora" / "oft.safetensors").exists()


def test_already_exists_check_looks_where_the_import_would_land(data_dir: Path, tmp_path: Path,
                                                                  tiny_model: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from heyim_desktop.models.importer import existing_name, import_model
    from heyim_desktop.models.library import app_models_dir

    lora = write_lora(tiny_model, tmp_path / "inkwash.safetensors", seed=3)
    emb = write_embedding(tmp_path / "easyneg.safetensors")
    assert existing_name(lora) is None and existing_name(emb) is None
    import_model(lora)
    import_model(emb)
    assert (app_models_dir() / "Lora" / "inkwash.safetensors").is_file()
    assert existing_name(lora) == "inkwash"  # in Lora/, not in the models root
    assert existing_name(emb) == "easyneg"  # in embeddings/
    assert existing_name(lora, name="inkwash-2") is None
    # A checkpoint of that name goes to the root, which is free.
    (tmp_path / "ckpt").mkdir()
    assert existing_name(tmp_path / "ckpt" / "inkwash.safetensors") is None
    # A pickle's kind is known only after conversion: a name taken in any of the folders counts.
    torch.save(load_file(str(lora)), tmp_path / "easyneg.pt")
    assert existing_name(tmp_path / "easyneg.pt") == "easyneg"
