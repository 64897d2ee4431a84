"""GGUF text encoders (llama.cpp's Qwen3 and T5 encoder files) in a family folder, through transformers' loader."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.request import GenerationRequest

#: family -> (text encoder subfolder, the transformers class its pipeline takes, a negative prompt)
_PARTS = {"zimage": ("text_encoder", "Qwen3Model"), "flux2": ("text_encoder", "Qwen3ForCausalLM"),
          "sd3": ("text_encoder_3", "T5EncoderModel")}


def _req(**kw: Any) -> GenerationRequest:
    base: dict[str, Any] = dict(prompt="a red fox in the forest", steps=2, guidance=3.0, seed=7, width=64, height=64)
    base.update(kw)
    return GenerationRequest(**base)


@pytest.fixture(scope="module")
def wide_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny family models whose text encoders have 32-wide rows (whole Q8_0 blocks); SD 3.5 with its T5."""
    from heyim_desktop.core.families.tiny import build_tiny_model
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    root = tmp_path_factory.mktemp("wide")
    return {"zimage": build_tiny_model("zimage", root / "z", text_width=32),
            "flux2": build_tiny_model("flux2", root / "f", text_width=32),
            "sd3": build_tiny_model("sd3", root / "s", t5=True)}


def _gguf_folder(model: Path, family: str, quantization: str, dest: Path, *, keep_full: bool = False) -> Path:
    """A copy of ``model`` with its Qwen3/T5 text encoder as a GGUF file in that subfolder (full weights removed)."""
    from heyim_desktop.core.families.tiny import write_tiny_text_encoder_gguf

    part = _PARTS[family][0]
    shutil.copytree(model, dest)
    write_tiny_text_encoder_gguf(model, dest / part / f"encoder-{quantization}.gguf", quantization=quantization,
                                 part=part)
    if not keep_full:
        for weights in (dest / part).glob("*.safetensors"):
            weights.unlink()
    return dest


def _bound(values: np.ndarray, quantization: str) -> float:
    """The most a weight may move: F32 none; F16 half a unit in the last place; Q8_0 half a block step."""
    top = float(np.abs(values).max()) if values.size else 0.0
    return {"F32": 0.0, "F16": top * 2.0 ** -11, "Q8_0": top / 127 * 0.5 + top * 2.0 ** -11}[quantization] + 1e-7


@pytest.mark.parametrize("family,quantization", [("zimage", "F32"), ("zimage", "F16"), ("zimage", "Q8_0"),
                                                  ("flux2", "Q8_0"), ("sd3", "F32"), ("sd3", "Q8_0")])
def test_transformers_loads_the_gguf_to_the_same_weights(wide_models: dict[str, Path], tmp_path: Path,
                                                         family: str, quantization: str) -> None:
    import torch
    from safetensors.torch import load_file

    from heyim_desktop.core.families import FAMILIES, read_family_index
    from heyim_desktop.core.families.text_encoder_gguf import load_text_encoder, text_encoder_ggufs

    folder = _gguf_folder(wide_models[family], family, quantization, tmp_path / "m")
    found = read_family_index(folder)
    assert found is not None
    (encoder,) = text_encoder_ggufs(folder, FAMILIES[family], found[1])
    part, cls = _PARTS[family]
    assert (encoder.part, encoder.cls, encoder.quantization) == (part, cls, quantization)
    model = load_text_encoder(encoder, folder, torch.float32)
    assert type(model).__name__ == cls and all(p.dtype == torch.float32 for p in model.parameters())
    full = load_file(str(next((wide_models[family] / part).glob("*.safetensors"))))
    state = model.state_dict()
    worst = 0.0
    for name, value in full.items():
        diff = float((state[name] - value).abs().max())
        assert diff <= _bound(value.numpy(), quantization), name
        worst = max(worst, diff)
    assert (worst == 0.0) == (quantization == "F32")  # a quantized file really is quantized


