"""Hostile model files from the adversarial round: lying headers, FIFOs, old pickles, NaN weights.

Each is refused at list, import, convert and generate with a clear reason, never a hang or
a traceback, and never loaded.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.model_files import (
    CorruptModel,
    FileKind,
    NotARegularFile,
    UnsafeModel,
    read_safetensors_header,
    sniff,
)

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")


def _raw_safetensors(path: Path, header: dict[str, Any], data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _entry(begin: int, end: int, dtype: str = "F32") -> dict[str, Any]:
    size = {"F32": 4, "F16": 2, "U8": 1}[dtype]
    return {"dtype": dtype, "shape": [(end - begin) // size], "data_offsets": [begin, end]}


@pytest.mark.parametrize("header, data, match", [
    ({"a": _entry(0, 16), "b": _entry(8, 24)}, b"\0" * 24, "overlaps"),
    ({"a": _entry(0, 16), "b": _entry(0, 16)}, b"\0" * 16, "overlaps"),
    ({"a": _entry(0, 8), "b": _entry(16, 24)}, b"\0" * 24, "gap of 8 bytes"),
    ({"a": _entry(4, 12)}, b"\0" * 12, "gap of 4 bytes"),
    ({"a": _entry(0, 8)}, b"\0" * 40, "32 bytes after the last tensor"),
    ({"a": _entry(0, 64)}, b"\0" * 16, "truncated"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "does not match its byte range"),
    ({"a": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}}, b"\0" * 8, "invalid dtype or shape"),
    ({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "invalid dtype or shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, "does not match"),
    ({"__metadata__": {"format": 1}, "a": _entry(0, 8)}, b"\0" * 8, "__metadata__ value 'format' is not a string"),
    ({"__metadata__": {"k": {"nested": "x"}}, "a": _entry(0, 8)}, b"\0" * 8, "is not a string"),
    ({"__metadata__": ["x"], "a": _entry(0, 8)}, b"\0" * 8, "__metadata__ is not an object"),
])
def test_a_lying_header_is_corrupt(tmp_path: Path, header: dict[str, Any], data: bytes, match: str) -> None:
    from heyim_desktop.models.inspect import inspect_file
    from heyim_desktop.models.types import ModelStatus

    f = _raw_safetensors(tmp_path / "liar.safetensors", header, data)
    with pytest.raises(CorruptModel, match=match):
        read_safetensors_header(f)
    info = inspect_file(f)
    assert info.status is ModelStatus.CORRUPT and match.split()[0] in info.problem


def test_duplicate_tensor_names_are_corrupt(tmp_path: Path) -> None:
    raw = b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, ' \
          b'"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}'
    f = tmp_path / "dup.safetensors"
    f.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)
    with pytest.raises(CorruptModel, match="appears twice"):
        read_safetensors_header(f)


def test_a_sound_header_with_empty_tensors_and_metadata_is_read(tmp_path: Path) -> None:
    header = {"__metadata__": {"format": "pt"}, "empty": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
              "a": _entry(0, 8), "b": _entry(8, 10, "U8")}
    parsed = read_safetensors_header(_raw_safetensors(tmp_path / "ok.safetensors", header, b"\0" * 10))
    assert set(parsed.tensors) == {"empty", "a", "b"} and parsed.metadata == {"format": "pt"}


class _Payload:
    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (Path.touch, ("/nonexistent-heyim-marker",))


@pytest.mark.parametrize("protocol", [0, 1])
def test_old_protocol_pickles_are_unsafe_not_corrupt(tmp_path: Path, protocol: int) -> None:
    from heyim_desktop.models.inspect import inspect_file
    from heyim_desktop.models.types import ModelStatus

    for name, obj in (("weights", {"state_dict": {"w": [1.0, 2.0] * 500}}), ("evil", _Payload()), ("tiny", [1])):
        f = tmp_path / f"{name}-{protocol}.ckpt"
        f.write_bytes(pickle.dumps(obj, protocol=protocol))
        assert sniff(f) is FileKind.PICKLE, name
        with pytest.raises(UnsafeModel):
            read_safetensors_header(f)
        info = inspect_file(f)
        assert info.status is ModelStatus.UNSAFE and "pickle" in info.problem
    text = tmp_path / "notes.safetensors"  # text that happens to start with a pickle opcode letter
    text.write_text("Some notes about this model, not a pickle at all\n", encoding="utf-8")
    assert sniff(text) is FileKind.UNKNOWN


# -- FIFOs: refused before they are opened (opening one for reading blocks forever) ----------------
def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _no_hang(fn: Callable[[], Any], timeout: float = 20) -> Any:
    """Run ``fn`` on a thread; fail (instead of hanging the suite) if it blocks."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        # Unblock it: a writer end lets a blocked reader finish.
        pytest.fail("blocked on a FIFO")
    if "error" in out:
        raise out["error"]
    return out.get("value")


