"""Edit / Inpaint from the result view and a history entry's menu, and Reuse Settings bringing an
inpainted image's input picture and mask back, in the real window."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import GEN_TIMEOUT_MS, make_result, quick_settings
from heyim_desktop.core.jobs import JobState
from heyim_desktop.ui.mask_editor import InpaintDialog

# The screenshot is looked at by hand: docs/screenshots/ only with HEYIM_SAVE_SCREENSHOTS=1, so a
# test run never changes a tracked file.
SHOTS = (Path(__file__).resolve().parents[2] / "docs" / "screenshots" if os.environ.get("HEYIM_SAVE_SCREENSHOTS")
         else Path(tempfile.gettempdir()) / f"heyim-test-shots-{os.getpid()}")


def _generate(window, qtbot) -> Any:  # type: ignore[no-untyped-def]
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        window.generate()
    assert blocker.args[0].state is JobState.DONE, blocker.args[0].error_message
    return window.history.model.entry_at(0)


@pytest.fixture()
def editor(monkeypatch):  # type: ignore[no-untyped-def]
    """The mask editor, not modal: each opening paints a square, sets a blur, and is accepted."""
    opened: list[InpaintDialog] = []

    def exec_(dialog: InpaintDialog) -> int:
        opened.append(dialog)
        dialog.canvas.brush = 16
        dialog.canvas.stroke([(16.0, 16.0), (40.0, 16.0)])
        dialog.blur.setValue(2)
        return 1

    monkeypatch.setattr(InpaintDialog, "exec", exec_)
    return opened


def test_edit_inpaint_from_the_result_then_reuse_brings_input_and_mask_back(parts, qtbot, editor) -> None:  # type: ignore[no-untyped-def]
    window = parts.window
    quick_settings(window)
    window.prompt_panel.set_prompt("a red fox")
    first = _generate(window, qtbot)
    original = np.asarray(Image.open(first.path).convert("RGB"))
    menu = window.result_view.context_menu()  # right-click on the shown image
    actions = {a.text(): a for a in menu.actions()}
    assert actions["Upscale..."].isEnabled()
    actions["Edit / Inpaint..."].trigger()
    qtbot.waitUntil(lambda: window.drop_panel.inpaint is not None, timeout=GEN_TIMEOUT_MS)
    assert len(editor) == 1 and editor[0].source.size == (64, 64)
    assert np.array_equal(np.asarray(window.drop_panel.image), original)  # the result became the input
    painted = np.asarray(window.drop_panel.inpaint.mask)
    assert painted[16, 28] == 255 and painted[60, 60] == 0
    assert window.generate_button.text() == "Generate from Image"

    window.settings_panel.strength.setValue(1.0)
    second = _generate(window, qtbot)
    out = np.asarray(Image.open(second.path).convert("RGB"))
    assert np.array_equal(out[48:, :], original[48:, :])  # far from the blurred mask: kept exactly
    assert not np.array_equal(out[8:24, 16:40], original[8:24, 16:40])
    source, mask = second.edit_files()
    assert source is not None and mask is not None

    # Reuse Settings on the inpainted entry: the picture it started from and its mask come back.
    window.drop_panel.clear()
    assert window.drop_panel.inpaint is None and window.drop_panel.image is None
    window.history.reuse_requested.emit(second)
    qtbot.waitUntil(lambda: window.drop_panel.inpaint is not None, timeout=GEN_TIMEOUT_MS)
    assert np.array_equal(np.asarray(window.drop_panel.image), original)
    assert np.array_equal(np.asarray(window.drop_panel.inpaint.mask), painted)
    assert window.drop_panel.inpaint.blur == 2 and window.drop_panel.inpaint.fill == "original"
    assert "input picture and mask" in window.statusBar().currentMessage()
    assert len(editor) == 1  # reuse does not open the editor
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert window.drop_panel.grab().save(str(SHOTS / "14-inpaint-reused.png"))

    # The kept files gone (deleted by hand): the settings still come back, and the status says so.
    source.unlink()
    window.drop_panel.clear()
    window.reuse_settings(second)
    assert "no longer" in window.statusBar().currentMessage()
    assert window.drop_panel.image is None


def test_edit_inpaint_from_a_history_entry_menu_and_the_edit_menu(parts, qtbot, editor, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.ui.qt import QMenu

    window = parts.window
    entry = parts.store.save_result(make_result("a saved fox", seed=3))[0]
    window.history.model.refresh()
    menus: list[QMenu] = []
    monkeypatch.setattr(QMenu, "popup", lambda menu, *_a: menus.append(menu))
    view = window.history.view
    window.history._context_menu(view.visualRect(window.history.model.index(0, 0)).center())
    actions = {a.text(): a for a in menus[0].actions()}
    assert "Edit / Inpaint..." in actions
    actions["Edit / Inpaint..."].trigger()
    qtbot.waitUntil(lambda: window.drop_panel.inpaint is not None, timeout=GEN_TIMEOUT_MS)
    assert window.drop_panel.current.path == entry.path
    assert np.array_equal(np.asarray(window.drop_panel.image), np.asarray(Image.open(entry.path).convert("RGB")))
    # The Edit menu does the same for the shown image.
    assert window.result_view.current() is not None
    window.drop_panel.clear()
    edit_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Edit")
    item = next(a for a in edit_menu.actions() if a.text() == "Edit / Inpaint Shown Image...")
    item.trigger()
    qtbot.waitUntil(lambda: len(editor) == 2 and window.drop_panel.inpaint is not None, timeout=GEN_TIMEOUT_MS)
    assert window.drop_panel.current.path == window.result_view.current().path