def _reference(folder: Path, gguf_folder: Path, family: str, request: GenerationRequest) -> np.ndarray:
    """diffusers' own pipeline of ``folder`` with the text encoder transformers loads from the GGUF file."""
    import diffusers
    import torch
    import transformers

    from heyim_desktop.core.families import FAMILIES
    from heyim_desktop.core.families.engine import flux2_text_layers

    part, cls = _PARTS[family]
    gguf = next((gguf_folder / part).glob("*.gguf"))
    config = transformers.AutoConfig.from_pretrained(folder / part, local_files_only=True)
    encoder = getattr(transformers, cls).from_pretrained(str(folder / part), gguf_file=str(gguf), config=config,
                                                         dtype=torch.float32, local_files_only=True)
    pipe = getattr(diffusers, FAMILIES[family].pipeline).from_pretrained(folder, local_files_only=True,
                                                                         **{part: encoder})
    pipe.set_progress_bar_config(disable=True)
    kwargs: dict[str, Any] = {}
    if family == "flux2":
        kwargs["text_encoder_out_layers"] = flux2_text_layers(encoder.config.num_hidden_layers)
    else:
        kwargs["negative_prompt"] = request.negative_prompt or None
    out = pipe(prompt=request.prompt, height=request.height, width=request.width, num_inference_steps=request.steps,
               guidance_scale=request.guidance, generator=torch.Generator("cpu").manual_seed(request.seed or 0),
               output_type="np", **kwargs).images
    return np.asarray(out[0], dtype=np.float32)


@pytest.mark.parametrize("family", ["zimage", "flux2", "sd3"])
def test_the_engine_with_a_gguf_text_encoder_equals_the_pipeline(wide_models: dict[str, Path], tmp_path: Path,
                                                                 family: str) -> None:
    from heyim_desktop.core.loading import load_engine

    folder = _gguf_folder(wide_models[family], family, "Q8_0", tmp_path / "m")
    request = _req(negative_prompt="" if family == "flux2" else "blurry")
    engine: Any = load_engine(str(folder), device="cpu")
    try:
        assert type(getattr(engine.pipe, _PARTS[family][0])).__name__ == _PARTS[family][1]
        extra = dict(engine.parameters_extra)
        assert extra["Text encoder"] == "encoder-Q8_0.gguf" and extra["Text encoder quantization"] == "Q8_0"
        ours = engine.render(request).images[0]
    finally:
        engine.close()
    ref = _reference(wide_models[family], folder, family, request)
    assert float(np.abs(ours - ref).max()) <= 1e-4


def test_an_f32_gguf_text_encoder_gives_the_full_weights_image(wide_models: dict[str, Path], tmp_path: Path) -> None:
    from heyim_desktop.core.loading import load_engine

    request = _req(negative_prompt="blurry")
    images = []
    for folder in (wide_models["zimage"], _gguf_folder(wide_models["zimage"], "zimage", "F32", tmp_path / "m",
                                                       keep_full=True)):
        engine: Any = load_engine(str(folder), device="cpu")
        images.append(engine.render(request).images[0])
        assert ("Text encoder" in dict(engine.parameters_extra)) == (folder != wide_models["zimage"])
        engine.close()
    assert float(np.abs(images[0] - images[1]).max()) <= 1e-6  # the GGUF is used instead of the full weights