@needs_fifo
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    from heyim_desktop.models.inspect import inspect_file
    from heyim_desktop.models.types import ModelStatus

    fifo = _fifo(tmp_path / "pipe.safetensors")
    for fn in (lambda: sniff(fifo), lambda: read_safetensors_header(fifo)):
        with pytest.raises(NotARegularFile, match="named pipe"):
            _no_hang(fn)
    info = _no_hang(lambda: inspect_file(fifo))
    assert info.status is ModelStatus.CORRUPT and "named pipe" in info.problem


@needs_fifo
def test_a_fifo_is_refused_at_list_import_convert_and_generate(data_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from heyim_desktop.cli import main
    from heyim_desktop.core.single_file import check_single_file
    from heyim_desktop.models.importer import convert_pickle, import_model
    from heyim_desktop.models.library import ModelLibrary

    folder = tmp_path / "incoming"
    folder.mkdir()
    fifo = _fifo(folder / "pipe.safetensors")
    ckpt = _fifo(folder / "pipe.ckpt")
    listed = _no_hang(lambda: ModelLibrary(extra_folders=[folder], include_demo=False, hf_cache=False).list())
    assert all("pipe" not in m.ref or not m.ready for m in listed)
    for fn in (lambda: import_model(fifo), lambda: import_model(ckpt, convert=True),
               lambda: convert_pickle(ckpt, data_dir / "models"), lambda: check_single_file(fifo)):
        with pytest.raises(ModelError, match="named pipe"):
            _no_hang(fn)
    assert _no_hang(lambda: main(["models", "import", "--convert", str(ckpt)])) == 3
    assert "named pipe" in capsys.readouterr().err
    out = tmp_path / "out"
    assert _no_hang(lambda: main(["generate", "--model", str(fifo), "-p", "x", "--steps", "1", "--size", "64x64",
                                  "-o", str(out)])) == 3
    assert "named pipe" in capsys.readouterr().err and not list(out.glob("*.png"))


@needs_fifo
def test_a_fifo_in_a_model_folder_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    from heyim_desktop.core.model_folder import check_diffusers_folder

    folder = tmp_path / "fifo-model"
    shutil.copytree(tiny_model, folder)
    weights = next((folder / "vae").glob("*.safetensors"))
    weights.unlink()
    _fifo(weights)
    with pytest.raises(ModelError, match="vae/.*named pipe"):
        _no_hang(lambda: check_diffusers_folder(folder))


# -- diffusers folders: every component's weights are checked -------------------------------------------
@pytest.mark.parametrize("part, damage", [("unet", "truncate"), ("vae", "overlap"), ("text_encoder", "metadata")])
def test_a_damaged_component_lists_corrupt_and_is_refused_at_import(data_dir: Path, tmp_path: Path, tiny_model: Path,
                                                                    part: str, damage: str) -> None:
    from heyim_desktop.models.importer import import_model
    from heyim_desktop.models.inspect import inspect_folder
    from heyim_desktop.models.types import ModelStatus

    folder = tmp_path / f"damaged-{part}"
    shutil.copytree(tiny_model, folder)
    weights = next((folder / part).glob("*.safetensors"))
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) - 1000])
    else:
        length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + length])
        if damage == "overlap":
            names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
            first, second = header[names[0]], header[names[1]]
            size = first["data_offsets"][1] - first["data_offsets"][0]
            second["data_offsets"] = [first["data_offsets"][0], first["data_offsets"][0] + size]
            second["dtype"], second["shape"] = first["dtype"], first["shape"]
        else:
            header["__metadata__"] = {"format": ["pt"]}
        raw = json.dumps(header).encode()
        weights.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length:])
    info = inspect_folder(folder)
    assert info is not None and info.status is ModelStatus.CORRUPT, info
    assert f"{part}/{weights.name}" in info.problem
    with pytest.raises(ModelError, match="is damaged"):
        import_model(folder)
    assert not (data_dir / "models" / folder.name).exists()


