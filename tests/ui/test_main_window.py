"""The window end to end on the tiny demo model: generate, cancel, queue, reuse settings."""

from __future__ import annotations

from conftest import GEN_TIMEOUT_MS, quick_settings
from heyim_desktop.core.jobs import JobState
from heyim_desktop.core.loading import DEMO_REF


def test_first_launch_without_model_says_so_and_offers_the_demo(window, qtbot) -> None:
    assert window.no_model.isVisible()
    assert "noise" in window.no_model.demo_button.toolTip()
    assert window.no_model.download_button.isEnabled()  # opens the Models window
    window.prompt_panel.set_prompt("a red fox")
    assert window.generate() is None  # no model chosen: nothing is queued
    assert "model" in window.banner.message().lower()
    window.no_model.demo_button.click()
    assert not window.no_model.isVisible()
    assert window.settings_panel.model_ref() == DEMO_REF


def test_generate_shows_the_image_and_adds_a_history_row(parts, qtbot) -> None:
    window = parts.window
    quick_settings(window)
    window.prompt_panel.set_prompt("a red fox in the snow", "blurry")
    assert window.prompt_panel.prompt_tokens.text().startswith("~")  # estimate before the model loads
    previews = []
    parts.worker.preview.connect(lambda _id, img: previews.append(img))
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        assert window.generate() is not None
    job = blocker.args[0]
    assert job.state is JobState.DONE, job.error_message
    shown = window.result_view.current()
    assert shown is not None and (shown.image.width(), shown.image.height()) == (64, 64)
    assert shown.path is not None and shown.path.is_file()
    assert parts.store.count() == 1
    assert window.history.model.rowCount() == 1
    entry = window.history.model.entry_at(0)
    assert entry.prompt == "a red fox in the snow" and entry.negative_prompt == "blurry"
    assert "Ready" in window.model_state.text()
    # The model's own tokenizer now counts: no "~" estimate mark.
    qtbot.waitUntil(lambda: not window.prompt_panel.prompt_tokens.text().startswith("~"))
    # The engine counts; the PyTorch engine reads the prompt in 75-token chunks.
    count = window.prompt_panel.prompt_tokens.count
    assert count is not None and count.exact and count.tokens > 0
    assert window.prompt_panel.max_chunks > 1
    assert window.prompt_panel.prompt_tokens.text() == f"{count.tokens}/75"
    assert previews and all(not img.isNull() for img in previews)  # the first step always previews


def test_cancel_stops_the_running_job_and_saves_nothing(parts, qtbot) -> None:
    window = parts.window
    quick_settings(window, steps=150)
    window.prompt_panel.set_prompt("cancel me")
    parts.worker.progress.connect(lambda *_: window.cancel())  # cancel at the first step
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        window.generate()
    job = blocker.args[0]
    assert job.state is JobState.CANCELLED
    assert job.progress is not None and job.progress.step <= 2  # within a step of the request
    assert parts.store.count() == 0
    assert "Cancelled" in window.statusBar().currentMessage()
    assert not window.cancel_button.isEnabled()


def test_jobs_queue_visibly_and_a_waiting_job_can_be_removed(parts, qtbot) -> None:
    window = parts.window
    quick_settings(window, steps=150)
    window.prompt_panel.set_prompt("first")
    started = []
    parts.worker.job_started.connect(started.append)
    first = window.generate()
    qtbot.waitUntil(lambda: bool(started), timeout=GEN_TIMEOUT_MS)
    window.prompt_panel.set_prompt("second")
    second = window.generate()
    window.prompt_panel.set_prompt("third")
    third = window.generate()
    qtbot.waitUntil(lambda: len(window.queue_panel.selected_ids()) == 0 and window.queue_panel.list.count() == 3)
    labels = window.queue_panel.waiting_labels()
    assert labels[0].startswith("Running: first") and "second" in labels[1] and "third" in labels[2]
    window.queue_panel.list.item(1).setSelected(True)
    window.queue_panel.remove_selected()
    assert second.state is JobState.CANCELLED
    assert [j.id for j in parts.queue.pending()] == [third.id]
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS,
                          check_params_cb=lambda j: j is third):
        window.cancel()  # stop "first"; "third" runs next
        qtbot.waitUntil(lambda: third.state is JobState.RUNNING, timeout=GEN_TIMEOUT_MS)
        window.cancel()
    assert first.state is JobState.CANCELLED and third.state is JobState.CANCELLED
    assert parts.store.count() == 0


def test_reuse_settings_round_trip(parts, qtbot) -> None:
    window = parts.window
    quick_settings(window, steps=3)
    sp = window.settings_panel
    window.prompt_panel.set_prompt("a lighthouse at dusk", "fog")
    sp.scheduler.setCurrentText("Euler a")
    sp.guidance.setValue(5.5)
    sp.set_seed(4242, locked=True)
    sp.set_size(64, 72)
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        window.generate()
    assert blocker.args[0].state is JobState.DONE, blocker.args[0].error_message
    before = sp.values()

    # Change everything, then reuse from history.
    window.prompt_panel.set_prompt("something else", "")
    sp.scheduler.setCurrentText("DDIM")
    sp.guidance.setValue(12.0)
    sp.set_seed(None, locked=False)
    sp.set_size(512, 512)
    sp.steps.setValue(30)
    window.history.select_row(0)
    window.history.reuse_button.click()
    assert window.prompt_panel.prompt_text() == "a lighthouse at dusk"
    assert window.prompt_panel.negative_text() == "fog"
    after = sp.values()
    for key in ("scheduler", "steps", "guidance", "seed", "width", "height", "model"):
        assert after[key] == before[key], key
    assert after["seed"] == 4242 and not sp.random_seed.isChecked()


def test_shortcuts_are_the_documented_ones(window) -> None:
    from heyim_desktop.ui.qt import QKeySequence

    gen = [s.toString() for s in window.generate_action.shortcuts()]
    assert "Ctrl+Return" in gen and "Ctrl+Enter" in gen
    assert window.cancel_action.shortcut() == QKeySequence("Esc")
    assert window.save_action.shortcut() == QKeySequence(QKeySequence.StandardKey.Save)


def test_ctrl_enter_in_the_prompt_box_generates(window, qtbot) -> None:
    from PySide6.QtTest import QTest

    from heyim_desktop.ui.qt import Qt

    window.activateWindow()
    window.prompt_panel.prompt.setFocus()
    qtbot.waitUntil(window.prompt_panel.prompt.hasFocus)
    window.prompt_panel.prompt.setPlainText("a red fox")
    # No model chosen yet: generating says so, which shows the shortcut reached the window.
    QTest.keyClick(window.prompt_panel.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert "model" in window.banner.message().lower()
    assert window.prompt_panel.prompt.toPlainText() == "a red fox"  # no line break typed
