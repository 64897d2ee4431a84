"""How a ControlNet unit shows itself: it fits the left column (long picker labels), and a failed
preview leaves no earlier map standing as if it were the new one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from conftest import quick_settings


def test_a_unit_with_long_labels_fits_the_left_column(parts, qtbot, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    window = parts.window
    window.resize(1280, 800)
    quick_settings(window)
    scroll = window.settings_panel.parentWidget().parentWidget().parentWidget()  # controls -> viewport -> scroll area
    controls = scroll.widget()
    before = scroll.viewport().width()
    editor = window.controlnet_panel.add_unit()
    assert editor is not None
    # the disabled choices name the file they need ("... (needs body_pose_model.safetensors in
    # models/ControlNet/annotator)"); a long model name with its marks, as the library shows it
    editor.model.addItem("t2i-adapter-depth-midas-sdxl-1.0-very-long-name (T2I-Adapter, SDXL)", "x")
    qtbot.wait(50)
    window.layout().activate()
    controls.layout().activate()
    # nothing on the left runs off the right edge: the scroll area shows no horizontal bar
    assert controls.width() <= scroll.viewport().width(), (controls.width(), scroll.viewport().width(), before)
    assert controls.minimumSizeHint().width() <= scroll.viewport().width()
    long_name = "t2i-adapter-depth-midas-sdxl-1.0-very-long-name (T2I-Adapter, SDXL)"
    editor.model.addItem(long_name, "y")
    editor.model.setCurrentIndex(editor.model.findData("y"))  # the box may cut a long name; its tooltip has it all
    assert editor.model.toolTip() == long_name


def test_a_failed_preview_clears_the_earlier_map(qtbot, tmp_path: Path, tiny_controlnet: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from heyim_desktop.models.types import ModelInfo, ModelStatus
    from heyim_desktop.ui.controlnet_panel import ControlNetPanel

    wrong = tmp_path / "annotator" / "body_pose_model.safetensors"  # a ControlNet saved under the pose model's name
    wrong.parent.mkdir()
    shutil.copyfile(tiny_controlnet / "diffusion_pytorch_model.safetensors", wrong)
    panel = ControlNetPanel()
    qtbot.addWidget(panel)
    info = ModelInfo("tiny-controlnet", str(tiny_controlnet), "controlnet", "unknown", 1, ModelStatus.READY)
    panel.set_models([info], {"openpose": str(wrong)})
    editor = panel.add_unit()
    assert editor is not None
    editor.preprocessor.setCurrentIndex(editor.preprocessor.findData("canny"))
    editor.resolution.setValue(64)
    photo = np.zeros((64, 64, 3), np.uint8)
    photo[10:40, 12:50] = 220
    with qtbot.waitSignal(editor.preview_ready, timeout=10_000):
        editor.set_image(Image.fromarray(photo))
    assert not editor.preview.pixmap().isNull()  # the canny map
    with qtbot.waitSignal(editor.failed, timeout=30_000) as failure:
        editor.preprocessor.setCurrentIndex(editor.preprocessor.findData("openpose"))
    assert "not the OpenPose body model" in failure.args[0]
    assert editor.preview.pixmap().isNull() and "failed" in editor.preview.text()
    assert "not the OpenPose body model" in editor.preview.toolTip()
    assert wrong.read_bytes() == (tiny_controlnet / "diffusion_pytorch_model.safetensors").read_bytes()  # untouched


def test_an_unusable_model_is_listed_greyed_with_the_reason(qtbot, tmp_path: Path, tiny_adapter: Path) -> None:  # type: ignore[no-untyped-def]
    from adapter_layout import write_original_layout
    from heyim_desktop.core.errors import InvalidRequest
    from heyim_desktop.ui.controlnet_panel import ControlNetPanel, library_source

    root = tmp_path / "lib"
    (root / "models" / "ControlNet").mkdir(parents=True)
    # TencentARC's own file, as many users have it: found, but HeyIm does not convert it
    write_original_layout(tiny_adapter, root / "models" / "ControlNet" / "t2iadapter_canny_sd14v1.safetensors")
    panel = ControlNetPanel()
    qtbot.addWidget(panel)
    panel.set_models(*library_source([str(root)])())
    editor = panel.add_unit()
    assert editor is not None
    texts = [editor.model.itemText(i) for i in range(editor.model.count())]
    assert texts[0].startswith("No ControlNet") and texts[1] == "t2iadapter_canny_sd14v1 (cannot be used: unsupported)"
    item = editor.model.model().item(1)  # type: ignore[attr-defined]
    assert not item.isEnabled() and "original layout" in item.toolTip() and "diffusers version" in item.toolTip()
    editor.model.setCurrentIndex(1)  # even if it were picked, the unit asks for a model, never uses it
    import pytest

    with pytest.raises(InvalidRequest, match="choose a ControlNet model"):
        panel.units()
