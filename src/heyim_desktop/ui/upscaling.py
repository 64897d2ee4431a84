"""Upscaling in the window: the Hires fix section, the "Upscale..." dialog and its jobs.

Upscale jobs go through the window's queue like generations (same worker, progress per tile,
Cancel); the result is a new history entry that records its source entry.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from heyim_desktop.core.upscale import BUILTIN_UPSCALERS, LATENT_MODES
from heyim_desktop.ui.qt import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QSpinBox,
    QWidget,
)

log = logging.getLogger(__name__)


class HiresSection(QGroupBox):
    """Settings panel section: turn hires fix on and choose its upscaler, scale, steps, strength."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Hires fix", parent)
        self.setCheckable(True)
        self.setChecked(False)
        self.setToolTip("Generate at the size above, enlarge, then refine with image-to-image "
                        "(AUTOMATIC1111's hires fix). Text-to-image only.")
        self.upscaler = QComboBox()
        self.scale = QDoubleSpinBox()
        self.scale.setRange(1.0, 4.0)
        self.scale.setSingleStep(0.25)
        self.scale.setValue(2.0)
        self.steps = QSpinBox()
        self.steps.setRange(0, 150)
        self.steps.setSpecialValueText("Same as Steps")
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.0, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setValue(0.7)
        self.size_label = QLabel()
        self.set_upscalers([])
        form = QFormLayout(self)
        form.addRow("Upscaler", self.upscaler)
        form.addRow("Upscale by", self.scale)
        form.addRow("", self.size_label)
        form.addRow("Hires steps", self.steps)
        form.addRow("Denoising", self.strength)

    def set_upscalers(self, model_names: list[str]) -> None:
        current = self.upscaler.currentText() or "Latent"
        self.upscaler.clear()
        self.upscaler.addItems([*LATENT_MODES, *BUILTIN_UPSCALERS, *model_names])
        index = self.upscaler.findText(current)
        self.upscaler.setCurrentIndex(max(0, index))

    def show_size(self, width: int, height: int) -> None:
        w, h = int(width * self.scale.value()), int(height * self.scale.value())
        self.size_label.setText(f"{w - w % 8} x {h - h % 8}")

    def apply(self, hires: Any) -> None:
        """Show ``hires`` (a HiresFix, or None for off) from reused settings."""
        self.setChecked(hires is not None)
        if hires is None:
            return
        if self.upscaler.findText(hires.upscaler) < 0:
            self.upscaler.addItem(hires.upscaler)  # a model this machine lacks: picked, and named if it fails
        self.upscaler.setCurrentText(hires.upscaler)
        self.scale.setValue(hires.scale)
        self.steps.setValue(hires.steps)
        self.strength.setValue(hires.denoising_strength)

    def settings(self) -> Any:
        """A HiresFix (its upscaler not yet resolved to a file), or None when off."""
        if not self.isChecked():
            return None
        from heyim_desktop.core.request import HiresFix

        return HiresFix(scale=round(self.scale.value(), 4), upscaler=self.upscaler.currentText(),
                        steps=self.steps.value(), denoising_strength=round(self.strength.value(), 4))


class UpscaleDialog(QDialog):
    """Choose an upscaler and a scale for "Upscale..."."""

    def __init__(self, upscalers: list[str], parent: QWidget | None = None, *, source_size: tuple[int, int] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Upscale")
        self.upscaler = QComboBox()
        self.upscaler.addItems(upscalers)
        self.scale = QComboBox()
        self.scale.addItems(["2x", "4x"])
        self.tile = QSpinBox()
        self.tile.setRange(0, 2048)
        self.tile.setSingleStep(64)
        self.tile.setSpecialValueText("Auto (from free memory)")
        self.tile.setToolTip("Models run tile by tile; smaller tiles use less memory.")
        self.size_label = QLabel()
        self._source = source_size
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Upscale")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Upscaler", self.upscaler)
        form.addRow("Scale", self.scale)
        form.addRow("", self.size_label)
        form.addRow("Tile size", self.tile)
        form.addRow(buttons)
        self.scale.currentIndexChanged.connect(lambda _i: self._show_size())
        self._show_size()

    def chosen_scale(self) -> float:
        return float(self.scale.currentText().rstrip("x"))

    def _show_size(self) -> None:
        if self._source:
            s = self.chosen_scale()
            self.size_label.setText(f"{self._source[0]} x {self._source[1]} -> {int(self._source[0] * s)} x {int(self._source[1] * s)}")


class Upscaling:
    """The window's upscale actions: ``upscale(entry)`` asks, then queues an upscale job."""

    def __init__(self, window: Any, library: Callable[[], Any]) -> None:
        self.window = window
        self.library = library
        #: Replaceable in tests: returns (upscaler, scale, tile) or None when the user cancels.
        self.ask: Callable[[list[str], tuple[int, int] | None], tuple[str, float, int] | None] = self._ask

    def upscaler_names(self) -> list[str]:
        from heyim_desktop.models.upscalers import upscaler_names

        try:
            return upscaler_names(self.library())
        except OSError as exc:
            log.warning("cannot list upscalers: %s", exc)
            return list(BUILTIN_UPSCALERS)

    def model_names(self) -> list[str]:
        return [n for n in self.upscaler_names() if n not in BUILTIN_UPSCALERS]

    def _ask(self, names: list[str], size: tuple[int, int] | None) -> tuple[str, float, int] | None:
        dialog = UpscaleDialog(names, self.window, source_size=size)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        return dialog.upscaler.currentText(), dialog.chosen_scale(), dialog.tile.value()

    def upscale(self, source: Any) -> Any:
        """``source``: a history entry, or a shown image with ``entry``/``path``. Returns the Job or None."""
        from pathlib import Path

        from heyim_desktop.core.errors import UserFacingError
        from heyim_desktop.core.images import load_image
        from heyim_desktop.core.upscale_job import UpscaleRequest
        from heyim_desktop.models.upscalers import resolve_upscaler

        entry = getattr(source, "entry", None) or (source if hasattr(source, "parameters") else None)
        path = getattr(source, "path", None) or (entry.path if entry is not None else None)
        if path is None or not Path(path).is_file():
            self.window.status("This image is not saved yet; nothing to upscale.")
            return None
        size = (entry.width, entry.height) if entry is not None and entry.width else None
        chosen = self.ask(self.upscaler_names(), size)
        if chosen is None:
            return None
        name, scale, tile = chosen
        try:
            image = load_image(path)
            upscaler, model_path = resolve_upscaler(self.library(), name)
            request = UpscaleRequest(
                image=image, scale=scale, upscaler=upscaler, upscaler_path=model_path, tile_preference=tile or None,
                source_entry=int(entry.id) if entry is not None else None,
                source_parameters=entry.parameters if entry is not None else "",
                source_settings=dict(entry.settings) if entry is not None else {},
            )
        except UserFacingError as exc:
            self.window.show_error(str(exc), offer_logs=False)
            return None
        job = self.window.submit(request, source="upscale")
        if job is not None:
            self.window.status(f"Upscaling {Path(path).name} {scale:g}x with {upscaler}...")
        return job

    def resolve_hires(self, hires: Any) -> Any:
        from heyim_desktop.models.upscalers import resolve_hires

        return resolve_hires(self.library(), hires)
