"""Prompt styles and clip skip from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from heyim_desktop.cli import main
from heyim_desktop.core.metadata import read_parameters


def test_styles_commands_and_generate_with_styles_and_clip_skip(data_dir: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    a1111 = tmp_path / "stable-diffusion-webui"
    a1111.mkdir()
    (a1111 / "styles.csv").write_text('name,prompt,negative_prompt\n"Oil","oil painting of {prompt}, impasto","photo"\n',
                                      encoding="utf-8-sig")
    assert main(["styles", "import", str(a1111)]) == 0
    assert main(["styles", "add", "Moody", "--prompt", "moody light", "--negative", "flat"]) == 0
    capsys.readouterr()
    assert main(["styles", "list"]) == 0
    listed = capsys.readouterr().out
    assert "Oil" in listed and "oil painting of {prompt}, impasto" in listed and "Moody" in listed
    out = tmp_path / "out"
    code = main(["generate", "--demo", "-p", "a fox", "-n", "blur", "--style", "Oil", "--style", "Moody",
                 "--clip-skip", "2", "--steps", "2", "--size", "64x64", "--seed", "4", "-o", str(out), "-q",
                 "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    params = read_parameters(Path(captured.out.strip()))
    assert params is not None
    assert params.prompt == "oil painting of a fox, impasto, moody light" and params.negative_prompt == "blur, photo, flat"
    assert params.clip_skip == 2 and params.styles == ["Oil", "Moody"]
    assert main(["generate", "--demo", "-p", "x", "--style", "Nope", "--device", "cpu"]) == 2
    assert "style: unknown style 'Nope'" in capsys.readouterr().err
    assert main(["styles", "remove", "Moody"]) == 0 and main(["styles", "remove", "Moody"]) == 2
    assert main(["styles", "import", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_clip_skip_out_of_range_is_one_line(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--demo", "-p", "x", "--clip-skip", "0", "--device", "cpu"]) == 2
    assert "clip_skip: must be from 1 to 12" in capsys.readouterr().err
