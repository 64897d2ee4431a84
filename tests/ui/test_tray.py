"""The menu-bar icon: Quick Generate through the shared queue, clipboard, recent images, no-tray fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conftest import GEN_TIMEOUT_MS, make_result, quick_settings
from heyim_desktop.ui.global_shortcut import TRAY_NAME
from heyim_desktop.ui.qt import QApplication, QObject, QSystemTrayIcon, Qt, Signal


def test_quick_generate_queues_a_tray_job_that_reaches_history_and_clipboard(parts, qtbot) -> None:
    window, tray = parts.window, parts.tray
    quick_settings(window)
    queued = []
    window.worker.job_queued.connect(queued.append)
    panel_lines: list[str] = []  # what the queue panel listed after each change
    window.worker.queue_changed.connect(
        lambda: panel_lines.extend(window.queue_panel.list.item(i).text()
                                   for i in range(window.queue_panel.list.count())))
    QApplication.clipboard().clear()

    tray.quick_action.trigger()
    assert tray.box.isVisible()
    assert "64×64" in tray.box.settings_line.text() and "2 steps" in tray.box.settings_line.text()
    qtbot.keyClicks(tray.box.prompt, "a quick red fox")
    with qtbot.waitSignal(tray.quick_done, timeout=GEN_TIMEOUT_MS) as done:
        qtbot.keyClick(tray.box.prompt, Qt.Key.Key_Return)
        assert not tray.box.isVisible()  # the box gets out of the way at once
    assert [j.source for j in queued] == ["tray"]
    assert queued[0].request.prompt == "a quick red fox"
    assert (queued[0].request.width, queued[0].request.steps) == (64, 2)
    assert any("a quick red fox" in line and f"({TRAY_NAME})" in line for line in panel_lines)

    entry = done.args[0]
    stored = parts.store.page(0, 1)[0]
    assert stored.id == entry.id and stored.source == "tray" and stored.prompt == "a quick red fox"
    assert Path(stored.path).is_file()
    image = QApplication.clipboard().image()
    assert not image.isNull() and (image.width(), image.height()) == (64, 64)
    # The recent-images menu has it, and so does the window's history panel.
    assert tray.recent_menu.actions()[0].text() == "a quick red fox"
    assert window.history.model.rowCount() == 1
    # Clicking the notification opens the image in the window.
    window.hide()
    tray.open_last()
    assert window.isVisible()
    qtbot.waitUntil(lambda: bool(window.result_view.images)
                    and window.result_view.images[0].path == stored.path, timeout=5000)


def test_quick_box_says_what_is_missing_instead_of_queueing(parts, qtbot) -> None:
    tray = parts.tray
    tray.open_quick_box()
    qtbot.waitActive(tray.box)  # it comes to the front (activation is asynchronous)
    tray.box.submit()
    assert "Type a prompt first." in tray.box.message.text()
    assert parts.tray.quick_generate("a fox") is None  # no model chosen yet
    assert "Choose a model" in tray.box.message.text()
    assert len(parts.queue.pending()) == 0
    qtbot.keyClick(tray.box.prompt, Qt.Key.Key_Escape)
    assert not tray.box.isVisible()


def test_without_a_tray_the_app_says_so_once_and_closing_quits(qtbot, data_dir, caplog) -> None:
    from heyim_desktop.ui.app import build_app
    from heyim_desktop.ui.logs import teardown_logging
    from heyim_desktop.ui.tray import NO_TRAY_MESSAGE

    assert not QSystemTrayIcon.isSystemTrayAvailable()  # offscreen CI
    with caplog.at_level(logging.INFO, logger="heyim_desktop.ui.tray"):
        p = build_app(["heyim-test"])
    try:
        qtbot.addWidget(p.window)
        assert p.tray.available is False and p.tray.icon is None
        said = [r for r in caplog.records if "no system tray" in r.getMessage()]
        assert len(said) == 1
        # A banner, not a status line: the API's status 0.6 s later must not overwrite it.
        assert p.window.banner.message() == NO_TRAY_MESSAGE and p.window.banner.kind == "info"
        p.window.status("Local API on http://127.0.0.1:7860")
        assert p.window.banner.message() == NO_TRAY_MESSAGE
        assert NO_TRAY_MESSAGE in p.window.status_history
        # The preference says "keep running", but with no tray closing must quit.
        assert p.window.prefs.keep_running_in_tray is True
        assert QApplication.instance().quitOnLastWindowClosed()
        assert p.window.close() is True
        assert not p.window.isVisible()
        # Quick Generate stays reachable from the window's menu with its in-app shortcut.
        assert p.tray.window_quick_action.shortcut().toString() == "Ctrl+Shift+G"
        assert p.tray.window_quick_action in p.window.menu_actions.generate_menu.actions()
    finally:
        p.app.aboutToQuit.disconnect(p.shutdown)
        p.shutdown()
        teardown_logging()


class FakeTrayIcon(QObject):
    """Stands in for QSystemTrayIcon where the platform has no tray (offscreen CI)."""

    MessageIcon = QSystemTrayIcon.MessageIcon
    ActivationReason = QSystemTrayIcon.ActivationReason
    messageClicked = Signal()
    activated = Signal(object)

    def __init__(self, _icon: object, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.messages: list[tuple[str, str]] = []
        self.menu = None
        self.visible = False

    def setToolTip(self, _text: str) -> None:  # noqa: N802 - Qt's name
        pass

    def setContextMenu(self, menu: object) -> None:  # noqa: N802 - Qt's name
        self.menu = menu

    def show(self) -> None:
        self.visible = True

    def hide(self) -> None:
        self.visible = False

    def showMessage(self, title: str, text: str, *_args: object) -> None:  # noqa: N802 - Qt's name
        self.messages.append((title, text))


def test_with_a_tray_closing_hides_notifications_open_images_and_quit_quits(parts, qtbot, monkeypatch) -> None:
    import heyim_desktop.ui.tray as tray_module

    window = parts.window
    parts.tray.close()
    monkeypatch.setattr(tray_module, "QSystemTrayIcon", FakeTrayIcon)
    tray = tray_module.TrayController(parts.app, window, parts.store, available=True)
    icon = tray.icon
    assert icon.visible and icon.menu is tray.menu
    quits = []
    tray.quit_app = lambda: quits.append(True)

    # Closing hides the window and says once where the app went.
    assert window.close() is False
    assert not window.isVisible()
    assert [t for t, _ in icon.messages] == ["HeyIm is still running"]
    tray.show_window()
    window.close()
    assert len(icon.messages) == 1
    tray.show_window()

    # A quick job: "Generating...", then "Image ready"; clicking the notification opens it.
    quick_settings(window)
    with qtbot.waitSignal(tray.quick_done, timeout=GEN_TIMEOUT_MS) as done:
        assert tray.quick_generate("a lighthouse at dusk") is not None
    assert [t for t, _ in icon.messages[1:]] == ["Generating...", "Image ready"]
    window.hide()
    icon.messageClicked.emit()
    assert window.isVisible()
    qtbot.waitUntil(lambda: bool(window.result_view.images)
                    and window.result_view.images[0].path == done.args[0].path, timeout=5000)

    # Without the preference, closing quits as usual; Quit always quits.
    window.prefs = window.prefs.replace(keep_running_in_tray=False)
    assert tray.keeps_running() is False
    window.prefs = window.prefs.replace(keep_running_in_tray=True)
    tray.quit()
    assert quits == [True] and not window.isVisible()
    tray.close()
    assert not icon.visible


def test_recent_images_come_from_history_and_open_in_the_window(parts, qtbot) -> None:
    store, tray, window = parts.store, parts.tray, parts.window
    tray.refresh_recent()
    assert [a.text() for a in tray.recent_menu.actions()] == ["No images yet"]
    store.save_result(make_result("an old lighthouse", seed=1))
    store.save_result(make_result("a new harbour", seed=2))
    tray.menu.aboutToShow.emit()  # the menu refreshes itself each time it opens
    actions = tray.recent_menu.actions()
    assert [a.text() for a in actions] == ["a new harbour", "an old lighthouse"]
    assert not actions[0].icon().isNull()
    window.hide()
    actions[1].trigger()
    assert window.isVisible()
    qtbot.waitUntil(lambda: bool(window.result_view.images)
                    and "lighthouse" in window.result_view.images[0].path.name, timeout=5000)


def test_opening_an_image_with_heyim_uses_it_as_input(parts, qtbot, tmp_path) -> None:
    from PIL import Image

    from heyim_desktop.cli import _file_arguments
    from heyim_desktop.ui.qt import QFileOpenEvent

    png = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(png)
    assert _file_arguments([str(png)]) == ["--open", str(png)]
    assert _file_arguments(["-psn_0_123", str(png)]) == ["--open", str(png)]
    assert _file_arguments(["generate", "x"]) == ["generate", "x"]
    QApplication.sendEvent(parts.app, QFileOpenEvent(str(png)))
    qtbot.waitUntil(lambda: parts.window.drop_panel.image is not None, timeout=10000)
    assert parts.window.drop_panel.image.size == (64, 64)


def test_preferences_show_the_shortcut_and_keep_in_tray(parts, qtbot) -> None:
    from heyim_desktop.ui.preferences_dialog import PreferencesDialog

    dialog = PreferencesDialog(parts.window.prefs, parts.window)
    qtbot.addWidget(dialog)
    note = dialog.shortcut_note.text()
    assert "Ctrl+Shift+G" in note and "system-wide shortcut is not available" in note
    assert "offscreen" in note  # says why, for this platform
    dialog.keep_in_tray.setChecked(False)
    assert dialog.result_preferences().keep_running_in_tray is False


def test_reasons_name_each_platform() -> None:
    from heyim_desktop.ui.global_shortcut import system_wide_unavailable_reason as why

    assert "pyobjc" in why("darwin", "cocoa")
    assert "pywin32" in why("win32", "windows")
    assert "X11" in why("linux", "xcb")
    assert "offscreen" in why("linux", "offscreen")


@pytest.mark.slow
def test_self_test_runs_the_demo_model_in_a_throwaway_folder(qtbot, data_dir, capsys) -> None:
    from heyim_desktop.ui.self_test import run_self_test

    assert run_self_test(timeout_s=GEN_TIMEOUT_MS / 1000) == 0
    assert "self-test passed" in capsys.readouterr().out
    assert not (data_dir / "history").exists()  # the user's data folder was never touched
