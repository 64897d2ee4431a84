"""The defects found trying the window as a new user would (issue 14), one test each."""

from __future__ import annotations

from pathlib import Path

from conftest import GEN_TIMEOUT_MS, make_result, quick_settings
from heyim_desktop.core.jobs import JobState


def _generate(window, qtbot, prompt: str):  # type: ignore[no-untyped-def]
    window.prompt_panel.set_prompt(prompt)
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        assert window.generate() is not None
    job = blocker.args[0]
    assert job.state is JobState.DONE, job.error_message
    return job


def _drain(qtbot) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.ui.tasks import pool

    pool().waitForDone(10_000)
    qtbot.wait(50)  # deliver the queued results of background decodes


def _places(window, *widgets):  # type: ignore[no-untyped-def]
    """Where each widget is in the window, and how big: a layout that moves a control changes these."""
    return [(w.mapTo(window, w.rect().topLeft()), w.size()) for w in widgets]


def test_1_new_image_is_shown_while_a_thumbnail_is_selected(parts, qtbot) -> None:
    window = parts.window
    quick_settings(window)
    _generate(window, qtbot, "the old one")
    window.history.select_row(0)
    _drain(qtbot)
    job = _generate(window, qtbot, "the new one")
    _drain(qtbot)
    shown = window.result_view.current()
    assert shown is not None and shown.path == job.saved[0].path


def test_2_lowering_keep_in_history_asks_and_refreshes_the_grid(parts, qtbot) -> None:
    window, store = parts.window, parts.store
    for i in range(7):
        store.save_result(make_result(f"image {i}", seed=i + 1))
    store.set_favourite(store.page(6, 1)[0].id, True)  # the oldest is a favourite
    window.history.model.refresh()
    asked = []
    window.confirm_prune = lambda n, limit: asked.append((n, limit)) or False
    window.apply_preferences(window.prefs.replace(keep_limit=3))
    assert asked == [(3, 3)]  # 6 non-favourites, keep 3: 3 would go
    assert store.count() == 7 and window.prefs.keep_limit == 0  # declined: nothing deleted
    window.confirm_prune = lambda n, limit: True
    window.apply_preferences(window.prefs.replace(keep_limit=3))
    assert store.count() == 4 and window.history.model.rowCount() == 4
    assert all(Path(e.path).is_file() for e in store.page(0, 10))


def test_2_pruning_after_a_job_refreshes_the_grid(parts, qtbot) -> None:
    window, store = parts.window, parts.store
    quick_settings(window)
    for i in range(3):
        store.save_result(make_result(f"old {i}", seed=i + 1))
    window.history.model.refresh()
    window.confirm_prune = lambda n, limit: True
    window.apply_preferences(window.prefs.replace(keep_limit=3))
    _generate(window, qtbot, "newest")
    assert store.count() == 3
    assert window.history.model.rowCount() == 3
    assert [window.history.model.entry_at(r).prompt for r in range(3)][0] == "newest"


def test_3_a_deleted_image_leaves_the_view_and_disables_the_actions(parts, qtbot, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg").mkdir()
    window = parts.window
    quick_settings(window)
    job = _generate(window, qtbot, "delete me")
    path = Path(job.saved[0].path)
    assert window.result_view.save_button.isEnabled()
    window.history.confirm_delete = lambda n: True
    window.history.select_row(0)
    _drain(qtbot)
    window.history.delete_selected()
    assert window.result_view.current() is None
    for b in (window.result_view.save_button, window.result_view.copy_button, window.result_view.reveal_button):
        assert not b.isEnabled()
    assert not window.result_view.save_to(tmp_path / "again.png")
    assert not path.exists()
    trashed = list((tmp_path / "xdg" / "Trash" / "files").iterdir())
    assert [p.name for p in trashed] == [path.name]  # in the Trash, not gone for good


def test_4_after_a_cancel_the_actions_act_on_what_is_shown(parts, qtbot) -> None:
    from heyim_desktop.ui.qt import QApplication

    window = parts.window
    quick_settings(window)
    first = _generate(window, qtbot, "first")
    window.settings_panel.steps.setValue(150)
    window.prompt_panel.set_prompt("cancel me")
    seen_preview = []

    def on_preview(_id, _img) -> None:  # type: ignore[no-untyped-def]
        seen_preview.append(True)
        assert window.result_view.current() is None  # a preview: nothing to copy
        assert not window.result_view.copy_button.isEnabled()
        window.cancel()

    parts.worker.preview.connect(on_preview)
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS):
        window.generate()
    assert seen_preview
    shown = window.result_view.current()
    assert shown is not None and shown.path == first.saved[0].path  # the preview gave way
    assert window.result_view.caption.text() != "Live preview"
    window.result_view.copy()
    assert QApplication.clipboard().mimeData().urls()[0].toLocalFile() == str(first.saved[0].path)


