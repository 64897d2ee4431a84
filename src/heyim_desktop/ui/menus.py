"""The window's menus and shortcuts (Ctrl/Cmd+Enter, Esc, Ctrl/Cmd+F, standard copy/paste/quit)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from heyim_desktop.ui.qt import QAction, QKeySequence, Qt

if TYPE_CHECKING:
    from heyim_desktop.ui.window import MainWindow


def _action(window: MainWindow, menu: Any, text: str, slot: Callable[[], Any], shortcut: Any = None,
            context: Qt.ShortcutContext = Qt.ShortcutContext.WindowShortcut) -> QAction:
    action = QAction(text, window)
    if shortcut is not None:
        action.setShortcuts(shortcut if isinstance(shortcut, list) else [QKeySequence(shortcut)])
        action.setShortcutContext(context)
    action.triggered.connect(lambda _checked=False: slot())
    menu.addAction(action)
    return action


def build_menus(window: MainWindow) -> None:
    """File, Edit, Generate and Help menus with the platform's standard shortcuts."""
    bar = window.menuBar()
    file = bar.addMenu("&File")
    _action(window, file, "Open Input Image...", window.drop_panel.choose_file, QKeySequence.StandardKey.Open)
    window.save_action = _action(window, file, "Save Image As...", window.result_view.save_as, QKeySequence.StandardKey.Save)
    file.addSeparator()
    _action(window, file, "Add Model Folder...", window.add_model_folder)
    window.download_action = _action(window, file, "Models...", window.open_models_window)
    window.download_action.setToolTip("List, add, import, download and delete models")
    _action(window, file, "Use the Demo Model (tiny, random: makes noise)", window.use_demo_model)
    _action(window, file, "Convert to Core ML...", window.open_convert_dialog)
    file.addSeparator()
    prefs = _action(window, file, "Preferences...", window.open_preferences, QKeySequence.StandardKey.Preferences)
    prefs.setMenuRole(QAction.MenuRole.PreferencesRole)
    file.addSeparator()
    quit_action = _action(window, file, "Quit", window.quit_app, QKeySequence.StandardKey.Quit)
    quit_action.setMenuRole(QAction.MenuRole.QuitRole)

    edit = bar.addMenu("&Edit")
    # Window-wide copy/paste act on images; a focused text box keeps its own Ctrl+C/V.
    _action(window, edit, "Copy Image", window.result_view.copy, QKeySequence.StandardKey.Copy)
    _action(window, edit, "Paste Input Image", window.drop_panel.paste, QKeySequence.StandardKey.Paste)
    _action(window, edit, "Clear Input Image", window.drop_panel.clear)
    edit.addSeparator()
    _action(window, edit, "Search History", window.history.focus_search, QKeySequence.StandardKey.Find)

    gen = bar.addMenu("&Generate")
    window.generate_action = _action(
        window, gen, "Generate", window.generate,
        [QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")])
    window.cancel_action = _action(window, gen, "Cancel", window.cancel, [QKeySequence("Esc")])
    _action(window, gen, "Clear Queue", window.queue_panel.clear)
    gen.addSeparator()
    window.unload_action = _action(window, gen, "Unload Model", window.worker.unload_model)
    window.unload_action.setToolTip(
        "End the engine process: all of the model's memory goes back to the system")

    help_menu = bar.addMenu("&Help")
    _action(window, help_menu, "Show Logs", window.show_logs)
    _action(window, help_menu, "About HeyIm", window.about).setMenuRole(QAction.MenuRole.AboutRole)
