"""The ControlNet panel: units with a control image, model, preprocessor, weight and steps range.

Each unit shows the processed control map as soon as the image or a parameter changes
(computed off the UI thread, a moment after the last change), so what the ControlNet will
see is checked before generating.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from heyim_desktop.core.control_preprocess import (
    LAMA,
    NETWORK_PREPROCESSORS,
    NETWORK_SPECS,
    PREPROCESSORS,
    RESIZE_MODES,
    Preprocessor,
    network_hint,
)
from heyim_desktop.core.controlnet import CONTROL_MODES, MAX_UNITS
from heyim_desktop.ui.qt import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QImage,
    QLabel,
    QMimeData,
    QPixmap,
    QPushButton,
    QSpinBox,
    Qt,
    QTimer,
    QVBoxLayout,
    QWidget,
    Signal,
)
from heyim_desktop.ui.tasks import pil_to_qimage, qimage_to_pil, run_in_background

log = logging.getLogger(__name__)

THUMB = 128
#: Wait this long after the last change before recomputing the preview (ms).
PREVIEW_DELAY_MS = 250
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff);;All files (*)"


def _thumb(image: Any) -> QPixmap:
    small = image.convert("RGB").copy()
    small.thumbnail((THUMB, THUMB))
    return QPixmap.fromImage(pil_to_qimage(small))


class ImageWell(QLabel):
    """A square that takes a dropped or pasted image."""

    dropped = Signal(object)  # QMimeData

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.setAcceptDrops(True)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setFixedSize(THUMB, THUMB)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setWordWrap(True)

    def dragEnterEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        mime = event.mimeData()
        if mime.hasUrls() or mime.hasImage():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        self.dropped.emit(event.mimeData())
        event.acceptProposedAction()


class ControlUnitEditor(QFrame):
    """One ControlNet unit."""

    #: The processed control map is shown (tests wait on it); carries the PIL image or None.
    preview_ready = Signal(object)
    #: The control image was set, loaded or cleared (carries the PIL image or None).
    image_changed = Signal(object)
    remove_requested = Signal(object)
    failed = Signal(str)

    def __init__(self, index: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.image: Any = None  # PIL image
        #: Network preprocessor -> what in the library enables it ("" when nothing does).
        self.annotators: dict[str, str] = {}
        self._generation = 0
        self._loading = 0  # the latest image load or set wins
        self.title = QLabel()
        self.enabled = QCheckBox("Enabled")
        self.enabled.setChecked(True)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(self))
        self.model = QComboBox()
        self.model.setAccessibleName("ControlNet model")
        self.preprocessor = QComboBox()
        self.preprocessor.setAccessibleName("Preprocessor")
        # Long labels (a model's marks, a disabled choice naming the file it needs) show in the list,
        # not in the closed box: the box never widens the window's left column past its scroll area.
        for combo in (self.model, self.preprocessor):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(16)
            combo.currentTextChanged.connect(combo.setToolTip)  # the whole name when the box cuts it
        for p in PREPROCESSORS.values():
            self.preprocessor.addItem(p.label, p.name)
        for net in NETWORK_PREPROCESSORS:
            self.preprocessor.addItem(net.label, net.name)
        self.set_network_preprocessors({})
        self.resolution = QSpinBox()
        self.resolution.setRange(64, 2048)
        self.resolution.setSingleStep(64)
        self.resolution.setValue(512)
        self.resolution.setToolTip("The detector runs at this short side; the map is then fitted to the image size")
        self.pixel_perfect = QCheckBox("Pixel perfect")
        self.pixel_perfect.setToolTip("Run the detector at the resolution the image size asks for (the ControlNet "
                                      "extension's Pixel Perfect); the preview keeps using the resolution above")
        self.pixel_perfect.toggled.connect(lambda _on: self._resolution_state())
        self.slider_a, self.slider_b = QDoubleSpinBox(), QDoubleSpinBox()
        self.label_a, self.label_b = QLabel(), QLabel()
        self.weight = QDoubleSpinBox()
        self.weight.setRange(0.0, 2.0)
        self.weight.setSingleStep(0.05)
        self.weight.setValue(1.0)
        self.start, self.end = QDoubleSpinBox(), QDoubleSpinBox()
        for spin, value in ((self.start, 0.0), (self.end, 1.0)):
            spin.setRange(0.0, 1.0)
            spin.setSingleStep(0.05)
            spin.setValue(value)
        self.start.setToolTip("Fraction of the steps after which this ControlNet starts acting")
        self.end.setToolTip("Fraction of the steps after which this ControlNet stops acting")
        self.mode = QComboBox()
        for key, words in CONTROL_MODES.items():
            self.mode.addItem(words, key)
        self.resize_mode = QComboBox()
        self.resize_mode.addItems(list(RESIZE_MODES))
        self.resize_mode.setCurrentText("Crop and Resize")

        self.well = ImageWell("Drop a control image\nor a photo")
        self.well.dropped.connect(self.load_mime)
        self.preview = QLabel("The processed map\nappears here")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setFixedSize(THUMB, THUMB)
        self.preview.setFrameShape(QFrame.Shape.StyledPanel)
        self.preview.setWordWrap(True)
        self.open_button = QPushButton("Open...")
        self.open_button.clicked.connect(self.choose_file)
        self.paste_button = QPushButton("Paste")
        self.paste_button.clicked.connect(self.paste)
        self.note = QLabel()
        self.note.setWordWrap(True)

        head = QHBoxLayout()
        head.addWidget(self.title)
        head.addWidget(self.enabled)
        head.addStretch(1)
        head.addWidget(self.remove_button)
        images = QHBoxLayout()
        images.addWidget(self.well)
        images.addWidget(self.preview)
        image_buttons = QHBoxLayout()
        image_buttons.addWidget(self.open_button)
        image_buttons.addWidget(self.paste_button)
        image_buttons.addStretch(1)
        form = QFormLayout()
        form.addRow("Model", self.model)
        form.addRow("Preprocessor", self.preprocessor)
        res_row = QHBoxLayout()
        res_row.addWidget(self.resolution)
        res_row.addWidget(self.pixel_perfect)
        form.addRow("Resolution", res_row)
        form.addRow(self.label_a, self.slider_a)
        form.addRow(self.label_b, self.slider_b)
        form.addRow("Weight", self.weight)
        steps = QHBoxLayout()
        steps.addWidget(self.start)
        steps.addWidget(QLabel("to"))
        steps.addWidget(self.end)
        form.addRow("Steps", steps)
        form.addRow("Control mode", self.mode)
        form.addRow("Resize", self.resize_mode)
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addLayout(images)
        layout.addLayout(image_buttons)
        layout.addLayout(form)
        layout.addWidget(self.note)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(PREVIEW_DELAY_MS)
        self._timer.timeout.connect(self.update_preview)
        self.preprocessor.currentIndexChanged.connect(self._preprocessor_changed)
        for spin in (self.slider_a, self.slider_b):
            spin.valueChanged.connect(lambda _v: self._timer.start())
        self.resolution.valueChanged.connect(lambda _v: self._timer.start())
        self.set_index(index)
        self._preprocessor_changed()

    def set_index(self, index: int) -> None:
        self.index = index
        self.title.setText(f"<b>ControlNet {index}</b>")

    # -- models and preprocessors --------------------------------------------------------
    def set_models(self, models: Sequence[Any]) -> None:
        current = self.model.currentData()
        self.model.clear()
        ready = [m for m in models if m.ready]
        for m in ready:
            self.model.addItem(model_label(m), m.ref)
        if not ready:
            self.model.addItem("No ControlNet: put one in models/ControlNet", "")
        for m in models:  # found but unusable: listed, greyed, with the reason (never chosen: no data)
            if not m.ready:
                self.model.addItem(f"{m.name} (cannot be used: {m.status.value})")
                item = self.model.model().item(self.model.count() - 1)  # type: ignore[attr-defined]
                item.setEnabled(False)
                item.setToolTip(m.problem or m.status.value)
        i = self.model.findData(current)
        if i >= 0:
            self.model.setCurrentIndex(i)

    def set_network_preprocessors(self, available: dict[str, str]) -> None:
        """Offer the network preprocessors whose model ``available`` names (name -> its path)."""
        self.annotators = {name: path for name, path in available.items() if path}
        for net in NETWORK_PREPROCESSORS:
            i = self.preprocessor.findData(net.name)
            item = self.preprocessor.model().item(i)  # type: ignore[attr-defined]
            found = bool(available.get(net.name))
            item.setEnabled(found and net.runs)
            if found and net.runs:
                item.setText(net.label)
                item.setToolTip(f"Runs the model in {available[net.name]}")
            elif found:
                item.setText(f"{net.label} ({net.weights} found; HeyIm cannot run it yet: make the map elsewhere)")
                item.setToolTip("Make the map elsewhere and choose None")
            elif net.name == LAMA:
                item.setText(f"{net.label} (needs ControlNetLama.safetensors or big-lama.safetensors in "
                             "models/ControlNet/annotator)")
                item.setToolTip(network_hint(net.name))
            elif net.runs:
                what = "a depth model" if net.control_type == "Depth" else net.weights
                item.setText(f"{net.label} (needs {what} in models/ControlNet/annotator)")
                item.setToolTip(f"{network_hint(net.name)}; or make the map elsewhere and choose None")
            else:
                item.setText(f"{net.label} (needs {net.weights})")
                item.setToolTip(f"Put {net.weights} in models/ControlNet/annotator; HeyIm does not run it yet, so "
                                "make the map elsewhere and choose None")

    def _spec(self) -> Preprocessor:
        name = self.preprocessor.currentData() or "none"
        return PREPROCESSORS.get(name) or NETWORK_SPECS.get(name) or PREPROCESSORS["none"]

    def _preprocessor_changed(self, _index: int = 0) -> None:
        spec = self._spec()
        for spin, label, slider in ((self.slider_a, self.label_a, spec.slider_a), (self.slider_b, self.label_b, spec.slider_b)):
            visible = slider is not None
            spin.setVisible(visible)
            label.setVisible(visible)
            if slider is not None:
                spin.blockSignals(True)
                spin.setDecimals(2 if slider.step < 1 else 0)
                spin.setRange(slider.minimum, slider.maximum)
                spin.setSingleStep(slider.step)
                spin.setValue(slider.default)
                spin.blockSignals(False)
                label.setText(slider.label)
        self._resolution_state()
        note = "Uses the inpainting mask of the input image: masked pixels reach the ControlNet as -1." if spec.needs_mask else ""
        if spec.name == LAMA:
            note += " LaMa fills the masked area first (when generating); its fill also seeds the starting noise."
        self.note.setText(note)
        self._timer.start()

    def _resolution_state(self) -> None:
        spec = self._spec()
        self.pixel_perfect.setEnabled(spec.uses_resolution)
        self.resolution.setEnabled(spec.uses_resolution and not self.pixel_perfect.isChecked())

    # -- the control image ---------------------------------------------------------------
    def set_image(self, image: Any) -> None:
        self._loading += 1
        self._show_image(image)

    def _show_image(self, image: Any) -> None:
        self.image = image
        if image is None:
            self.well.setPixmap(QPixmap())
            self.well.setText("Drop a control image\nor a photo")
        else:
            self.well.setPixmap(_thumb(image))
        self._timer.start()
        self.image_changed.emit(image)

    def load_file(self, path: Path) -> None:
        """Load ``path`` off the UI thread; a later image set or load supersedes it."""
        from heyim_desktop.core.images import load_image

        self._loading += 1
        loading = self._loading

        def done(image: Any) -> None:
            if loading == self._loading:
                self._show_image(image)

        run_in_background(lambda: load_image(path), done, self._failed)

    def load_mime(self, mime: QMimeData) -> None:
        urls = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()] if mime.hasUrls() else []
        if urls:
            self.load_file(Path(urls[0]))
        elif mime.hasImage():
            image = QImage(mime.imageData())
            if not image.isNull():
                self.set_image(qimage_to_pil(image))
        else:
            self.failed.emit("That is not an image.")

    def paste(self) -> None:
        from heyim_desktop.ui.qt import QGuiApplication

        mime = QGuiApplication.clipboard().mimeData()
        if mime is None or not (mime.hasImage() or mime.hasUrls()):
            self.failed.emit("The clipboard holds no image or image file.")
            return
        self.load_mime(mime)

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a control image", "", IMAGE_FILTER)
        if path:
            self.load_file(Path(path))

    def _failed(self, exc: BaseException) -> None:
        self.failed.emit(str(exc))

    # -- preview -------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        spec = self._spec()
        return {
            "preprocessor": spec.name,
            "processor_res": self.resolution.value() if spec.uses_resolution else -1,
            "threshold_a": self.slider_a.value() if spec.slider_a else -1.0,
            "threshold_b": self.slider_b.value() if spec.slider_b else -1.0,
        }

    def _annotator(self, name: str) -> str:
        from heyim_desktop.core.errors import InvalidRequest

        if name not in NETWORK_SPECS:
            return ""
        found = self.annotators.get(name, "")
        if not found:
            raise InvalidRequest("controlnet.module", f"ControlNet {self.index}: {network_hint(name)}")
        return found

    def update_preview(self) -> None:
        from heyim_desktop.core.control_preprocess import detect

        if self.image is None:
            self.preview.setPixmap(QPixmap())
            self.preview.setText("The processed map\nappears here")
            self.preview_ready.emit(None)
            return
        self._generation += 1
        generation, image, p = self._generation, self.image, self.params()

        annotator = self.annotators.get(p["preprocessor"], "")

        def work() -> Any:
            # Depth runs here on the CPU for the preview only; the generation's map is made by the engine.
            return detect(image, p["preprocessor"], processor_res=p["processor_res"],
                          threshold_a=p["threshold_a"], threshold_b=p["threshold_b"], annotator=annotator)

        def done(result: Any) -> None:
            if generation == self._generation:  # a later change supersedes this one
                self.preview.setPixmap(_thumb(result))
                self.preview_ready.emit(result)

        def failed(exc: BaseException) -> None:
            if generation == self._generation:  # no earlier map stays as if it were this one's
                self.preview.setPixmap(QPixmap())
                self.preview.setText("No map: the\npreprocessor failed")
                self.preview.setToolTip(str(exc))
            self._failed(exc)

        self.preview.setToolTip("")
        run_in_background(work, done, failed)

    # -- the unit ------------------------------------------------------------------------
    def unit(self) -> Any:
        """The :class:`ControlUnit` these fields describe (errors name this unit)."""
        from heyim_desktop.core.controlnet import ControlUnit
        from heyim_desktop.core.errors import InvalidRequest

        model = self.model.currentData()
        if not model:
            raise InvalidRequest("controlnet", f"ControlNet {self.index}: choose a ControlNet model "
                                 "(put one in models/ControlNet and refresh)")
        return ControlUnit(model=model, image=self.image, weight=self.weight.value(), start=self.start.value(),
                           end=self.end.value(), mode=self.mode.currentData(), resize_mode=self.resize_mode.currentText(),
                           pixel_perfect=self.pixel_perfect.isChecked(),
                           annotator=self._annotator(self.params()["preprocessor"]), **self.params())

    def apply(self, settings: dict[str, Any]) -> None:
        """Fields from a unit's settings (history, infotext); the model by path or name."""
        model = settings.get("model")
        if isinstance(model, str):
            i = self.model.findData(model)
            if i < 0:
                i = next((k for k in range(self.model.count())
                          if Path(str(self.model.itemData(k) or "")).stem == model
                          or Path(str(self.model.itemData(k) or "")).name == model), -1)
            if i >= 0:
                self.model.setCurrentIndex(i)
        module = settings.get("preprocessor", settings.get("module"))
        if isinstance(module, str) and self.preprocessor.findData(module) >= 0:
            self.preprocessor.setCurrentIndex(self.preprocessor.findData(module))
        for key, spin in (("weight", self.weight), ("start", self.start), ("end", self.end),
                          ("guidance_start", self.start), ("guidance_end", self.end),
                          ("threshold_a", self.slider_a), ("threshold_b", self.slider_b)):
            value = settings.get(key)
            if isinstance(value, (int, float)) and value >= 0:
                spin.setValue(float(value))
        res = settings.get("processor_res")
        if isinstance(res, int) and res > 0:
            self.resolution.setValue(res)
        mode = settings.get("mode", settings.get("control_mode"))
        if isinstance(mode, str) and self.mode.findData(mode) >= 0:
            self.mode.setCurrentIndex(self.mode.findData(mode))
        resize = settings.get("resize_mode")
        if isinstance(resize, str) and resize in RESIZE_MODES:
            self.resize_mode.setCurrentText(resize)
        perfect = settings.get("pixel_perfect")
        if isinstance(perfect, bool):
            self.pixel_perfect.setChecked(perfect)