def test_5_starting_a_job_neither_resizes_the_window_nor_moves_generate(parts, qtbot) -> None:
    window = parts.window
    quick_settings(window, steps=150)
    window.resize(1024, 700)
    qtbot.wait(20)
    size = window.size()
    assert (size.width(), size.height()) == (1024, 700)  # the window fits a small screen
    controls = (window.generate_button, window.prompt_panel.prompt)
    before = _places(window, *controls)
    window.prompt_panel.set_prompt("a long one")
    started = []
    parts.worker.job_started.connect(started.append)
    window.generate()
    qtbot.waitUntil(lambda: bool(started) and window.queue_panel.isVisible(), timeout=GEN_TIMEOUT_MS)
    window.prompt_panel.set_prompt("waiting")
    window.generate()
    window.show_error("Something went wrong", offer_logs=False)
    qtbot.wait(20)
    assert window.size() == size
    assert _places(window, *controls) == before
    window.queue_panel.clear()
    window.cancel()


def test_5_a_models_recommended_settings_move_no_control(parts, qtbot) -> None:
    from heyim_desktop.core.capabilities import Capabilities, Recommended
    from heyim_desktop.ui.worker import ModelReady

    window = parts.window
    panel = window.settings_panel
    window.resize(1024, 700)
    qtbot.wait(20)
    controls = (panel.refiner, panel.scheduler, panel.steps, panel.guidance, panel.seed, panel.width_box,
                panel.count, window.generate_button, window.prompt_panel.prompt)
    before = _places(window, *controls)
    size = window.size()

    def ready(rec: Recommended) -> None:
        window._model_ready(ModelReady("few", "few", "torch-cpu", 0.1, (64, 64), None, True,
                                       capabilities=Capabilities(recommended=rec)))
        qtbot.wait(20)

    ready(Recommended(steps=4, guidance=1.0, scheduler="LCM", source="known model"))
    assert panel.recommended_row.isVisibleTo(panel) and "4 steps" in panel.recommended_label.text()
    assert _places(window, *controls) == before and window.size() == size
    # A long recommendation stays on its one line (the whole text is in the tooltip).
    ready(Recommended(steps=4, guidance=1.0, scheduler="DPM++ 2M SDE Karras " * 4, source="model config"))
    assert _places(window, *controls) == before and window.size() == size
    assert "DPM++ 2M SDE Karras" in panel.recommended_label.toolTip()
    ready(Recommended())  # a model that recommends nothing: the row goes, the space stays
    assert not panel.recommended_row.isVisibleTo(panel)
    assert _places(window, *controls) == before and window.size() == size


def test_5_an_input_image_and_its_notes_move_no_control(parts, qtbot, tmp_path) -> None:
    from PIL import Image

    window = parts.window
    panel = window.settings_panel
    panel.scheduler.setCurrentText(window.prefs.default_scheduler)
    window.resize(1024, 700)
    qtbot.wait(20)
    controls = (panel.steps, panel.guidance, panel.seed, panel.width_box, panel.count, panel.clip_skip,
                window.generate_button)
    before = _places(window, *controls)
    scheduler_at = _places(window, panel.scheduler)[0][0]  # it narrows for its "Keep ..." button
    path = tmp_path / "wide.png"
    Image.new("RGB", (300, 200), (1, 2, 3)).save(path)
    with qtbot.waitSignal(window.drop_panel.input_changed, timeout=10_000, check_params_cb=lambda d: d is not None):
        window.drop_panel.load_file(path)
    qtbot.wait(20)
    # The scheduler switch and the crop are said in one line each, in room kept for them.
    assert "PNDM" in panel.scheduler_note.text() and "cropped" in panel.crop_note.text()
    assert panel.crop_note.toolTip() == panel.crop_note.text()
    assert _places(window, *controls) == before and _places(window, panel.scheduler)[0][0] == scheduler_at


