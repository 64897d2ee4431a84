"""The history grid against the real store: lazy rows and thumbnails, search, favourites, delete, drag."""

from __future__ import annotations

from conftest import make_result
from heyim_desktop.ui.drop_panel import HISTORY_MIME
from heyim_desktop.ui.history_model import EntryRole


def fill(store, prompts):  # type: ignore[no-untyped-def]
    entries = []
    for i, prompt in enumerate(prompts):
        entries += store.save_result(make_result(prompt, seed=i + 1))
    return entries


def test_grid_lists_newest_first_and_loads_thumbnails_lazily(parts, qtbot) -> None:
    store, panel = parts.store, parts.window.history
    fill(store, ["a red fox", "a blue whale", "a green frog"])
    panel.model.refresh()
    assert panel.model.rowCount() == 3
    assert [panel.model.entry_at(r).prompt for r in range(3)] == ["a green frog", "a blue whale", "a red fox"]
    assert panel.count_label.text() == "3 images"
    loaded = []
    panel.model.loader.loaded.connect(lambda i, img: loaded.append((i, img)))
    panel.model.data(panel.model.index(0), 1)  # DecorationRole asks for the thumbnail
    qtbot.waitUntil(lambda: bool(loaded), timeout=10_000)
    entry_id, image = loaded[0]
    assert entry_id == panel.model.entry_id(0) and not image.isNull()
    assert store.thumbnail_path(entry_id, 256).is_file()


def test_search_and_favourites_filter(parts, qtbot) -> None:
    store, panel = parts.store, parts.window.history
    entries = fill(store, ["a red fox in the snow", "portrait of a cat", "a fox cub"])
    panel.model.refresh()
    panel.search.setText("fox")
    qtbot.waitUntil(lambda: panel.model.rowCount() == 2)
    assert panel.count_label.text() == "2 found"
    panel.search.clear()
    qtbot.waitUntil(lambda: panel.model.rowCount() == 3)
    store.set_favourite(entries[1].id, True)
    panel.favourites.setChecked(True)
    assert panel.model.rowCount() == 1 and panel.model.entry_at(0).prompt == "portrait of a cat"


def test_ctrl_f_focuses_search(window, qtbot) -> None:
    window.activateWindow()
    window.history.focus_search()
    qtbot.waitUntil(window.history.search.hasFocus)


def test_favourite_button_and_delete_with_confirmation(parts, qtbot) -> None:
    store, panel = parts.store, parts.window.history
    entries = fill(store, ["one", "two"])
    panel.model.refresh()
    panel.select_row(0)  # "two"
    panel.favourite_button.click()
    assert store.get(entries[1].id).favourite
    assert panel.model.data(panel.model.index(0)).startswith("\u2605")

    asked = []
    panel.confirm_delete = lambda n: asked.append(n) or False
    panel.delete_button.click()
    assert asked == [1] and store.count() == 2  # declined: nothing deleted
    panel.confirm_delete = lambda n: True
    path = entries[1].path
    panel.delete_button.click()
    assert store.count() == 1 and not path.exists()
    assert panel.model.rowCount() == 1 and panel.model.entry_at(0).prompt == "one"


def test_drag_out_carries_files_and_history_ids(parts) -> None:
    store, panel = parts.store, parts.window.history
    entries = fill(store, ["drag me"])
    panel.model.refresh()
    mime = panel.model.mimeData([panel.model.index(0)])
    assert [u.toLocalFile() for u in mime.urls()] == [str(entries[0].path)]
    assert bytes(mime.data(HISTORY_MIME)).decode() == str(entries[0].id)


def test_history_thumbnail_dropped_on_input_is_used_without_asking(parts, qtbot) -> None:
    window, store, panel = parts.window, parts.store, parts.window.history
    fill(store, ["use me"])
    panel.model.refresh()
    window.ask_dropped_settings = lambda d: (_ for _ in ()).throw(AssertionError("must not ask"))
    mime = panel.model.mimeData([panel.model.index(0)])
    with qtbot.waitSignal(window.drop_panel.input_changed, timeout=10_000):
        window.drop_panel.load_mime(mime)
    assert window.drop_panel.image is not None


def test_use_as_input_and_open_in_result_view(parts, qtbot) -> None:
    window, store, panel = parts.window, parts.store, parts.window.history
    fill(store, ["input please"])
    panel.model.refresh()
    entry = panel.model.index(0).data(EntryRole)
    with qtbot.waitSignal(window.drop_panel.input_changed, timeout=10_000):
        panel.select_row(0)
        panel.input_button.click()
    assert window.drop_panel.image.size == (64, 64)
    qtbot.waitUntil(lambda: window.result_view.current() is not None, timeout=10_000)
    assert window.result_view.current().path == entry.path


def test_new_results_appear_on_top_without_a_reset(parts, qtbot) -> None:
    store, panel = parts.store, parts.window.history
    fill(store, ["old"])
    panel.model.refresh()
    resets = []
    panel.model.modelReset.connect(lambda: resets.append(1))
    new = store.save_result(make_result("new", seed=9))
    panel.model.add_entries(new)
    assert resets == [] and panel.model.entry_at(0).prompt == "new" and panel.model.rowCount() == 2


def test_an_undeletable_image_stays_marked_could_not_delete(parts, qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    store, panel = parts.store, parts.window.history
    (entry,) = fill(store, ["stuck"])
    panel.model.refresh()
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):  # type: ignore[no-untyped-def]
        if self == entry.path:
            raise PermissionError(1, "Operation not permitted")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    messages = []
    panel.message.connect(messages.append)
    panel.confirm_delete = lambda n: True
    panel.select_row(0)
    panel.delete_button.click()
    assert messages and "could not be deleted" in messages[-1]
    assert store.count() == 1 and entry.path.exists()
    qtbot.waitUntil(lambda: panel.model.rowCount() == 1)
    assert panel.model.data(panel.model.index(0)).startswith("(could not delete)")
