"""Preferences: model folders, output folder, defaults, compute device, history keep-limit."""

from __future__ import annotations

import sys

from heyim_desktop.core.request import GUIDANCE_RANGE, STEPS_RANGE
from heyim_desktop.core.schedulers import SCHEDULER_NAMES
from heyim_desktop.store.preferences import Preferences
from heyim_desktop.ui.qt import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

DEVICE_LABELS = {
    "auto": "Automatic (GPU when available)",
    "cpu": "CPU",
    "cuda": "NVIDIA GPU (CUDA)",
    "mps": "Apple GPU (Metal)",
    "coreml": "Core ML (Neural Engine)",
}
PRECISION_LABELS = {
    "auto": "Automatic (fp16 on a GPU, bf16 for the new families, fp32 on the CPU)",
    "bf16": "bf16 (half the memory)",
    "fp16": "fp16 (GPU only)",
    "fp32": "fp32 (full precision)",
}

MEMORY_LABELS = {
    "auto": "Automatic (save memory when the model would crowd it)",
    "low": "Save memory: text encoders and transformer loaded in turn",
    "full": "Keep every part loaded (fastest)",
}


def available_devices() -> list[str]:
    """What can be offered before detection ran: the choices every install has."""
    return ["auto", "cpu"]


class PreferencesDialog(QDialog):
    def __init__(self, prefs: Preferences, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self.prefs = prefs
        self.folders = QListWidget()
        self.folders.addItems(list(prefs.model_folders))
        self.folders.setMaximumHeight(100)
        add = QPushButton("Add...")
        remove = QPushButton("Remove")
        add.clicked.connect(self._add_folder)
        remove.clicked.connect(lambda: [self.folders.takeItem(self.folders.row(i)) for i in self.folders.selectedItems()])
        folder_buttons = QVBoxLayout()
        folder_buttons.addWidget(add)
        folder_buttons.addWidget(remove)
        folder_buttons.addStretch(1)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folders, 1)
        folder_row.addLayout(folder_buttons)

        self.output = QLineEdit(prefs.output_folder)
        self.output.setPlaceholderText("Default: HeyIm's data folder")
        browse = QPushButton("Choose...")
        browse.clicked.connect(self._choose_output)
        output_row = QHBoxLayout()
        output_row.addWidget(self.output, 1)
        output_row.addWidget(browse)

        self.scheduler = QComboBox()
        self.scheduler.addItems(SCHEDULER_NAMES)
        self.scheduler.setCurrentText(prefs.default_scheduler)
        self.steps = QSpinBox()
        self.steps.setRange(*STEPS_RANGE)
        self.steps.setValue(prefs.default_steps)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(*GUIDANCE_RANGE)
        self.guidance.setDecimals(1)
        self.guidance.setSingleStep(0.5)
        self.guidance.setValue(prefs.default_guidance)
        self.device = QComboBox()
        self.device_note = _note("Looking for GPUs...")
        #: What detection found (None until it answered).
        self.detected: list[str] | None = None
        self.set_devices(available_devices())
        # torch answers which GPUs exist; importing it takes seconds, so ask off the UI thread.
        from heyim_desktop.core.devices import detect_devices
        from heyim_desktop.ui.tasks import run_in_background

        self._detection = run_in_background(detect_devices, self._devices_detected,
                                            lambda exc: self.device_note.setText(f"GPU detection failed: {exc}"))
        self.precision = QComboBox()
        for value, label in PRECISION_LABELS.items():
            self.precision.addItem(label, value)
        self.precision.setCurrentIndex(max(0, self.precision.findData(prefs.precision)))
        self.precision.setToolTip("bf16 takes half the memory of fp32 and suits the new model families; on the CPU it "
                                  "is fast where the processor has bf16 instructions. fp32 fixes black images some "
                                  "GPUs give in fp16. Core ML models keep their own precision.")
        self.device.currentIndexChanged.connect(lambda _i: self._mark_precisions())
        self.memory = QComboBox()
        for value, label in MEMORY_LABELS.items():
            self.memory.addItem(label, value)
        self.memory.setCurrentIndex(max(0, self.memory.findData(prefs.memory)))
        self.memory.setToolTip("For Z-Image, FLUX.2 [klein] and SD 3.5. Save memory loads the text encoders "
                               "(Qwen3-4B, or SD 3.5's CLIP and T5: 8 to 11 GB) only to encode a new prompt, "
                               "without the transformer, then the transformer for the steps: a 16 GB Mac runs "
                               "them. The same prompt again loads nothing; a new prompt reloads both (seconds). "
                               "On an NVIDIA GPU it moves each part to the GPU only while it runs. Automatic "
                               "does this when the weights would take over 3/4 of the memory.")
        self.memory.setAccessibleName("Memory for the new model families")
        from heyim_desktop.core.coreml import CHOICES, LABELS

        self.compute_units = QComboBox()
        self.compute_units.addItem("The default for the model and this Mac's chip", "")
        for choice in CHOICES:
            self.compute_units.addItem(LABELS[choice], choice)
        self.compute_units.setCurrentIndex(max(0, self.compute_units.findData(prefs.coreml_compute_units)))
        self.compute_units.setEnabled(sys.platform == "darwin")
        self.component_units = QLineEdit(prefs.coreml_component_units)
        self.component_units.setPlaceholderText("none; e.g. VAEDecoder=CPU_AND_GPU, TextEncoder=CPU_ONLY")
        self.component_units.setToolTip("Compute units for single parts of a Core ML model, over the choice above "
                                        "(SDXL's VAE already runs on the GPU). Parts: TextEncoder, TextEncoder2, Unet, "
                                        "VAEDecoder, VAEEncoder.")
        self.component_units.setAccessibleName("Core ML units per part")
        self.component_units.setEnabled(sys.platform == "darwin")
        self.coreml_memory = QComboBox()
        self.coreml_memory.addItem("Automatic (reduce on Macs with 8 GB)", "")
        self.coreml_memory.addItem("Reduce memory: load each part only while it runs", "reduce-memory")
        self.coreml_memory.addItem("Keep every part loaded (faster)", "full-memory")
        self.coreml_memory.setToolTip("Reduce memory releases the text encoders before the UNet runs and the UNet "
                                      "before the VAE decodes, as Apple's pipeline does on 8 GB Macs; each image "
                                      "then loads its parts again (a few seconds).")
        self.coreml_memory.setCurrentIndex(max(0, self.coreml_memory.findData(prefs.coreml_memory)))
        self.coreml_memory.setEnabled(sys.platform == "darwin")
        self.keep = QSpinBox()
        self.keep.setRange(0, 1_000_000)
        self.keep.setSpecialValueText("Unlimited")
        self.keep.setValue(prefs.keep_limit)
        self.keep.setToolTip("Keep only the newest N images (favourites are always kept). 0 = unlimited.")

        self.idle_unload = QSpinBox()
        self.idle_unload.setRange(0, 24 * 60)
        self.idle_unload.setSuffix(" min")
        self.idle_unload.setSpecialValueText("Never")
        self.idle_unload.setValue(prefs.idle_unload_minutes)
        self.idle_unload.setToolTip("After this long without a job the engine process ends and the model's "
                                    "memory goes back to the system; the next job loads it again.")

        self.api_enabled = QCheckBox("Serve the local HTTP API (HeyIm and AUTOMATIC1111 routes) on 127.0.0.1")
        self.api_enabled.setChecked(prefs.api_enabled)
        self.api_port = QSpinBox()
        self.api_port.setRange(1024, 65535)
        self.api_port.setValue(prefs.api_port)
        self.remote_queue = QLineEdit(prefs.remote_queue_url)
        self.remote_queue.setPlaceholderText("redis://host:6379/0 (empty: render on this computer)")

        form = QFormLayout()
        form.addRow("Model folders", folder_row)
        form.addRow("Image folder", output_row)
        form.addRow("", _note("New images go to this folder as soon as you press OK; earlier ones stay where they are."))
        form.addRow("Default scheduler", self.scheduler)
        form.addRow("Default steps", self.steps)
        form.addRow("Default guidance", self.guidance)
        form.addRow("Compute device", self.device)
        form.addRow("", self.device_note)
        form.addRow("Precision", self.precision)
        form.addRow("Memory (new families)", self.memory)
        form.addRow("Core ML runs on", self.compute_units)
        form.addRow("Core ML units per part", self.component_units)
        form.addRow("Core ML memory", self.coreml_memory)
        if sys.platform != "darwin":
            form.addRow("", _note("Core ML models run on macOS only."))
        form.addRow("Keep in history", self.keep)
        form.addRow("Unload an idle model", self.idle_unload)
        form.addRow("Local API", self.api_enabled)
        form.addRow("API port", self.api_port)
        form.addRow("", _note("Every request needs the token kept in the file api-token in HeyIm's data folder."))
        form.addRow("Render queue", self.remote_queue)
        form.addRow("", _note("With a Redis URL, Generate sends jobs to the machines running "
                              "'heyim-desktop worker'; finished images arrive in history."))
        from heyim_desktop.ui.global_shortcut import TRAY_NAME, shortcut_note

        self.keep_in_tray = QCheckBox(f"Keep HeyIm running in the {TRAY_NAME} when the window closes")
        self.keep_in_tray.setChecked(prefs.keep_running_in_tray)
        form.addRow(TRAY_NAME.capitalize(), self.keep_in_tray)
        self.shortcut_note = _note(shortcut_note())
        form.addRow("Shortcut", self.shortcut_note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def set_devices(self, devices: list[str]) -> None:
        """Offer ``devices``; a saved choice this machine lacks stays visible, marked, until changed."""
        wanted = str(self.device.currentData() or self.prefs.device)
        self.device.clear()
        for d in devices:
            self.device.addItem(DEVICE_LABELS.get(d, d), d)
        if wanted not in devices:
            self.device.addItem(f"{DEVICE_LABELS.get(wanted, wanted)} (not found on this computer)", wanted)
        self.device.setCurrentIndex(max(0, self.device.findData(wanted)))

    def _devices_detected(self, devices: list[str]) -> None:
        self.detected = list(devices)
        self.set_devices(self.detected)
        self.device_note.setText("A device, precision or memory change applies the next time a model loads.")
        self._mark_precisions()

    def _mark_precisions(self) -> None:
        """fp16 says so, and cannot be picked, where the models would run on the CPU (the load would
        fail); a saved fp16 stays chosen, marked, until changed."""
        if not hasattr(self, "precision"):
            return
        device = str(self.device.currentData() or "auto")
        gpus = [d for d in self.detected or () if d in ("cuda", "mps")]
        cpu_only = device == "cpu" or (device == "auto" and self.detected is not None and not gpus)
        i = self.precision.findData("fp16")
        where = "the CPU is chosen" if device == "cpu" else "no GPU found on this computer"
        self.precision.setItemText(i, f"fp16 (GPU only: {where})" if cpu_only else PRECISION_LABELS["fp16"])
        item = self.precision.model().item(i)  # type: ignore[attr-defined]
        item.setEnabled(not cpu_only or self.precision.currentIndex() == i)

    def accept(self) -> None:  # noqa: D102 - Qt override: check the queue URL before closing
        from heyim_desktop.core.coreml.compute_units import compose_units
        from heyim_desktop.core.errors import UserFacingError as _UserFacing

        try:
            compose_units("", self.component_units.text())
        except _UserFacing as exc:
            QMessageBox.warning(self, "Core ML units per part", str(exc))
            return
        url = self.remote_queue.text().strip()
        if url:
            from heyim_desktop.core.errors import UserFacingError
            from heyim_desktop.scale.connection import check_url

            try:
                check_url(url)
            except UserFacingError as exc:
                QMessageBox.warning(self, "Render queue", str(exc))
                return
        super().accept()

    def _add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder with models")
        if folder and folder not in self.folder_list():
            self.folders.addItem(folder)

    def _choose_output(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for generated images", self.output.text())
        if folder:
            self.output.setText(folder)

    def folder_list(self) -> list[str]:
        return [self.folders.item(i).text() for i in range(self.folders.count())]

    def result_preferences(self) -> Preferences:
        return self.prefs.replace(
            model_folders=tuple(self.folder_list()),
            output_folder=self.output.text().strip(),
            default_scheduler=self.scheduler.currentText(),
            default_steps=self.steps.value(),
            default_guidance=round(self.guidance.value(), 4),
            device=str(self.device.currentData()),
            precision=str(self.precision.currentData() or "auto"),
            memory=str(self.memory.currentData() or "auto"),
            coreml_compute_units=str(self.compute_units.currentData() or ""),
            coreml_component_units=self.component_units.text().strip(),
            coreml_memory=str(self.coreml_memory.currentData() or ""),
            keep_limit=self.keep.value(),
            idle_unload_minutes=self.idle_unload.value(),
            api_enabled=self.api_enabled.isChecked(),
            api_port=self.api_port.value(),
            remote_queue_url=self.remote_queue.text().strip(),
            keep_running_in_tray=self.keep_in_tray.isChecked(),
        )


def _note(text: str) -> QLabel:
    label = QLabel(text)
    label.setEnabled(False)  # greyed by the palette, readable in both themes
    label.setWordWrap(True)
    return label
