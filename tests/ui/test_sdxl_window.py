"""SDXL in the window: picked like any other model, its size, the refiner, Reuse Settings."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import GEN_TIMEOUT_MS
from heyim_desktop.core.jobs import JobState


def test_sdxl_model_with_a_refiner_and_reuse_settings(parts, qtbot, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      tiny_sdxl: Path, tiny_sdxl_refiner: Path) -> None:
    window = parts.window
    folder = tmp_path / "xl-models"
    shutil.copytree(tiny_sdxl, folder / "tiny-xl")
    shutil.copytree(tiny_sdxl_refiner, folder / "tiny-xl-refiner")
    sp = window.settings_panel
    sp.set_size(512, 512)
    with qtbot.waitSignal(window.worker.model_ready, timeout=GEN_TIMEOUT_MS):
        window.add_model_folder(str(folder))
        window.choose_model(str(folder / "tiny-xl"))
    assert sp.model_ref() == str(folder / "tiny-xl")
    assert (sp.width_box.value(), sp.height_box.value()) == (256, 256)  # the model's own size
    refiners = [sp.refiner.itemText(i) for i in range(sp.refiner.count())]
    assert refiners == ["None", "tiny-xl-refiner"] and sp.refiner.isEnabled()
    assert sp.select_refiner("tiny-xl-refiner")
    sp.refiner_switch.setValue(0.6)
    sp.set_size(64, 64)
    sp.steps.setValue(3)
    window.prompt_panel.set_prompt("a lighthouse", "")
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        window.generate()
    job = blocker.args[0]
    assert job.state is JobState.DONE, job.error_message
    assert job.request.refiner == str(folder / "tiny-xl-refiner") and job.request.refiner_switch == 0.6
    assert job.result.images[0].image.size == (64, 64)

    sp.refiner.setCurrentIndex(0)
    sp.refiner_switch.setValue(0.8)
    sp.set_size(512, 512)
    window.history.select_row(0)
    window.history.reuse_button.click()
    after = sp.values()
    assert after["refiner"] == str(folder / "tiny-xl-refiner") and after["refiner_switch"] == 0.6
    assert (after["width"], after["height"]) == (64, 64)

    sp.refiner.setCurrentIndex(1)
    sp.select_model(str(folder / "tiny-xl-refiner"))  # not an SDXL base: no refiner for it
    assert not sp.refiner.isEnabled() and sp.values()["refiner"] is None
