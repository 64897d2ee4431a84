"""The image info panel: every parameter of the shown image, and one-click copies of them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from heyim_desktop.ui.qt import (
    QApplication,
    QFormLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    Qt,
    QVBoxLayout,
    QWidget,
    Signal,
)

#: (label, how to read it from a HistoryEntry); rows with no value are hidden.
_FIELDS: tuple[tuple[str, str], ...] = (
    ("Prompt", "prompt"), ("Negative", "negative_prompt"), ("Seed", "seed"), ("Size", "size"),
    ("Steps", "steps"), ("Guidance", "guidance"), ("Scheduler", "scheduler"), ("Strength", "strength"),
    ("Model", "model_name"), ("Engine", "engine"), ("Created", "created"), ("File", "file"), ("Folder", "folder"),
)


def entry_fields(entry: Any) -> list[tuple[str, str]]:
    """(label, text) for each parameter ``entry`` has, in display order."""
    rows: list[tuple[str, str]] = []
    settings = getattr(entry, "settings", None) or {}
    for label, key in _FIELDS:
        if key == "size":
            value: Any = f"{entry.width} x {entry.height}" if entry.width and entry.height else None
        elif key == "created":
            value = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.created)) if entry.created else None
        elif key == "file":
            value = Path(entry.path).name if getattr(entry, "path", None) else None
        elif key == "folder":
            # Zero-width spaces after each "/" let a long folder wrap (they are dropped on copy).
            value = str(Path(entry.path).parent).replace("/", "/\u200b") if getattr(entry, "path", None) else None
        elif key == "engine":
            value = settings.get("engine")
        elif key == "guidance":
            value = f"{entry.guidance:g}" if entry.guidance is not None else None
        elif key == "strength":
            value = f"{entry.strength:g}" if entry.strength is not None and settings.get("strength") is not None \
                else None
        else:
            value = getattr(entry, key, None)
        if value not in (None, ""):
            rows.append((label, str(value)))
    return rows


class ImageInfoPanel(QWidget):
    """Shows a HistoryEntry's parameters; Copy Prompt, Copy Parameters (AUTOMATIC1111 text), Copy Seed."""

    message = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.entry: Any = None
        self.empty = QLabel("Select an image to see how it was made.")
        self.empty.setEnabled(False)
        self.empty.setWordWrap(True)
        self.form = QFormLayout()
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.copy_prompt = QPushButton("Copy Prompt")
        self.copy_parameters = QPushButton("Copy Parameters")
        self.copy_parameters.setToolTip("The settings as AUTOMATIC1111 text: paste into HeyIm, A1111 or civitai")
        self.copy_seed = QPushButton("Copy Seed")
        self.copy_prompt.clicked.connect(lambda: self._copy(self._field("prompt"), "Prompt"))
        self.copy_parameters.clicked.connect(lambda: self._copy(self.parameters_text(), "Parameters"))
        self.copy_seed.clicked.connect(lambda: self._copy(self._field("seed"), "Seed"))
        buttons = QVBoxLayout()  # stacked: the panel stays narrow beside the image
        for b in (self.copy_prompt, self.copy_parameters, self.copy_seed):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 0, 0, 0)
        layout.addWidget(QLabel("<b>Image info</b>"))
        layout.addWidget(self.empty)
        layout.addLayout(self.form)
        layout.addStretch(1)
        layout.addLayout(buttons)
        self.show_entry(None)

    def show_entry(self, entry: Any) -> None:
        self.entry = entry
        while self.form.rowCount():
            self.form.removeRow(0)
        rows = entry_fields(entry) if entry is not None else []
        for label, text in rows:
            value = QLabel(text)
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            value.setObjectName(f"info-{label.lower()}")
            self.form.addRow(label, value)
        self.empty.setVisible(entry is None)
        self.copy_prompt.setEnabled(bool(entry is not None and entry.prompt))
        self.copy_parameters.setEnabled(entry is not None)
        self.copy_seed.setEnabled(entry is not None and entry.seed is not None)

    def value(self, label: str) -> str | None:
        for row in range(self.form.rowCount()):
            name = self.form.itemAt(row, QFormLayout.ItemRole.LabelRole)
            field = self.form.itemAt(row, QFormLayout.ItemRole.FieldRole)
            name_label = name.widget() if name is not None else None
            value_label = field.widget() if field is not None else None
            if isinstance(name_label, QLabel) and isinstance(value_label, QLabel) and name_label.text() == label:
                return value_label.text().replace("\u200b", "")
        return None

    def parameters_text(self) -> str:
        """The AUTOMATIC1111 "parameters" text of the entry (what its PNG carries)."""
        entry = self.entry
        if entry is None:
            return ""
        if entry.parameters:
            return str(entry.parameters)
        from heyim_desktop.core.metadata import format_parameters
        from heyim_desktop.core.request import GenerationRequest

        settings = {k: v for k, v in entry.request_settings().items() if k not in ("model", "strength")}
        request = GenerationRequest(**settings)
        return format_parameters(request, entry.seed, entry.model_name)

    def _field(self, name: str) -> str:
        value = getattr(self.entry, name, None)
        return "" if value is None else str(value)

    def _copy(self, text: str, what: str) -> None:
        QApplication.clipboard().setText(text)
        self.message.emit(f"{what} copied to the clipboard.")
