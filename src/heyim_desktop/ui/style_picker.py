"""The prompt-style picker: several styles at once, saved in AUTOMATIC1111's styles.csv format."""

from __future__ import annotations

import logging
from typing import Callable

from heyim_desktop.core.errors import InvalidRequest, UserFacingError
from heyim_desktop.store.styles import PromptStyle, StyleBook, apply_styles
from heyim_desktop.ui.qt import (
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMenu,
    QToolButton,
    QWidget,
    Signal,
)

log = logging.getLogger(__name__)


class StylePicker(QWidget):
    """A "Styles" button whose menu ticks styles on and off, and manages the styles file.

    ``changed`` fires when the selection changes; ``message`` carries one line for the status
    bar (what was imported, or why something failed).
    """

    changed = Signal()
    message = Signal(str)

    def __init__(self, book: StyleBook | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.book = book or StyleBook.default()
        self._selected: list[str] = []
        self._known: dict[str, PromptStyle] | None = None  # the file's styles, read once per change
        #: (prompt, negative prompt) now in the prompt boxes, for "Save prompt as style".
        self.prompt_source: Callable[[], tuple[str, str]] = lambda: ("", "")

        self.button = QToolButton()
        self.button.setText("Styles")
        self.button.setToolTip("Prompt styles: tick several; each adds its text to the prompt ({prompt} marks where "
                               "your prompt goes)")
        self.button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.menu = QMenu(self.button)
        self.menu.aboutToShow.connect(self.fill_menu)
        self.button.setMenu(self.menu)
        self.chosen = QLabel()
        self.chosen.setAccessibleName("Chosen styles")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.chosen)
        layout.addWidget(self.button)
        self._show_chosen()

    # -- selection --------------------------------------------------------------------------
    def selected(self) -> list[str]:
        return list(self._selected)

    def set_selected(self, names: list[str]) -> None:
        unique = list(dict.fromkeys(n for n in names if n))
        if unique != self._selected:
            self._selected = unique
            self._show_chosen()
            self.changed.emit()

    def toggle(self, name: str, on: bool) -> None:
        names = [n for n in self._selected if n != name]
        if on:
            names.append(name)  # styles apply in the order they were ticked
        self.set_selected(names)

    def _show_chosen(self) -> None:
        self.chosen.setText(", ".join(self._selected))
        self.chosen.setVisible(bool(self._selected))
        self.button.setText(f"Styles ({len(self._selected)})" if self._selected else "Styles")

    def styles(self) -> list[PromptStyle]:
        if self._known is None:
            self._known = {s.name: s for s in self.book.styles()}
        return list(self._known.values())

    def reload(self) -> None:
        self._known = None

    def expand(self, prompt: str, negative: str) -> tuple[str, str]:
        """The prompts with the chosen styles applied (an unknown style is an InvalidRequest)."""
        if not self._selected:
            return prompt, negative
        known = {s.name: s for s in self.styles()}
        missing = [n for n in self._selected if n not in known]
        if missing:
            raise InvalidRequest("styles", f"the style {missing[0]!r} is no longer in {self.book.path.name}; untick it")
        return apply_styles(prompt, negative, [known[n] for n in self._selected])

    # -- the menu ---------------------------------------------------------------------------
    def fill_menu(self) -> None:
        self.menu.clear()
        self.reload()  # the file may have changed (another HeyIm, an editor)
        try:
            styles = self.styles()
        except UserFacingError as exc:
            styles = []
            self.message.emit(str(exc))
        if not styles:
            empty = self.menu.addAction("No styles yet")
            empty.setEnabled(False)
        for style in styles:
            action = self.menu.addAction(style.name.replace("&", "&&"))
            action.setCheckable(True)
            action.setChecked(style.name in self._selected)
            action.setToolTip(style.prompt + (f"\nNegative: {style.negative_prompt}" if style.negative_prompt else ""))
            action.toggled.connect(lambda on, n=style.name: self.toggle(n, on))
        self.menu.setToolTipsVisible(True)
        self.menu.addSeparator()
        clear = self.menu.addAction("Clear the selection")
        clear.setEnabled(bool(self._selected))
        clear.triggered.connect(lambda: self.set_selected([]))
        self.menu.addAction("Save the prompt as a style...").triggered.connect(self.ask_save)
        self.menu.addAction("Import from AUTOMATIC1111...").triggered.connect(self.ask_import)
        remove = self.menu.addMenu("Remove a style")
        remove.setEnabled(bool(styles))
        for style in styles:
            remove.addAction(style.name.replace("&", "&&")).triggered.connect(
                lambda _checked=False, n=style.name: self.remove(n))

    def ask_save(self) -> None:
        name, ok = QInputDialog.getText(self, "Save as style", "Style name (an existing one is replaced):")
        if ok and name.strip():
            prompt, negative = self.prompt_source()
            self.save(name.strip(), prompt, negative)

    def ask_import(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "The AUTOMATIC1111 folder (stable-diffusion-webui)")
        if folder:
            self.import_from(folder)

    # -- actions (also called by tests and other front ends) ---------------------------------
    def save(self, name: str, prompt: str, negative: str) -> bool:
        try:
            self.book.put(PromptStyle(name, prompt, negative))
        except UserFacingError as exc:
            self.message.emit(str(exc))
            return False
        finally:
            self.reload()
        self.message.emit(f"Saved the style {name!r}.")
        return True

    def import_from(self, location: str) -> bool:
        try:
            added, skipped = self.book.import_file(location)
        except UserFacingError as exc:
            self.message.emit(str(exc))
            return False
        finally:
            self.reload()
        text = f"Imported {len(added)} style(s) from AUTOMATIC1111."
        if skipped:
            text += f" Kept your own for: {', '.join(skipped)}."
        self.message.emit(text)
        return True

    def remove(self, name: str) -> None:
        try:
            self.book.remove(name)
        except UserFacingError as exc:
            self.message.emit(str(exc))
            return
        finally:
            self.reload()
        self.toggle(name, False)
        self.message.emit(f"Removed the style {name!r}.")
