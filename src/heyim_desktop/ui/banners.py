"""In-window banners: an error or notice with actions, and the first-launch "no model" card.

Banners instead of modal boxes: the app keeps running, the message stays readable, and
nothing waits on a click. Colours come from the palette, so light and dark themes both work.
"""

from __future__ import annotations

from typing import Callable

from heyim_desktop.ui.qt import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QStyle,
    Qt,
    QToolButton,
    QVBoxLayout,
    QWidget,
    Signal,
)


class Banner(QFrame):
    """A dismissible message with an icon and up to a few action buttons."""

    closed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        self.setBackgroundRole(self.palette().ColorRole.AlternateBase)
        self.icon = QLabel()
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QHBoxLayout()
        close = QToolButton()
        close.setText("\u2715")
        close.setToolTip("Dismiss")
        close.setAutoRaise(True)
        close.clicked.connect(self.dismiss)
        row = QHBoxLayout(self)
        row.addWidget(self.icon, 0, Qt.AlignmentFlag.AlignTop)
        row.addWidget(self.text, 1)
        row.addLayout(self.buttons)
        row.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.kind = "info"
        self.cause = ""
        self.hide()

    def show_message(self, text: str, kind: str = "error",
                     actions: tuple[tuple[str, Callable[[], None]], ...] = (), cause: str = "") -> None:
        """``cause`` names what the message is about ("model", "input"...), so fixing it can clear it."""
        icons = {"error": QStyle.StandardPixmap.SP_MessageBoxCritical,
                 "warning": QStyle.StandardPixmap.SP_MessageBoxWarning,
                 "info": QStyle.StandardPixmap.SP_MessageBoxInformation}
        self.kind = kind
        self.cause = cause
        self.icon.setPixmap(self.style().standardIcon(icons.get(kind, icons["info"])).pixmap(24, 24))
        self.text.setText(text)
        while self.buttons.count():
            item = self.buttons.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        for label, fn in actions:
            button = QPushButton(label)
            button.clicked.connect(fn)
            self.buttons.addWidget(button)
        self.show()

    def message(self) -> str:
        return self.text.text() if self.isVisible() else ""

    def clear(self, *causes: str) -> None:
        """Hide the banner if it is about one of ``causes`` (the user fixed it)."""
        if self.isVisible() and self.cause in causes:
            self.dismiss()

    def dismiss(self) -> None:
        self.hide()
        self.closed.emit()


class NoModelCard(QFrame):
    """First launch without a model: say so and offer the three ways forward."""

    add_folder_requested = Signal()
    #: The window opens the Models window (downloads) from here.
    download_model_requested = Signal()
    demo_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        self.setBackgroundRole(self.palette().ColorRole.AlternateBase)
        title = QLabel("<b>No model yet</b>")
        body = QLabel(
            "HeyIm needs a Stable Diffusion model to make images. Add a folder that holds models "
            "(diffusers folders or .safetensors checkpoints), download one, or try the built-in demo."
        )
        body.setWordWrap(True)
        self.add_button = QPushButton("Add Model Folder...")
        self.download_button = QPushButton("Download a Model...")
        self.download_button.setEnabled(False)
        self.download_button.setToolTip("Model downloads come with the Models window (not available yet).")
        self.demo_button = QPushButton("Try the Demo Model")
        self.demo_button.setToolTip(
            "A tiny model with random weights, built on this machine in seconds. "
            "It makes abstract noise, not pictures: use it to try the app.")
        demo_note = QLabel("The demo is a tiny random model: it makes abstract noise, not pictures.")
        demo_note.setWordWrap(True)
        demo_note.setEnabled(False)
        self.add_button.clicked.connect(self.add_folder_requested)
        self.download_button.clicked.connect(self.download_model_requested)
        self.demo_button.clicked.connect(self.demo_requested)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.demo_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(body)
        layout.addLayout(buttons)
        layout.addWidget(demo_note)

    def enable_download(self, enabled: bool = True) -> None:
        """Called once something listens to ``download_model_requested``."""
        self.download_button.setEnabled(enabled)
        self.download_button.setToolTip("Find and download a model" if enabled else
                                        "Model downloads come with the Models window (not available yet).")
