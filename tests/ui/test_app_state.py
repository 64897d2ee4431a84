"""Launch, preferences, remembered settings and layout, logs, error banners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import GEN_TIMEOUT_MS, quick_settings
from heyim_desktop.core.jobs import JobState
from heyim_desktop.store.preferences import load_preferences


def test_launch_imports_no_torch(data_dir: Path) -> None:
    code = (
        "import sys\n"
        "from heyim_desktop.ui.app import build_app\n"
        "p = build_app(['t'], show=False)\n"
        "print(','.join(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
        "p.shutdown()\n"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    env = dict(os.environ, PYTHONPATH=str(src), QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_settings_prompt_and_layout_survive_a_restart(parts, qtbot, data_dir: Path) -> None:
    from heyim_desktop.ui.app import build_app

    window = parts.window
    quick_settings(window, steps=7)
    window.prompt_panel.set_prompt("remember me", "and me")
    window.settings_panel.guidance.setValue(9.5)
    window.settings_panel.set_seed(77, locked=True)
    window.main_split.setSizes([300, 900])
    sizes = window.main_split.sizes()
    window.close()
    prefs = load_preferences()
    assert prefs.last_model == "demo" and prefs.last_settings["prompt"] == "remember me"

    again = build_app(["heyim-test"])
    try:
        w2 = again.window
        qtbot.addWidget(w2)
        qtbot.waitExposed(w2)
        assert w2.prompt_panel.prompt_text() == "remember me"
        assert w2.prompt_panel.negative_text() == "and me"
        v = w2.settings_panel.values()
        assert (v["steps"], v["guidance"], v["seed"], v["width"], v["model"]) == (7, 9.5, 77, 64, "demo")
        assert not w2.no_model.isVisible()
        # The offscreen screen is 800x600, so the restored window is clamped; the left panel keeps its width.
        assert w2.main_split.sizes()[0] == sizes[0]
    finally:
        again.app.aboutToQuit.disconnect(again.shutdown)
        again.shutdown()


def test_preferences_apply_to_the_window_and_the_store(window) -> None:
    from heyim_desktop.ui.preferences_dialog import PreferencesDialog

    dialog = PreferencesDialog(window.prefs, window)
    dialog.steps.setValue(12)
    dialog.keep.setValue(100)
    dialog.scheduler.setCurrentText("Euler")
    window.apply_preferences(dialog.result_preferences())
    saved = load_preferences()
    assert (saved.default_steps, saved.keep_limit, saved.default_scheduler) == (12, 100, "Euler")
    assert window.store.keep_limit == 100


def test_the_precision_and_memory_preferences_reach_the_next_model_load(data_dir: Path, qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import heyim_desktop.core.loading as loading
    from heyim_desktop.store.preferences import save_preferences
    from heyim_desktop.ui.app import build_app
    from heyim_desktop.ui.preferences_dialog import PreferencesDialog

    dialog = PreferencesDialog(load_preferences())
    qtbot.addWidget(dialog)
    offered = [dialog.precision.itemData(i) for i in range(dialog.precision.count())]
    assert offered == ["auto", "bf16", "fp16", "fp32"] and dialog.precision.currentData() == "auto"
    dialog.precision.setCurrentIndex(dialog.precision.findData("bf16"))
    assert dialog.result_preferences().precision == "bf16"
    memory = [dialog.memory.itemData(i) for i in range(dialog.memory.count())]
    assert memory == ["auto", "low", "full"] and dialog.memory.currentData() == "auto"
    dialog.memory.setCurrentIndex(dialog.memory.findData("low"))
    assert dialog.result_preferences().memory == "low"

    asked: list[tuple[str, str]] = []
    real = loading.load_engine

    def recording(ref: str, **kwargs):  # type: ignore[no-untyped-def]
        asked.append((kwargs.get("precision", "auto"), kwargs.get("memory", "auto")))
        return real(ref, **kwargs)

    monkeypatch.setattr(loading, "load_engine", recording)
    save_preferences(dialog.result_preferences().replace(last_model="demo", device="cpu"))
    p = build_app(["heyim-test"], in_process_engine=True)
    qtbot.addWidget(p.window)
    try:
        with qtbot.waitSignal(p.worker.model_ready, timeout=GEN_TIMEOUT_MS):
            pass  # the saved last model preloads with the saved precision and memory setting
        assert asked == [("bf16", "low")]
    finally:
        p.app.aboutToQuit.disconnect(p.shutdown)
        p.shutdown()
        p.window.close()


def test_adding_a_model_folder_lists_its_models(window, tiny_model: Path) -> None:
    window.add_model_folder(str(tiny_model.parent))
    assert str(tiny_model.parent) in load_preferences().model_folders
    assert window.settings_panel.model_ref() == str(tiny_model)
    assert not window.no_model.isVisible()


def test_a_broken_model_shows_a_banner_and_the_app_goes_on(parts, qtbot, tmp_path: Path) -> None:
    window = parts.window
    broken = tmp_path / "models" / "broken-model"
    broken.mkdir(parents=True)
    (broken / "model_index.json").write_text("{}")
    quick_settings(window)
    window.settings_panel.model.addItem("broken", str(broken))
    window.settings_panel.select_model(str(broken))
    window.prompt_panel.set_prompt("anything")
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        window.generate()
    assert blocker.args[0].state is JobState.FAILED
    assert window.banner.isVisible() and window.banner.kind == "error"
    assert "broken-model" in window.banner.message() or "model" in window.banner.message().lower()
    buttons = [window.banner.buttons.itemAt(i).widget().text() for i in range(window.banner.buttons.count())]
    assert "Show Logs" in buttons
    # The app still generates with a good model.
    window.settings_panel.select_model("demo")
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        window.generate()
    assert blocker.args[0].state is JobState.DONE


def test_the_log_file_records_errors(parts, qtbot) -> None:
    import logging

    window = parts.window
    logging.getLogger("heyim_desktop.ui.test").error("something broke")
    for h in logging.getLogger("heyim_desktop").handlers:
        h.flush()
    assert window.log_file is not None and window.log_file.parent.name == "logs"
    text = window.log_file.read_text(encoding="utf-8")
    assert "ERROR" in text and "something broke" in text


def test_result_save_as_keeps_the_png_settings(parts, qtbot, tmp_path: Path) -> None:
    from heyim_desktop.core.metadata import read_parameters

    window = parts.window
    quick_settings(window)
    window.prompt_panel.set_prompt("save me")
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS):
        window.generate()
    target = tmp_path / "copy.png"
    assert window.result_view.save_to(target)
    params = read_parameters(target)
    assert params is not None and params.prompt == "save me"
    assert window.result_view.save_to(tmp_path / "copy.jpg") and (tmp_path / "copy.jpg").stat().st_size > 0
    window.result_view.copy()
    from heyim_desktop.ui.qt import QApplication

    mime = QApplication.clipboard().mimeData()
    assert mime.hasImage() and mime.urls()[0].toLocalFile() == str(window.result_view.current().path)


def test_download_opens_the_models_window_and_its_choices_reach_the_picker(window, qtbot, tiny_model: Path) -> None:
    window.no_model.download_button.click()
    models = window.models_window
    assert models is not None and models.isVisible()
    models.foldersChanged.emit([str(tiny_model.parent)])  # as its "Add folder..." does
    assert load_preferences().model_folders == (str(tiny_model.parent),)
    with qtbot.waitSignal(window.worker.model_loading, timeout=10_000):
        models.modelChosen.emit(str(tiny_model))  # "Use"
    assert window.settings_panel.model_ref() == str(tiny_model)
    assert load_preferences().last_model == str(tiny_model) and not window.no_model.isVisible()
    models.close()


def test_a_dropped_model_file_goes_to_the_models_window(window, qtbot, tmp_path: Path) -> None:
    from heyim_desktop.ui.qt import QDropEvent, QMimeData, QPointF, Qt, QUrl

    bogus = tmp_path / "not-a-model.safetensors"
    bogus.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(bogus))])
    event = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert event.isAccepted() and window.models_window is not None
    assert window.drop_panel.image is None  # not treated as a picture
    models = window.models_window
    qtbot.waitUntil(lambda: models._thread is None, timeout=30_000)  # the import task finished
    assert models.status.text()  # it says what happened to the file
    models.close()


def test_a_family_model_generates_in_the_window_with_save_memory(parts, qtbot, tiny_flux2: Path) -> None:  # type: ignore[no-untyped-def]
    """Preferences > Memory "Save memory", a FLUX.2 [klein] folder picked in the window: the model line
    says so, and the image arrives in history with its family's metadata."""
    window = parts.window
    window.prefs = window.prefs.replace(memory="low", device="cpu")  # what OK in Preferences leaves
    panel = window.settings_panel
    panel.model.addItem("tiny klein", str(tiny_flux2))
    index = panel.model.findData(str(tiny_flux2))
    with qtbot.waitSignal(window.worker.model_ready, timeout=GEN_TIMEOUT_MS):
        panel.model.setCurrentIndex(index)
        panel.model.activated.emit(index)  # what a click in the picker sends
    assert "saving memory: text encoders and transformer load in turn" in window.model_state.text()
    panel.set_size(64, 64)
    panel.steps.setValue(2)
    panel.count.setValue(1)
    window.prompt_panel.set_prompt("a red fox")
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        window.generate()
    assert blocker.args[0].state is JobState.DONE
    entry = window.store.page(0, 1)[0]
    assert "Model family: FLUX.2 [klein]" in entry.parameters and entry.path.is_file()
