"""heyim-desktop generate --control ..."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heyim_desktop.cli import _split_control, main
from heyim_desktop.core.metadata import read_parameters


def test_control_from_cli(data_dir: Path, tmp_path: Path, tiny_model: Path, tiny_controlnet: Path,
                          tiny_controlnet_b: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hint = tmp_path / "edges.png"
    rng = np.random.RandomState(4)
    Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8)).save(hint)
    base = ["generate", "--model", str(tiny_model), "-p", "a cat", "--steps", "2", "--size", "64x64", "-q", "--seed", "3"]
    assert main([*base, "-o", str(tmp_path / "plain")]) == 0
    plain = np.asarray(Image.open(capsys.readouterr().out.strip()))
    args = [*base, "--control", f"{tiny_controlnet}:{hint}:0.8", "--control", f"{tiny_controlnet_b}:{hint}",
            "--control-preprocessor", "canny", "--control-preprocessor", "none", "--control-end", "0.5",
            "--control-mode", "prompt", "-o", str(tmp_path / "cn")]
    assert main(args) == 0
    out = Path(capsys.readouterr().out.strip())
    assert np.abs(np.asarray(Image.open(out)).astype(int) - plain).max() > 0
    params = read_parameters(out)
    assert params is not None
    units = params.controlnet_settings()
    assert [u["model"] for u in units] == ["tiny-controlnet", "tiny-controlnet-b"]
    assert units[0]["weight"] == 0.8 and units[0]["preprocessor"] == "canny" and units[1]["preprocessor"] == "none"
    assert all(u["end"] == 0.5 and u["mode"] == "prompt" for u in units)
    assert main([*base, "--control", f"{tiny_controlnet}:{hint}", "--control-end", "0.5", "--control-end", "0.2",
                 "--control-end", "1"]) == 2
    assert "once for all" in capsys.readouterr().err
    assert main([*base, "--control-preprocessor", "canny"]) == 2
    assert "need a ControlNet" in capsys.readouterr().err
    assert main([*base, "--control", f"{tiny_controlnet}"]) == 2
    assert "MODEL:IMAGE" in capsys.readouterr().err


def test_split_control_keeps_colons_in_paths(tmp_path: Path) -> None:
    model = tmp_path / "a:b"
    model.mkdir()
    assert _split_control(f"{model}:x.png:0.5") == (str(model), "x.png", 0.5)
    assert _split_control("m:C:/x.png") == ("m", "C:/x.png", 1.0)


def test_depth_preprocessor_from_cli(data_dir: Path, tmp_path: Path, tiny_model: Path, tiny_controlnet: Path,
                                     capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from depth_layout import write_tiny_depth
    from heyim_desktop.models import cli as models_cli
    from heyim_desktop.models.library import ModelLibrary

    root = tmp_path / "lib"
    (root / "models" / "ControlNet").mkdir(parents=True)
    monkeypatch.setattr(models_cli, "_library", lambda extra=None: ModelLibrary([root], include_demo=False, hf_cache=False))
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.RandomState(6).rand(64, 64, 3) * 255).astype(np.uint8)).save(photo)
    args = ["generate", "--model", str(tiny_model), "-p", "a cat", "--steps", "2", "--size", "64x64", "-q", "--seed", "3",
            "--control", f"{tiny_controlnet}:{photo}", "--control-preprocessor", "depth_midas", "-o", str(tmp_path / "out")]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "annotator" in err and "model.safetensors" in err
    folder = write_tiny_depth(root / "models" / "ControlNet" / "annotator" / "midas", "dpt")
    # With the model there the unit is given its folder (a whole depth-guided generation runs in the API's test).
    from heyim_desktop.cli import _resolve_annotators
    from heyim_desktop.core.controlnet import ControlUnit
    from heyim_desktop.core.request import GenerationRequest

    request = GenerationRequest(prompt="x", controlnets=(ControlUnit(model=str(tiny_controlnet),
                                                                     preprocessor="depth_midas"),))
    assert _resolve_annotators(request).controlnets[0].annotator == str(folder)


def test_openpose_from_cli(data_dir: Path, tmp_path: Path, tiny_model: Path, tiny_controlnet: Path,
                           capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.models import cli as models_cli
    from heyim_desktop.models.library import ModelLibrary
    from openpose_layout import write_body_model

    root = tmp_path / "lib"
    (root / "models" / "ControlNet").mkdir(parents=True)
    monkeypatch.setattr(models_cli, "_library", lambda extra=None: ModelLibrary([root], include_demo=False, hf_cache=False))
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.RandomState(6).rand(64, 64, 3) * 255).astype(np.uint8)).save(photo)
    args = ["generate", "--model", str(tiny_model), "-p", "a cat", "--steps", "2", "--size", "64x64", "-q", "--seed", "3",
            "--control", f"{tiny_controlnet}:{photo}", "--control-preprocessor", "openpose", "-o", str(tmp_path / "out")]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "annotator" in err and "body_pose_model.safetensors" in err
    write_body_model(root / "models" / "ControlNet" / "annotator" / "body_pose_model.safetensors")
    assert main(args) == 0
    out = Path(capsys.readouterr().out.strip())
    params = read_parameters(out)
    assert params is not None and params.controlnet_settings()[0]["preprocessor"] == "openpose"


def test_t2i_adapter_from_cli(data_dir: Path, tmp_path: Path, adapter_sd: Path, tiny_adapter: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    from adapter_layout import build_tiny_adapter

    hint = tmp_path / "edges.png"
    rng = np.random.RandomState(4)
    Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8)).save(hint)
    base = ["generate", "--model", str(adapter_sd), "-p", "a cat", "--steps", "2", "--size", "64x64", "-q", "--seed", "3"]
    assert main([*base, "-o", str(tmp_path / "plain")]) == 0
    plain = np.asarray(Image.open(capsys.readouterr().out.strip()))
    assert main([*base, "--control", f"{tiny_adapter}:{hint}:0.7", "-o", str(tmp_path / "adapter")]) == 0
    out = Path(capsys.readouterr().out.strip())
    assert np.abs(np.asarray(Image.open(out)).astype(int) - plain).max() > 0
    params = read_parameters(out)
    assert params is not None
    (unit,) = params.controlnet_settings()
    assert unit["model"] == "tiny-adapter" and unit["weight"] == 0.7
    xl = build_tiny_adapter(tmp_path / "xl-adapter", seed=3, xl=True)
    assert main([*base, "--control", f"{xl}:{hint}"]) != 0
    assert "for SDXL models" in capsys.readouterr().err


def test_lama_preprocessor_from_cli(data_dir: Path, tmp_path: Path, tiny_model: Path, tiny_controlnet: Path,
                                    tiny_lama: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from heyim_desktop.models import cli as models_cli
    from heyim_desktop.models.library import ModelLibrary

    root = tmp_path / "lib"
    annotator = root / "models" / "ControlNet" / "annotator"
    annotator.mkdir(parents=True)
    monkeypatch.setattr(models_cli, "_library", lambda extra=None: ModelLibrary([root], include_demo=False, hf_cache=False))
    photo, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.fromarray((np.random.RandomState(6).rand(64, 64, 3) * 255).astype(np.uint8)).save(photo)
    drawn = Image.new("L", (64, 64))
    drawn.paste(255, (16, 16, 48, 40))
    drawn.save(mask)
    args = ["generate", "--model", str(tiny_model), "-p", "a cat", "--steps", "2", "--size", "64x64", "-q", "--seed", "3",
            "--image", str(photo), "--mask", str(mask), "--control", f"{tiny_controlnet}:{photo}",
            "--control-preprocessor", "inpaint_only+lama", "-o", str(tmp_path / "out")]
    assert main(args) != 0
    assert "ControlNetLama.safetensors" in capsys.readouterr().err
    os.link(tiny_lama, annotator / "ControlNetLama.safetensors")
    assert main(args) == 0, capsys.readouterr().err
    params = read_parameters(Path(capsys.readouterr().out.strip()))
    assert params is not None and params.controlnet_settings()[0]["preprocessor"] == "inpaint_only+lama"


def test_openpose_full_from_cli_names_the_missing_files(data_dir: Path, tmp_path: Path, tiny_model: Path,
                                                        tiny_controlnet: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.cli import _resolve_annotators
    from heyim_desktop.core.controlnet import ControlUnit
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.models import cli as models_cli
    from heyim_desktop.models.library import ModelLibrary
    from openpose_layout import write_body_model, write_face_model, write_hand_model

    root = tmp_path / "lib"
    annotator = root / "models" / "ControlNet" / "annotator"
    write_body_model(annotator / "body_pose_model.safetensors")
    monkeypatch.setattr(models_cli, "_library", lambda extra=None: ModelLibrary([root], include_demo=False, hf_cache=False))
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.RandomState(6).rand(64, 64, 3) * 255).astype(np.uint8)).save(photo)
    args = ["generate", "--model", str(tiny_model), "-p", "a cat", "--steps", "2", "--size", "64x64", "-q", "--seed", "3",
            "--control", f"{tiny_controlnet}:{photo}", "--control-preprocessor", "openpose_full", "-o", str(tmp_path / "out")]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "hand_pose_model.safetensors" in err and "facenet.safetensors" in err and "annotator" in err
    write_hand_model(annotator / "hand_pose_model.safetensors")
    write_face_model(annotator / "facenet.safetensors")
    request = GenerationRequest(prompt="x", controlnets=(ControlUnit(model=str(tiny_controlnet),
                                                                     preprocessor="openpose_full"),))
    assert _resolve_annotators(request).controlnets[0].annotator == str(annotator / "body_pose_model.safetensors")