class ControlNetPanel(QGroupBox):
    """Up to four ControlNet units; ``units()`` is what the request gets."""

    failed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("ControlNet", parent)
        self.editors: list[ControlUnitEditor] = []
        self.models: list[Any] = []
        self.network: dict[str, str] = {}
        self._listing = 0
        self.add_button = QPushButton("Add ControlNet")
        self.add_button.setToolTip("Guide the composition by edges, a scribble, a depth or pose map, or a tile")
        self.add_button.clicked.connect(lambda: self.add_unit())
        self.hint = QLabel("No ControlNet: the prompt alone decides the composition.")
        self.hint.setWordWrap(True)
        self.body = QVBoxLayout()
        layout = QVBoxLayout(self)
        layout.addWidget(self.hint)
        layout.addLayout(self.body)
        layout.addWidget(self.add_button)

    def refresh(self, source: Callable[[], tuple[list[Any], dict[str, str]]]) -> None:
        """Re-read the ControlNets (and annotator weights) off the UI thread; the latest read wins."""
        self._listing += 1
        listing = self._listing

        def done(found: tuple[list[Any], dict[str, str]]) -> None:
            if listing == self._listing:
                self.set_models(*found)

        run_in_background(source, done, lambda exc: log.warning("listing ControlNets failed: %s", exc))

    def set_models(self, models: Sequence[Any], network: dict[str, str] | None = None) -> None:
        self.models = list(models)
        self.network = dict(network or {})
        for editor in self.editors:
            editor.set_models(self.models)
            editor.set_network_preprocessors(self.network)

    def add_unit(self, position: int | None = None) -> ControlUnitEditor | None:
        """A new unit, last or at ``position``; None (and a message) when the panel is full."""
        if len(self.editors) >= MAX_UNITS:
            self.failed.emit(f"At most {MAX_UNITS} ControlNets per image.")
            return None
        at = len(self.editors) if position is None else max(0, min(position, len(self.editors)))
        editor = ControlUnitEditor(at)
        editor.set_models(self.models)
        editor.set_network_preprocessors(self.network)
        editor.remove_requested.connect(self.remove_unit)
        editor.failed.connect(self.failed)
        self.editors.insert(at, editor)
        self.body.insertWidget(at, editor)
        for i, e in enumerate(self.editors):
            e.set_index(i)
        self._update()
        return editor

    def remove_unit(self, editor: ControlUnitEditor) -> None:
        if editor in self.editors:
            self.editors.remove(editor)
            self.body.removeWidget(editor)
            editor.deleteLater()
            for i, e in enumerate(self.editors):
                e.set_index(i)
            self._update()

    def _update(self) -> None:
        self.hint.setVisible(not self.editors)
        self.add_button.setEnabled(len(self.editors) < MAX_UNITS)

    def units(self) -> tuple[Any, ...]:
        return tuple(e.unit() for e in self.editors if e.enabled.isChecked())

    def apply(self, units: Sequence[dict[str, Any]], images: Sequence[Path | None] | None = None) -> None:
        """Settings back into the editors: one per recorded unit.

        Without ``images`` (a dropped PNG's infotext) the editors are filled in place and their
        control images stay. With ``images`` (a history entry) the recorded units come first, each
        with its kept control image or none (it used the input image); of the editors there were,
        those holding a control image stay after them, unticked (the request is the recorded one
        and the user's image is not lost, while there is room), the others go."""
        units = [u for u in list(units)[:MAX_UNITS] if isinstance(u, dict)]
        if images is None:
            for editor in list(self.editors[len(units):]):
                if editor.image is None:
                    self.remove_unit(editor)
            for i, settings in enumerate(units):
                filled = self.editors[i] if i < len(self.editors) else self.add_unit()
                if filled is not None:
                    filled.apply(settings)
            return
        for old in list(self.editors):
            if old.image is None or len(self.editors) + len(units) > MAX_UNITS:
                self.remove_unit(old)
            else:
                old.enabled.setChecked(False)
        for i, settings in enumerate(units):
            added = self.add_unit(position=i)
            if added is None:
                continue
            added.apply(settings)
            path = images[i] if i < len(images) else None
            if path is not None:
                added.load_file(Path(path))

    def reuse(self, entry: Any) -> None:
        """Reuse Settings of a history entry: its units with the control images kept with it."""
        settings = getattr(entry, "settings", None)
        units = settings.get("controlnet") if isinstance(settings, dict) else None
        units = units if isinstance(units, list) else []
        files = entry.control_files() if hasattr(entry, "control_files") else None
        self.apply(units, files)
        missing = entry.missing_control_files() if hasattr(entry, "missing_control_files") else []
        if missing:
            which = ", ".join(str(i) for i in missing)
            self.failed.emit(f"The control image of ControlNet {which} was kept with this image but its file "
                             "is gone; drop the control image again.")


def model_label(info: Any) -> str:
    """How the picker names a model: T2I-Adapters marked, the base family when known."""
    marks = [*(["T2I-Adapter"] if getattr(info, "kind", "") == "t2i-adapter" else []),
             *([info.base] if info.base != "unknown" else [])]
    return f"{info.name} ({', '.join(marks)})" if marks else str(info.name)


def library_source(folders: Sequence[str]) -> Callable[[], tuple[list[Any], dict[str, str]]]:
    """What the panel lists: the library's ControlNets and, per network preprocessor, what in the
    annotator folders enables it (the depth model's folder; "" when nothing does)."""

    def read() -> tuple[list[Any], dict[str, str]]:
        from heyim_desktop.models.controlnets import ControlNetLibrary
        from heyim_desktop.models.library import ModelLibrary

        lib = ControlNetLibrary(ModelLibrary(folders, include_demo=False))
        files = lib.annotator_files()
        network = {}
        for p, ok in lib.network_preprocessors():
            found = lib.annotator_folder(p.name) if p.runs else next((f for f in files if f.name == p.weights), None)
            network[p.name] = str(found) if ok and found is not None else ""
        return lib.all(), network

    return read
