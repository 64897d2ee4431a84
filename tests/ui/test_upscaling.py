"""Upscale... from the result view and history, and the Hires fix section, in the real window."""

from __future__ import annotations

from pathlib import Path

from conftest import GEN_TIMEOUT_MS, quick_settings
from heyim_desktop.core.jobs import JobState
from heyim_desktop.core.metadata import parse_parameters
from heyim_desktop.ui.queue_panel import describe
from tiny_upscaler import make_esrgan


def _generate(parts, qtbot):  # type: ignore[no-untyped-def]
    window = parts.window
    quick_settings(window)
    window.prompt_panel.set_prompt("a red fox")
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        window.generate()
    assert blocker.args[0].state is JobState.DONE
    return window.history.model.entry_at(0)


def test_upscale_from_the_result_view_makes_a_new_entry_with_its_source(parts, qtbot) -> None:  # type: ignore[no-untyped-def]
    window = parts.window
    source = _generate(parts, qtbot)
    asked = []

    def ask(names, size):  # type: ignore[no-untyped-def]
        asked.append((names, size))
        return "Lanczos", 2.0, 0

    window.upscaling.ask = ask
    assert window.result_view.upscale_button.isEnabled()
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        window.result_view.upscale_button.click()
    job = blocker.args[0]
    assert job.state is JobState.DONE, job.error_message
    assert asked[0][0][:2] == ["Lanczos", "Nearest"] and asked[0][1] == (64, 64)
    shown = window.result_view.current()
    assert (shown.image.width(), shown.image.height()) == (128, 128)
    assert parts.store.count() == 2 and window.history.model.rowCount() == 2
    new = shown.entry
    assert new.settings["upscaled_from"] == source.id and new.source == "upscale" and new.width == 128
    params = parse_parameters(new.parameters)
    assert params.prompt == "a red fox" and params.seed == source.seed
    assert params.params["Postprocess upscale by"] == "2" and params.params["Postprocess upscaler"] == "Lanczos"


def test_upscale_a_history_item_with_a_model_reports_tiles_and_cancels_between_them(parts, qtbot, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    window = parts.window
    source = _generate(parts, qtbot)
    folder = data_dir / "models" / "upscalers"
    folder.mkdir(parents=True)
    make_esrgan(folder, 2)
    (folder / "RealESRGAN_x2_tiny.pth").unlink()
    window.upscaling.ask = lambda names, size: ("RealESRGAN_x2_tiny", 2.0, 32)
    steps = []
    parts.worker.progress.connect(lambda _id, done, total, _t: steps.append((done, total)))
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        window.history.upscale_requested.emit(source)
    assert blocker.args[0].state is JobState.DONE, blocker.args[0].error_message
    assert steps and steps[-1][0] == steps[-1][1] > 1  # one step per tile
    assert parts.store.count() == 2
    # Cancel at the first tile: nothing is saved.
    parts.worker.progress.connect(lambda *_: window.cancel())
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        window.history.upscale_requested.emit(source)
    assert blocker.args[0].state is JobState.CANCELLED
    assert parts.store.count() == 2
    assert describe(blocker.args[0]) == "Upscale RealESRGAN_x2_tiny 2x to 128x128"


def test_hires_fix_section_generates_the_larger_image(parts, qtbot) -> None:  # type: ignore[no-untyped-def]
    window = parts.window
    quick_settings(window)
    panel = window.settings_panel.hires
    assert panel.upscaler.itemText(0) == "Latent" and panel.upscaler.findText("Lanczos") >= 0
    panel.setChecked(True)
    panel.scale.setValue(1.5)
    panel.steps.setValue(2)
    panel.strength.setValue(0.5)
    assert panel.size_label.text() == "96 x 96"
    window.prompt_panel.set_prompt("a tall tower")
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        window.generate()
    assert blocker.args[0].state is JobState.DONE, blocker.args[0].error_message
    shown = window.result_view.current()
    assert (shown.image.width(), shown.image.height()) == (96, 96)
    params = parse_parameters(shown.entry.parameters).params
    assert params["Hires upscale"] == "1.5" and params["Hires upscaler"] == "Latent" and params["Denoising strength"] == "0.5"
    assert parts.store.count() == 1  # the first pass is not saved


def test_reuse_settings_of_a_hires_entry_turns_the_section_on(parts, qtbot) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from heyim_desktop.core.request import GenerationRequest, HiresFix
    from heyim_desktop.core.result import GeneratedImage, GenerationResult

    req = GenerationRequest(prompt="tower", seed=2, width=64, height=64,
                            hires=HiresFix(scale=1.5, upscaler="Latent (bicubic)", steps=3, denoising_strength=0.4))
    result = GenerationResult(req, (GeneratedImage(Image.new("RGB", (96, 96)), 2, 0),), "tiny", "torch-cpu", {"total": 0.1})
    entry = parts.store.save_result(result)[0]
    window = parts.window
    window.reuse_settings(entry)
    panel = window.settings_panel.hires
    assert panel.isChecked() and panel.upscaler.currentText() == "Latent (bicubic)"
    assert (panel.scale.value(), panel.steps.value(), round(panel.strength.value(), 2)) == (1.5, 3, 0.4)
    window.reuse_settings(parts.store.save_result(GenerationResult(req.replace(hires=None), result.images, "tiny", "cpu", {}))[0])
    assert not panel.isChecked()
    # An AUTOMATIC1111 hires PNG imported into history keeps its hires settings as data.
    path = parts.store.images_dir / "a1111.png"
    from heyim_desktop.core.output import write_png_atomic

    write_png_atomic(Image.new("RGB", (8, 8)), path, "x\nSteps: 5, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, "
                     "Denoising strength: 0.5, Hires upscale: 2, Hires upscaler: Latent")
    imported = parts.store.import_image(path)
    assert imported.settings["hires"]["scale"] == 2 and imported.request_settings()["hires"].upscaler == "Latent"
