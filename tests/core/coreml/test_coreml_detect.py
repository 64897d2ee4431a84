"""Reading converted specs and recognising Core ML resources folders (no macOS needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from heyim_desktop.core.coreml.detect import KIND_SD, KIND_SDXL, detect_coreml_folder, looks_like_coreml_folder
from heyim_desktop.core.coreml.specs import ModelSpec, read_model_spec
from heyim_desktop.core.errors import ModelError


def test_spec_reader_agrees_with_coremltools(coreml_model: Path, coreml_chunked: Path) -> None:
    from coremltools.models.utils import load_spec

    names = {65552: "float16", 65568: "float32"}
    packages = [*coreml_model.glob("*.mlpackage"), *coreml_chunked.glob("*.mlpackage")]
    assert len(packages) == 8
    for pkg in packages:
        ours = read_model_spec(pkg.stem, pkg)
        spec = load_spec(str(pkg))
        theirs_in = [(f.name, tuple(f.type.multiArrayType.shape), names[f.type.multiArrayType.dataType]) for f in spec.description.input]
        theirs_out = [(f.name, tuple(f.type.multiArrayType.shape), names[f.type.multiArrayType.dataType]) for f in spec.description.output]
        assert [(t.name, t.shape, t.dtype) for t in ours.inputs] == theirs_in
        assert [(t.name, t.shape, t.dtype) for t in ours.outputs] == theirs_out
        assert dict(ours.user_metadata) == dict(spec.description.metadata.userDefined)


def test_detects_apples_default_shape(coreml_model: Path) -> None:
    info = detect_coreml_folder(coreml_model)
    assert (info.kind, info.attention, info.size, info.batch) == (KIND_SD, "split_einsum", (256, 256), 2)
    assert info.img2img and not info.chunked and not info.has_safety_checker
    assert info.default_compute_units == "CPU_AND_NE"
    unet = info.model("Unet")
    assert [t.describe() for t in unet.inputs] == [
        "sample float16 (2, 4, 32, 32)",
        "timestep float16 (2,)",
        "encoder_hidden_states float16 (2, 32, 1, 77)",
    ]
    assert unet.has_einsum  # found by the ops in the program, not only by our metadata tag
    te = info.model("TextEncoder")
    assert [t.describe() for t in te.inputs] == ["input_ids float32 (1, 77)"]
    assert [t.name for t in te.outputs] == ["last_hidden_state", "pooled_outputs"]
    assert [t.describe() for t in info.model("VAEDecoder").outputs] == ["image float16 (1, 3, 256, 256)"]
    assert [t.describe() for t in info.model("VAEEncoder").outputs] == ["latent float16 (1, 8, 32, 32)"]


def test_detects_chunked_batch1_original(coreml_chunked: Path) -> None:
    info = detect_coreml_folder(coreml_chunked)
    assert (info.attention, info.batch, info.chunked, info.img2img) == ("original", 1, True, False)
    assert info.default_compute_units == "CPU_AND_GPU"
    assert not info.model("UnetChunk1").has_einsum
    chunk1_out = {t.name for t in info.model("UnetChunk1").outputs}
    chunk2_in = {t.name for t in info.model("UnetChunk2").inputs}
    assert chunk2_in == chunk1_out | {"encoder_hidden_states"}


def test_detection_imports_neither_torch_nor_coremltools(coreml_model: Path) -> None:
    src = Path(__file__).resolve().parents[3] / "src"
    code = (
        "import sys\n"
        "from heyim_desktop.core.coreml.detect import detect_coreml_folder\n"
        f"info = detect_coreml_folder({str(coreml_model)!r})\n"
        "print(info.size, [m for m in ('torch', 'coremltools', 'transformers', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=str(src)))
    assert out.stdout.strip() == "(256, 256) []"


def _as_compiled(spec: ModelSpec, dest: Path, ops: dict[str, int]) -> None:
    """A ``.mlmodelc`` folder as Xcode/coremlcompiler writes it (metadata.json, Apple's format)."""

    def schema(ts: tuple) -> list[dict[str, str]]:  # type: ignore[type-arg]
        return [
            {"name": t.name, "type": "MultiArray", "dataType": {"float16": "Float16", "float32": "Float32"}[t.dtype],
             "shape": "[" + ", ".join(str(d) for d in t.shape) + "]", "hasShapeFlexibility": "0", "isOptional": "0"}
            for t in ts
        ]

    folder = dest / f"{spec.name}.mlmodelc"
    (folder / "weights").mkdir(parents=True)
    (folder / "coremldata.bin").write_bytes(b"")
    meta = [{
        "metadataOutputVersion": "3.0",
        "storagePrecision": "Float16",
        "inputSchema": schema(spec.inputs),
        "outputSchema": schema(spec.outputs),
        "mlProgramOperationTypeHistogram": ops,
        "modelType": {"name": "MLModelType_mlProgram"},
        "userDefinedMetadata": {"com.github.apple.ml-stable-diffusion.version": "1.1.0"},
        "specificationVersion": 7,
    }]
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2))


