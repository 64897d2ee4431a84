"""What the library lists from files, the Hugging Face cache and Core ML folders; deleting."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest

from heyim_desktop.core.errors import ModelError
from heyim_desktop.models.library import ModelLibrary
from heyim_desktop.models.types import ModelStatus


def test_files_are_judged_by_content(data_dir: Path, tmp_path: Path, tiny_single_file: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    shutil.copy(tiny_single_file, folder / "good.safetensors")
    (folder / "cut.safetensors").write_bytes(tiny_single_file.read_bytes()[:-1])
    (folder / "renamed.safetensors").write_bytes(pickle.dumps([1], protocol=2))
    (folder / "old.ckpt").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    (folder / "notes.txt").write_text("not a model")
    by_name = {m.name: m for m in ModelLibrary([folder], include_demo=False, hf_cache=False).list()}
    assert set(by_name) == {"good", "cut", "renamed", "old"}
    assert by_name["good"].ready and by_name["good"].base == "SD1"
    assert by_name["cut"].status is ModelStatus.CORRUPT and "truncated" in by_name["cut"].problem
    assert by_name["renamed"].status is ModelStatus.UNSAFE and by_name["old"].status is ModelStatus.UNSAFE
    assert "--convert" in by_name["old"].problem


def _fake_hf_cache(root: Path, tiny_model: Path) -> Path:
    """The layout huggingface_hub writes: blobs, symlinked snapshots, refs/main."""
    repo = root / "models--someone--tiny-sd"
    commit = "a" * 40
    snap = repo / "snapshots" / commit
    for file in tiny_model.rglob("*"):
        if file.is_file():
            rel = file.relative_to(tiny_model)
            blob = repo / "blobs" / str(abs(hash(str(rel))))
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(file, blob)
            (snap / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, (snap / rel).parent), snap / rel)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (root / "models--gpt2").mkdir()  # not a diffusion model: ignored
    return snap


def test_hugging_face_cache_snapshots_are_listed_and_load(data_dir: Path, tmp_path: Path, tiny_model: Path) -> None:
    snap = _fake_hf_cache(tmp_path / "hub", tiny_model)
    library = ModelLibrary(include_demo=False, hf_cache=tmp_path / "hub")
    [info] = library.list()
    assert info.source == "hf-cache" and info.ready and info.ref == str(snap)
    assert info.size_bytes == sum(p.stat().st_size for p in tiny_model.rglob("*") if p.is_file())
    from heyim_desktop.core.loading import load_engine

    engine = load_engine(info.ref, device="cpu")
    engine.close()
    library.delete(info)
    assert not (tmp_path / "hub" / "models--someone--tiny-sd").exists() and library.list() == []


def _mlmodelc(folder: Path, name: str, inputs: dict[str, list[int]], outputs: dict[str, list[int]]) -> None:
    """A compiled model folder as Apple ships it: the engine's detection reads its metadata.json."""
    import json

    def schema(items: dict[str, list[int]]) -> list[dict[str, str]]:
        return [{"name": k, "type": "MultiArray", "dataType": "Float16", "shape": str(v).replace(" ", "")}
                for k, v in items.items()]

    path = folder / f"{name}.mlmodelc"
    path.mkdir(parents=True)
    meta = [{"inputSchema": schema(inputs), "outputSchema": schema(outputs),
             "mlProgramOperationTypeHistogram": {"Ios16.einsum": 4}}]
    (path / "metadata.json").write_text(json.dumps(meta))


def _coreml(folder: Path, parts: list[str], xl: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    unet_in = {"sample": [2, 4, 64, 64], "timestep": [2], "encoder_hidden_states": [2, 768, 1, 77]}
    if xl:
        unet_in |= {"time_ids": [2, 6], "text_embeds": [2, 1280]}
    shapes = {
        "TextEncoder": ({"input_ids": [1, 77]}, {"last_hidden_state": [1, 77, 768]}),
        "TextEncoder2": ({"input_ids": [1, 77]}, {"hidden_embeds": [1, 77, 1280]}),
        "Unet": (unet_in, {"noise_pred": [2, 4, 64, 64]}),
        "UnetChunk1": (unet_in, {"x": [2, 4, 64, 64]}),
        "VAEDecoder": ({"z": [1, 4, 64, 64]}, {"image": [1, 3, 512, 512]}),
    }
    for part in parts:
        stem = part.split(".")[0]
        if part.endswith(".mlmodelc"):
            _mlmodelc(folder, stem, *shapes[stem])
        else:
            (folder / part).write_text("{}")
    return folder


def test_coreml_layout_is_recognised(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "mochi"
    _coreml(root / "sd15", ["TextEncoder.mlmodelc", "Unet.mlmodelc", "VAEDecoder.mlmodelc", "vocab.json", "merges.txt"])
    _coreml(root / "half", ["TextEncoder.mlmodelc", "UnetChunk1.mlmodelc", "VAEDecoder.mlmodelc", "vocab.json"])
    _coreml(root / "xl", ["TextEncoder.mlmodelc", "TextEncoder2.mlmodelc", "Unet.mlmodelc", "VAEDecoder.mlmodelc",
                          "vocab.json", "merges.txt"], xl=True)
    monkeypatch.setattr("sys.platform", "darwin")
    by_name = {m.name: m for m in ModelLibrary([root], include_demo=False, hf_cache=False).list()}
    sd15 = by_name["sd15"]
    assert sd15.ready and sd15.kind == "coreml" and sd15.base == "SD1" and "512x512" in sd15.problem
    # SDXL in Apple's layout runs on the Core ML engine (issue 11 item 3).
    assert by_name["xl"].status is ModelStatus.READY and by_name["xl"].base == "SDXL"
    assert by_name["half"].status is ModelStatus.INCOMPLETE
    assert "UnetChunk2" in by_name["half"].problem
    monkeypatch.setattr("sys.platform", "linux")
    assert ModelLibrary([root], include_demo=False, hf_cache=False).find("sd15").status is ModelStatus.UNSUPPORTED  # type: ignore[union-attr]


def test_delete_file_and_folder_and_not_the_demo(data_dir: Path, tmp_path: Path, tiny_single_file: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(tiny_single_file, folder / "a.safetensors")
    (folder / "a.yaml").write_text("x")
    library = ModelLibrary([folder], hf_cache=False)
    info = library.find("a")
    assert info is not None
    library.delete(info)
    assert list(folder.iterdir()) == []
    with pytest.raises(ModelError, match="demo"):
        library.delete(library.find("demo"))  # type: ignore[arg-type]


def test_partial_downloads_are_invisible(data_dir: Path, tiny_model: Path) -> None:
    models = data_dir / "models"
    shutil.copytree(tiny_model, models / ".sd15.partial")
    assert ModelLibrary(include_demo=False, hf_cache=False).list() == []
