"""The window's menus and shortcuts (Ctrl/Cmd+Enter, Esc, Ctrl/Cmd+F, standard copy/paste/quit)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from heyim_desktop.ui.qt import QAction, QKeySequence, QMenu, Qt

if TYPE_CHECKING:
    from heyim_desktop.ui.window import MainWindow


@dataclass(frozen=True)
class WindowActions:
    """The menu actions other parts of the app enable, trigger or extend (the tray adds to ``generate_menu``)."""

    open_input: QAction
    save: QAction
    open_output_folder: QAction
    models: QAction
    preferences: QAction
    quit: QAction
    copy_image: QAction
    paste_input: QAction
    search: QAction
    full_screen: QAction
    image_info: QAction
    generate: QAction
    cancel: QAction
    new_seed: QAction
    reuse_last_seed: QAction
    seed_of_shown: QAction
    show_logs: QAction
    generate_menu: QMenu


def _action(window: MainWindow, menu: QMenu, text: str, slot: Callable[[], Any], shortcut: Any = None,
            context: Qt.ShortcutContext = Qt.ShortcutContext.WindowShortcut) -> QAction:
    action = QAction(text, window)
    if shortcut is not None:
        action.setShortcuts(shortcut if isinstance(shortcut, list) else [QKeySequence(shortcut)])
        action.setShortcutContext(context)
    action.triggered.connect(lambda _checked=False: slot())
    menu.addAction(action)
    return action


def build_menus(window: MainWindow) -> WindowActions:
    """File, Edit, View, Generate and Help menus with the platform's standard shortcuts."""
    bar = window.menuBar()
    file = bar.addMenu("&File")
    open_input = _action(window, file, "Open Input Image...", window.drop_panel.choose_file,
                         QKeySequence.StandardKey.Open)
    save = _action(window, file, "Save Image As...", window.result_view.save_as, QKeySequence.StandardKey.Save)
    output = _action(window, file, "Open Output Folder", window.open_output_folder)
    output.setToolTip("Where HeyIm saves every image (Preferences > Image folder)")
    file.addSeparator()
    _action(window, file, "Add Model Folder...", window.add_model_folder)
    models = _action(window, file, "Models...", window.open_models_window)
    models.setToolTip("List, add, import, download and delete models")
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
    copy_image = _action(window, edit, "Copy Image", window.result_view.copy, QKeySequence.StandardKey.Copy)
    paste = _action(window, edit, "Paste Input Image", window.drop_panel.paste, QKeySequence.StandardKey.Paste)
    _action(window, edit, "Clear Input Image", window.drop_panel.clear)
    inpaint = _action(window, edit, "Edit / Inpaint Shown Image...", window.result_view.inpaint_shown)
    inpaint.setToolTip("Paint over part of the shown image to repaint it, or extend it (it becomes the input image)")
    edit.addSeparator()
    search = _action(window, edit, "Search History", window.history.focus_search, QKeySequence.StandardKey.Find)

    view = bar.addMenu("&View")
    full = _action(window, view, "Full Screen Image", window.open_viewer,
                   [QKeySequence("F11")] + ([QKeySequence("Ctrl+Meta+F")] if sys.platform == "darwin" else []))
    info = _action(window, view, "Image Info", window.toggle_info, QKeySequence("Ctrl+I"))
    info.setCheckable(True)
    info.setChecked(True)

    gen = bar.addMenu("&Generate")
    generate = _action(window, gen, "Generate", window.generate,
                       [QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")])
    cancel = _action(window, gen, "Cancel", window.cancel, [QKeySequence("Esc")])
    _action(window, gen, "Clear Queue", window.queue_panel.clear)
    gen.addSeparator()
    unload = _action(window, gen, "Unload Model", window.worker.unload_model)
    setattr(window, "unload_action", unload)  # noqa: B010 - tests and the window reach it by name
    unload.setToolTip(
        "End the engine process: all of the model's memory goes back to the system")
    panel = window.settings_panel
    new_seed = _action(window, gen, "New Random Seed", panel.roll_seed, QKeySequence("Ctrl+R"))
    reuse_seed = _action(window, gen, "Reuse Last Seed", panel.reuse_last_seed)
    shown_seed = _action(window, gen, "Use Seed of Shown Image", window.use_shown_seed)

    help_menu = bar.addMenu("&Help")
    logs = _action(window, help_menu, "Show Logs", window.show_logs)
    _action(window, help_menu, "About HeyIm", window.about).setMenuRole(QAction.MenuRole.AboutRole)
    return WindowActions(open_input=open_input, save=save, open_output_folder=output, models=models,
                         preferences=prefs, quit=quit_action, copy_image=copy_image, paste_input=paste,
                         search=search, full_screen=full, image_info=info, generate=generate, cancel=cancel,
                         new_seed=new_seed, reuse_last_seed=reuse_seed, seed_of_shown=shown_seed,
                         show_logs=logs, generate_menu=gen)