def test_6_the_input_preview_shows_the_whole_image(parts, qtbot, tmp_path) -> None:
    from PIL import Image

    window = parts.window
    path = tmp_path / "square.png"
    Image.new("RGB", (256, 256), (10, 200, 30)).save(path)
    with qtbot.waitSignal(window.drop_panel.input_changed, timeout=10_000, check_params_cb=lambda d: d is not None):
        window.drop_panel.load_file(path)
    qtbot.wait(20)
    w, h = window.drop_panel.picture.shown_size()
    room = window.drop_panel.picture.contentsRect()
    assert w > 0 and abs(w - h) <= 1  # square stays square
    assert w <= room.width() and h <= room.height()  # and fits: nothing cut off


def test_7_show_in_folder_and_show_logs_say_where_when_nothing_opens(parts, qtbot, monkeypatch) -> None:
    import heyim_desktop.ui.reveal as reveal
    from heyim_desktop.ui.qt import QApplication

    window = parts.window
    monkeypatch.setattr(reveal.QDesktopServices, "openUrl", staticmethod(lambda url: False))
    monkeypatch.setattr(reveal.sys, "platform", "linux")
    window.show_logs()
    assert str(window.log_file) in window.banner.message()
    quick_settings(window)
    job = _generate(window, qtbot, "where am i")
    window.result_view.reveal_button.click()
    assert str(job.saved[0].path) in window.banner.message()
    copy = window.banner.findChildren(reveal_button_type())[-1]
    copy.click()
    assert QApplication.clipboard().text() == str(job.saved[0].path)


def reveal_button_type():  # type: ignore[no-untyped-def]
    from heyim_desktop.ui.qt import QPushButton

    return QPushButton


def test_8_a_huge_image_is_refused_in_heyim_words(tmp_path) -> None:
    from PIL import Image

    from heyim_desktop.core.errors import ImageError
    from heyim_desktop.core.images import load_image

    path = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(path)  # 100 Mpx, a small file
    try:
        load_image(path)
    except ImageError as exc:
        text = str(exc)
    else:  # pragma: no cover - the test fails
        raise AssertionError("a 100 Mpx image was decoded")
    assert "67,108,864" in text and "decompression" not in text.lower() and "DOS" not in text


def test_9_banners_clear_when_their_cause_is_fixed(parts, qtbot, tmp_path) -> None:
    from PIL import Image

    window = parts.window
    window.prompt_panel.set_prompt("a fox")
    window.generate()
    assert "Choose a model" in window.banner.message()
    window.use_demo_model()
    assert not window.banner.isVisible()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with qtbot.waitSignal(window.drop_panel.failed, timeout=10_000):
        window.drop_panel.load_file(bad)
    assert "bad.png" in window.banner.message()
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64)).save(good)
    with qtbot.waitSignal(window.drop_panel.input_changed, timeout=10_000, check_params_cb=lambda d: d is not None):
        window.drop_panel.load_file(good)
    assert not window.banner.isVisible()


def test_10_queue_counts_only_jobs_ahead(parts, qtbot) -> None:
    from heyim_desktop.core.jobs import JobQueue
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.ui.generate import queue_note

    queue = JobQueue()  # not drained: nothing runs
    first = queue.submit(GenerationRequest(prompt="a"))
    assert queue_note(queue, first) == ""  # next to run, nothing running
    second = queue.submit(GenerationRequest(prompt="b"))
    assert queue_note(queue, second) == "1 job ahead"
    window = parts.window
    quick_settings(window)
    window.prompt_panel.set_prompt("alone")
    window.status("")
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS):
        window.generate()
    assert not any("waiting" in m or "ahead" in m for m in window.status_history)


