"""Prompt styles (several at once, with a preview) and clip skip from the window."""

from __future__ import annotations

from pathlib import Path

from conftest import GEN_TIMEOUT_MS, quick_settings
from heyim_desktop.core.jobs import JobState
from heyim_desktop.core.metadata import read_parameters
from heyim_desktop.store.styles import PromptStyle


def test_styles_picked_in_the_menu_shape_the_prompt_and_its_metadata(parts, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    window = parts.window
    panel = window.prompt_panel
    picker = panel.style_picker
    install = tmp_path / "stable-diffusion-webui"
    install.mkdir()
    (install / "styles.csv").write_text("name,prompt,negative_prompt\nOil,\"oil painting of {prompt}, impasto\",photo\n",
                                        encoding="utf-8")
    messages: list[str] = []
    picker.message.connect(messages.append)
    assert picker.import_from(str(install)) and "Imported 1 style" in messages[-1]
    assert picker.save("Moody", "moody light", "flat")
    picker.fill_menu()
    actions = {a.text(): a for a in picker.menu.actions() if a.isCheckable()}
    assert set(actions) == {"Oil", "Moody"}
    actions["Oil"].trigger()
    picker.fill_menu()
    {a.text(): a for a in picker.menu.actions() if a.isCheckable()}["Moody"].trigger()
    assert picker.selected() == ["Oil", "Moody"] and picker.button.text() == "Styles (2)"

    quick_settings(window)
    panel.set_prompt("a fox", "blur")
    panel.update_counts()
    assert panel.final_preview.isVisibleTo(window)
    assert "oil painting of a fox, impasto, moody light" in panel.final_preview.text()
    assert "blur, photo, flat" in panel.final_preview.text()
    window.settings_panel.clip_skip.setValue(2)
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        assert window.generate() is not None
    job = blocker.args[0]
    assert job.state is JobState.DONE, job.error_message
    entry = window.history.model.entry_at(0)
    assert entry.prompt == "oil painting of a fox, impasto, moody light"
    params = read_parameters(entry.path)
    assert params is not None and params.styles == ["Oil", "Moody"] and params.clip_skip == 2

    # Reusing the image: its prompt already holds the styles, so the ticks are cleared.
    window.settings_panel.clip_skip.setValue(1)
    window.reuse_settings(entry)
    assert picker.selected() == [] and not panel.final_preview.isVisibleTo(window)
    assert panel.prompt_text() == entry.prompt and window.settings_panel.clip_skip.value() == 2

    # A style deleted from the file while ticked is a clear warning, not a crash.
    picker.set_selected(["Oil"])
    parts.window.prompt_panel.style_picker.book.save([PromptStyle("Moody", "moody light", "flat")])
    picker.reload()
    assert window.generate() is None
    assert "no longer in styles.csv" in window.banner.text.text()


def test_clip_skip_follows_the_models_capabilities(window) -> None:  # type: ignore[no-untyped-def]
    panel = window.settings_panel
    panel.clip_skip.setValue(2)
    assert panel.values()["clip_skip"] == 2
    panel.set_clip_skip_available(False)  # what a Core ML model reports
    assert not panel.clip_skip.isEnabled() and "not available" in panel.clip_skip.toolTip()
    assert panel.values()["clip_skip"] == 1
    panel.set_clip_skip_available(True)
    assert panel.values()["clip_skip"] == 2
