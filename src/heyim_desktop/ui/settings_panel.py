"""Generation settings: model, SDXL refiner, scheduler, steps, guidance, seed, size, count, strength."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from heyim_desktop.core.request import (
    CLIP_SKIP_RANGE,
    COUNT_RANGE,
    DEFAULT_REFINER_SWITCH,
    GUIDANCE_RANGE,
    MAX_SEED,
    SIZE_RANGE,
    STEPS_RANGE,
)
from heyim_desktop.core.schedulers import DEFAULT_IMG2IMG, SCHEDULER_NAMES
from heyim_desktop.ui.glyphs import DICE, symbol
from heyim_desktop.ui.qt import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
    Signal,
)

if TYPE_CHECKING:
    from heyim_desktop.core.capabilities import Recommended

#: (label, width, height); "Model default" follows the loaded model's own size.
SIZE_PRESETS: tuple[tuple[str, int, int], ...] = (
    ("512 x 512 (SD 1.x)", 512, 512),
    ("768 x 768 (SD 2.x)", 768, 768),
    ("512 x 768 portrait", 512, 768),
    ("768 x 512 landscape", 768, 512),
    ("1024 x 1024 (SDXL)", 1024, 1024),
    ("256 x 256 quick", 256, 256),
    ("64 x 64 tiny", 64, 64),
)
CUSTOM = "Custom"
#: (label, width part, height part) for the aspect-ratio picker.
ASPECTS: tuple[tuple[str, int, int], ...] = (
    ("1:1 square", 1, 1), ("3:2 photo", 3, 2), ("2:3 portrait", 2, 3), ("4:3", 4, 3), ("3:4", 3, 4),
    ("16:9 wide", 16, 9), ("9:16 tall", 9, 16), ("21:9 cinema", 21, 9),
)
SIZE_STEP = 8  # what GenerationRequest accepts


def model_source(ref: str) -> str:
    """Where a model comes from, to tell two of the same name apart: "built-in" or its folder."""
    from pathlib import Path

    from heyim_desktop.core.loading import DEMO_REF

    if ref == DEMO_REF:
        return "built-in demo"
    folder = Path(ref).parent
    try:
        return "~/" + folder.relative_to(Path.home()).as_posix()
    except ValueError:
        return str(folder)


def snap(value: float) -> int:
    lo, hi = SIZE_RANGE
    return int(max(lo, min(hi, round(value / SIZE_STEP) * SIZE_STEP)))


def aspect_size(ratio_w: int, ratio_h: int, native: tuple[int, int]) -> tuple[int, int]:
    """The size with this aspect ratio and about the model's native pixel count, in multiples of 8."""
    pixels = native[0] * native[1]
    ratio = ratio_w / ratio_h
    return snap((pixels * ratio) ** 0.5), snap((pixels / ratio) ** 0.5)


def match_size(width: int, height: int, native: tuple[int, int]) -> tuple[int, int]:
    """An input image's size for image-to-image: its own (multiples of 8) up to ~1.5x the model's
    native pixel count per side; larger inputs keep their aspect at the native pixel count."""
    limit = native[0] * native[1] * 2.25
    if width * height <= limit:
        return snap(width), snap(height)
    scale = (native[0] * native[1] / (width * height)) ** 0.5
    return snap(width * scale), snap(height * scale)



def _kept_room(widget: QWidget) -> QWidget:
    """``widget`` in a box that keeps its room while it is hidden.

    A form row whose only field is hidden takes no space (QFormLayout does not honour
    retainSizeWhenHidden), so the rows below would move each time it shows; a box layout
    does honour it.
    """
    policy = widget.sizePolicy()
    policy.setRetainSizeWhenHidden(True)
    widget.setSizePolicy(policy)
    slot = QWidget()
    box = QVBoxLayout(slot)
    box.setContentsMargins(0, 0, 0, 0)
    box.addWidget(widget)
    return slot

