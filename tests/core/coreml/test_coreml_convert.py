"""Conversion of the tiny model to Core ML in Apple's layout (runs on Linux)."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest

from heyim_desktop import cli
from heyim_desktop.core import Cancelled, CancelToken
from heyim_desktop.core.errors import InvalidRequest, ModelError


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_cli_writes_apples_layout(coreml_model: Path, conversion_log: dict[str, object]) -> None:
    names = sorted(p.name for p in coreml_model.iterdir())
    assert names == [
        "TextEncoder.mlpackage", "Unet.mlpackage", "VAEDecoder.mlpackage", "VAEEncoder.mlpackage",
        "heyim-conversion.json", "merges.txt", "scheduler_config.json", "vocab.json",
    ]
    for pkg in coreml_model.glob("*.mlpackage"):
        assert (pkg / "Manifest.json").is_file()
        assert (pkg / "Data" / "com.apple.CoreML" / "model.mlmodel").is_file()
    code, stdout, stderr = conversion_log["cli"]  # type: ignore[misc]
    assert code == 0
    assert stdout.strip() == str(coreml_model)
    assert "[2/6] Unet" in stderr and "[6/6] Done" in stderr
    # coremltools' own progress bars and warnings stay off the user's terminal.
    assert "MIL" not in stderr and "ops/s" not in stderr
    # Nothing half-written is left beside the result.
    assert [p.name for p in coreml_model.parent.iterdir()] == [coreml_model.name]


def test_api_reports_each_stage(coreml_chunked: Path, conversion_log: dict[str, object]) -> None:
    stages = conversion_log["api"]
    labels = [s.label for s in stages]  # type: ignore[attr-defined]
    assert labels == ["Loading the model", "TextEncoder (reused)", "Unet", "VAEDecoder (reused)", "Saving", "Done"]
    assert [s.stage for s in stages] == list(range(6))  # type: ignore[attr-defined]
    assert all(s.total == 5 for s in stages)  # type: ignore[attr-defined]
    names = sorted(p.name for p in coreml_chunked.glob("*.mlpackage"))
    assert names == ["TextEncoder.mlpackage", "UnetChunk1.mlpackage", "UnetChunk2.mlpackage", "VAEDecoder.mlpackage"]


def test_reuse_needs_same_weights_and_shapes(coreml_model: Path, tiny_model: Path) -> None:
    from heyim_desktop.core.coreml.convert import _reusable, _weights_id

    vae = _weights_id(tiny_model / "vae")
    z = [("z", (1, 4, 32, 32), "float16")]
    assert _reusable(coreml_model, "VAEDecoder", vae, z) == coreml_model / "VAEDecoder.mlpackage"  # type: ignore[arg-type]
    assert _reusable(coreml_model, "VAEDecoder", _weights_id(tiny_model / "text_encoder"), z) is None  # type: ignore[arg-type]
    assert _reusable(coreml_model, "VAEDecoder", vae, [("z", (1, 4, 64, 64), "float16")]) is None  # type: ignore[arg-type]
    assert _reusable(coreml_model, "VAEEncoder", vae, z) is None  # type: ignore[arg-type]
    assert _reusable(None, "VAEDecoder", vae, z) is None  # type: ignore[arg-type]


def test_cancel_leaves_nothing(tiny_model: Path, tmp_path: Path) -> None:
    from heyim_desktop.core.coreml.convert import convert_to_coreml

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        convert_to_coreml(tiny_model, tmp_path / "out", cancel=token)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"attention": "flash"}, InvalidRequest, "split_einsum, original"),
        ({"batch": 3}, InvalidRequest, "choose 1 or 2"),
        ({"size": (100, 256)}, InvalidRequest, "multiples of 16"),
    ],
)
def test_bad_options_are_refused(tiny_model: Path, tmp_path: Path, kwargs: dict[str, object], error: type, text: str) -> None:
    from heyim_desktop.core.coreml.convert import convert_to_coreml

    with pytest.raises(error, match=text):
        convert_to_coreml(tiny_model, tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_cli_errors_are_one_line(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    code, _, err = _run("convert", str(tiny_model), str(tmp_path / "full"))
    assert code == cli.EXIT_MODEL
    assert err.count("\n") == 1 and "not an empty folder" in err
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"

    code, _, err = _run("convert", str(tmp_path), str(tmp_path / "o"))
    assert code == cli.EXIT_MODEL and "model_index.json is missing" in err

    code, _, err = _run("convert", str(tiny_model), str(tmp_path / "o"), "--size", "big")
    assert code == cli.EXIT_USAGE and "size must look like 512x512" in err

    code, _, err = _run("convert", str(tiny_model), str(tmp_path / "o"), "--batch", "4")
    assert code == cli.EXIT_USAGE and err.count("\n") == 1


def test_incomplete_sdxl_source_and_refiner_are_refused(tmp_path: Path, tiny_sdxl_refiner: Path) -> None:
    from heyim_desktop.core.coreml.convert import convert_to_coreml

    (tmp_path / "xl").mkdir()
    (tmp_path / "xl" / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    with pytest.raises(ModelError, match="incomplete"):
        convert_to_coreml(tmp_path / "xl", tmp_path / "out")
    # A refiner converts (test_coreml_sdxl); one without its text encoder is incomplete.
    shutil.copytree(tiny_sdxl_refiner, tmp_path / "refiner", ignore=shutil.ignore_patterns("text_encoder_2"))
    with pytest.raises(ModelError, match="text_encoder_2"):
        convert_to_coreml(tmp_path / "refiner", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refiner", "xl"]


@pytest.mark.slow  # one more real conversion of the tiny model (about 30 s)
def test_a_single_file_checkpoint_converts_like_its_folder(tiny_single_file: Path, coreml_model: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "from-single-file"
    code, stdout, stderr = _run("convert", str(tiny_single_file), str(out))
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in coreml_model.iterdir())
    # The same weights as the folder's conversion: the single file was written from that folder.
    for pkg in ("TextEncoder", "Unet", "VAEDecoder", "VAEEncoder"):
        ours = out / f"{pkg}.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
        theirs = coreml_model / f"{pkg}.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
        assert ours.read_bytes() == theirs.read_bytes(), pkg
    # The staging folder (the file written out as a diffusers folder) is gone; nothing else is there.
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_only_safetensors_single_files_are_converted(tmp_path: Path) -> None:
    pickle_file = tmp_path / "model.ckpt"
    pickle_file.write_bytes(b"not loaded")
    code, _out, stderr = _run("convert", str(pickle_file), str(tmp_path / "out"))
    assert code != 0 and "never loads pickle" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]
