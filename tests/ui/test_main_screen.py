"""What Mac users look for on the main screen (issue 14): info panel, aspect picker, seeds, batch
strip, full-screen viewer, history labels and Trash, output folder, API state, image folder."""

from __future__ import annotations

from pathlib import Path

from conftest import GEN_TIMEOUT_MS, make_result, quick_settings
from heyim_desktop.core.jobs import JobState


def _generate(window, qtbot, prompt: str, count: int = 1):  # type: ignore[no-untyped-def]
    window.settings_panel.count.setValue(count)
    window.prompt_panel.set_prompt(prompt, "blurry")
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        assert window.generate() is not None
    job = blocker.args[0]
    assert job.state is JobState.DONE, job.error_message
    return job


def test_info_panel_shows_every_parameter_and_copies_them(parts, qtbot) -> None:
    from heyim_desktop.core.metadata import parse_parameters
    from heyim_desktop.ui.qt import QApplication

    window = parts.window
    quick_settings(window, steps=3)
    window.settings_panel.set_seed(4242, locked=True)
    job = _generate(window, qtbot, "a lighthouse at dusk")
    info = window.info_panel
    assert info.value("Prompt") == "a lighthouse at dusk" and info.value("Negative") == "blurry"
    assert info.value("Seed") == "4242" and info.value("Size") == "64 x 64" and info.value("Steps") == "3"
    path = Path(job.saved[0].path)
    assert info.value("File") == path.name and info.value("Folder") == str(path.parent)
    info.copy_seed.click()
    assert QApplication.clipboard().text() == "4242"
    info.copy_prompt.click()
    assert QApplication.clipboard().text() == "a lighthouse at dusk"
    info.copy_parameters.click()
    parsed = parse_parameters(QApplication.clipboard().text())
    assert parsed.prompt == "a lighthouse at dusk" and parsed.request_settings()["seed"] == 4242
    window.result_view.clear()
    assert info.value("Prompt") is None and not info.copy_parameters.isEnabled()


def test_aspect_picker_keeps_the_native_pixel_count(window) -> None:
    from heyim_desktop.ui.settings_panel import aspect_size, match_size

    assert aspect_size(1, 1, (512, 512)) == (512, 512)
    assert aspect_size(16, 9, (512, 512)) == (680, 384)
    w, h = aspect_size(3, 2, (1024, 1024))
    assert (w, h) == (1256, 840) and abs(w * h / 1024**2 - 1) < 0.01 and w % 8 == h % 8 == 0
    assert match_size(300, 200, (512, 512)) == (304, 200)
    assert match_size(4000, 3000, (512, 512)) == (592, 440)  # a photo: its shape at the native pixel count
    sp = window.settings_panel
    sp.set_native_size((512, 512))
    sp.aspect.setCurrentIndex(sp.aspect.findText("9:16 tall"))
    sp.aspect.activated.emit(sp.aspect.currentIndex())
    assert (sp.width_box.value(), sp.height_box.value()) == (384, 680)
    sp.set_size(500, 400)
    assert sp.aspect.currentText() == "Custom"


def test_seed_dice_last_seed_and_the_seed_of_the_shown_image(parts, qtbot) -> None:
    window = parts.window
    sp = window.settings_panel
    quick_settings(window)
    assert not sp.last_seed_button.isEnabled()
    job = _generate(window, qtbot, "random seed")
    made = job.result.request.seed
    assert sp.random_seed.isChecked() and sp.last_seed_button.isEnabled()
    sp.dice.click()
    rolled = sp.seed_value()
    assert rolled is not None and not sp.random_seed.isChecked()
    sp.last_seed_button.click()
    assert sp.seed_value() == made
    sp.set_seed(None, locked=False)
    window.menu_actions.seed_of_shown.trigger()
    assert sp.seed_value() == made


def test_a_batch_shows_as_a_strip_with_the_selected_one_large(parts, qtbot) -> None:
    window = parts.window
    quick_settings(window)
    job = _generate(window, qtbot, "three of them", count=3)
    rv = window.result_view
    assert rv.strip.isVisibleTo(window) and rv.strip.count() == 3
    rv.strip.setCurrentRow(2)
    assert rv.current().path == job.saved[2].path and rv.counter.text() == "3 of 3"
    assert window.info_panel.value("Seed") == str(job.saved[2].seed)


