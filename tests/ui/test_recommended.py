"""Picking a few-step model in the window sets (and shows) the settings it is made for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import GEN_TIMEOUT_MS


def _turbo_copy(tiny_model: Path, folder: Path) -> Path:
    target = folder / "sd-turbo"
    shutil.copytree(tiny_model, target)
    config = json.loads((target / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    config.update({"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing"})
    config.pop("skip_prk_steps", None)
    (target / "scheduler" / "scheduler_config.json").write_text(json.dumps(config), encoding="utf-8")
    return target


def test_picking_a_turbo_model_applies_and_shows_its_settings(window, qtbot, tiny_model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    models = tmp_path / "models"
    models.mkdir()
    turbo = _turbo_copy(tiny_model, models)
    window.add_model_folder(str(models))
    panel = window.settings_panel
    index = next(i for i in range(panel.model.count()) if str(panel.model.itemData(i) or "").endswith("sd-turbo"))
    panel.steps.setValue(30)
    panel.guidance.setValue(7.5)
    panel.scheduler.setCurrentText("DPM++ 2M")
    with qtbot.waitSignal(window.worker.model_ready, timeout=GEN_TIMEOUT_MS):
        panel.model.setCurrentIndex(index)
        panel.model.activated.emit(index)  # what a click in the picker sends
    qtbot.waitUntil(lambda: panel.steps.value() == 1)
    assert panel.guidance.value() == 0.0 and panel.scheduler.currentText() == "Euler a"
    assert panel.recommended_row.isVisibleTo(panel)
    assert "1 step, guidance 0, Euler a" in panel.recommended_label.text()
    assert "known model" in panel.recommended_label.toolTip()
    assert "made for" in window.statusBar().currentMessage()
    # Changed by hand, then "Use" puts them back.
    panel.steps.setValue(12)
    panel.recommended_button.click()
    assert panel.steps.value() == 1
    assert turbo.is_dir()


def test_a_model_without_recommendations_keeps_the_users_settings(window, qtbot) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.capabilities import Capabilities
    from heyim_desktop.ui.worker import ModelReady

    panel = window.settings_panel
    panel.steps.setValue(23)
    window._recommend_for = "plain"
    window._model_ready(ModelReady("plain", "plain", "torch-cpu", 0.1, (64, 64), None, True,
                                   capabilities=Capabilities()))
    assert panel.steps.value() == 23 and not panel.recommended_row.isVisibleTo(panel)


def test_a_family_model_adapts_the_window(window, qtbot) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.capabilities import Capabilities
    from heyim_desktop.core.families import FLUX2_KLEIN, ZIMAGE
    from heyim_desktop.ui.worker import ModelReady

    panel = window.settings_panel
    window._model_ready(ModelReady("klein", "klein", "torch-cpu", 0.1, (1024, 1024), None, True,
                                   capabilities=FLUX2_KLEIN.capabilities(size_step=16)))
    assert not window.prompt_panel.negative.isEnabled()  # FLUX.2 [klein] takes no negative prompt
    assert (panel.guidance.minimum(), panel.guidance.maximum()) == FLUX2_KLEIN.guidance_range
    assert panel.scheduler.currentText() == "Euler" and not panel.scheduler.isEnabled()
    window._model_ready(ModelReady("z", "z", "torch-cpu", 0.1, (1024, 1024), None, True,
                                   capabilities=ZIMAGE.capabilities(size_step=16)))
    assert window.prompt_panel.negative.isEnabled()
    window._model_ready(ModelReady("sd", "sd", "torch-cpu", 0.1, (64, 64), None, True, capabilities=Capabilities()))
    assert panel.scheduler.isEnabled() and panel.guidance.maximum() == 30.0


def test_the_model_line_says_when_a_model_saves_memory(window, qtbot) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.engine import EngineInfo
    from heyim_desktop.core.families import ZIMAGE
    from heyim_desktop.ui.worker import ModelReady

    caps = ZIMAGE.capabilities(size_step=16)
    note = "saving memory: text encoders and transformer load in turn"
    info = EngineInfo("torch-mps", "z-image-turbo", (1024, 1024), caps, memory=note)
    assert EngineInfo.from_dict(info.to_dict()) == info  # as the engine process sends it
    window._model_ready(ModelReady("z", "z-image-turbo", "torch-mps", 2.0, (1024, 1024), None, True,
                                   capabilities=caps, info=info))
    assert window.model_state.text() == f"Ready: z-image-turbo on torch-mps (2.0 s); {note}"
    window._model_ready(ModelReady("z", "z-image-turbo", "torch-mps", 2.0, (1024, 1024), None, True,
                                   capabilities=caps, info=EngineInfo("torch-mps", "z-image-turbo", (1024, 1024), caps)))
    assert window.model_state.text() == "Ready: z-image-turbo on torch-mps (2.0 s)"
