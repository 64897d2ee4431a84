"""Preferences > Precision: fp16 is marked, and cannot be picked, where models would run on the CPU."""

from __future__ import annotations

from pathlib import Path

from heyim_desktop.store.preferences import load_preferences
from heyim_desktop.ui.preferences_dialog import PreferencesDialog


def _fp16(dialog: PreferencesDialog) -> tuple[str, bool]:
    i = dialog.precision.findData("fp16")
    return dialog.precision.itemText(i), dialog.precision.model().item(i).isEnabled()  # type: ignore[attr-defined]


def test_fp16_says_why_it_cannot_be_used_without_a_gpu(qtbot, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    dialog = PreferencesDialog(load_preferences())
    qtbot.addWidget(dialog)
    dialog._devices_detected(["auto", "cpu"])  # what detection answers on a computer without a GPU
    text, enabled = _fp16(dialog)
    assert not enabled and "no GPU found on this computer" in text
    dialog._devices_detected(["auto", "cpu", "cuda"])
    assert _fp16(dialog) == ("fp16 (GPU only)", True)
    dialog.device.setCurrentIndex(dialog.device.findData("cpu"))  # the GPU is there but the CPU is chosen
    text, enabled = _fp16(dialog)
    assert not enabled and "the CPU is chosen" in text
    dialog.device.setCurrentIndex(dialog.device.findData("cuda"))
    assert _fp16(dialog) == ("fp16 (GPU only)", True)


def test_a_saved_fp16_stays_chosen_and_marked(qtbot, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    dialog = PreferencesDialog(load_preferences().replace(precision="fp16", device="cpu"))
    qtbot.addWidget(dialog)
    dialog._devices_detected(["auto", "cpu"])
    text, enabled = _fp16(dialog)
    assert dialog.precision.currentData() == "fp16" and enabled and "the CPU is chosen" in text
    assert dialog.result_preferences().precision == "fp16"  # nothing of the user's changes unasked