def test_full_screen_viewer_zooms_and_steps_through_history(parts, qtbot) -> None:
    from PySide6.QtTest import QTest

    from heyim_desktop.ui.qt import Qt

    window, store = parts.window, parts.store
    for i in range(3):
        store.save_result(make_result(f"picture {i}", seed=i + 1))
    window.history.model.refresh()
    window.history.select_row(0)  # the newest
    qtbot.waitUntil(lambda: window.result_view.current() is not None, timeout=10_000)
    viewer = window.open_viewer()
    assert viewer is not None and viewer.isVisible()
    assert viewer.zoom_label.text().startswith("Fit (")
    QTest.keyClick(viewer, Qt.Key.Key_Plus)
    assert viewer.zoom_label.text().endswith("%") and not viewer.zoom_label.text().startswith("Fit")
    with qtbot.waitSignal(viewer.entry_shown, timeout=10_000) as shown:
        QTest.keyClick(viewer, Qt.Key.Key_Right)
    assert shown.args[0] == window.history.model.entry_id(1)
    assert viewer.shown.entry.prompt == "picture 1" and viewer.position.text() == "2 of 3"
    assert window.history.current_entry().prompt == "picture 1"  # the grid follows
    QTest.keyClick(viewer, Qt.Key.Key_Escape)
    assert not viewer.isVisible()


def test_history_labels_days_no_matches_and_multi_select(parts, qtbot, tmp_path, monkeypatch) -> None:
    import time

    from heyim_desktop.ui.history_model import day_label, entry_label

    now = time.mktime((2026, 12, 1, 15, 0, 0, 0, 0, -1))
    assert day_label(now - 3600, now) == "Today" and day_label(now - 86400, now) == "Yesterday"
    assert day_label(now - 40 * 86400, now) == "22 Oct 2026"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg").mkdir()
    window, store = parts.window, parts.store
    entries = []
    for i in range(3):
        entries += store.save_result(make_result(f"a red fox, variation {i}", seed=i + 1))
    panel = window.history
    panel.model.refresh()
    label = panel.model.data(panel.model.index(0))
    assert label == entry_label(entries[2]) and "variation 2" in label and "Today" in label
    panel.search.setText("whale")
    qtbot.waitUntil(lambda: panel.no_matches.isVisibleTo(window))
    assert "whale" in panel.no_matches.text() and not panel.view.isVisibleTo(window)
    panel.search.clear()
    qtbot.waitUntil(lambda: panel.model.rowCount() == 3 and panel.view.isVisibleTo(window))
    panel.view.selectAll()
    panel.favourite_button.click()
    assert all(store.get(e.id).favourite for e in entries)
    panel.confirm_delete = lambda n: n == 3
    panel.delete_selected()
    assert store.count() == 0
    assert sorted(p.name for p in (tmp_path / "xdg" / "Trash" / "files").iterdir()) == \
        sorted(Path(e.path).name for e in entries)


def test_open_output_folder_and_image_folder_changes_at_once(parts, qtbot, tmp_path, monkeypatch) -> None:
    import heyim_desktop.ui.reveal as reveal

    window = parts.window
    opened = []
    monkeypatch.setattr(reveal.QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url) or True))
    quick_settings(window)
    old = _generate(window, qtbot, "in the old folder")
    target = tmp_path / "my pictures"
    window.apply_preferences(window.prefs.replace(output_folder=str(target)))
    assert str(target) in window.statusBar().currentMessage()
    new = _generate(window, qtbot, "in the new folder")
    assert Path(new.saved[0].path).is_relative_to(target)
    assert Path(old.saved[0].path).is_file() and parts.store.get(old.saved[0].id).path.is_file()
    window.menu_actions.open_output_folder.trigger()
    assert opened and opened[-1].toLocalFile() == str(target)


def test_the_local_api_state_is_in_the_status_bar(window) -> None:
    window._api_changed("http://127.0.0.1:7860")
    assert window.api_state.isVisibleTo(window) and "127.0.0.1:7860" in window.api_state.text()
    window._api_changed(None)
    assert not window.api_state.isVisibleTo(window)


def test_history_groups_by_day(parts, qtbot) -> None:
    window, store = parts.window, parts.store
    old = [e for i in range(2) for e in store.save_result(make_result(f"yesterday {i}", seed=i + 1))]
    with store._lock:  # backdate two images by a day (a test-only write)
        store._conn.executemany("UPDATE entries SET created = created - 86400 WHERE id = ?", [(e.id,) for e in old])
    for i in range(3):
        store.save_result(make_result(f"today {i}", seed=10 + i))
    panel = window.history
    panel.model.refresh()
    assert [(first, n) for first, _day, n in panel.model.day_groups] == [(0, 3), (3, 2)]
    from heyim_desktop.ui.history_model import DayStartRole

    assert panel.model.data(panel.model.index(0), DayStartRole) == "Today"
    assert panel.model.data(panel.model.index(1), DayStartRole) is None
    assert panel.model.data(panel.model.index(3), DayStartRole) == "Yesterday"
    assert [panel.day_jump.itemText(i) for i in range(panel.day_jump.count())] == \
        ["All days", "Today (3)", "Yesterday (2)"]
    panel.day_jump.activated.emit(2)
    assert panel.current_entry().prompt == "yesterday 1"