def test_the_gguf_text_encoder_is_recorded_and_read_back(wide_models: dict[str, Path]) -> None:
    from heyim_desktop.core.families import ZIMAGE
    from heyim_desktop.core.families.engine import family_parameters
    from heyim_desktop.core.families.text_encoder_gguf import TextEncoderGguf
    from heyim_desktop.core.metadata import format_parameters, parse_parameters

    encoder = TextEncoderGguf("text_encoder", Path("Qwen3-4B-Q4_K_M.gguf"), "Qwen3Model", "qwen3", "Q4_K", 4)
    pairs = dict(family_parameters(ZIMAGE, "cfg", {"shift": 3.0}, None, (encoder,)))
    assert pairs["Text encoder"] == "Qwen3-4B-Q4_K_M.gguf" and pairs["Text encoder quantization"] == "Q4_K"
    settings = parse_parameters(format_parameters(_req(), 7, "z", extra=pairs)).family_settings()
    assert settings["text_encoder"] == "Qwen3-4B-Q4_K_M.gguf" and settings["text_encoder_quantization"] == "Q4_K"
    hostile = parse_parameters(format_parameters(_req(), 7, "z", extra={
        "Text encoder": "../../etc/passwd", "Text encoder quantization": "rm -rf"}))
    assert "text_encoder" not in hostile.family_settings()
    assert "text_encoder_quantization" not in hostile.family_settings()


_PROBE = """
import json, sys
from pathlib import Path
from heyim_desktop.models.inspect import inspect_folder
out = {}
for folder in sorted(Path(sys.argv[1]).iterdir()):
    info = inspect_folder(folder)
    out[folder.name] = [info.base, info.status.value, info.problem, info.quantization, info.text_encoder_quantization,
                        info.kind_label]
out["torch"] = "torch" in sys.modules
print(json.dumps(out))
"""


def _write_foreign(path: Path, arch: str, **sizes: int) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in sizes.items():
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_the_library_lists_gguf_text_encoders_without_torch_and_refuses_foreign_ones(
        wide_models: dict[str, Path], tmp_path: Path) -> None:
    from heyim_desktop.core.loading import load_engine

    root = tmp_path / "models"
    root.mkdir()
    _gguf_folder(wide_models["zimage"], "zimage", "Q8_0", root / "z-q8")
    _gguf_folder(wide_models["sd3"], "sd3", "F16", root / "sd3-t5-f16")
    llama = _gguf_folder(wide_models["zimage"], "zimage", "F32", root / "z-llama")
    (llama / "text_encoder" / "encoder-F32.gguf").unlink()
    _write_foreign(llama / "text_encoder" / "llama.gguf", "llama", block_count=2)
    t5_in_z = _gguf_folder(wide_models["zimage"], "zimage", "F32", root / "z-t5")
    (t5_in_z / "text_encoder" / "encoder-F32.gguf").unlink()
    shutil.copyfile(next((root / "sd3-t5-f16" / "text_encoder_3").glob("*.gguf")), t5_in_z / "text_encoder" / "t5.gguf")
    bigger = _gguf_folder(wide_models["zimage"], "zimage", "F32", root / "z-bigger")
    (bigger / "text_encoder" / "encoder-F32.gguf").unlink()
    _write_foreign(bigger / "text_encoder" / "qwen3-8b.gguf", "qwen3", embedding_length=4096, block_count=36)
    cut = _gguf_folder(wide_models["zimage"], "zimage", "Q8_0", root / "z-cut")
    file = next((cut / "text_encoder").glob("*.gguf"))
    file.write_bytes(file.read_bytes()[:60])
    src = Path(__file__).resolve().parents[2] / "src"
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(root)], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    assert out["z-q8"] == ["Z-Image", "ready", "", "", "Q8_0", "diffusers, text encoder Q8_0"]
    assert out["sd3-t5-f16"][:2] == ["SD 3.5", "ready"] and out["sd3-t5-f16"][4] == "F16"
    assert out["z-llama"][:2] == ["Z-Image", "unsupported"]
    assert "GGUF llama model" in out["z-llama"][2] and "Qwen3" in out["z-llama"][2]
    assert out["z-t5"][:2] == ["Z-Image", "unsupported"]
    assert "GGUF t5encoder model, not the Qwen3 text encoder Z-Image needs" in out["z-t5"][2]
    assert out["z-bigger"][:2] == ["Z-Image", "unsupported"]
    assert "hidden_size 4096, not 32" in out["z-bigger"][2] and "num_hidden_layers 36, not 2" in out["z-bigger"][2]
    assert out["z-cut"][:2] == ["Z-Image", "corrupt"] and "truncated" in out["z-cut"][2]
    for name, words in (("z-llama", "GGUF llama model"), ("z-t5", "t5encoder"), ("z-bigger", "another size"),
                        ("z-cut", "truncated")):
        with pytest.raises(ModelError, match=words):
            load_engine(str(root / name), device="cpu")


