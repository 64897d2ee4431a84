"""The command line, end to end on the tiny model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from heyim_desktop.cli import main
from heyim_desktop.core.metadata import read_parameters


def test_generate_demo_writes_png_with_metadata(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["generate", "--demo", "--prompt", "a red fox", "--seed", "11", "--steps", "3",
                 "--size", "64x96", "--count", "2", "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    paths = [Path(line) for line in captured.out.split()]
    assert len(paths) == 2 and all(p.parent == out and p.is_file() for p in paths)
    params = [read_parameters(p) for p in paths]
    assert [p.seed for p in params] == [11, 12]  # type: ignore[union-attr]
    assert params[0].prompt == "a red fox" and params[0].steps == 3 and params[0].size == (64, 96)  # type: ignore[union-attr]
    assert "6/6 steps" in captured.err and "Done: 2 image(s)" in captured.err


def test_img2img_from_cli(data_dir: Path, tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    src = tmp_path / "in.png"
    Image.new("RGB", (100, 80), (200, 30, 30)).save(src)
    code = main(["generate", "--model", str(tiny_model), "-p", "a cat", "--image", str(src), "--strength", "0.5",
                 "--steps", "4", "--size", "64x64", "-o", str(tmp_path / "o"), "-q", "--seed", "3"])
    out = capsys.readouterr()
    assert code == 0, out.err
    params = read_parameters(Path(out.out.strip()))
    assert params is not None and params.denoising_strength == 0.5 and params.sampler == "PNDM"
    assert params.cfg_scale == 9.0  # 7.5 + the image-to-image boost


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--prompt", " "], 2, "prompt: must not be empty"),
        (["--prompt", "x", "--steps", "0"], 2, "steps: must be from 1 to 150"),
        (["--prompt", "x", "--size", "100x100"], 2, "width: must be a multiple of 8"),
        (["--prompt", "x", "--size", "big"], 2, "size must look like 512x512"),
        (["--prompt", "x", "--scheduler", "nope"], 2, "unknown scheduler"),
        (["--prompt", "x", "--cfg", "31"], 2, "guidance: must be from 0 to 30"),
        (["--prompt", "x", "--image", "/no/such.png"], 2, "such.png: file not found"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(data_dir: Path, capsys: pytest.CaptureFixture[str],
                                           args: list[str], code: int, fragment: str) -> None:
    assert main(["generate", "--demo", *args]) == code
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--model", str(tmp_path / "nothing"), "-p", "x"]) == 3
    assert "Model folder not found" in capsys.readouterr().err


def test_incomplete_model_folder(tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    shutil.rmtree(broken / "vae")
    assert main(["generate", "--model", str(broken), "-p", "x"]) == 3
    assert "missing vae/" in capsys.readouterr().err


def test_demo_model_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "demo"
    assert main(["demo-model", str(dest)]) == 0
    assert (dest / "model_index.json").is_file() and (dest / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert main(["demo-model", str(dest)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def _env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    import heyim_desktop

    src = str(Path(heyim_desktop.__file__).parent.parent)
    env.update({"HEYIM_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))})
    return env


def test_real_process_no_traceback_on_bad_input(data_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "heyim_desktop", "generate", "--demo", "--prompt", ""],
                          capture_output=True, text=True, env=_env(data_dir), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "heyim-desktop: error: prompt: must not be empty"


def test_ctrl_c_mid_run_cancels_and_saves_nothing(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "heyim_desktop", "generate", "--demo", "--prompt", "a fox", "--steps", "150",
         "--size", "64x64", "--out", str(out), "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(data_dir),
    )
    assert proc.stderr is not None
    seen = b""
    while b"2/150" not in seen:
        chunk = proc.stderr.read1(4096)  # type: ignore[attr-defined]
        assert chunk, seen.decode()
        seen += chunk
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    assert b"Cancelled; nothing was saved." in stderr
    assert stdout == b""
    assert not out.exists() or list(out.iterdir()) == []


def test_sdxl_with_refiner_at_the_models_own_size(  # type: ignore[no-untyped-def]
    data_dir: Path, tmp_path: Path, tiny_sdxl_single_file: Path, tiny_sdxl_refiner: Path, capsys
) -> None:
    code = main(["generate", "--model", str(tiny_sdxl_single_file), "-p", "a red fox", "--steps", "4", "--seed", "2",
                 "--scheduler", "Euler a", "--refiner", str(tiny_sdxl_refiner), "--refiner-switch", "0.5",
                 "-o", str(tmp_path / "o"), "--device", "cpu"])
    out = capsys.readouterr()
    assert code == 0, out.err
    params = read_parameters(Path(out.out.strip()))
    assert params is not None and params.size == (256, 256)  # no --size: the model's own (tiny SDXL: 256)
    assert params.model == "tiny-sdxl-a1111" and params.refiner == "tiny-sdxl-refiner"
    assert params.request_settings()["refiner_switch"] == 0.5
    assert "4/4 steps" in out.err  # 2 base + 2 refiner steps in one progress run


def test_refiner_switch_out_of_range_is_one_line(data_dir: Path, tiny_sdxl: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "--model", str(tiny_sdxl), "-p", "x", "--refiner", str(tiny_sdxl), "--refiner-switch", "1.2"])
    assert code == 2 and "refiner_switch: must be from 0 to 1" in capsys.readouterr().err


def test_inpaint_and_outpaint_from_cli(data_dir: Path, tmp_path: Path, tiny_model: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    from PIL import Image

    src, mask = tmp_path / "in.png", tmp_path / "mask.png"
    rng = np.random.RandomState(1)
    Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8)).save(src)
    arr = np.zeros((64, 64), np.uint8)
    arr[8:24, 8:24] = 255
    Image.fromarray(arr, mode="L").save(mask)
    base = ["generate", "--model", str(tiny_model), "-p", "a cat", "--image", str(src), "--strength", "1",
            "--steps", "2", "--size", "64x64", "-q", "--seed", "3"]
    assert main([*base, "--mask", str(mask), "--mask-blur", "0", "--fill", "noise", "-o", str(tmp_path / "a")]) == 0
    out = Path(capsys.readouterr().out.strip())
    pixels = np.asarray(Image.open(out).convert("RGB"))
    assert np.array_equal(pixels[arr == 0], np.asarray(Image.open(src))[arr == 0])
    params = read_parameters(out)
    assert params is not None and params.params["Masked content"] == "latent noise" and params.params["Mask blur"] == "0"
    assert params.inpaint_settings() == {"blur": 0, "invert": False, "fill": "latent noise", "only_masked": False}
    assert main([*base, "--extend", "0,0,32,0", "-o", str(tmp_path / "b")]) == 0
    grown = Image.open(Path(capsys.readouterr().out.strip()))
    assert grown.size == (96, 64)
    assert main([*base, "--only-masked"]) == 2
    assert "need a mask" in capsys.readouterr().err
    assert main([*base, "--extend", "7,0,0,0"]) == 2
    assert "multiple of 8" in capsys.readouterr().err


def test_lora_from_cli_by_name_and_tag(data_dir: Path, tmp_path: Path, tiny_model: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from heyim_desktop.core.lora import parse_network_hashes
    from lora_helpers import write_lora

    lora_dir = data_dir / "models" / "Lora"
    write_lora(tiny_model, lora_dir / "inkwash.safetensors", seed=4)
    base = ["generate", "--model", str(tiny_model), "--steps", "2", "--size", "64x64", "-q", "--seed", "3"]
    assert main([*base, "-p", "a cat", "-o", str(tmp_path / "plain")]) == 0
    plain = Path(capsys.readouterr().out.strip())
    assert main([*base, "-p", "a cat", "--lora", "inkwash:0.7", "-o", str(tmp_path / "flag")]) == 0
    flag = Path(capsys.readouterr().out.strip())
    assert main([*base, "-p", "a cat <lora:inkwash:0.7>", "-o", str(tmp_path / "tag")]) == 0
    tag = Path(capsys.readouterr().out.strip())
    from PIL import Image

    assert Image.open(flag).tobytes() == Image.open(tag).tobytes()
    assert Image.open(flag).tobytes() != Image.open(plain).tobytes()
    params = read_parameters(tag)
    assert params is not None and "<lora:inkwash:0.7>" in params.prompt
    assert "inkwash" in parse_network_hashes(params.params["Lora hashes"])
    assert main([*base, "-p", "a cat <lora:nope:1>"]) == 2
    assert "unknown LoRA 'nope'" in capsys.readouterr().err
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "inkwash\tlora\t" in listing


def test_generate_applies_a_few_step_models_settings_unless_set(tiny_model: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    turbo = tmp_path / "sdxl-lightning-2step"  # Lightning by name: 2 steps (from the name), guidance 0, Euler
    shutil.copytree(tiny_model, turbo)
    code = main(["generate", "--model", str(turbo), "-p", "a fox", "--size", "64x64", "-o", str(tmp_path / "a"),
                 "-q", "--seed", "1", "--device", "cpu"])
    out = capsys.readouterr()
    assert code == 0, out.err
    params = read_parameters(Path(out.out.strip()))
    assert params is not None and (params.steps, params.cfg_scale, params.sampler) == (2, 0.0, "Euler")
    assert "note: using the model's recommended settings: 2 steps, guidance 0, Euler" in out.err


def test_settings_the_user_gave_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from heyim_desktop.cli import _family_defaults
    from heyim_desktop.core.capabilities import Capabilities, Recommended
    from heyim_desktop.core.request import GenerationRequest

    engine = SimpleNamespace(info=SimpleNamespace(capabilities=Capabilities(
        recommended=Recommended(steps=1, guidance=0.0, scheduler="Euler a", source="known model"))))
    request = GenerationRequest(prompt="x", steps=3, guidance=2.0, scheduler="DDIM")
    given = SimpleNamespace(steps=3, cfg=2.0, scheduler="DDIM")
    assert _family_defaults(request, engine, given) == request  # type: ignore[arg-type]
    assert "recommended" not in capsys.readouterr().err
    partly = _family_defaults(request, engine, SimpleNamespace(steps=3, cfg=None, scheduler=None))  # type: ignore[arg-type]
    assert (partly.steps, partly.guidance, partly.scheduler) == (3, 0.0, "Euler a")
    assert "recommended settings: guidance 0, Euler a (from known model)" in capsys.readouterr().err
