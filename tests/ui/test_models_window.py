"""The Models window with pytest-qt: listing, adding, importing, downloading, deleting."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from fake_hub import FakeHub
from heyim_desktop.models import catalogue
from heyim_desktop.models.catalogue import CatalogueEntry
from heyim_desktop.models.library import ModelLibrary

pytest.importorskip("pytestqt")
from heyim_desktop.ui.models_window import ModelsWindow  # noqa: E402

TINY = CatalogueEntry("tiny", "Tiny test model", "heyim/tiny-sd", "diffusers", "SD1", 10_000_000, ("*",))


@pytest.fixture()
def window(qtbot, data_dir: Path, tmp_path: Path) -> ModelsWindow:  # type: ignore[no-untyped-def]
    win = ModelsWindow(ModelLibrary(hf_cache=False))
    qtbot.addWidget(win)
    return win


def _names(win: ModelsWindow) -> dict[str, str]:
    return {win.tree.topLevelItem(i).text(0): win.tree.topLevelItem(i).text(4) for i in range(win.tree.topLevelItemCount())}


def test_lists_models_with_status_and_adds_a_folder(qtbot, window: ModelsWindow, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                    tiny_single_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _names(window) == {"HeyIm demo (tiny random model)": "ready"}
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(tiny_single_file, folder / "good.safetensors")
    (folder / "bad.safetensors").write_bytes(b"\xff" * 64)
    monkeypatch.setattr(window, "ask_folder", lambda: str(folder))
    with qtbot.waitSignal(window.foldersChanged) as sig:
        window.add_folder_button.click()
    assert sig.args == [[str(folder.resolve())]]
    names = _names(window)
    assert names["good"] == "ready" and names["bad"].startswith("corrupt: ")
    window.select(str(folder / "good.safetensors"))
    with qtbot.waitSignal(window.modelChosen) as chosen:
        window.use_button.click()
    assert chosen.args == [str(folder / "good.safetensors")]


def test_import_file_runs_off_the_ui_thread(qtbot, window: ModelsWindow, tiny_single_file: Path,  # type: ignore[no-untyped-def]
                                            monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    monkeypatch.setattr(window, "ask_file", lambda: str(tiny_single_file))
    with qtbot.waitSignal(window.modelsChanged, timeout=20000):
        window.import_button.click()
    assert _names(window)["tiny-a1111"] == "ready"
    assert window.selected_model().name == "tiny-a1111"  # type: ignore[union-attr]
    qtbot.waitUntil(lambda: not window.busy())


def test_importing_onto_a_taken_name_asks_for_another(qtbot, window: ModelsWindow, tiny_single_file: Path,  # type: ignore[no-untyped-def]
                                                        monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    from heyim_desktop.models.importer import import_model

    import_model(tiny_single_file)
    answers = iter(["tiny-a1111", "tiny copy"])  # taken again, then a free one
    asked: list[str] = []
    monkeypatch.setattr(window, "ask_name", lambda title, text, default: asked.append(default) or next(answers))
    with qtbot.waitSignal(window.modelsChanged, timeout=20000):
        window.import_file(str(tiny_single_file))
    qtbot.waitUntil(lambda: not window.busy())
    assert asked == ["tiny-a1111-2", "tiny-a1111-2"]
    assert (data_dir / "models" / "tiny copy.safetensors").is_file()
    monkeypatch.setattr(window, "ask_name", lambda title, text, default: None)  # cancelled
    window.import_file(str(tiny_single_file))
    assert "not imported" in window.status.text() and not window.busy()


def test_importing_a_lora_onto_a_taken_name_asks_for_another(qtbot, window: ModelsWindow, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                               tiny_model: Path, monkeypatch: pytest.MonkeyPatch,
                                                               data_dir: Path) -> None:
    from heyim_desktop.models.importer import import_model
    from lora_helpers import write_lora

    lora = write_lora(tiny_model, tmp_path / "inkwash.safetensors", seed=1)
    import_model(lora)  # now in models/Lora/, not in the models root
    asked: list[str] = []
    monkeypatch.setattr(window, "ask_name", lambda title, text, default: asked.append(default) or "inkwash-v2")
    with qtbot.waitSignal(window.modelsChanged, timeout=20000):
        window.import_file(str(lora))
    qtbot.waitUntil(lambda: not window.busy())
    assert asked == ["inkwash-2"]
    assert (data_dir / "models" / "Lora" / "inkwash-v2.safetensors").read_bytes() == lora.read_bytes()


def test_a_fifo_is_refused_without_blocking_the_window(qtbot, window: ModelsWindow, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    window.import_file(str(fifo))
    assert "named pipe" in window.status.text() or window.busy()
    qtbot.waitUntil(lambda: not window.busy())
    assert "named pipe" in window.status.text()


def test_pickle_import_asks_first(qtbot, window: ModelsWindow, tmp_path: Path,  # type: ignore[no-untyped-def]
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(pickle.dumps({}, protocol=2))
    asked: list[str] = []
    monkeypatch.setattr(window, "confirm", lambda title, text: asked.append(text) or False)
    window.import_file(str(ckpt))
    assert "can run code" in asked[0] and "not imported" in window.status.text() and not window.busy()


def test_delete_needs_confirmation(qtbot, window: ModelsWindow, tmp_path: Path, tiny_single_file: Path,  # type: ignore[no-untyped-def]
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "del"
    folder.mkdir()
    target = folder / "victim.safetensors"
    shutil.copy(tiny_single_file, target)
    window.library.add_folder(folder)
    window.refresh()
    window.select(str(target))
    answers = iter([False, True])
    monkeypatch.setattr(window, "confirm", lambda title, text: next(answers))
    window.delete_button.click()
    assert target.exists()
    with qtbot.waitSignal(window.modelsChanged):
        window.delete_button.click()
    assert not target.exists() and "victim" not in _names(window)


def test_show_in_file_manager(qtbot, window: ModelsWindow, tiny_single_file: Path,  # type: ignore[no-untyped-def]
                              monkeypatch: pytest.MonkeyPatch) -> None:
    from PySide6.QtGui import QDesktopServices

    opened: list[str] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    window.library.add_folder(tiny_single_file.parent)
    window.refresh()
    window.select(str(tiny_single_file))
    window.reveal_button.click()
    assert opened == [str(tiny_single_file.parent)]


@pytest.fixture()
def hub_window(qtbot, data_dir: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModelsWindow, FakeHub]]:  # type: ignore[no-untyped-def]
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    monkeypatch.setattr(catalogue, "CATALOGUE", (TINY,))
    monkeypatch.setattr("heyim_desktop.ui.models_window.catalogue", lambda: [TINY])
    with FakeHub("heyim/tiny-sd", tiny_model) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        win = ModelsWindow(ModelLibrary(hf_cache=False))
        qtbot.addWidget(win)
        yield win, hub
        win.close()


def test_download_with_progress(qtbot, hub_window: tuple[ModelsWindow, FakeHub], data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    win, _hub = hub_window
    assert "about 10.0 MB" in win.catalogue_box.currentText()
    with qtbot.waitSignal(win.modelsChanged, timeout=30000):
        win.download_button.click()
    assert (data_dir / "models" / "tiny-sd" / "model_index.json").is_file()
    assert "ready" in win.status.text()
    qtbot.waitUntil(lambda: not win.busy())
    assert not win.progress.isVisible()


def test_download_cancel(qtbot, hub_window: tuple[ModelsWindow, FakeHub], data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    win, _hub = hub_window
    win.download_button.click()
    assert win.busy() and win.cancel_button.isEnabled()
    win.cancel_button.click()
    qtbot.waitUntil(lambda: not win.busy(), timeout=30000)
    assert "Cancelled" in win.status.text()
    assert not (data_dir / "models" / "tiny-sd").exists()
    assert win.download_button.isEnabled()


def test_download_a_gguf_variant_from_two_sources(qtbot, data_dir: Path, tiny_zimage: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from gguf_variant import GGUF_REPO, base_repo_id, gguf_entry, gguf_files

    entry = gguf_entry("zimage")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(catalogue, "CATALOGUE", (entry,))
    monkeypatch.setattr("heyim_desktop.ui.models_window.catalogue", lambda: [entry])
    with FakeHub(base_repo_id("zimage"), tiny_zimage) as hub:
        hub.add_repo(GGUF_REPO, gguf_files(tiny_zimage, tmp_path, "zimage"))
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        win = ModelsWindow(ModelLibrary(hf_cache=False))
        qtbot.addWidget(win)
        # the size, quantization and licence are shown before anything is fetched; the tooltip names both sources
        assert "about 1 B · GGUF Q8_0 · Apache-2.0" in win.catalogue_box.currentText()
        from heyim_desktop.ui.qt import Qt

        assert f"{entry.repo_id} + {GGUF_REPO}" in win.catalogue_box.itemData(0, Qt.ItemDataRole.ToolTipRole)
        with qtbot.waitSignal(win.modelsChanged, timeout=30000):
            win.download_button.click()
        qtbot.waitUntil(lambda: not win.busy())
        assert "ready" in win.status.text()
        rows = {win.tree.topLevelItem(i).text(0): win.tree.topLevelItem(i) for i in range(win.tree.topLevelItemCount())}
        row = rows["tiny-zimage-gguf"]
        assert (row.text(1), row.text(2)) == ("diffusers Q8_0", "Z-Image")
        assert (data_dir / "models" / "tiny-zimage-gguf" / "transformer" / "tiny-zimage-Q8_0.gguf").is_file()
        win.close()