@pytest.fixture()
def compiled_folder(coreml_model: Path, tmp_path: Path) -> Path:
    info = detect_coreml_folder(coreml_model)
    root = tmp_path / "coreml-stable-diffusion-tiny" / "split_einsum" / "compiled"
    root.mkdir(parents=True)
    for spec in info.models:
        ops = {"Ios16.einsum": 192, "Ios16.softmax": 96} if spec.name == "Unet" else {"Ios16.conv": 10}
        _as_compiled(spec, root, ops)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(coreml_model / name, root / name)
    return tmp_path / "coreml-stable-diffusion-tiny"


def test_detects_compiled_models_from_metadata(compiled_folder: Path) -> None:
    # The download's top folder is enough: the resources are found in split_einsum/compiled.
    assert looks_like_coreml_folder(compiled_folder)
    info = detect_coreml_folder(compiled_folder)
    assert info.folder.name == "compiled"
    assert (info.attention, info.size, info.batch, info.img2img) == ("split_einsum", (256, 256), 2, True)
    assert all(m.compiled for m in info.models)
    assert info.model("Unet").input("encoder_hidden_states").shape == (2, 32, 1, 77)  # type: ignore[union-attr]


def test_original_attention_from_histogram(compiled_folder: Path) -> None:
    meta_path = compiled_folder / "split_einsum" / "compiled" / "Unet.mlmodelc" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta[0]["mlProgramOperationTypeHistogram"] = {"Ios16.matmul": 64, "Ios16.softmax": 32}
    meta_path.write_text(json.dumps(meta))
    info = detect_coreml_folder(compiled_folder)
    assert info.attention == "original" and info.default_compute_units == "CPU_AND_GPU"


def test_sdxl_is_recognised(compiled_folder: Path) -> None:
    from heyim_desktop.core.coreml.engine import load_coreml_engine

    res = compiled_folder / "split_einsum" / "compiled"
    meta_path = res / "Unet.mlmodelc" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta[0]["inputSchema"] += [
        {"name": "time_ids", "dataType": "Float16", "shape": "[2, 6]"},
        {"name": "text_embeds", "dataType": "Float16", "shape": "[2, 1280]"},
    ]
    meta_path.write_text(json.dumps(meta))
    assert detect_coreml_folder(res).kind == KIND_SDXL
    # Recognised and loadable, but a UNet with SDXL inputs needs the second text encoder.
    with pytest.raises(ModelError, match="an SDXL model needs TextEncoder2.mlmodelc"):
        load_coreml_engine(res, predictor=lambda name, inputs: {})


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        ("VAEDecoder.mlpackage", "VAEDecoder.mlmodelc (or VAEDecoder.mlpackage) is missing"),
        ("TextEncoder.mlpackage", "TextEncoder.mlmodelc (or TextEncoder.mlpackage) is missing"),
        ("Unet.mlpackage", "Unet.mlmodelc (or UnetChunk1 and UnetChunk2) is missing"),
        ("merges.txt", "merges.txt is missing"),
        ("vocab.json", "vocab.json is missing"),
        ("Unet.mlpackage/Data/com.apple.CoreML/model.mlmodel", "Unet.mlpackage is incomplete"),
    ],
)
def test_incomplete_folder_names_the_missing_file(model_copy: Path, remove: str, named: str) -> None:
    target = model_copy / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ModelError) as err:
        detect_coreml_folder(model_copy)
    assert named in str(err.value)
    assert model_copy.name in str(err.value)


def test_half_a_chunked_unet_names_the_other_half(coreml_chunked: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(coreml_chunked, copy)
    shutil.rmtree(copy / "UnetChunk2.mlpackage")
    with pytest.raises(ModelError, match=r"UnetChunk2\.mlmodelc \(or UnetChunk2\.mlpackage\) is missing"):
        detect_coreml_folder(copy)


def test_missing_metadata_and_damaged_spec(compiled_folder: Path, model_copy: Path) -> None:
    res = compiled_folder / "split_einsum" / "compiled"
    (res / "VAEDecoder.mlmodelc" / "metadata.json").unlink()
    with pytest.raises(ModelError, match="VAEDecoder.mlmodelc is incomplete: metadata.json is missing"):
        detect_coreml_folder(res)
    spec = model_copy / "Unet.mlpackage" / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec.write_bytes(b"\x12\xff\xff\xff")
    with pytest.raises(ModelError, match="Unet.mlpackage: the model spec is unreadable"):
        detect_coreml_folder(model_copy)


def test_not_a_model_folder(tmp_path: Path) -> None:
    assert not looks_like_coreml_folder(tmp_path)
    with pytest.raises(ModelError, match="not found"):
        detect_coreml_folder(tmp_path / "nope")
    with pytest.raises(ModelError, match="TextEncoder.mlmodelc"):
        detect_coreml_folder(tmp_path)
