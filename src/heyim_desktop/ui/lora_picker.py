"""The LoRA picker beside the model picker, and the embeddings menu.

The prompt is the single source of truth: the picker's rows are the prompt's
``<lora:NAME:WEIGHT>`` tags. Choosing a LoRA, moving its slider or removing it rewrites the
tag (:func:`~heyim_desktop.core.lora.set_lora_tag`); editing the tags in the prompt rebuilds
the rows. Requests from the window and the tray go through :meth:`LoraPicker.resolve`, so
the tags become files from the model library (or a clear error naming the unknown one).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from heyim_desktop.core.lora import LORA_TAG, WEIGHT_RANGE, set_lora_tag, strip_lora_tags
from heyim_desktop.ui.qt import (
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QSlider,
    Qt,
    QToolButton,
    QVBoxLayout,
    QWidget,
    Signal,
)

if TYPE_CHECKING:
    from heyim_desktop.core.capabilities import Capabilities, Recommended
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.models.library import ModelLibrary
    from heyim_desktop.models.networks import NetworkLibrary
    from heyim_desktop.models.types import ModelInfo

log = logging.getLogger(__name__)

#: The slider's reach (the spin box beside it takes the full -10..10 range).
SLIDER_RANGE = (-2.0, 2.0)
SLIDER_STEPS = 100  # per 1.0 of weight
FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "SD1": "SD 1.x", "SD2": "SD 2.x", "SDXL": "SDXL",
                "zimage": "Z-Image", "flux2": "FLUX.2 [klein]", "sd3": "SD 3.5"}
#: The library's base labels of family LoRAs, as Capabilities.family keys.
_FAMILY_KEYS = {"sd1": "sd1", "sd2": "sd2", "sdxl": "sdxl", "z-image": "zimage", "flux.2 [klein]": "flux2",
                "sd 3.5": "sd3"}


def incompatibility(info: "ModelInfo", capabilities: "Capabilities | None") -> str:
    """Why ``info`` (a library LoRA) cannot be used with the loaded model; "" when it can."""
    if not info.ready:
        return info.problem or "this file cannot be used"
    if capabilities is None:
        return ""
    if not capabilities.runtime_lora:
        return "the loaded model is compiled (Core ML): bake LoRAs in with File > Convert to Core ML"
    base = _FAMILY_KEYS.get(info.base.lower())
    family = capabilities.family
    if base is not None and family in FAMILY_NAMES and base != family:
        return f"made for {FAMILY_NAMES[base]}; the loaded model is {FAMILY_NAMES[family]}"
    return ""


def few_step_recommendation(name: str, path: str | None) -> "Recommended | None":
    """LCM-LoRA, Hyper-SD, Lightning and the like: what they are made for, by name or metadata."""
    from heyim_desktop.core.recommended import describe, recommended_for

    names = [name]
    if path:
        try:
            from heyim_desktop.core.model_files import read_safetensors_header

            meta = read_safetensors_header(Path(path)).metadata
            names += [str(meta[k]) for k in ("ss_output_name", "modelspec.title", "ss_training_comment")
                      if isinstance(meta.get(k), str)]
        except Exception as exc:  # noqa: BLE001 - a recommendation is a nicety; the file may be odd
            log.debug("no metadata for %s: %s", path, exc)
    for candidate in names:
        rec = recommended_for(candidate)
        if describe(rec):
            return rec
    return None


class LoraRow(QWidget):
    """One chosen LoRA: its name, a weight slider with a spin box, and a remove button."""

    weight_changed = Signal(str, float)
    removed = Signal(str)

    def __init__(self, name: str, weight: float, problem: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.label = QLabel(name)
        self.label.setMinimumWidth(110)
        if problem:
            self.label.setEnabled(False)
            self.label.setText(f"{name} ⚠")
        self.label.setToolTip(problem or name)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(int(SLIDER_RANGE[0] * SLIDER_STEPS), int(SLIDER_RANGE[1] * SLIDER_STEPS))
        self.slider.setAccessibleName(f"Weight of {name}")
        self.spin = QDoubleSpinBox()
        self.spin.setRange(*WEIGHT_RANGE)
        self.spin.setSingleStep(0.05)
        self.spin.setDecimals(2)
        self.spin.setAccessibleName(f"Weight of {name} (number)")
        self.remove = QToolButton()
        self.remove.setText("✕")
        self.remove.setToolTip(f"Remove {name} (and its tag from the prompt)")
        self.remove.setAccessibleName(f"Remove {name}")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 2)
        layout.addWidget(self.slider, 3)
        layout.addWidget(self.spin)
        layout.addWidget(self.remove)
        self.set_weight(weight)
        self.slider.valueChanged.connect(lambda v: self._edited(v / SLIDER_STEPS))
        self.spin.valueChanged.connect(self._edited)
        self.remove.clicked.connect(lambda: self.removed.emit(self.name))

    def weight(self) -> float:
        return round(float(self.spin.value()), 2)

    def set_weight(self, weight: float) -> None:
        for box in (self.slider, self.spin):
            box.blockSignals(True)
        self.spin.setValue(weight)
        lo, hi = SLIDER_RANGE
        self.slider.setValue(int(round(min(max(weight, lo), hi) * SLIDER_STEPS)))
        for box in (self.slider, self.spin):
            box.blockSignals(False)

    def _edited(self, value: float) -> None:
        value = round(float(value), 2)
        self.set_weight(value)  # the other control follows
        self.weight_changed.emit(self.name, value)


class LoraPicker(QWidget):
    """Search the library's LoRAs, choose some, weigh them; embeddings from a menu."""

    #: A line for the status bar.
    message = Signal(str)
    #: A banner: LoRAs an image used that the library does not have.
    missing = Signal(str)
    #: A chosen few-step LoRA's recommended settings (a Recommended).
    recommended = Signal(object)

    def __init__(self, prompt: Any, negative: Any, library: Callable[[], "ModelLibrary"],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.prompt, self.negative = prompt, negative
        self.library = library
        self.capabilities: Capabilities | None = None
        self._infos: list[ModelInfo] = []
        self._writing = False
        self.rows: list[LoraRow] = []

        self.search = QLineEdit()
        self.search.setPlaceholderText("Search LoRAs by name")
        self.search.setClearButtonEnabled(True)
        self.search.setAccessibleName("Search LoRAs")
        self.browse = QToolButton()
        self.browse.setText("LoRAs")
        self.browse.setCheckable(True)
        self.browse.setToolTip("Show the LoRAs in the model library")
        self.embeddings_button = QToolButton()
        self.embeddings_button.setText("Embeddings")
        self.embeddings_button.setToolTip("Insert a textual-inversion embedding's word into the prompt")
        self.embeddings_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.embeddings_menu = QMenu(self.embeddings_button)
        self.embeddings_menu.aboutToShow.connect(self.fill_embeddings_menu)
        self.embeddings_button.setMenu(self.embeddings_menu)
        self.available = QListWidget()
        self.available.setAccessibleName("LoRAs in the library")
        self.available.setMaximumHeight(110)
        self.available.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.available.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.available.setVisible(False)
        self.rows_box = QVBoxLayout()
        self.rows_box.setContentsMargins(0, 0, 0, 0)

        head = QHBoxLayout()
        head.setContentsMargins(0, 0, 0, 0)
        head.addWidget(self.browse)
        head.addWidget(self.search, 1)
        head.addWidget(self.embeddings_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.available)
        layout.addLayout(self.rows_box)

        self.search.textChanged.connect(self._filter)
        self.browse.toggled.connect(lambda on: self._show_list())
        self.available.itemActivated.connect(self._item_chosen)
        self.available.itemDoubleClicked.connect(self._item_chosen)
        self.prompt.textChanged.connect(self.sync_from_prompt)

    # -- the library ----------------------------------------------------------------------
    def networks(self) -> "NetworkLibrary":
        from heyim_desktop.models.networks import NetworkLibrary

        return NetworkLibrary(self.library())

    def refresh(self) -> None:
        """Read the library's LoRAs again."""
        try:
            self._infos = self.networks().loras()
        except Exception:  # noqa: BLE001 - a bad folder must not break the window
            log.exception("listing LoRAs failed")
            self._infos = []
        self._fill()
        self.sync_from_prompt()

    def set_model(self, capabilities: "Capabilities | None") -> None:
        """The loaded model changed: grey what it cannot use."""
        self.capabilities = capabilities
        self.refresh()

    def _info(self, name: str) -> "ModelInfo | None":
        exact = [m for m in self._infos if m.name == name]
        folded = exact or [m for m in self._infos if m.name.lower() == name.lower()]
        return folded[0] if folded else None

    def _fill(self) -> None:
        self.available.clear()
        for info in self._infos:
            problem = incompatibility(info, self.capabilities)
            label = f"{info.name}   ·  {FAMILY_NAMES.get(info.base, info.base)}"
            item = QListWidgetItem(label + (f"   ({problem})" if problem else ""))
            item.setData(Qt.ItemDataRole.UserRole, info.name)
            item.setToolTip(problem or f"{info.ref}\nDouble-click (or Enter) to add it to the prompt")
            if problem:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
            self.available.addItem(item)
        if not self._infos:
            item = QListWidgetItem("No LoRAs: put .safetensors files in a Lora folder of a model folder")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.available.addItem(item)
        self._filter(self.search.text())

    def _filter(self, text: str) -> None:
        needle = text.strip().lower()
        for i in range(self.available.count()):
            item = self.available.item(i)
            name = str(item.data(Qt.ItemDataRole.UserRole) or "")
            item.setHidden(bool(needle) and needle not in name.lower())
        self._show_list()

    def _show_list(self) -> None:
        self.available.setVisible(self.browse.isChecked() or bool(self.search.text().strip()))

    def _item_chosen(self, item: QListWidgetItem) -> None:
        name = item.data(Qt.ItemDataRole.UserRole)
        if name and item.flags() & Qt.ItemFlag.ItemIsEnabled:
            self.choose(str(name))

    # -- prompt <-> rows ------------------------------------------------------------------
    def choose(self, name: str, weight: float | None = None) -> None:
        """Add ``name`` (or set its weight): the prompt gets or updates its tag."""
        info = self._info(name)
        if info is not None and (problem := incompatibility(info, self.capabilities)):
            self.message.emit(f"{name} cannot be used: {problem}.")
            return
        current = dict(self.chosen())
        self._write(set_lora_tag(self.prompt.toPlainText(), name, weight if weight is not None
                                 else current.get(name, 1.0)))
        rec = few_step_recommendation(name, info.ref if info else None)
        if rec is not None:
            self.recommended.emit(rec)

    def remove(self, name: str) -> None:
        self._write(set_lora_tag(self.prompt.toPlainText(), name, None))

    def chosen(self) -> list[tuple[str, float]]:
        """The prompt's LoRAs in order, each once (the first tag of a name counts)."""
        _, tags = strip_lora_tags(self.prompt.toPlainText())
        seen: dict[str, float] = {}
        for name, weight in tags:
            seen.setdefault(name, weight)
        return list(seen.items())

    def _write(self, text: str) -> None:
        cursor = self.prompt.textCursor()
        position = cursor.position()
        self._writing = True
        try:
            self.prompt.setPlainText(text)
        finally:
            self._writing = False
        cursor = self.prompt.textCursor()
        cursor.setPosition(min(position, len(text)))
        self.prompt.setTextCursor(cursor)
        self.sync_from_prompt()

    def sync_from_prompt(self) -> None:
        if self._writing:
            return
        chosen = self.chosen()
        if [r.name for r in self.rows] == [n for n, _ in chosen]:
            for row, (_, weight) in zip(self.rows, chosen):
                if row.weight() != round(weight, 2):
                    row.set_weight(weight)
            return
        for row in self.rows:
            self.rows_box.removeWidget(row)
            row.deleteLater()
        self.rows = []
        for name, weight in chosen:
            info = self._info(name)
            problem = "not in the model library" if info is None else incompatibility(info, self.capabilities)
            row = LoraRow(name, weight, problem)
            row.weight_changed.connect(lambda n, w: self._write(set_lora_tag(self.prompt.toPlainText(), n, w)))
            row.removed.connect(self.remove)
            self.rows_box.addWidget(row)
            self.rows.append(row)

    # -- embeddings -----------------------------------------------------------------------
    def fill_embeddings_menu(self) -> None:
        self.embeddings_menu.clear()
        try:
            found = self.networks().embeddings()
        except Exception:  # noqa: BLE001
            log.exception("listing embeddings failed")
            found = {}
        if not found:
            action = self.embeddings_menu.addAction("No embeddings: put them in an embeddings folder")
            action.setEnabled(False)
            return
        for word in sorted(found, key=str.lower):
            sub = self.embeddings_menu.addMenu(word.replace("&", "&&"))
            sub.addAction("Add to Prompt").triggered.connect(lambda _c=False, w=word: self.insert_embedding(w))
            sub.addAction("Add to Negative Prompt").triggered.connect(
                lambda _c=False, w=word: self.insert_embedding(w, negative=True))

    def insert_embedding(self, word: str, *, negative: bool = False) -> None:
        """Append ``word`` to the prompt (or negative prompt) unless it is already there."""
        edit = self.negative if negative else self.prompt
        text = edit.toPlainText()
        if re.search(rf"(?<![\w\-.]){re.escape(word)}(?![\w\-.])", text, re.IGNORECASE):
            self.message.emit(f"{word} is already in the {'negative ' if negative else ''}prompt.")
            return
        edit.setPlainText(f"{text.rstrip().rstrip(',')}, {word}" if text.strip() else word)

    # -- requests and reuse ---------------------------------------------------------------
    def resolve(self, request: "GenerationRequest") -> "GenerationRequest":
        """``request`` with its tags as library files (InvalidRequest naming unknown LoRAs)."""
        from heyim_desktop.core.lora import resolve_networks

        return resolve_networks(request, self.networks().finder())

    def reuse(self, lora_hashes: str = "") -> list[str]:
        """After an image's prompt was loaded: point its tags at the library's files (by the
        ``Lora hashes`` hash first, then by name); returns the names the library lacks."""
        from heyim_desktop.core.lora import lora_hash, parse_network_hashes

        text = self.prompt.toPlainText()
        tags = [m.group(2).strip() for m in LORA_TAG.finditer(text)]
        if not tags:
            return []
        self.refresh()
        wanted = {k.lower(): v.lower() for k, v in parse_network_hashes(lora_hashes).items()}
        by_hash: dict[str, str] = {}
        if wanted:
            for info in self._infos:
                if info.ready:
                    try:
                        by_hash.setdefault(lora_hash(info.ref), info.name)
                    except OSError:
                        continue
        renamed: dict[str, str] = {}
        missing: list[str] = []
        for name in dict.fromkeys(tags):
            match = by_hash.get(wanted.get(name.lower(), ""))
            if match is None:
                known = self._info(name)
                match = known.name if known is not None and known.ready else None
            if match is None:
                missing.append(name)
            elif match != name:
                renamed[name] = match

        def rename(m: re.Match[str]) -> str:
            new = renamed.get(m.group(2).strip())
            return m.group(0) if new is None else m.group(0).replace(m.group(2), new, 1)

        if renamed:
            self._write(LORA_TAG.sub(rename, text))
        if missing:
            self.missing.emit(f"This image used LoRA{'s' if len(missing) > 1 else ''} the library does not have: "
                              f"{', '.join(missing)}. Add the file{'s' if len(missing) > 1 else ''} to a Lora folder "
                              "of a model folder (File > Models...), then generate.")
        return missing


def attach(window: Any) -> LoraPicker:
    """Build the picker into ``window`` (a MainWindow) under the model picker and wire it."""
    from heyim_desktop.models.library import ModelLibrary

    picker = LoraPicker(window.prompt_panel.prompt, window.prompt_panel.negative,
                        lambda: ModelLibrary(window.prefs.model_folders))
    window.settings_panel.layout().insertRow(1, "LoRAs", picker)
    window.worker.model_ready.connect(lambda info: picker.set_model(getattr(info, "capabilities", None)))
    window.worker.model_failed.connect(lambda *_: picker.set_model(None))
    window.settings_panel.refresh_models_button.clicked.connect(picker.refresh)
    picker.message.connect(window.status)
    picker.missing.connect(lambda text: window.show_error(text, offer_logs=False, kind="warning"))

    def recommend(rec: "Recommended") -> None:
        from heyim_desktop.core.recommended import describe

        window.settings_panel.show_recommended(rec)
        window.status(f"This LoRA is made for {describe(rec)}: press Use beside \"Made for\" to set it.")

    picker.recommended.connect(recommend)
    picker.refresh()
    return picker
