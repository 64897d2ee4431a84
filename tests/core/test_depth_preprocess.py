"""Depth preprocessors: a transformers depth model in the library's annotator folder, safetensors only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from depth_layout import write_tiny_depth
from heyim_desktop.core.control_preprocess import control_array, detect
from heyim_desktop.core.controlnet import ControlUnit, control_images
from heyim_desktop.core.errors import InvalidRequest, ModelError
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.models.controlnets import ControlNetLibrary, resolve_annotators
from heyim_desktop.models.library import ModelLibrary


def _photo(w: int = 64, h: int = 64) -> Image.Image:
    rng = np.random.RandomState(5)
    arr = (rng.rand(h, w, 3) * 255).astype(np.uint8)
    arr[8:40, 10:50] = (200, 60, 40)
    return Image.fromarray(arr)


def _pipeline_map(folder: Path, image: Image.Image) -> np.ndarray:
    """transformers' own depth pipeline on the same model: its "depth" image, grey."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation, pipeline

    model = AutoModelForDepthEstimation.from_pretrained(str(folder), local_files_only=True)
    processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    run = pipeline("depth-estimation", model=model, image_processor=processor, device="cpu")
    return np.asarray(run(image)["depth"])


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lib")
    annotator = root / "models" / "ControlNet" / "annotator"
    write_tiny_depth(annotator / "dpt-hybrid-midas", "dpt")
    write_tiny_depth(annotator / "depth-anything-v2-small", "depth_anything")
    return root


@pytest.mark.parametrize(("module", "folder"), [("depth_midas", "dpt-hybrid-midas"),
                                                ("depth_anything_v2", "depth-anything-v2-small")])
def test_depth_map_equals_the_transformers_pipeline(library: Path, module: str, folder: str) -> None:
    path = library / "models" / "ControlNet" / "annotator" / folder
    photo = _photo(96, 64)
    out = np.asarray(detect(photo, module, processor_res=64, annotator=path))
    expected = _pipeline_map(path, photo)
    assert out.shape == (64, 96, 3) and np.array_equal(out[:, :, 0], out[:, :, 2])
    assert np.array_equal(out[:, :, 0], expected)
    assert out.min() == 0 and out.max() == 255  # min-max normalised
    arr = control_array(photo, module, 48, 48, resize_mode="Just Resize", processor_res=64, annotator=path)
    fitted = np.asarray(Image.fromarray(out).resize((48, 48), Image.Resampling.LANCZOS), np.float32) / 255.0
    assert arr.shape == (48, 48, 3) and np.array_equal(arr, fitted)


def test_offered_only_with_a_safetensors_model(library: Path, tmp_path: Path) -> None:
    lib = ControlNetLibrary(ModelLibrary([library], include_demo=False, hf_cache=False))
    listed = dict((p.name, ok) for p, ok in lib.network_preprocessors())
    assert listed["depth_midas"] and listed["depth_anything_v2"] and not listed["openpose"]
    assert lib.annotator_folder("depth_midas") == library / "models" / "ControlNet" / "annotator" / "dpt-hybrid-midas"

    bare = tmp_path / "bare"
    (bare / "models" / "ControlNet").mkdir(parents=True)
    empty = ControlNetLibrary(ModelLibrary([bare], include_demo=False, hf_cache=False))
    assert not dict((p.name, ok) for p, ok in empty.network_preprocessors())["depth_midas"]
    unit = ControlUnit(model="net", image=_photo(), preprocessor="depth_midas")
    request = GenerationRequest(prompt="x", width=64, height=64, controlnets=(unit,))
    with pytest.raises(ModelError, match="annotator"):
        resolve_annotators(request, empty)
    with pytest.raises(InvalidRequest, match="annotator"):
        control_images(request)  # a unit that was never resolved is refused, not guessed

    resolved = resolve_annotators(request, lib)
    assert resolved.controlnets[0].annotator == str(lib.annotator_folder("depth_midas"))
    maps = control_images(resolved)
    assert np.array_equal(maps[0], control_array(_photo(), "depth_midas", 64, 64,
                                                 annotator=resolved.controlnets[0].annotator))


def test_a_pickle_only_folder_is_refused(tmp_path: Path) -> None:
    from heyim_desktop.core.depth_preprocess import check_folder

    folder = write_tiny_depth(tmp_path / "models" / "ControlNet" / "annotator" / "midas", "dpt")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle: must never be opened
    lib = ControlNetLibrary(ModelLibrary([tmp_path], include_demo=False, hf_cache=False))
    assert not dict((p.name, ok) for p, ok in lib.network_preprocessors())["depth_midas"]
    with pytest.raises(ModelError, match="pickle"):
        check_folder(folder, "depth_midas")
    with pytest.raises(ModelError, match="pickle"):
        detect(_photo(), "depth_midas", annotator=folder)
    with pytest.raises(ModelError, match="depth_anything"):
        check_folder(folder, "depth_anything_v2")  # a DPT folder is not a Depth Anything model


def test_codec_passes_the_folder_only_to_the_engine(library: Path) -> None:
    from heyim_desktop.core.codec import controlnet_from_data

    unit = ControlUnit(model="/x/net", preprocessor="depth", annotator=str(library))
    assert unit.preprocessor == "depth_midas"  # the extension's legacy name
    data = [unit.settings()]
    assert controlnet_from_data(data, trust_paths=True)[0].annotator == str(library)
    assert controlnet_from_data(data, trust_paths=False)[0].annotator == ""