def test_two_gguf_text_encoders_or_one_for_clip_are_refused(wide_models: dict[str, Path], tmp_path: Path) -> None:
    from heyim_desktop.core.families import FAMILIES, read_family_index
    from heyim_desktop.core.families.text_encoder_gguf import text_encoder_ggufs

    z = _gguf_folder(wide_models["zimage"], "zimage", "F32", tmp_path / "z")
    shutil.copyfile(z / "text_encoder" / "encoder-F32.gguf", z / "text_encoder" / "other.gguf")
    with pytest.raises(ModelError, match="holds 2 GGUF files"):
        text_encoder_ggufs(z, FAMILIES["zimage"], read_family_index(z)[1])  # type: ignore[index]
    s = _gguf_folder(wide_models["sd3"], "sd3", "F32", tmp_path / "s")
    shutil.move(str(next((s / "text_encoder_3").glob("*.gguf"))), s / "text_encoder" / "clip.gguf")
    with pytest.raises(ModelError, match="text_encoder has no GGUF form"):
        text_encoder_ggufs(s, FAMILIES["sd3"], read_family_index(s)[1])  # type: ignore[index]


def test_a_gguf_text_encoder_chosen_explicitly_replaces_the_folders(wide_models: dict[str, Path], tmp_path: Path,
                                                                     tiny_model: Path) -> None:
    """A GGUF file anywhere (``load_engine(..., text_encoder=FILE)``, the CLI's ``--text-encoder``): the folder's
    text_encoder/ then needs only its config.json."""
    from heyim_desktop.core.families.tiny import write_tiny_text_encoder_gguf
    from heyim_desktop.core.loading import load_engine

    file = write_tiny_text_encoder_gguf(wide_models["zimage"], tmp_path / "qwen3-Q8_0.gguf")
    folder = tmp_path / "z-no-encoder"
    shutil.copytree(wide_models["zimage"], folder)
    for weights in (folder / "text_encoder").glob("*.safetensors"):
        weights.unlink()
    request = _req(negative_prompt="blurry")
    engine: Any = load_engine(str(folder), device="cpu", text_encoder=str(file))
    try:
        assert dict(engine.parameters_extra)["Text encoder"] == "qwen3-Q8_0.gguf"
        ours = engine.render(request).images[0]
    finally:
        engine.close()
    in_folder = _gguf_folder(wide_models["zimage"], "zimage", "Q8_0", tmp_path / "z-in-folder")
    assert float(np.abs(ours - _reference(wide_models["zimage"], in_folder, "zimage", request)).max()) <= 1e-4
    with pytest.raises(ModelError, match="GGUF text encoder file is for those"):
        load_engine(str(tiny_model), device="cpu", text_encoder=str(file))
    t5 = write_tiny_text_encoder_gguf(wide_models["sd3"], tmp_path / "t5.gguf", part="text_encoder_3")
    with pytest.raises(ModelError, match=r"t5.gguf \(for z-no-encoder\) is a GGUF t5encoder model, not the Qwen3"):
        load_engine(str(folder), device="cpu", text_encoder=str(t5))
    with pytest.raises(ModelError, match="must be a .gguf"):
        load_engine(str(folder), device="cpu", text_encoder=str(folder / "model_index.json"))


