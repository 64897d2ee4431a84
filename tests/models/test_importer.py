"""Importing files and folders: safetensors are checked and copied, pickles converted out of process."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.model_files import CorruptModel, UnsafeModel
from heyim_desktop.models.importer import ConversionRefused, import_model
from heyim_desktop.models.library import ModelLibrary
from heyim_desktop.models.types import ModelStatus


def test_import_safetensors_copies_atomically(data_dir: Path, tiny_single_file: Path) -> None:
    info = import_model(tiny_single_file)
    assert info.ready and info.kind == "safetensors" and info.base == "SD1"
    assert Path(info.ref) == data_dir / "models" / "tiny-a1111.safetensors"
    assert not list((data_dir / "models").glob(".*"))
    with pytest.raises(ModelError, match="already exists"):
        import_model(tiny_single_file)


def test_import_refuses_corrupt_and_renamed_pickle(data_dir: Path, tmp_path: Path, tiny_single_file: Path) -> None:
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(tiny_single_file.read_bytes()[: 5000])
    with pytest.raises(CorruptModel):
        import_model(cut)
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(UnsafeModel, match="--convert"):
        import_model(evil)
    assert not (data_dir / "models").exists() or not list((data_dir / "models").iterdir())


def test_pickle_checkpoint_converts_in_a_child_process(data_dir: Path, tmp_path: Path, tiny_single_file: Path) -> None:
    import torch
    from safetensors.torch import load_file

    state = load_file(str(tiny_single_file))
    ckpt = tmp_path / "old-style.ckpt"
    torch.save({"state_dict": state, "global_step": 1000}, ckpt)
    with pytest.raises(UnsafeModel):
        import_model(ckpt)
    info = import_model(ckpt, convert=True)
    assert info.ready and Path(info.ref).name == "old-style.safetensors"
    converted = load_file(info.ref)
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k], state[k]) for k in state)


def test_malicious_pickle_is_refused_by_the_restricted_loader(data_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (str(marker),))  # type: ignore[return-value]

    ckpt = tmp_path / "evil.ckpt"
    ckpt.write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=2))
    with pytest.raises(ConversionRefused, match="not converted"):
        import_model(ckpt, convert=True)
    assert not marker.exists()
    assert not list((data_dir / "models").glob("*.safetensors"))


def test_import_folder_copies_complete_models_only(data_dir: Path, tmp_path: Path, tiny_model: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelError, match="missing vae/"):
        import_model(broken)
    info = import_model(tiny_model)
    assert info.ready and Path(info.ref) == data_dir / "models" / "tiny-sd"
    listed = ModelLibrary(include_demo=False, hf_cache=False).list()
    assert [m.status for m in listed] == [ModelStatus.READY]