class SettingsPanel(QWidget):
    model_changed = Signal(str)  # model reference ("" when none)
    changed = Signal()
    size_changed = Signal()
    #: "Match Input Size" was clicked; the window knows the input image.
    match_input_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = QComboBox()
        self.model.setAccessibleName("Model")
        self.model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model.setMinimumContentsLength(18)
        self.refiner = QComboBox()
        self.refiner.setAccessibleName("Refiner")
        self.refiner.setToolTip("An SDXL refiner that finishes the image after the base model (SDXL models only)")
        self.refiner.addItem("None", "")
        self.refiner_switch = QDoubleSpinBox()
        self.refiner_switch.setAccessibleName("Refiner switch")
        self.refiner_switch.setRange(0.05, 0.95)
        self.refiner_switch.setSingleStep(0.05)
        self.refiner_switch.setDecimals(2)
        self.refiner_switch.setValue(DEFAULT_REFINER_SWITCH)
        self.refiner_switch.setToolTip("Fraction of the steps after which the refiner takes over")
        self._bases: dict[str, str] = {}
        self._refiner_names: dict[str, str] = {}
        self.scheduler = QComboBox()
        self.scheduler.addItems(SCHEDULER_NAMES)
        self.steps = QSpinBox()
        self.steps.setRange(*STEPS_RANGE)
        self.steps.setValue(30)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(*GUIDANCE_RANGE)
        self.guidance.setSingleStep(0.5)
        self.guidance.setDecimals(1)
        self.guidance.setValue(7.5)
        self.guidance.setToolTip("How closely to follow the prompt (1 or less turns guidance off)")

        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)  # QSpinBox is 32-bit signed; larger seeds still load via settings
        self.seed.setEnabled(False)
        self.random_seed = QCheckBox("Random")
        self.random_seed.setChecked(True)
        self.random_seed.setToolTip("Unchecked: the seed is locked, so the same settings make the same image")
        self.random_seed.toggled.connect(lambda on: self.seed.setEnabled(not on))
        self._big_seed: int | None = None
        self.last_seed: int | None = None
        self.dice = QToolButton()
        self.dice.setText(symbol(self.dice, DICE, "New"))
        self.dice.setAccessibleName("New random seed")
        self.dice.setToolTip("New random seed, locked (Ctrl+R)")
        self.dice.clicked.connect(self.roll_seed)
        self.last_seed_button = QToolButton()
        self.last_seed_button.setText("Last")
        self.last_seed_button.setToolTip("Reuse the seed of the last image made")
        self.last_seed_button.setEnabled(False)
        self.last_seed_button.clicked.connect(self.reuse_last_seed)
        self.native_size: tuple[int, int] = (512, 512)

        self.size_preset = QComboBox()
        for label, w, h in SIZE_PRESETS:
            self.size_preset.addItem(label, f"{w}x{h}")
        self.size_preset.addItem(CUSTOM, None)
        self.width_box = QSpinBox()
        self.height_box = QSpinBox()
        for box in (self.width_box, self.height_box):
            box.setRange(*SIZE_RANGE)
            box.setSingleStep(64)
            box.setValue(512)
        self.aspect = QComboBox()
        self.aspect.setAccessibleName("Aspect ratio")
        self.aspect.setToolTip("Pick a shape: the size follows at about the model's native pixel count")
        for label, rw, rh in ASPECTS:
            self.aspect.addItem(label, (rw, rh))
        self.aspect.addItem(CUSTOM, None)
        self.aspect.activated.connect(self._aspect_chosen)
        self.match_button = QToolButton()
        self.match_button.setText("Match Input")
        self.match_button.setToolTip("Use the input image's own size and shape (no crop)")
        self.match_button.clicked.connect(self.match_input_requested)
        from heyim_desktop.ui.elided_label import ElidedLabel

        # Notes are one line each (the whole text in the tooltip), so showing one moves nothing.
        self.crop_note = ElidedLabel()
        self.crop_note.setEnabled(False)
        self.scheduler_note = ElidedLabel()
        self.scheduler_note.setEnabled(False)
        self.keep_scheduler = QToolButton()
        self.keep_scheduler.setText("Keep")  # hidden until a switch; a text now gives it its height
        self.keep_scheduler.clicked.connect(self._keep_user_scheduler)
        self._user_scheduler: str | None = None
        self.size_preset.currentIndexChanged.connect(self._preset_chosen)
        self.width_box.valueChanged.connect(self._size_edited)
        self.height_box.valueChanged.connect(self._size_edited)

        self.count = QSpinBox()
        self.count.setRange(*COUNT_RANGE)
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.01, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setDecimals(2)
        self.strength.setValue(0.75)
        self.strength.setToolTip("How much of the input image is re-imagined (1 = all of it)")
        self.strength_label = QLabel("Strength")
        self.clip_skip = QSpinBox()
        self.clip_skip.setRange(*CLIP_SKIP_RANGE)
        self.clip_skip.setValue(1)
        self.clip_skip.setAccessibleName("Clip skip")
        self._clip_skip_tip = ("Stop this many CLIP layers before the end, as AUTOMATIC1111 counts: 1 = none. "
                               "Many anime SD 1.5 models expect 2.")
        self.clip_skip.setToolTip(self._clip_skip_tip)

        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.dice)
        seed_row.addWidget(self.last_seed_button)
        seed_row.addWidget(self.random_seed)
        size_row = QHBoxLayout()
        size_row.addWidget(self.width_box)
        size_row.addWidget(QLabel("x"))
        size_row.addWidget(self.height_box)
        size_row.addWidget(self.match_button)
        preset_row = QHBoxLayout()
        preset_row.addWidget(self.aspect, 1)
        preset_row.addWidget(self.size_preset, 1)
        scheduler_row = QHBoxLayout()
        scheduler_row.addWidget(self.scheduler, 1)
        scheduler_row.addWidget(self.keep_scheduler)
        self.scheduler_notes = QWidget()
        notes = QHBoxLayout(self.scheduler_notes)
        notes.setContentsMargins(0, 0, 0, 0)
        notes.addWidget(self.scheduler_note, 1)
        self.refresh_models_button = QToolButton()
        self.refresh_models_button.setText("Refresh")
        self.refresh_models_button.setToolTip("Look for models again")
        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(self.refresh_models_button)
        #: What the loaded model is made for (few-step models), with a button to use it again.
        #: One line that keeps its space while hidden: a model loading moves no control below.
        self.recommended_label = ElidedLabel()
        self.recommended_button = QToolButton()
        self.recommended_button.setText("Use")
        self.recommended_button.setToolTip("Set the steps, guidance and scheduler this model is made for")
        self.recommended_button.clicked.connect(self.apply_recommended)
        self.recommended_row = QWidget()
        rec_row = QHBoxLayout(self.recommended_row)
        rec_row.setContentsMargins(0, 0, 0, 0)
        rec_row.addWidget(self.recommended_label, 1)
        rec_row.addWidget(self.recommended_button)
        self.recommended_row.setVisible(False)
        self.recommended: Recommended | None = None

        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Model", model_row)
        form.addRow("", _kept_room(self.recommended_row))
        refiner_row = QHBoxLayout()
        refiner_row.addWidget(self.refiner, 1)
        refiner_row.addWidget(QLabel("from"))
        refiner_row.addWidget(self.refiner_switch)
        form.addRow("Refiner", refiner_row)
        form.addRow("Scheduler", scheduler_row)
        form.addRow("", _kept_room(self.scheduler_notes))
        form.addRow("Steps", self.steps)
        form.addRow("Guidance", self.guidance)
        form.addRow("Seed", seed_row)
        form.addRow("Size", preset_row)
        form.addRow("", size_row)
        form.addRow("", _kept_room(self.crop_note))
        form.addRow("Images", self.count)
        form.addRow(_kept_room(self.strength_label), _kept_room(self.strength))
        form.addRow("Clip skip", self.clip_skip)
        from heyim_desktop.ui.upscaling import HiresSection

        self.hires = HiresSection()
        form.addRow(self.hires)
        for box in (self.width_box, self.height_box):
            box.valueChanged.connect(lambda _v: self.hires.show_size(self.width_box.value(), self.height_box.value()))
        self.hires.scale.valueChanged.connect(lambda _v: self.hires.show_size(self.width_box.value(), self.height_box.value()))
        self.hires.show_size(self.width_box.value(), self.height_box.value())
        # Image-to-image rows keep their space when hidden: dropping an image moves no control.
        retained: tuple[QWidget, ...] = (self.strength, self.strength_label, self.match_button, self.crop_note,
                                         self.scheduler_notes, self.keep_scheduler, self.recommended_row)
        for widget in retained:
            policy = widget.sizePolicy()
            policy.setRetainSizeWhenHidden(True)
            widget.setSizePolicy(policy)
        self._input_size: tuple[int, int] | None = None
        self.set_img2img(False)
        self._clear_scheduler_note()
        self._sync_aspect()

        self.model.currentIndexChanged.connect(lambda _i: self.model_changed.emit(self.model_ref()))
        self.model.currentIndexChanged.connect(lambda _i: self._update_refiner())
        self.refiner.currentIndexChanged.connect(lambda _i: self._update_refiner())
        self._update_refiner()
        for box in (self.steps, self.count, self.seed, self.width_box, self.height_box, self.clip_skip):
            box.valueChanged.connect(lambda _v: self.changed.emit())
        self.guidance.valueChanged.connect(lambda _v: self.changed.emit())
        self.scheduler.currentIndexChanged.connect(lambda _i: self.changed.emit())

    # -- models ---------------------------------------------------------------------------
    def set_models(self, models: Sequence[Any], current: str | None = None) -> None:
        """``models``: ModelInfo-like objects (name, ref, ready, problem)."""
        keep = current if current is not None else self.model_ref()
        self.model.blockSignals(True)
        self.model.clear()
        names = [info.name for info in models]
        for info in models:
            label = info.name if names.count(info.name) == 1 else f"{info.name} \u2014 {model_source(info.ref)}"
            if not info.ready:
                label = f"{label} (unusable: {info.problem or info.status.value})"
            self.model.addItem(label, info.ref)
            if not info.ready:
                item = self.model.model().item(self.model.count() - 1)  # type: ignore[attr-defined]
                if item is not None:
                    item.setEnabled(False)
        index = self.model.findData(keep) if keep else -1
        if index < 0:
            index = next((i for i, info in enumerate(models) if info.ready), -1)
        self.model.setCurrentIndex(index)
        self.model.blockSignals(False)
        self._set_refiners(models)
        self.model_changed.emit(self.model_ref())

    # -- the SDXL refiner -------------------------------------------------------------------
    def _set_refiners(self, models: Sequence[Any]) -> None:
        self._bases = {str(info.ref): str(getattr(info, "base", "")) for info in models}
        keep = self.refiner_ref()
        self.refiner.blockSignals(True)
        self.refiner.clear()
        self.refiner.addItem("None", "")
        self._refiner_names = {}
        for info in models:
            if info.ready and getattr(info, "is_refiner", False):
                self.refiner.addItem(info.name, info.ref)
                self._refiner_names[str(info.name)] = str(info.ref)
        index = self.refiner.findData(keep) if keep else 0
        self.refiner.setCurrentIndex(max(index, 0))
        self.refiner.blockSignals(False)
        self._update_refiner()

    def _update_refiner(self) -> None:
        """The refiner applies to SDXL base models only; the switch only matters with a refiner."""
        sdxl = self._bases.get(self.model_ref()) == "SDXL"
        self.refiner.setEnabled(sdxl and self.refiner.count() > 1)
        self.refiner_switch.setEnabled(sdxl and bool(self.refiner_ref()))

    def refiner_ref(self) -> str:
        data = self.refiner.currentData()
        return str(data) if data else ""

    def select_refiner(self, wanted: str) -> bool:
        """Pick a refiner by reference or by the name images carry ("Refiner: NAME")."""
        from heyim_desktop.core.metadata import model_label

        index = self.refiner.findData(wanted)
        if index < 0:
            ref = self._refiner_names.get(wanted) or next(
                (r for r in self._refiner_names.values() if model_label(r) == wanted), None
            )
            index = self.refiner.findData(ref) if ref else -1
        if index >= 0:
            self.refiner.setCurrentIndex(index)
        return index >= 0

    def model_ref(self) -> str:
        data = self.model.currentData()
        return str(data) if data else ""

    def select_model(self, ref: str) -> bool:
        index = self.model.findData(ref)
        if index >= 0:
            self.model.setCurrentIndex(index)
        return index >= 0

    # -- recommended settings ---------------------------------------------------------------
    def show_recommended(self, rec: "Recommended | None") -> None:
        """Show what the loaded model is made for (nothing when it says nothing)."""
        from heyim_desktop.core.recommended import describe

        text = describe(rec) if rec is not None else ""
        self.recommended = rec if text else None
        self.recommended_row.setVisible(bool(text))
        if rec is not None and text:
            self.recommended_label.setText(f"Made for: {text}")
            self.recommended_label.setToolTip(f"Made for: {text}." + (f" From the {rec.source}." if rec.source else ""))

    def apply_recommended(self) -> str:
        """Set the recommended steps, guidance and scheduler; returns what was set ("" if nothing)."""
        from heyim_desktop.core.recommended import describe

        rec = self.recommended
        if rec is None:
            return ""
        settings: dict[str, Any] = {}
        if rec.steps is not None:
            settings["steps"] = int(rec.steps)
        if rec.guidance is not None:
            settings["guidance"] = float(rec.guidance)
        if rec.scheduler in SCHEDULER_NAMES:
            settings["scheduler"] = rec.scheduler
        self.apply(settings)
        return describe(rec)

    # -- size -----------------------------------------------------------------------------
    def _preset_chosen(self, _index: int) -> None:
        size = self.size_preset.currentData()
        if size:
            w, h = (int(v) for v in str(size).split("x"))
            self._set_size_boxes(w, h)

    def _size_edited(self, _value: int) -> None:
        index = self.size_preset.findData(f"{self.width_box.value()}x{self.height_box.value()}")
        self.size_preset.blockSignals(True)
        self.size_preset.setCurrentIndex(index if index >= 0 else self.size_preset.count() - 1)
        self.size_preset.blockSignals(False)
        self._sync_aspect()
        self._update_crop_note()
        self.size_changed.emit()

    def _aspect_chosen(self, _index: int) -> None:
        ratio = self.aspect.currentData()
        if ratio:
            self.set_size(*aspect_size(ratio[0], ratio[1], self.native_size))

    def _sync_aspect(self) -> None:
        """Show the ratio the boxes hold (within 2%), else Custom."""
        w, h = self.width_box.value(), self.height_box.value()
        index = self.aspect.count() - 1
        for i, (_label, rw, rh) in enumerate(ASPECTS):
            if abs((w / h) / (rw / rh) - 1) < 0.02:
                index = i
                break
        self.aspect.setCurrentIndex(index)

    def set_native_size(self, size: tuple[int, int]) -> None:
        """The loaded model's own size: the aspect picker keeps its pixel count."""
        self.native_size = (int(size[0]), int(size[1]))
        self.aspect.setToolTip(f"Pick a shape: about {self.native_size[0] * self.native_size[1]:,} pixels, "
                               f"like the model's native {self.native_size[0]} x {self.native_size[1]}")

    def match_size(self, width: int, height: int) -> None:
        self.set_size(*match_size(width, height, self.native_size))

    def _update_crop_note(self) -> None:
        size = self._input_size
        if size is None:
            self.crop_note.setText("")
            return
        w, h = self.width_box.value(), self.height_box.value()
        iw, ih = size
        if abs((iw / ih) / (w / h) - 1) < 0.02:  # rounding to multiples of 8 trims a few pixels at most
            text = "" if (iw, ih) == (w, h) else f"The {iw} x {ih} input is resized to {w} x {h}."
        else:
            text = (f"The {iw} x {ih} input is cropped to the {w}:{h} shape (the frame on it shows what is kept). "
                    "Match Input avoids the crop.").replace(f"{w}:{h}", _ratio_text(w, h))
        self.crop_note.setText(text)
        self.crop_note.setToolTip(text)

    def _set_size_boxes(self, width: int, height: int) -> None:
        for box, value in ((self.width_box, width), (self.height_box, height)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self._size_edited(0)
        self.changed.emit()

    def set_size(self, width: int, height: int) -> None:
        self._set_size_boxes(width, height)

    def set_fixed_size(self, size: tuple[int, int] | None) -> None:
        """Core ML models have one size: show it and lock the boxes."""
        if size is not None:
            self.set_size(*size)
        for w in (self.size_preset, self.width_box, self.height_box):
            w.setEnabled(size is None)

    # -- img2img --------------------------------------------------------------------------
    def set_img2img(self, on: bool, input_size: tuple[int, int] | None = None) -> None:
        self._input_size = input_size if on else None
        for w in (self.strength, self.strength_label, self.match_button, self.crop_note):
            w.setVisible(on)
        if hasattr(self, "hires"):
            self.hires.setEnabled(not on)  # hires fix is text-to-image only
        self._update_crop_note()

    def switch_scheduler_for_img2img(self, name: str) -> None:
        """Image-to-image starts on ``name`` (the original design's choice), said beside the picker."""
        previous = self.scheduler.currentText()
        if previous == name:
            return
        self._user_scheduler = previous
        self.scheduler.setCurrentText(name)
        self.scheduler_note.setText(f"Switched to {name} for image-to-image.")
        self.scheduler_note.setToolTip(self.scheduler_note.text())
        self.keep_scheduler.setText(f"Keep {previous}")
        self.keep_scheduler.setToolTip(f"Use {previous} for image-to-image too")
        self.scheduler_notes.show()
        self.keep_scheduler.show()

    def restore_scheduler_after_img2img(self) -> None:
        """Back to text-to-image: the scheduler the user had, if the switch was ours."""
        from heyim_desktop.core.schedulers import DEFAULT_IMG2IMG

        if self._user_scheduler is not None and self.scheduler.currentText() == DEFAULT_IMG2IMG:
            self.scheduler.setCurrentText(self._user_scheduler)
        self._clear_scheduler_note()

    def _keep_user_scheduler(self) -> None:
        if self._user_scheduler is not None:
            self.scheduler.setCurrentText(self._user_scheduler)
        self._clear_scheduler_note()

    def _clear_scheduler_note(self) -> None:
        self._user_scheduler = None
        self.scheduler_note.setText("")
        self.scheduler_notes.hide()
        self.keep_scheduler.hide()

    # -- seeds ----------------------------------------------------------------------------
    def roll_seed(self) -> None:
        """A new random seed, locked, so the next image is new and can be made again."""
        import secrets

        self.set_seed(secrets.randbelow(self.seed.maximum() + 1), locked=True)

    def remember_seed(self, seed: int | None) -> None:
        """The seed of the last job (random or not), for Reuse Last Seed."""
        if seed is not None:
            self.last_seed = int(seed)
            self.last_seed_button.setEnabled(True)
            self.last_seed_button.setToolTip(f"Reuse the seed of the last image made ({seed})")

    def reuse_last_seed(self) -> None:
        if self.last_seed is not None:
            self.set_seed(self.last_seed, locked=True)

    def set_clip_skip_available(self, on: bool) -> None:
        """Clip skip works on the PyTorch engine; Core ML models say it is not available."""
        self.clip_skip.setEnabled(on)
        self.clip_skip.setToolTip(self._clip_skip_tip if on else
                                  "Clip skip is not available for this model (Core ML runs its text encoder whole).")

    # -- values ---------------------------------------------------------------------------
    def seed_value(self) -> int | None:
        if self.random_seed.isChecked():
            return None
        if self._big_seed is not None and self.seed.value() == self.seed.maximum():
            return self._big_seed
        return self.seed.value()

    def set_seed(self, seed: int | None, locked: bool = True) -> None:
        self._big_seed = seed if seed is not None and seed > self.seed.maximum() else None
        if seed is not None:
            self.seed.setValue(min(seed, self.seed.maximum()))
        self.random_seed.setChecked(not locked or seed is None)

    def values(self) -> dict[str, Any]:
        """Keyword arguments for GenerationRequest (without prompt and image)."""
        return {
            "model": self.model_ref() or None,
            "scheduler": self.scheduler.currentText(),
            "steps": self.steps.value(),
            "guidance": round(self.guidance.value(), 4),
            "seed": self.seed_value(),
            "width": self.width_box.value(),
            "height": self.height_box.value(),
            "count": self.count.value(),
            "strength": round(self.strength.value(), 4),
            "refiner": (self.refiner_ref() or None) if self.refiner.isEnabled() else None,
            "refiner_switch": round(self.refiner_switch.value(), 4),
            "clip_skip": self.clip_skip.value() if self.clip_skip.isEnabled() else 1,
        }

    def apply(self, settings: dict[str, Any]) -> None:
        """Load settings (from history, a dropped PNG or the last session); unknown keys are ignored."""
        if settings.get("scheduler") in SCHEDULER_NAMES:
            self.scheduler.setCurrentText(settings["scheduler"])
        if isinstance(settings.get("steps"), int):
            self.steps.setValue(settings["steps"])
        if isinstance(settings.get("guidance"), (int, float)):
            self.guidance.setValue(float(settings["guidance"]))
        if "seed" in settings:
            seed = settings["seed"]
            self.set_seed(seed if isinstance(seed, int) and 0 <= seed <= MAX_SEED else None,
                          locked=isinstance(seed, int))
        if isinstance(settings.get("width"), int) and isinstance(settings.get("height"), int):
            self.set_size(settings["width"], settings["height"])
        if isinstance(settings.get("count"), int):
            self.count.setValue(settings["count"])
        if isinstance(settings.get("strength"), (int, float)):
            self.strength.setValue(float(settings["strength"]))
        clip_skip = settings.get("clip_skip", 1 if "prompt" in settings else None)  # an image without it used 1
        if isinstance(clip_skip, int) and not isinstance(clip_skip, bool):
            self.clip_skip.setValue(clip_skip)
        model = settings.get("model")
        if isinstance(model, str) and model:
            self.select_model(model)
        self.hires.apply(settings.get("hires"))
        refiner = settings.get("refiner")
        if isinstance(refiner, str) and refiner:
            self.select_refiner(refiner)
        elif "prompt" in settings:  # a whole image's settings: no refiner means none
            self.refiner.setCurrentIndex(0)
        if isinstance(settings.get("refiner_switch"), (int, float)):
            self.refiner_switch.setValue(float(settings["refiner_switch"]))

    def use_img2img_default_scheduler(self) -> None:
        self.scheduler.setCurrentText(DEFAULT_IMG2IMG)


def _ratio_text(width: int, height: int) -> str:
    from math import gcd

    g = gcd(width, height) or 1
    return f"{width // g}:{height // g}"