def test_the_tiny_model_passes_the_folder_checks(tiny_model: Path) -> None:
    from heyim_desktop.core.model_folder import check_diffusers_folder

    check_diffusers_folder(tiny_model)


# -- importing onto a taken name -------------------------------------------------------------------------------
def test_a_taken_name_offers_name(data_dir: Path, tmp_path: Path, tiny_single_file: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from heyim_desktop.cli import main
    from heyim_desktop.models.importer import ModelExists, import_model

    import_model(tiny_single_file)
    with pytest.raises(ModelExists, match="--name NEW_NAME") as info:
        import_model(tiny_single_file)
    assert info.value.name == "tiny-a1111"
    ckpt = tmp_path / "tiny-a1111.ckpt"  # a pickle of the same name: said before any conversion
    ckpt.write_bytes(pickle.dumps({"state_dict": {}}, protocol=2))
    assert main(["models", "import", "--convert", str(ckpt)]) == 3
    err = capsys.readouterr().err
    assert "a model named tiny-a1111 already exists" in err and "--name NEW_NAME" in err
    assert main(["models", "import", str(tiny_single_file), "--name", "second copy"]) == 0
    assert capsys.readouterr().out.strip().endswith("second copy.safetensors")
    for bad in ("../escape", ".hidden", "a/b", ""):
        with pytest.raises(ModelError):
            import_model(tiny_single_file, name=bad)
    assert sorted(p.name for p in (data_dir / "models").iterdir()) == ["second copy.safetensors",
                                                                      "tiny-a1111.safetensors"]


# -- a checkpoint with NaN weights --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nan_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("nan") / "nan-sd"
    shutil.copytree(tiny_model, folder)
    weights = next((folder / "vae").glob("*.safetensors"))
    tensors = load_file(weights)
    key = next(k for k in tensors if k.startswith("decoder.conv_out") and k.endswith("bias"))
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, weights, metadata={"format": "pt"})
    return folder


def test_nan_weights_fail_the_job_instead_of_a_black_png(nan_model: Path) -> None:
    from heyim_desktop.core.engine import NonFiniteImage
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.torch_engine import load_torch_engine

    engine = load_torch_engine(nan_model, device="cpu")
    try:
        with pytest.raises(NonFiniteImage, match=r"invalid pixels \(NaN or infinity\) for image 1, 2 of 2"):
            engine.generate(GenerationRequest(prompt="x", steps=1, width=64, height=64, seed=1, count=2))
    finally:
        engine.close()


@pytest.mark.slow
def test_nan_weights_fail_the_cli_and_write_nothing(nan_model: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from heyim_desktop.cli import main

    out = tmp_path / "out"
    assert main(["generate", "--model", str(nan_model), "-p", "x", "--steps", "1", "--size", "64x64",
                 "--device", "cpu", "-o", str(out)]) == 3
    assert "NaN or infinity" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.png"))


def test_finite_images_pass_the_check() -> None:
    import numpy as np

    from heyim_desktop.core.engine import NonFiniteImage, check_finite

    good = np.zeros((2, 8, 8, 3), dtype=np.float32)
    check_finite(good, "cpu", "m")
    good[1, 3, 3, 0] = np.inf
    with pytest.raises(NonFiniteImage, match="image 2 of 2"):
        check_finite(good, "cuda:0", "m")
