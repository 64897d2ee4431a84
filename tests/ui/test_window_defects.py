"""The defects found trying the window as a new user would (issue 14), one test each."""

from __future__ import annotations

from pathlib import Path

from conftest import GEN_TIMEOUT_MS, make_result, quick_settings

from heyim_desktop.core.jobs import JobState


def _generate(window, qtbot, prompt: str):  # type: ignore[no-untyped-def]
    window.prompt_panel.set_prompt(prompt)
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        assert window.generate() is not None
    job = blocker.args[0]
    assert job.state is JobState.DONE, job.error_message
    return job


def _drain(qtbot) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.ui.tasks import pool

    pool().waitForDone(10_000)
    qtbot.wait(50)  # deliver the queued results of background decodes


def test_1_new_image_is_shown_while_a_thumbnail_is_selected(parts, qtbot) -> None:
    window = parts.window
    quick_settings(window)
    _generate(window, qtbot, "the old one")
    window.history.select_row(0)
    _drain(qtbot)
    job = _generate(window, qtbot, "the new one")
    _drain(qtbot)
    shown = window.result_view.current()
    assert shown is not None and shown.path == job.saved[0].path
