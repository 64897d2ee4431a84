"""ControlNets in the model library: A1111 and ComfyUI folders, both layouts, pickles flagged."""

from __future__ import annotations

import shutil
from pathlib import Path

from heyim_desktop.models.controlnets import ControlNetLibrary, inspect_controlnet
from heyim_desktop.models.library import ModelLibrary
from heyim_desktop.models.types import ModelStatus


def test_lists_controlnets_from_a1111_and_comfyui_folders(tmp_path: Path, tiny_controlnet: Path) -> None:
    from controlnet_layout import write_single_file

    a1111 = tmp_path / "webui" / "models" / "ControlNet"
    comfy = tmp_path / "comfy" / "models" / "controlnet"
    a1111.mkdir(parents=True)
    comfy.mkdir(parents=True)
    shutil.copytree(tiny_controlnet, comfy / "tiny-folder")
    write_single_file(tiny_controlnet, a1111 / "tiny-file.safetensors")
    (a1111 / "control_sd15_depth.pth").write_bytes(b"\x80\x04K\x01.")
    (a1111 / "notes.txt").write_text("x")
    (a1111 / "annotator").mkdir()
    (a1111 / "annotator" / "body_pose_model.safetensors").write_bytes(b"x")
    lib = ControlNetLibrary(ModelLibrary([tmp_path / "webui", tmp_path / "comfy"], include_demo=False, hf_cache=False))
    found = {m.name: m for m in lib.all()}
    assert set(found) == {"tiny-folder", "tiny-file", "control_sd15_depth"}
    assert found["tiny-folder"].ready and found["tiny-file"].ready and found["tiny-folder"].kind == "controlnet"
    assert found["tiny-folder"].base == "unknown"  # the tiny model's width (32) is no real family
    assert found["control_sd15_depth"].status is ModelStatus.UNSAFE and "pickle" in found["control_sd15_depth"].problem
    assert lib.find("tiny-file [abcdef12]").ref == str(a1111 / "tiny-file.safetensors")  # type: ignore[union-attr]
    assert lib.find("TINY-FOLDER") is not None and lib.find("nope") is None
    assert dict((p.name, ok) for p, ok in lib.network_preprocessors()) == {"depth_midas": False, "depth_anything_v2": False, "openpose": True,
                                                                          "openpose_hand": False, "openpose_face": False,
                                                                          "openpose_faceonly": False, "openpose_full": False,
                                                                          "inpaint_only+lama": False}


def test_base_family_from_cross_attention(tmp_path: Path, tiny_controlnet: Path) -> None:
    import json

    folder = tmp_path / "cn"
    shutil.copytree(tiny_controlnet, folder)
    config = json.loads((folder / "config.json").read_text())
    config["cross_attention_dim"] = 768
    (folder / "config.json").write_text(json.dumps(config))
    info = inspect_controlnet(folder)
    assert info is not None and info.base == "SD1"
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    missing = inspect_controlnet(folder)
    assert missing is not None and missing.status is ModelStatus.INCOMPLETE


def test_names_from_a_queue_resolve_against_the_library(tmp_path: Path, tiny_controlnet: Path) -> None:
    import pytest

    from heyim_desktop.core.controlnet import ControlUnit
    from heyim_desktop.core.errors import ModelError
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.models.controlnets import resolve_controlnet_names

    folder = tmp_path / "models" / "ControlNet"
    folder.mkdir(parents=True)
    shutil.copytree(tiny_controlnet, folder / "edges")
    lib = ControlNetLibrary(ModelLibrary([tmp_path], include_demo=False, hf_cache=False))
    req = GenerationRequest(prompt="x", controlnets=(ControlUnit(model="edges"),))
    assert resolve_controlnet_names(req, lib).controlnets[0].model == str(folder / "edges")
    with pytest.raises(ModelError, match="'depth' is not in the model library"):
        resolve_controlnet_names(req.replace(controlnets=(ControlUnit(model="depth"),)), lib)


def test_t2i_adapters_are_listed_with_the_controlnets(tmp_path: Path, tiny_adapter: Path, tiny_controlnet: Path) -> None:
    import json

    from adapter_layout import build_tiny_adapter, write_adapter_file, write_original_layout

    from heyim_desktop.models.controlnets import is_adapter_info

    folder = tmp_path / "webui" / "models" / "ControlNet"
    folder.mkdir(parents=True)
    shutil.copytree(tiny_adapter, folder / "t2iadapter_canny_sd15v2")
    build_tiny_adapter(folder / "t2i-adapter-canny-sdxl-1.0", seed=3, xl=True)
    write_adapter_file(tiny_adapter, folder / "adapter-file.safetensors")
    write_original_layout(tiny_adapter, folder / "t2iadapter_sketch_sd14v1.safetensors")
    shutil.copytree(tiny_controlnet, folder / "edges")
    half = folder / "half-copied"
    half.mkdir()
    (half / "config.json").write_text(json.dumps({"_class_name": "T2IAdapter", "adapter_type": "full_adapter"}))
    lib = ControlNetLibrary(ModelLibrary([tmp_path / "webui"], include_demo=False, hf_cache=False))
    found = {m.name: m for m in lib.all()}
    assert set(found) == {"t2iadapter_canny_sd15v2", "t2i-adapter-canny-sdxl-1.0", "adapter-file", "edges",
                          "t2iadapter_sketch_sd14v1", "half-copied"}
    sd, xl, single = found["t2iadapter_canny_sd15v2"], found["t2i-adapter-canny-sdxl-1.0"], found["adapter-file"]
    assert sd.ready and sd.kind == "t2i-adapter" and sd.base == "SD" and is_adapter_info(sd)
    assert xl.ready and xl.base == "SDXL" and single.ready and single.base == "SD"
    assert found["edges"].kind == "controlnet" and not is_adapter_info(found["edges"])
    assert found["half-copied"].status is ModelStatus.INCOMPLETE
    original = found["t2iadapter_sketch_sd14v1"]
    assert original.status is ModelStatus.UNSUPPORTED and "original layout" in original.problem
    assert lib.find("t2iadapter_canny_sd15v2 [0123abcd]").ref == str(folder / "t2iadapter_canny_sd15v2")  # type: ignore[union-attr]


def test_adapter_detection_needs_no_torch(tmp_path: Path, tiny_adapter: Path) -> None:
    """The library reads configs and tensor headers only (run in a fresh interpreter without torch)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; from pathlib import Path; "
            "from heyim_desktop.models.controlnets import inspect_controlnet; "
            f"print(inspect_controlnet(Path({str(tiny_adapter)!r})).base)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "SD"