def test_generate_cli_takes_a_gguf_text_encoder(wide_models: dict[str, Path], tmp_path: Path, data_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from heyim_desktop.cli import main
    from heyim_desktop.core.families.tiny import write_tiny_text_encoder_gguf
    from heyim_desktop.core.metadata import read_parameters

    file = write_tiny_text_encoder_gguf(wide_models["flux2"], tmp_path / "qwen3-F16.gguf", quantization="F16")
    code = main(["generate", "--model", str(wide_models["flux2"]), "--text-encoder", str(file), "-p", "a red fox",
                 "--steps", "2", "--size", "64x64", "--seed", "3", "--out", str(tmp_path / "out"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    params = read_parameters(Path(captured.out.split()[0]))
    assert params is not None
    assert params.family_settings()["text_encoder"] == "qwen3-F16.gguf"
    assert params.family_settings()["text_encoder_quantization"] == "F16"
    code = main(["generate", "--demo", "--text-encoder", str(file), "-p", "x", "--steps", "1",
                 "--out", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code != 0 and "GGUF text encoder file is for those" in err and "Traceback" not in err


@pytest.mark.slow  # an engine process (its own torch import): ~15 s here
def test_the_engine_process_loads_with_the_chosen_text_encoder(wide_models: dict[str, Path], tmp_path: Path) -> None:
    """The window's choice (Preferences.text_encoders) reaches the engine process with the load."""
    from heyim_desktop.core.families.tiny import write_tiny_text_encoder_gguf
    from heyim_desktop.core.process.remote import ProcessLoader

    file = write_tiny_text_encoder_gguf(wide_models["zimage"], tmp_path / "qwen3-Q8_0.gguf")
    remote = ProcessLoader(device="cpu").load(str(wide_models["zimage"]), text_encoder=str(file))
    try:
        result = remote.generate(_req(steps=1, model=str(wide_models["zimage"])))
        extra = dict(result.parameters_extra)
        assert extra["Text encoder"] == "qwen3-Q8_0.gguf" and extra["Text encoder quantization"] == "Q8_0"
    finally:
        remote.close()


def test_the_choice_kept_in_preferences_applies_to_the_cli(wide_models: dict[str, Path], tmp_path: Path,
                                                            data_dir: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Preferences.text_encoders (set in the window) is read by generate and serve, matched by path."""
    from heyim_desktop.cli import main
    from heyim_desktop.core.families.tiny import write_tiny_text_encoder_gguf
    from heyim_desktop.core.metadata import read_parameters
    from heyim_desktop.store.preferences import Preferences, load_preferences, save_preferences, text_encoder_for

    file = write_tiny_text_encoder_gguf(wide_models["zimage"], tmp_path / "chosen-Q8_0.gguf")
    save_preferences(Preferences(text_encoders={str(wide_models["zimage"]): str(file)}))
    prefs = load_preferences()
    monkeypatch.chdir(wide_models["zimage"].parent)
    assert text_encoder_for(prefs, wide_models["zimage"].name) == str(file)  # a relative path to the same folder
    assert text_encoder_for(prefs, str(wide_models["flux2"])) is None
    code = main(["generate", "--model", wide_models["zimage"].name, "-p", "a red fox", "--steps", "1",
                 "--size", "64x64", "--out", str(tmp_path / "out"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    params = read_parameters(Path(captured.out.split()[0]))
    assert params is not None and params.family_settings()["text_encoder"] == "chosen-Q8_0.gguf"


def test_a_chosen_text_encoder_that_is_gone_says_where_it_was_chosen(tiny_zimage: Path, tmp_path: Path) -> None:
    from heyim_desktop.core.families import read_family_index
    from heyim_desktop.core.families.text_encoder_gguf import explicit_text_encoder

    found = read_family_index(tiny_zimage)
    assert found is not None
    # the window keeps the choice in Preferences and generate/serve apply it: the file may have moved since
    with pytest.raises(ModelError, match="not found") as gone:
        explicit_text_encoder(tmp_path / "moved.gguf", tiny_zimage, found[0], found[1])
    assert tiny_zimage.name in str(gone.value) and "Text encoder… button" in str(gone.value)
    assert "--text-encoder" in str(gone.value)
