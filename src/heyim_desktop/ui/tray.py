"""The menu-bar (macOS) or system-tray icon: Quick Generate, Show Window, recent images, Quit.

Quick Generate goes through the same JobQueue and worker as the window (source ``"tray"``), so
the job shows in the queue panel and lands in history. When it is done the image is copied to
the clipboard and a notification says so; clicking the notification opens it in the window.

Where the desktop has no tray (this project's offscreen CI, some Linux desktops), the app says
so once in the status bar and the log, closing the window quits, and the rest works: Quick
Generate stays reachable from the Generate menu and its in-app shortcut.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.jobs import Job
from heyim_desktop.ui.global_shortcut import IN_APP_SHORTCUT, TRAY_NAME
from heyim_desktop.ui.qt import (
    QAction,
    QApplication,
    QIcon,
    QImage,
    QKeySequence,
    QMenu,
    QObject,
    QSystemTrayIcon,
    Qt,
    Signal,
)
from heyim_desktop.ui.quick_generate import QuickGenerateBox

log = logging.getLogger(__name__)

RECENT_COUNT = 8
NO_TRAY_MESSAGE = (f"No {TRAY_NAME} on this desktop: closing the window quits HeyIm. "
                   f"Quick Generate is in the Generate menu ({IN_APP_SHORTCUT}).")


def app_icon() -> QIcon:
    from importlib.resources import files

    return QIcon(str(files("heyim_desktop") / "resources" / "icon.png"))


def _short(text: str, limit: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TrayController(QObject):
    """Owns the tray icon (when there is a tray), its menu and the Quick Generate box."""

    #: The finished quick job's first history entry (after the clipboard copy); tests listen.
    quick_done = Signal(object)

    def __init__(self, app: Any, window: Any, store: Any, available: bool | None = None) -> None:
        super().__init__(window)
        self.app, self.window, self.store = app, window, store
        self.available = QSystemTrayIcon.isSystemTrayAvailable() if available is None else available
        self.box = QuickGenerateBox()
        self.box.setWindowIcon(app_icon())
        self.box.submitted.connect(self.quick_generate)
        self._mine: set[int] = set()
        self.last_entry: Any = None
        #: What clicking the notification on screen opens (None: just the window).
        self._message_entry: Any = None
        #: Replaceable in tests; Quit from the tray always ends the app.
        self.quit_app: Callable[[], None] = QApplication.quit

        self.menu = QMenu()
        self.quick_action = self.menu.addAction("Quick Generate...")
        self.quick_action.triggered.connect(lambda _c=False: self.open_quick_box())
        self.menu.addAction("Show Window").triggered.connect(lambda _c=False: self.show_window())
        self.menu.addSeparator()
        self.recent_menu = self.menu.addMenu("Recent Images")
        self.menu.aboutToShow.connect(self.refresh_recent)
        self.menu.addSeparator()
        quit_action = self.menu.addAction("Quit HeyIm")
        quit_action.triggered.connect(lambda _c=False: self.quit())
        self.refresh_recent()

        self.icon: QSystemTrayIcon | None = None
        if self.available:
            self.icon = QSystemTrayIcon(app_icon(), self)
            self.icon.setToolTip("HeyIm")
            self.icon.setContextMenu(self.menu)
            self.icon.messageClicked.connect(self.message_clicked)
            self.icon.activated.connect(self._activated)
            self.icon.show()
        else:
            log.info("no system tray available: %s", NO_TRAY_MESSAGE)
            window.notice(NO_TRAY_MESSAGE)  # a banner: later status messages must not hide it

        self._add_window_action()
        window.close_to_tray = self.keeps_running
        worker = window.worker
        worker.job_finished.connect(self._finished)
        worker.job_failed.connect(self._failed)
        worker.job_cancelled.connect(lambda job: self._mine.discard(int(job.id)))

    # -- window integration -----------------------------------------------------------------
    def _add_window_action(self) -> None:
        action = QAction("Quick Generate...", self.window)
        action.setShortcut(QKeySequence(IN_APP_SHORTCUT))
        # Works from any HeyIm window (Qt cannot grab keys system-wide; see global_shortcut).
        action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        action.triggered.connect(lambda _c=False: self.open_quick_box())
        menu = self.window.menu_actions.generate_menu
        menu.addSeparator()
        menu.addAction(action)
        self.window_quick_action = action

    def keeps_running(self) -> bool:
        """Closing the window hides it (app stays in the tray) only with a tray and the preference on."""
        keep = bool(self.available and self.window.prefs.keep_running_in_tray)
        if keep and self.icon is not None and not getattr(self, "_told_hidden", False):
            self._told_hidden = True
            self._message_entry = None
            self.icon.showMessage("HeyIm is still running",
                                  f"HeyIm keeps running in the {TRAY_NAME}. Quit from its menu.",
                                  QSystemTrayIcon.MessageIcon.Information, 4000)
        return keep

    def show_window(self) -> None:
        w = self.window
        if w.isMinimized():
            w.showNormal()
        w.show()
        w.raise_()
        w.activateWindow()

    def quit(self) -> None:
        self.window.close_to_tray = lambda: False
        self.box.close()
        self.window.close()
        self.quit_app()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        # A plain click opens the menu on macOS by itself; elsewhere it opens Quick Generate.
        import sys

        if reason == QSystemTrayIcon.ActivationReason.Trigger and sys.platform != "darwin":
            self.open_quick_box()

    # -- quick generate ---------------------------------------------------------------------
    def settings_summary(self) -> str:
        values = self.window.settings_panel.values()
        model = self.window.settings_panel.model.currentText() or "no model"
        return (f"{model} · {values.get('width')}×{values.get('height')} · {values.get('steps')} steps · "
                "the image goes to history and the clipboard")

    def open_quick_box(self) -> None:
        self.box.open(self.settings_summary())

    def build_request(self, prompt: str) -> Any:
        """The window's current settings (model, size, steps, guidance, scheduler, seed) and ``prompt``.

        Text-to-image: the window's input image is not used.
        """
        from heyim_desktop.ui.generate import build_request

        return build_request(self.window.settings_panel.values(), prompt, self.window.prompt_panel.negative_text())

    def quick_generate(self, prompt: str) -> Job | None:
        if not self.window.settings_panel.model_ref():
            self.box.say("Choose a model in the main window first (Show Window).")
            return None
        try:
            request = self.build_request(prompt)
        except InvalidRequest as exc:
            self.box.say(str(exc))
            return None
        job: Job | None = self.window.submit(request, source="tray")
        if job is None:
            self.box.say("Could not queue the image; the main window says why.")
            return None
        self._mine.add(int(job.id))
        self.box.prompt.clear()
        self.box.hide()
        from heyim_desktop.ui.generate import queue_note

        note = queue_note(self.window.queue, job)
        self._notify("Generating...", f"{_short(prompt)}" + (f" ({note})" if note else ""))
        return job

    def _finished(self, job: Job) -> None:
        if int(job.id) not in self._mine:
            return
        self._mine.discard(int(job.id))
        entries: list[Any] = [e for e in job.saved if hasattr(e, "path")]
        if not entries:
            return
        entry = entries[0]
        image = QImage(str(entry.path))
        if image.isNull() and job.result is not None:
            from heyim_desktop.ui.tasks import pil_to_qimage

            image = pil_to_qimage(job.result.images[0].image)
        from heyim_desktop.ui.result_view import image_mime

        QApplication.clipboard().setMimeData(image_mime(image, Path(entry.path)))
        self.last_entry = entry
        self.refresh_recent()
        self._notify("Image ready", f"{_short(entry.prompt)}\nCopied to the clipboard. Click to open it in HeyIm.",
                     entry=entry)
        self.quick_done.emit(entry)

    def _failed(self, job: Job, message: str) -> None:
        if int(job.id) in self._mine:
            self._mine.discard(int(job.id))
            self._notify("Quick Generate failed", message, QSystemTrayIcon.MessageIcon.Warning)

    def _notify(self, title: str, text: str,
                kind: QSystemTrayIcon.MessageIcon = QSystemTrayIcon.MessageIcon.Information,
                entry: Any = None) -> None:
        if self.icon is not None:
            self._message_entry = entry
            self.icon.showMessage(title, text, kind, 6000)
        else:
            self.window.status(f"{title}: {text.splitlines()[0]}")

    # -- opening images ---------------------------------------------------------------------
    def open_last(self) -> None:
        if self.last_entry is not None:
            self.open_entry(self.last_entry)

    def message_clicked(self) -> None:
        """A click on the notification opens what it was about; any notification shows the window."""
        entry = self._message_entry
        if entry is not None:
            self.open_entry(entry)
        else:
            self.show_window()

    def open_entry(self, entry: Any) -> None:
        self.show_window()
        self.window.result_view.show_entry(entry)

    def refresh_recent(self) -> None:
        """Rebuild the Recent Images submenu from history (newest first)."""
        self.recent_menu.clear()
        try:
            entries = self.store.page(0, RECENT_COUNT)
        except Exception:  # noqa: BLE001 - a closed or damaged store must not break the menu
            log.exception("reading recent images failed")
            entries = []
        for entry in entries:
            action = self.recent_menu.addAction(_short(entry.prompt or Path(entry.path).name))
            try:
                action.setIcon(QIcon(str(self.store.thumbnail_path(int(entry.id), 64))))
            except Exception:  # noqa: BLE001 - a missing file still gets a menu item
                log.debug("no thumbnail for %s", entry.path, exc_info=True)
            action.triggered.connect(lambda _c=False, e=entry: self.open_entry(e))
        if not entries:
            self.recent_menu.addAction("No images yet").setEnabled(False)

    def close(self) -> None:
        """Remove the icon and the box (at quit); safe to call twice."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        if self.icon is not None:
            self.icon.hide()
        self.box.close()
        self.box.deleteLater()
        self.menu.deleteLater()


def install_tray(parts: Any, available: bool | None = None) -> TrayController:
    """Create the tray for a running app (``build_app``'s parts)."""
    parts.app.setWindowIcon(app_icon())
    return TrayController(parts.app, parts.window, parts.store, available=available)