def test_12_models_with_the_same_name_are_told_apart(qtbot) -> None:
    from types import SimpleNamespace

    from heyim_desktop.ui.settings_panel import SettingsPanel

    panel = SettingsPanel()
    qtbot.addWidget(panel)
    ready = dict(ready=True, problem="", status=None)
    panel.set_models([SimpleNamespace(name="demo-model", ref="demo", kind="demo", **ready),
                      SimpleNamespace(name="demo-model", ref="/models/demo-model", kind="diffusers", **ready)])
    labels = [panel.model.itemText(i) for i in range(panel.model.count())]
    assert len(set(labels)) == 2 and any("/models" in label for label in labels)


def test_13_only_devices_that_exist_are_offered(parts, qtbot) -> None:
    from heyim_desktop.ui.preferences_dialog import PreferencesDialog

    window = parts.window
    dialog = PreferencesDialog(window.prefs.replace(device="auto"), window)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.detected is not None, timeout=60_000)
    offered = [dialog.device.itemData(i) for i in range(dialog.device.count())]
    import torch

    assert ("cuda" in offered) == torch.cuda.is_available()


def test_13_a_saved_gpu_the_computer_lacks_fails_at_launch_in_plain_words(
        data_dir, qtbot, caplog, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Saved device CUDA, last model preloading at launch, no CUDA: a banner says so at once."""
    import logging

    import torch

    from heyim_desktop.core import paths
    from heyim_desktop.store.preferences import load_preferences, save_preferences
    from heyim_desktop.ui.app import build_app
    from heyim_desktop.ui.logs import teardown_logging

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only computer, even on a GPU box

    def no_model_work(*_args: object) -> None:
        raise AssertionError("the model was touched before the device was checked")

    monkeypatch.setattr(paths, "ensure_demo_model", no_model_work)
    save_preferences(load_preferences().replace(device="cuda", last_model="demo"))
    caplog.set_level(logging.INFO)
    p = build_app(["heyim-test"], in_process_engine=True)
    qtbot.addWidget(p.window)
    try:
        with qtbot.waitSignal(p.worker.model_failed, timeout=GEN_TIMEOUT_MS) as failed:
            pass  # the worker starts with the event loop and preloads "demo" on the saved device
        assert failed.args[0] == "demo" and "no CUDA GPU" in failed.args[1]
        window = p.window
        qtbot.waitUntil(lambda: "no CUDA GPU" in window.banner.message(), timeout=10_000)
        assert window.model_state.text() == "Model failed to load"
        buttons = [window.banner.buttons.itemAt(i).widget().text() for i in range(window.banner.buttons.count())]
        assert "Preferences..." in buttons  # one click to the device setting
        assert "Traceback" not in window.banner.message()
        assert not [r for r in caplog.records if r.exc_info]  # a user-facing error: no traceback logged
    finally:
        p.app.aboutToQuit.disconnect(p.shutdown)
        p.shutdown()
        p.window.close()
        teardown_logging()


def test_14_garbage_ckpt_and_empty_folders_get_plain_words(parts, qtbot, tmp_path) -> None:
    from heyim_desktop.core.model_files import CorruptModel, read_safetensors_header
    from heyim_desktop.ui.dialogs import start_folder

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"hello")
    try:
        read_safetensors_header(junk)
    except CorruptModel as exc:
        assert "not a safetensors" not in str(exc) and "neither" in str(exc)
    models = parts.window.open_models_window()
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    models.ask_folder = lambda: str(empty)
    models.add_folder_button.click()
    assert "No models in" in models.status.text()
    assert Path.cwd() not in (start_folder("image"), start_folder("model")) or Path.cwd() == Path.home()
    models.close()


def test_15_img2img_says_it_switched_the_scheduler_and_lets_you_keep_yours(parts, qtbot, tmp_path) -> None:
    from PIL import Image

    window = parts.window
    sp = window.settings_panel
    sp.scheduler.setCurrentText(window.prefs.default_scheduler)
    path = tmp_path / "wide.png"
    Image.new("RGB", (300, 200), (1, 2, 3)).save(path)
    with qtbot.waitSignal(window.drop_panel.input_changed, timeout=10_000, check_params_cb=lambda d: d is not None):
        window.drop_panel.load_file(path)
    assert sp.scheduler.currentText() == "PNDM"
    assert "PNDM" in sp.scheduler_note.text() and sp.keep_scheduler.isVisibleTo(window)
    sp.keep_scheduler.click()
    assert sp.scheduler.currentText() == window.prefs.default_scheduler
    sp.set_size(512, 512)
    assert "cropped" in sp.crop_note.text()
    sp.match_button.click()
    assert (sp.width_box.value(), sp.height_box.value()) == (304, 200)
    assert "cropped" not in sp.crop_note.text()


def test_15_progress_counts_the_steps_that_run_per_image(parts, qtbot) -> None:
    from types import SimpleNamespace

    from heyim_desktop.ui.generate import progress_label

    img2img = SimpleNamespace(request=SimpleNamespace(count=2, steps=30, strength=0.75, is_img2img=True))
    assert progress_label(img2img, 20, 46) == "Image 1 of 2, step 20/23"  # PNDM runs 23 of 30 per image
    assert progress_label(img2img, 30, 46) == "Image 2 of 2, step 7/23"
    batched = SimpleNamespace(request=SimpleNamespace(count=2, steps=24, strength=1.0, is_img2img=False))
    assert progress_label(batched, 5, 24) == "Step 5/24"  # both images at once on a GPU
    window = parts.window
    quick_settings(window, steps=3)
    window.settings_panel.count.setValue(2)
    totals = []
    parts.worker.progress.connect(lambda _id, done, total, _t: totals.append(total))
    _generate(window, qtbot, "two of them")
    assert set(totals) == {6}  # 3 steps x 2 images, not 12


def test_16_drops_are_copies_and_the_notification_opens_its_image(parts, qtbot, tmp_path) -> None:
    from PIL import Image

    from heyim_desktop.ui.qt import QDragEnterEvent, QMimeData, QPoint, Qt, QUrl

    window = parts.window
    path = tmp_path / "p.png"
    Image.new("RGB", (64, 64)).save(path)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.MoveAction | Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dragEnterEvent(event)
    assert event.isAccepted() and event.dropAction() == Qt.DropAction.CopyAction
    assert window.drop_panel.property("dropTarget") is True  # highlighted while dragging
    tray = parts.tray
    entry = parts.store.save_result(make_result("from the tray"))[0]
    tray._message_entry = entry
    window.hide()
    tray.message_clicked()
    assert window.isVisible()
    qtbot.waitUntil(lambda: window.result_view.current() is not None
                    and window.result_view.current().path == entry.path, timeout=10_000)


def test_17_words_and_a_quick_quit(parts, qtbot, tmp_path, data_dir) -> None:
    import os
    import subprocess
    import sys

    from heyim_desktop.ui.generate import plural
    from heyim_desktop.ui.global_shortcut import TRAY_NAME
    from heyim_desktop.ui.qt import QImage

    assert plural(1, "image") == "1 image" and plural(2, "image") == "2 images"
    if sys.platform != "darwin":
        assert TRAY_NAME == "system tray"
    window = parts.window
    pasted = []
    window.drop_panel.decoded.connect(pasted.append)
    from heyim_desktop.ui.qt import QApplication

    image = QImage(64, 64, QImage.Format.Format_RGB888)
    image.fill(0)
    QApplication.clipboard().setImage(image)
    with qtbot.waitSignal(window.drop_panel.decoded, timeout=10_000):
        window.drop_panel.paste()
    assert pasted[0].label == "Pasted image"
    assert "menu-indicator" in window.prompt_panel.recent_button.styleSheet()
    # Quitting skips Python's slow module teardown once everything is saved (atexit never runs).
    marker = tmp_path / "teardown-ran"
    code = (
        "import atexit, pathlib, sys\n"
        f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('x'))\n"
        "from heyim_desktop.ui import app\n"
        "from heyim_desktop.ui.qt import QTimer\n"
        "orig = app.build_app\n"
        "def build(*a, **k):\n"
        "    p = orig(*a, **k)\n"
        "    QTimer.singleShot(0, p.window.quit_app)\n"
        "    return p\n"
        "app.build_app = build\n"
        "sys.exit(app.run_app(['t']))\n"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    env = dict(os.environ, PYTHONPATH=str(src), QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not marker.exists()
