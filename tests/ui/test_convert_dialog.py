"""File > Convert to Core ML...: the dialog converts off the UI thread and reports clearly."""

from __future__ import annotations

from pathlib import Path

from conftest import GEN_TIMEOUT_MS


def test_convert_dialog_reports_a_bad_source_without_blocking(window, qtbot, tmp_path: Path) -> None:
    dialog = window.open_convert_dialog()
    qtbot.addWidget(dialog)
    dialog.source.setText(str(tmp_path / "not-a-model"))
    dialog.start()
    assert dialog.running or dialog.state.text()  # the work runs on its own thread
    qtbot.waitUntil(lambda: not dialog.running, timeout=GEN_TIMEOUT_MS)
    qtbot.waitUntil(lambda: "not found" in dialog.state.text().lower(), timeout=10_000)
    assert dialog.start_button.isEnabled()


def test_convert_dialog_defaults_to_the_selected_folder_model(window, qtbot, tiny_model: Path) -> None:
    window.settings_panel.set_models([], None)
    from heyim_desktop.models.types import ModelInfo, ModelStatus

    info = ModelInfo("tiny", str(tiny_model), "diffusers", "SD1", 1, ModelStatus.READY)
    window.settings_panel.set_models([info], str(tiny_model))
    dialog = window.open_convert_dialog()
    qtbot.addWidget(dialog)
    assert dialog.source.text() == str(tiny_model)
    assert dialog.output_dir().name == "tiny-sd-coreml-split_einsum-512"
    dialog.attention.setCurrentIndex(1)
    dialog.image_size.setValue(256)
    assert dialog.output_dir().name == "tiny-sd-coreml-original-256"
    dialog.cancel_or_close()
    assert not dialog.isVisible()


def test_convert_dialog_progress_success_and_cancel(window, qtbot, tmp_path: Path, monkeypatch) -> None:
    import threading

    import heyim_desktop.core.coreml.convert as convert
    from heyim_desktop.core.cancel import Cancelled

    gate = threading.Event()

    def fake_convert(source, out, *, size, attention, progress, cancel, **kw):  # type: ignore[no-untyped-def]
        progress(convert.ConversionProgress(1, 4, "Converting Unet...", 0.1))
        gate.wait(30)
        if cancel.cancelled:
            raise Cancelled()
        Path(out).mkdir(parents=True)
        return Path(out)

    monkeypatch.setattr(convert, "convert_to_coreml", fake_convert)
    dialog = window.open_convert_dialog()
    qtbot.addWidget(dialog)
    dialog.source.setText(str(tmp_path / "sd15"))
    with qtbot.waitSignal(dialog.converted, timeout=30_000) as got:
        dialog.start()
        qtbot.waitUntil(lambda: dialog.state.text() == "Converting Unet...", timeout=10_000)
        assert dialog.bar.value() == 1 and dialog.bar.maximum() == 4 and not dialog.start_button.isEnabled()
        gate.set()
    assert got.args[0].endswith("sd15-coreml-split_einsum-512")
    qtbot.waitUntil(lambda: "Converted to Core ML" in window.statusBar().currentMessage(), timeout=10_000)
    gate.clear()
    dialog.start()
    qtbot.waitUntil(lambda: dialog.state.text() == "Converting Unet...", timeout=10_000)
    dialog.cancel_or_close()  # running: asks the conversion to stop instead of closing
    assert dialog.isVisible() and "Cancelling" in dialog.state.text()
    gate.set()
    qtbot.waitUntil(lambda: "nothing was written" in dialog.state.text(), timeout=10_000)


def test_model_load_shows_elapsed_time_and_the_core_ml_first_load_note(parts, qtbot, tmp_path: Path) -> None:
    window = parts.window
    folder = tmp_path / "coreml-sd15"
    (folder / "Unet.mlmodelc").mkdir(parents=True)
    window._model_loading(str(folder))
    text = window.model_state.text()
    assert "Loading model coreml-sd15... 0 s" in text and "first load" in text and "minutes" in text
    assert window.load_clock.timer.isActive()
    window._model_failed(str(folder), "Core ML models run only on macOS")
    assert not window.load_clock.timer.isActive() and window.model_state.text() == "Model failed to load"
    window._model_loading("demo")
    assert "first load" not in window.model_state.text()
    window._stop_load_clock()


def test_convert_dialog_passes_the_palette_and_shows_the_sizes(window, qtbot, tmp_path: Path, monkeypatch) -> None:
    import json

    import heyim_desktop.core.coreml.convert as convert

    seen: dict[str, object] = {}

    def fake_convert(source, out, **kw):  # type: ignore[no-untyped-def]
        seen.update(kw)
        Path(out).mkdir(parents=True)
        (Path(out) / convert.NOTES_FILE).write_text(json.dumps({"notes": ["Unet: 1.7 GB -> 0.7 GB (6-bit palette)"]}))
        return Path(out)

    monkeypatch.setattr(convert, "convert_to_coreml", fake_convert)
    dialog = window.open_convert_dialog()
    qtbot.addWidget(dialog)
    dialog.source.setText(str(tmp_path / "sdxl"))
    dialog.quantize.setCurrentIndex(dialog.quantize.findData(6))
    with qtbot.waitSignal(dialog.converted, timeout=30_000) as got:
        dialog.start()
    assert seen["quantize"] == 6 and got.args[0].endswith("sdxl-coreml-split_einsum-512-6bit")
    qtbot.waitUntil(lambda: "0.7 GB (6-bit palette)" in dialog.state.text(), timeout=10_000)


def test_convert_dialog_takes_a_single_file_checkpoint(window, qtbot, tmp_path: Path, monkeypatch) -> None:
    import heyim_desktop.core.coreml.convert as convert
    from heyim_desktop.ui import convert_dialog

    checkpoint = tmp_path / "dreamy-v2.safetensors"
    checkpoint.write_bytes(b"")
    sources: list[str] = []

    def fake_convert(source, out, **kw):  # type: ignore[no-untyped-def]
        sources.append(str(source))
        Path(out).mkdir(parents=True)
        return Path(out)

    monkeypatch.setattr(convert, "convert_to_coreml", fake_convert)
    monkeypatch.setattr(convert_dialog.QFileDialog, "getOpenFileName",
                        staticmethod(lambda *a, **k: (str(checkpoint), "Checkpoints (*.safetensors)")))
    dialog = window.open_convert_dialog()
    qtbot.addWidget(dialog)
    dialog._choose_source_file()
    assert dialog.source.text() == str(checkpoint)
    assert dialog.output_dir().name == "dreamy-v2-coreml-split_einsum-512"  # named after the file, not "x.safetensors"
    with qtbot.waitSignal(dialog.converted, timeout=30_000):
        dialog.start()
    assert sources == [str(checkpoint)]
