"""VAEEncoders of every Core ML generation: today's ``x``, the ``z`` form and Apple's five-input form.

The fixtures in ``fixtures/`` are compiled-model ``metadata.json`` files in the format Apple's
``.mlmodelc`` folders carry, one per encoder contract, at 512x512. The engine tests put each one
(resized to the tiny model's 256x256) in place of the tiny conversion's VAEEncoder and predict
with the source torch modules, so image-to-image is checked against the torch engine.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from heyim_desktop.core import GenerationRequest, InvalidRequest
from heyim_desktop.core.coreml.detect import ENCODER_MOMENTS, ENCODER_NOISED, detect_coreml_folder, encoder_form
from heyim_desktop.core.coreml.engine import load_coreml_engine
from heyim_desktop.core.coreml.reference import TorchReferencePredictor
from heyim_desktop.core.coreml.specs import ModelSpec, read_model_spec

FIXTURES = Path(__file__).parent / "fixtures"
FORMS = {"vae_encoder_x": ("x", ENCODER_MOMENTS), "vae_encoder_z": ("z", ENCODER_MOMENTS), "vae_encoder_noised": ("sample", ENCODER_NOISED)}
MAX_LEVELS, MEAN_LEVELS = 4.0, 0.5


def _compiled(dest: Path, name: str, metadata: list[dict[str, Any]]) -> Path:
    folder = dest / f"{name}.mlmodelc"
    (folder / "weights").mkdir(parents=True)
    (folder / "coremldata.bin").write_bytes(b"")
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    return folder


def _schema(spec: ModelSpec, outputs: bool = False) -> list[dict[str, str]]:
    kinds = {"float16": "Float16", "float32": "Float32"}
    return [
        {"name": t.name, "type": "MultiArray", "dataType": kinds[t.dtype], "shape": "[" + ", ".join(map(str, t.shape)) + "]"}
        for t in (spec.outputs if outputs else spec.inputs)
    ]


def _fixture(name: str, size: int) -> list[dict[str, Any]]:
    """A fixture's metadata with its spatial sizes scaled from 512x512 to ``size``."""
    data = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    for entry in (*data[0]["inputSchema"], *data[0]["outputSchema"]):
        dims = json.loads(entry["shape"])
        if len(dims) == 4:
            dims[2:] = [d * size // 512 for d in dims[2:]]
            entry["shape"] = json.dumps(dims)
    return data  # type: ignore[no-any-return]


def _with_encoder(coreml_model: Path, dest: Path, metadata: list[dict[str, Any]] | None) -> Path:
    """The tiny conversion as compiled models (metadata only), with the given VAEEncoder."""
    dest.mkdir()
    info = detect_coreml_folder(coreml_model)
    for spec in info.models:
        if spec.name == "VAEEncoder":
            continue
        ops = {"Ios16.einsum": 8} if spec.name == "Unet" else {"Ios16.conv": 4}
        _compiled(dest, spec.name, [{"inputSchema": _schema(spec), "outputSchema": _schema(spec, True),
                                     "mlProgramOperationTypeHistogram": ops}])
    if metadata is not None:
        _compiled(dest, "VAEEncoder", metadata)
    for name in ("vocab.json", "merges.txt", "scheduler_config.json"):
        shutil.copy(coreml_model / name, dest / name)
    return dest


@pytest.mark.parametrize("name", sorted(FORMS))
def test_each_recorded_encoder_form_is_recognised(name: str, tmp_path: Path) -> None:
    folder = _compiled(tmp_path, "VAEEncoder", json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8")))
    spec = read_model_spec("VAEEncoder", folder)
    first, form = FORMS[name]
    assert spec.inputs[0].name == first and spec.inputs[0].shape == (1, 3, 512, 512)
    assert encoder_form(spec) == (form, "")


@pytest.fixture(scope="module")
def img2img_request() -> GenerationRequest:
    source = Image.fromarray(np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (200, 1))).convert("RGB")
    return GenerationRequest(prompt="a red fox", negative_prompt="blurry", steps=6, seed=5, width=256, height=256,
                             init_image=source, strength=0.6)


@pytest.mark.parametrize("name", sorted(FORMS))
def test_img2img_with_every_encoder_form_matches_torch(  # type: ignore[no-untyped-def]
    name: str, coreml_model: Path, tiny_model: Path, tiny_engine, img2img_request: GenerationRequest, tmp_path: Path
) -> None:
    folder = _with_encoder(coreml_model, tmp_path / "m", _fixture(name, 256))
    info = detect_coreml_folder(folder)
    assert info.img2img and info.encoder_form == FORMS[name][1] and info.img2img_note == ""
    predictor = TorchReferencePredictor(tiny_model, info)
    engine = load_coreml_engine(folder, predictor=predictor)
    ours = np.asarray(engine.generate(img2img_request).images[0].image, np.float32)
    theirs = np.asarray(tiny_engine.generate(img2img_request).images[0].image, np.float32)
    diff = np.abs(ours - theirs)
    assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, (diff.max(), diff.mean())
    feeds = [feed for n, feed in predictor.calls if n == "VAEEncoder"]
    if FORMS[name][1] == ENCODER_NOISED:
        # Mean, then mean plus a probe of the deviation; the loop adds its own noise after.
        assert len(feeds) == 2
        assert feeds[0] == {
            "sample": ((1, 3, 256, 256), "float16"), "diagonal_noise": ((1, 4, 32, 32), "float16"),
            "noise": ((1, 4, 32, 32), "float16"), "sqrt_alphas_cumprod": ((1, 1), "float16"),
            "sqrt_one_minus_alphas_cumprod": ((1, 1), "float16"),
        }
    else:
        assert feeds == [{FORMS[name][0]: ((1, 3, 256, 256), "float16")}]


def test_unknown_encoder_turns_off_img2img_only(  # type: ignore[no-untyped-def]
    coreml_model: Path, tiny_model: Path, tiny_engine, img2img_request: GenerationRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from heyim_desktop.models.inspect import inspect_coreml
    from heyim_desktop.models.types import ModelStatus

    meta = _fixture("vae_encoder_noised", 256)
    meta[0]["inputSchema"] = meta[0]["inputSchema"][:2]  # a two-input encoder nobody shipped
    folder = _with_encoder(coreml_model, tmp_path / "m", meta)
    info = detect_coreml_folder(folder)
    assert not info.img2img and info.encoder_form is None
    assert info.img2img_note == "image-to-image is off: VAEEncoder.mlmodelc takes inputs HeyIm does not know (sample, diagonal_noise)"
    engine = load_coreml_engine(folder, predictor=TorchReferencePredictor(tiny_model, info))
    assert not engine.info.capabilities.img2img
    with pytest.raises(InvalidRequest, match="no image encoder"):
        engine.generate(img2img_request)
    # Text-to-image is untouched.
    txt = img2img_request.replace(init_image=None, strength=1.0, steps=3)
    diff = np.abs(np.asarray(engine.generate(txt).images[0].image, np.float32) - np.asarray(tiny_engine.generate(txt).images[0].image, np.float32))
    assert diff.max() <= MAX_LEVELS
    monkeypatch.setattr(sys, "platform", "darwin")
    listed = inspect_coreml(folder)
    assert listed is not None and listed.status == ModelStatus.READY
    assert "Image-to-image is off: VAEEncoder.mlmodelc takes inputs HeyIm does not know" in listed.problem


def test_encoder_with_wrong_output_says_why(coreml_model: Path, tmp_path: Path) -> None:
    meta = _fixture("vae_encoder_x", 256)
    meta[0]["outputSchema"][0]["shape"] = "[1, 4, 32, 32]"
    info = detect_coreml_folder(_with_encoder(coreml_model, tmp_path / "m", meta))
    assert not info.img2img
    assert "returns (1, 4, 32, 32), not the latent distribution (1, 8, h, w)" in info.img2img_note
