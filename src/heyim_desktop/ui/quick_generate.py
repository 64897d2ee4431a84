"""The Quick Generate box: one line for a prompt, on top of other windows; Enter queues it."""

from __future__ import annotations

from heyim_desktop.ui.qt import QEvent, QLabel, QLineEdit, QObject, Qt, QVBoxLayout, QWidget, Signal


class QuickGenerateBox(QWidget):
    """A small always-on-top prompt box. Emits ``submitted(prompt)``; the tray does the rest."""

    submitted = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Tool | Qt.WindowType.WindowStaysOnTopHint)
        self.setWindowTitle("Quick Generate")
        # Closing this box must never quit the app (the main window may be hidden in the tray).
        self.setAttribute(Qt.WidgetAttribute.WA_QuitOnClose, False)
        self.setMinimumWidth(460)
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("Describe an image and press Enter")
        self.prompt.setClearButtonEnabled(True)
        self.prompt.returnPressed.connect(self.submit)
        self.settings_line = QLabel()
        self.settings_line.setEnabled(False)  # greyed by the palette, readable in both themes
        self.settings_line.setWordWrap(True)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.hide()
        title = QLabel("<b>Quick Generate</b>")
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(self.prompt)
        layout.addWidget(self.settings_line)
        layout.addWidget(self.message)
        # Esc hides the box (claimed from the main window's Esc = Cancel shortcut, see eventFilter).
        self.prompt.installEventFilter(self)

    def open(self, settings_text: str) -> None:
        """Show the box in front of everything with the cursor in the prompt."""
        self.settings_line.setText(settings_text)
        self.message.hide()
        self.show()
        self.raise_()
        self.activateWindow()
        self.prompt.setFocus()
        self.prompt.selectAll()

    def say(self, text: str) -> None:
        """A one-line problem (no model, empty prompt) shown in the box itself, not a dialog."""
        self.message.setText(text)
        self.message.show()

    def submit(self) -> None:
        text = self.prompt.text().strip()
        if not text:
            self.say("Type a prompt first.")
            return
        self.submitted.emit(text)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if watched is self.prompt and event.type() in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress) \
                and event.key() == Qt.Key.Key_Escape:  # type: ignore[attr-defined]
            # Claim Esc before the window's Cancel shortcut can take it, then hide on the press.
            event.accept()
            if event.type() == QEvent.Type.KeyPress:
                self.hide()
            return True
        return super().eventFilter(watched, event)
