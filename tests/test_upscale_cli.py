"""`heyim-desktop upscale` and `generate --hires-scale`, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from heyim_desktop.cli import main
from heyim_desktop.core.metadata import read_parameters, read_parameters_text
from tiny_upscaler import make_esrgan


def _source(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    code = main(["generate", "--demo", "-p", "a red fox", "--seed", "5", "--steps", "2", "--size", "64x64",
                 "-o", str(tmp_path / "gen"), "-q", "--device", "cpu"])
    assert code == 0
    return Path(capsys.readouterr().out.strip())


def test_upscale_builtin_keeps_source_parameters(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _source(tmp_path, data_dir, capsys)
    code = main(["upscale", str(src), "--scale", "2", "--out", str(tmp_path / "up")])
    out = capsys.readouterr()
    assert code == 0, out.err
    path = Path(out.out.strip())
    with Image.open(path) as im:
        assert im.size == (128, 128)
    params = read_parameters(path)
    assert params is not None and params.prompt == "a red fox" and params.seed == 5
    assert params.params["Postprocess upscale by"] == "2" and params.params["Postprocess upscaler"] == "Lanczos"
    assert "tile" not in out.err and "-> 128x128 with Lanczos" in out.err


def test_upscale_with_a_model_file_and_from_the_library(data_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (30, 20), (10, 200, 30)).save(plain)
    st, _ = make_esrgan(tmp_path, 4)
    code = main(["upscale", str(plain), str(plain), "--scale", "4", "--upscaler", str(st), "--tile", "32",
                 "--out", str(tmp_path / "up")])
    out = capsys.readouterr()
    assert code == 0, out.err
    paths = [Path(p) for p in out.out.split()]
    assert len(paths) == 2 and paths[0] != paths[1]  # never overwrites
    with Image.open(paths[0]) as im:
        assert im.size == (120, 80)
    assert read_parameters_text(paths[0]) == "Postprocess upscale by: 4, Postprocess upscaler: RealESRGAN_x4_tiny"
    assert "tile 1/1" in out.err
    # The same model, found by name in the app's upscalers folder.
    lib = data_dir / "models" / "upscalers"
    lib.mkdir(parents=True)
    st.rename(lib / "4x_mine.safetensors")
    assert main(["upscale", str(plain), "--scale", "2", "-u", "4x_mine", "-q", "--out", str(tmp_path / "up2")]) == 0
    with Image.open(Path(capsys.readouterr().out.strip())) as im:
        assert im.size == (60, 40)  # a 4x model, resized to the 2x asked for


def test_unknown_upscaler_and_bad_scale_are_clear(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert main(["upscale", str(plain), "-u", "4x-Nothing"]) == 2
    assert "no upscaler named '4x-Nothing'; choose one of: Lanczos, Nearest" in capsys.readouterr().err
    assert main(["upscale", str(plain), "--scale", "20"]) == 2
    assert "scale: must be from 1 to 8" in capsys.readouterr().err


def test_generate_with_hires_fix(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "--demo", "-p", "a cat", "--seed", "3", "--steps", "2", "--size", "64x64",
                 "--hires-scale", "1.5", "--hires-upscaler", "latent (nearest)", "--hires-steps", "4",
                 "--hires-strength", "0.5", "--hires-save-first-pass", "-o", str(tmp_path / "o"), "-q", "--device", "cpu"])
    out = capsys.readouterr()
    assert code == 0, out.err
    first, final = (Path(p) for p in out.out.split())
    with Image.open(final) as im:
        assert im.size == (96, 96)
    with Image.open(first) as im:
        assert im.size == (64, 64)
    params = read_parameters(final)
    assert params is not None
    assert {k: params.params[k] for k in ("Hires upscale", "Hires steps", "Hires upscaler", "Denoising strength", "Size")} == {
        "Hires upscale": "1.5", "Hires steps": "4", "Hires upscaler": "Latent (nearest)", "Denoising strength": "0.5",
        "Size": "64x64"}
    hires = params.hires_settings()
    assert hires is not None and hires.scale == 1.5 and hires.upscaler == "Latent (nearest)"
    assert "Hires upscale" not in (read_parameters_text(first) or "")
    assert main(["generate", "--demo", "-p", "a cat", "--hires-scale", "2", "--hires-upscaler", "Bogus"]) == 2
    assert "choose one of: Latent," in capsys.readouterr().err
