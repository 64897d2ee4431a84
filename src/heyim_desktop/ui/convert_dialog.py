"""File > Convert to Core ML...: a diffusers model becomes Apple's Core ML layout, off the UI thread."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from heyim_desktop.core.cancel import Cancelled, CancelToken
from heyim_desktop.core.errors import UserFacingError
from heyim_desktop.ui.qt import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QObject,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
    Signal,
)

if TYPE_CHECKING:
    from heyim_desktop.core.lora import LoraUse
    from heyim_desktop.models.networks import NetworkLibrary

log = logging.getLogger(__name__)


class _Relay(QObject):
    progress = Signal(int, int, str)  # stage, total, label
    done = Signal(object)  # Path
    failed = Signal(str)
    cancelled = Signal()


class ConvertDialog(QDialog):
    """Pick a diffusers model folder, a size and an attention type; convert with progress and cancel."""

    converted = Signal(str)  # the new Core ML folder

    def __init__(self, model_dir: str = "", out_root: Path | None = None, parent: QWidget | None = None,
                 networks: "Callable[[], NetworkLibrary] | None" = None, loras: str = "") -> None:
        super().__init__(parent)
        self.networks = networks
        self.setWindowTitle("Convert to Core ML")
        self.out_root = out_root or Path.home()
        self.source = QLineEdit(model_dir)
        self.source.setPlaceholderText("A diffusers folder (model_index.json) or a .safetensors checkpoint")
        browse = QPushButton("Folder...")
        browse.clicked.connect(self._choose_source)
        browse_file = QPushButton("File...")
        browse_file.setToolTip("A single-file SD 1.x/2.x or SDXL checkpoint (.safetensors)")
        browse_file.clicked.connect(self._choose_source_file)
        row = QHBoxLayout()
        row.addWidget(self.source, 1)
        row.addWidget(browse)
        row.addWidget(browse_file)
        self.image_size = QSpinBox()
        self.image_size.setRange(256, 1024)
        self.image_size.setSingleStep(64)
        self.image_size.setValue(512)
        self.image_size.setSuffix(" px (square)")
        self.attention = QComboBox()
        self.attention.addItem("split_einsum: best on the Neural Engine", "split_einsum")
        self.attention.addItem("original: best on the GPU", "original")
        self.quantize = QComboBox()
        self.quantize.addItem("fp16: full size", 0)
        self.quantize.addItem("8-bit palette: about half the size (macOS 14+)", 8)
        self.quantize.addItem("6-bit palette: the balance for SDXL on 8-16 GB Macs (macOS 14+)", 6)
        self.quantize.addItem("4-bit palette: smallest, some quality loss (macOS 15+)", 4)
        self.quantize.setToolTip("Palettizing stores the UNet's and text encoders' weights as small lookup tables "
                                 "that Core ML expands while it runs: smaller downloads and less memory, with a "
                                 "small loss of detail (most at 4 bits). The VAE stays fp16.")
        self.quantize.setAccessibleName("Weight compression")
        #: LoRAs baked into the converted model (Core ML cannot take them at run time).
        self.loras = QLineEdit(loras)
        self.loras.setPlaceholderText("none; or NAME:WEIGHT, NAME:WEIGHT (LoRAs of the model library, or files)")
        self.loras.setToolTip("LoRAs to bake into the converted model at these weights. A Core ML model cannot take "
                              "LoRAs at run time; the converted model's name and metadata record them.")
        self.loras.setAccessibleName("LoRAs to bake")
        self.note = QLabel("Core ML models have a fixed size. split_einsum suits the Neural Engine (fast and frugal "
                           "on base M chips, where models up to SD 1.5/2.x size at 512-768 px work well); original "
                           "suits the GPU of Pro, Max and Ultra chips. Conversion takes several minutes and a few GB "
                           "of memory for SD 1.5 (longer with a palette); the Mac compiles the result once, at its "
                           "first load, which can take minutes on the Neural Engine.")
        self.note.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setVisible(False)
        self.state = QLabel("")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.start_button = self.buttons.addButton("Convert", QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.accepted.connect(self.start)
        self.buttons.rejected.connect(self.cancel_or_close)
        form = QFormLayout()
        form.addRow("Model", row)
        form.addRow("Image size", self.image_size)
        form.addRow("Attention", self.attention)
        form.addRow("Weights", self.quantize)
        form.addRow("Bake LoRAs", self.loras)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.note)
        layout.addWidget(self.bar)
        layout.addWidget(self.state)
        layout.addWidget(self.buttons)
        self._cancel: CancelToken | None = None
        self._thread: threading.Thread | None = None
        self.relay = _Relay(self)
        self.relay.progress.connect(self._progress)
        self.relay.done.connect(self._done)
        self.relay.failed.connect(self._failed)
        self.relay.cancelled.connect(self._cancelled)

    def _choose_source(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A diffusers model folder", self.source.text())
        if folder:
            self.source.setText(folder)

    def _choose_source_file(self) -> None:
        file, _filter = QFileDialog.getOpenFileName(self, "A single-file checkpoint", self.source.text(),
                                                    "Checkpoints (*.safetensors)")
        if file:
            self.source.setText(file)

    def lora_uses(self) -> "list[LoraUse]":
        """The LoRAs to bake, resolved against the library (UserFacingError naming a bad one)."""
        from heyim_desktop.core.errors import InvalidRequest
        from heyim_desktop.core.lora import LoraUse, parse_lora_spec

        out = []
        for part in (p.strip() for p in self.loras.text().split(",")):
            if not part:
                continue
            ref, weight = parse_lora_spec(part)
            path = self.networks().find_lora(ref) if self.networks is not None else None
            if path is None and Path(ref).expanduser().suffix.lower() == ".safetensors" and Path(ref).expanduser().is_file():
                path = Path(ref).expanduser()
            if path is None:
                raise InvalidRequest("loras", f"{ref!r} is neither a .safetensors file nor a LoRA in the model library")
            out.append(LoraUse(str(path), weight, Path(ref).stem if Path(ref).suffix else ref))
        return out

    def output_dir(self, loras: "list[LoraUse] | None" = None) -> Path:
        source = Path(self.source.text().strip())
        name = (source.stem if source.suffix.lower() == ".safetensors" else source.name) or "model"
        baked = "".join(f"+{u.name}-{u.weight:g}" for u in (loras or []))[:80]
        bits = int(self.quantize.currentData() or 0)
        palette = f"-{bits}bit" if bits else ""
        return self.out_root / f"{name}{baked}-coreml-{self.attention.currentData()}-{self.image_size.value()}{palette}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        source = self.source.text().strip()
        if not source:
            self.state.setText("Choose a model folder first.")
            return
        try:
            loras = tuple(self.lora_uses())
        except UserFacingError as exc:
            self.state.setText(str(exc))
            return
        self._cancel = CancelToken()
        out = self.output_dir(list(loras))
        size = self.image_size.value()
        attention = str(self.attention.currentData())
        bits = int(self.quantize.currentData() or 0) or None
        cancel, relay = self._cancel, self.relay

        def work() -> None:
            from heyim_desktop.core.coreml.convert import convert_to_coreml

            try:
                path = convert_to_coreml(
                    source, out, size=(size, size), attention=attention,
                    progress=lambda p: relay.progress.emit(p.stage, p.total, p.label), cancel=cancel,
                    loras=loras, quantize=bits,
                )
            except Cancelled:
                relay.cancelled.emit()
            except UserFacingError as exc:
                relay.failed.emit(str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug: logged with its traceback, shown briefly
                log.exception("Core ML conversion failed")
                relay.failed.emit(f"Unexpected error: {type(exc).__name__}: {exc} (details in the log)")
            else:
                relay.done.emit(path)

        self.bar.setVisible(True)
        self.bar.setRange(0, 0)
        self.start_button.setEnabled(False)
        self.state.setText(f"Converting to {out}...")
        self._thread = threading.Thread(target=work, name="heyim-coreml-convert", daemon=True)
        self._thread.start()

    def cancel_or_close(self) -> None:
        if self.running and self._cancel is not None:
            self._cancel.cancel()
            self.state.setText("Cancelling after the current part (coremltools cannot stop mid-model)...")
            return
        self.reject()

    def _progress(self, stage: int, total: int, label: str) -> None:
        self.bar.setRange(0, max(1, total))
        self.bar.setValue(stage)
        self.state.setText(label)

    def _done(self, path: Any) -> None:
        self.bar.setValue(self.bar.maximum())
        from heyim_desktop.core.coreml.convert import conversion_notes

        self.state.setText("\n".join([f"Done: {path}", *conversion_notes(path)]))
        self.start_button.setEnabled(True)
        self.converted.emit(str(path))

    def _failed(self, message: str) -> None:
        self.bar.setVisible(False)
        self.start_button.setEnabled(True)
        self.state.setText(message)

    def _cancelled(self) -> None:
        self.bar.setVisible(False)
        self.start_button.setEnabled(True)
        self.state.setText("Cancelled; nothing was written.")

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


def open_for_window(window: Any) -> ConvertDialog:
    """File > Convert to Core ML...: the selected model (when it is a folder) is the default source."""
    from heyim_desktop.models.library import ModelLibrary, app_models_dir
    from heyim_desktop.models.networks import NetworkLibrary

    ref = window.settings_panel.model_ref()
    source = ref if ref and Path(ref).is_dir() else ""
    picker = getattr(window, "lora_picker", None)  # the prompt's LoRAs are offered for baking
    chosen = ", ".join(f"{n}:{w:g}" for n, w in picker.chosen()) if picker is not None else ""
    dialog = ConvertDialog(source, app_models_dir(), window,
                           networks=lambda: NetworkLibrary(ModelLibrary(window.prefs.model_folders)), loras=chosen)
    dialog.converted.connect(lambda path: (window.refresh_models(), window.status(f"Converted to Core ML: {path}")))
    dialog.show()
    return dialog
