"""The ControlNet panel: units, live preview of the processed map, generating and reusing settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import GEN_TIMEOUT_MS, quick_settings
from heyim_desktop.core.control_preprocess import detect
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.jobs import JobState
from heyim_desktop.models.types import ModelInfo, ModelStatus
from heyim_desktop.ui.controlnet_panel import ControlNetPanel


def _photo() -> Image.Image:
    rng = np.random.RandomState(2)
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[10:40, 12:50] = (220, 40, 30)
    return Image.fromarray(np.clip(arr + rng.randint(0, 30, arr.shape), 0, 255).astype(np.uint8))


def _info(path: Path) -> ModelInfo:
    return ModelInfo("tiny-controlnet", str(path), "controlnet", "unknown", 1, ModelStatus.READY)


def test_unit_preview_shows_the_processed_map(qtbot, tiny_controlnet: Path) -> None:  # type: ignore[no-untyped-def]
    panel = ControlNetPanel()
    qtbot.addWidget(panel)
    panel.set_models([_info(tiny_controlnet)], {"depth_midas": "", "openpose": "/lib/annotator/body_pose_model.safetensors"})
    assert panel.hint.isVisible() is False or not panel.isVisible()
    editor = panel.add_unit()
    assert editor is not None and editor.model.currentData() == str(tiny_controlnet)
    editor.preprocessor.setCurrentIndex(editor.preprocessor.findData("canny"))
    assert editor.label_a.text() == "Canny Low Threshold" and editor.slider_a.value() == 100
    editor.resolution.setValue(64)
    editor.slider_b.setValue(150)
    with qtbot.waitSignal(editor.preview_ready, timeout=60_000) as blocker:
        editor.set_image(_photo())
    expected = detect(_photo(), "canny", processor_res=64, threshold_a=100, threshold_b=150)
    assert np.array_equal(np.asarray(blocker.args[0]), np.asarray(expected))
    assert not editor.preview.pixmap().isNull()
    unit = panel.units()[0]
    assert unit.preprocessor == "canny" and unit.threshold_b == 150 and unit.image is not None
    openpose = editor.preprocessor.model().item(editor.preprocessor.findData("openpose"))
    depth = editor.preprocessor.model().item(editor.preprocessor.findData("depth_midas"))
    assert openpose.isEnabled() and openpose.text() == "OpenPose (body)"
    assert "/lib/annotator/body_pose_model.safetensors" in openpose.toolTip()
    assert not depth.isEnabled() and "needs a depth model" in depth.text() and "model.safetensors" in depth.toolTip()
    for _ in range(3):
        panel.add_unit()
    assert len(panel.editors) == 4 and not panel.add_button.isEnabled()
    with qtbot.waitSignal(panel.failed):
        assert panel.add_unit() is None
    panel.remove_unit(panel.editors[1])
    assert [e.index for e in panel.editors] == [0, 1, 2]
    panel.editors[1].enabled.setChecked(False)
    assert len(panel.units()) == 2


def test_unit_without_a_model_is_a_clear_error(qtbot) -> None:  # type: ignore[no-untyped-def]
    panel = ControlNetPanel()
    qtbot.addWidget(panel)
    panel.set_models([])
    editor = panel.add_unit()
    assert editor is not None and "models/ControlNet" in editor.model.currentText()
    with pytest.raises(InvalidRequest, match="choose a ControlNet model"):
        panel.units()


def test_generate_with_a_controlnet_and_reuse_its_settings(parts, qtbot, data_dir: Path,  # type: ignore[no-untyped-def]
                                                           tiny_controlnet: Path) -> None:
    import shutil

    window = parts.window
    quick_settings(window)
    panel = window.controlnet_panel
    library_copy = data_dir / "models" / "ControlNet" / "tiny-controlnet"
    shutil.copytree(tiny_controlnet, library_copy)
    window.refresh_models()  # the library lists it in the panel
    qtbot.waitUntil(lambda: [m.name for m in panel.models] == ["tiny-controlnet"], timeout=60_000)
    tiny_controlnet = library_copy
    editor = panel.add_unit()
    with qtbot.waitSignal(editor.preview_ready, timeout=60_000):
        editor.set_image(_photo())
    editor.weight.setValue(0.7)
    editor.end.setValue(0.5)
    editor.mode.setCurrentIndex(editor.mode.findData("prompt"))
    editor.pixel_perfect.setChecked(True)
    window.prompt_panel.set_prompt("a red fox")
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        assert window.generate() is not None, window.banner.message()
    job = blocker.args[0]
    assert job.state is JobState.DONE, job.error_message
    entry = window.history.model.entry_at(0)
    assert 'ControlNet 0: "Module: none, Model: tiny-controlnet [' in entry.parameters
    (kept,) = entry.control_files()
    assert kept is not None and np.array_equal(np.asarray(Image.open(kept)), np.asarray(_photo()))
    panel.remove_unit(editor)
    other = panel.add_unit()  # the user's own control image in another unit is not lost by Reuse Settings
    other.set_image(Image.new("RGB", (32, 32), (0, 200, 0)))
    panel.add_unit()  # an empty unit is simply removed
    window.reuse_settings(entry)
    assert len(panel.editors) == 2 and panel.editors[1] is other and not other.enabled.isChecked()
    restored = panel.editors[0]
    qtbot.waitUntil(lambda: restored.image is not None, timeout=60_000)
    assert np.array_equal(np.asarray(restored.image.convert("RGB")), np.asarray(_photo()))
    assert restored.weight.value() == pytest.approx(0.7) and restored.end.value() == pytest.approx(0.5)
    assert restored.mode.currentData() == "prompt" and restored.model.currentData() == str(tiny_controlnet)
    assert restored.pixel_perfect.isChecked() and "Pixel Perfect: True" in entry.parameters
    (unit,) = panel.units()
    assert unit.weight == pytest.approx(0.7) and unit.image is restored.image
    # The kept file gone: the unit comes back without it and the window says so.
    kept.unlink()
    window.reuse_settings(window.history.model.entry_at(0))
    assert panel.editors[0].image is None
    assert "ControlNet 0 was kept with this image but its file is gone" in window.banner.message()


def test_depth_preprocessor_is_offered_with_its_model(qtbot, tiny_controlnet: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from depth_layout import write_tiny_depth
    from heyim_desktop.ui.controlnet_panel import library_source

    root = tmp_path / "lib"
    (root / "models" / "ControlNet").mkdir(parents=True)
    panel = ControlNetPanel()
    qtbot.addWidget(panel)
    panel.set_models([_info(tiny_controlnet)], library_source([str(root)])()[1])
    editor = panel.add_unit()
    assert editor is not None
    depth = editor.preprocessor.model().item(editor.preprocessor.findData("depth_midas"))
    assert not depth.isEnabled() and "annotator" in depth.toolTip()
    editor.preprocessor.setCurrentIndex(editor.preprocessor.findData("depth_midas"))  # e.g. from Reuse Settings
    with pytest.raises(InvalidRequest, match="annotator"):
        panel.units()

    folder = write_tiny_depth(root / "models" / "ControlNet" / "annotator" / "midas", "dpt")
    network = library_source([str(root)])()[1]
    assert network["depth_midas"] == str(folder) and network["depth_anything_v2"] == "" and network["openpose"] == ""
    panel.set_models([_info(tiny_controlnet)], network)
    assert depth.isEnabled() and depth.text() == "Depth (MiDaS / DPT)"
    editor.resolution.setValue(64)
    with qtbot.waitSignal(editor.preview_ready, timeout=60_000) as blocker:
        editor.set_image(_photo())
    expected = detect(_photo(), "depth_midas", processor_res=64, annotator=folder)
    assert np.array_equal(np.asarray(blocker.args[0]), np.asarray(expected))
    unit = panel.units()[0]
    assert unit.preprocessor == "depth_midas" and unit.annotator == str(folder)


def test_openpose_is_offered_with_its_weights(qtbot, tiny_controlnet: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.ui.controlnet_panel import library_source
    from openpose_layout import write_body_model

    root = tmp_path / "lib"
    (root / "models" / "ControlNet").mkdir(parents=True)
    panel = ControlNetPanel()
    qtbot.addWidget(panel)
    panel.set_models([_info(tiny_controlnet)], library_source([str(root)])()[1])
    editor = panel.add_unit()
    assert editor is not None
    pose = editor.preprocessor.model().item(editor.preprocessor.findData("openpose"))
    assert not pose.isEnabled() and "needs body_pose_model.safetensors" in pose.text()
    assert "annotator" in pose.toolTip()
    editor.preprocessor.setCurrentIndex(editor.preprocessor.findData("openpose"))  # e.g. from Reuse Settings
    with pytest.raises(InvalidRequest, match="body_pose_model.safetensors"):
        panel.units()

    weights = write_body_model(root / "models" / "ControlNet" / "annotator" / "body_pose_model.safetensors")
    network = library_source([str(root)])()[1]
    assert network["openpose"] == str(weights) and network["depth_midas"] == ""
    panel.set_models([_info(tiny_controlnet)], network)
    assert pose.isEnabled() and pose.text() == "OpenPose (body)"
    editor.resolution.setValue(64)
    with qtbot.waitSignal(editor.preview_ready, timeout=30_000) as blocker:
        editor.set_image(_photo())
    expected = detect(_photo(), "openpose", processor_res=64, annotator=weights)
    assert np.array_equal(np.asarray(blocker.args[0]), np.asarray(expected))
    unit = panel.units()[0]
    assert unit.preprocessor == "openpose" and unit.annotator == str(weights)


def test_picker_marks_adapters_and_a_window_job_uses_one(parts, qtbot, data_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         adapter_sd: Path, tiny_adapter: Path, tiny_controlnet: Path) -> None:
    import shutil

    window = parts.window
    quick_settings(window)
    panel = window.controlnet_panel
    adapter = data_dir / "models" / "ControlNet" / "t2iadapter_canny_sd15v2"
    shutil.copytree(tiny_adapter, adapter)
    shutil.copytree(tiny_controlnet, data_dir / "models" / "ControlNet" / "edges")
    window.refresh_models()
    qtbot.waitUntil(lambda: sorted(m.name for m in panel.models) == ["edges", "t2iadapter_canny_sd15v2"], timeout=60_000)
    editor = panel.add_unit()
    assert editor is not None
    labels = [editor.model.itemText(i) for i in range(editor.model.count())]
    assert labels == ["edges", "t2iadapter_canny_sd15v2 (T2I-Adapter, SD)"]
    editor.model.setCurrentIndex(1)
    folder = tmp_path / "sd-models"
    shutil.copytree(adapter_sd, folder / "adapter-sd")
    with qtbot.waitSignal(window.worker.model_ready, timeout=GEN_TIMEOUT_MS):
        window.add_model_folder(str(folder))
        window.choose_model(str(folder / "adapter-sd"))
    window.settings_panel.set_size(64, 64)
    editor.set_image(_photo())
    editor.weight.setValue(0.7)
    window.prompt_panel.set_prompt("a red fox")
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        assert window.generate() is not None, window.banner.message()
    job = blocker.args[0]
    assert job.state is JobState.DONE, job.error_message
    assert job.request.controlnets[0].model == str(adapter)
    entry = window.history.model.entry_at(0)
    assert 'ControlNet 0: "Module: none, Model: t2iadapter_canny_sd15v2 [' in entry.parameters
    editor.model.setCurrentIndex(0)
    window.reuse_settings(entry)
    assert panel.editors[0].model.currentData() == str(adapter)
    assert panel.editors[0].weight.value() == pytest.approx(0.7)


def test_lama_is_offered_with_its_file(qtbot, tiny_controlnet: Path, tiny_lama: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import os

    from heyim_desktop.ui.controlnet_panel import library_source

    root = tmp_path / "lib"
    annotator = root / "models" / "ControlNet" / "annotator"
    annotator.mkdir(parents=True)
    panel = ControlNetPanel()
    qtbot.addWidget(panel)
    panel.set_models([_info(tiny_controlnet)], library_source([str(root)])()[1])
    editor = panel.add_unit()
    assert editor is not None
    lama = editor.preprocessor.model().item(editor.preprocessor.findData("inpaint_only+lama"))
    assert not lama.isEnabled() and "ControlNetLama.safetensors" in lama.text() and "annotator" in lama.toolTip()
    editor.preprocessor.setCurrentIndex(editor.preprocessor.findData("inpaint_only+lama"))  # e.g. from Reuse Settings
    with pytest.raises(InvalidRequest, match="LaMa"):
        panel.units()

    os.link(tiny_lama, annotator / "big-lama.safetensors")
    network = library_source([str(root)])()[1]
    assert network["inpaint_only+lama"] == str(annotator / "big-lama.safetensors")
    panel.set_models([_info(tiny_controlnet)], network)
    assert lama.isEnabled() and lama.text() == "Inpaint only + LaMa"
    assert "mask" in editor.note.text() and "LaMa fills" in editor.note.text()
    with qtbot.waitSignal(editor.preview_ready, timeout=60_000) as blocker:
        editor.set_image(_photo())
    assert np.array_equal(np.asarray(blocker.args[0]), np.asarray(_photo().convert("RGB")))  # no mask here: unchanged
    unit = panel.units()[0]
    assert unit.preprocessor == "inpaint_only+lama" and unit.annotator == str(annotator / "big-lama.safetensors")


def test_openpose_full_is_offered_only_with_all_its_files(qtbot, tiny_controlnet: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.ui.controlnet_panel import library_source
    from openpose_layout import write_body_model, write_face_model, write_hand_model

    annotator = tmp_path / "lib" / "models" / "ControlNet" / "annotator"
    body = write_body_model(annotator / "body_pose_model.safetensors")
    source = library_source([str(tmp_path / "lib")])
    panel = ControlNetPanel()
    qtbot.addWidget(panel)
    panel.set_models([_info(tiny_controlnet)], source()[1])
    editor = panel.add_unit()
    assert editor is not None
    full = editor.preprocessor.model().item(editor.preprocessor.findData("openpose_full"))
    assert not full.isEnabled() and "hand_pose_model.safetensors" in full.text() and "facenet.safetensors" in full.text()
    assert editor.preprocessor.model().item(editor.preprocessor.findData("openpose")).isEnabled()
    write_hand_model(annotator / "hand_pose_model.safetensors")
    write_face_model(annotator / "facenet.safetensors")
    network = source()[1]
    assert network["openpose_full"] == network["openpose_faceonly"] == str(body)
    panel.set_models([_info(tiny_controlnet)], network)
    assert full.isEnabled() and full.text() == "OpenPose (body, hands and face)"
    editor.preprocessor.setCurrentIndex(editor.preprocessor.findData("openpose_full"))
    unit = panel.units()[0]
    assert unit.preprocessor == "openpose_full" and unit.annotator == str(body)
