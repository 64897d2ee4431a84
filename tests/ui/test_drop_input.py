"""Dropping images: files -> image-to-image, corrupt files -> a message, foreign PNG settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from conftest import GEN_TIMEOUT_MS, quick_settings
from heyim_desktop.core.jobs import JobState
from heyim_desktop.ui.qt import QDropEvent, QMimeData, QPointF, Qt, QUrl
from heyim_desktop.ui.window import CANCEL, LOAD_SETTINGS, USE_AS_INPUT

A1111 = ("a castle on a hill, matte painting\nNegative prompt: lowres, watermark\n"
         "Steps: 7, Sampler: Euler a, CFG scale: 6.5, Seed: 987654, Size: 64x80, Model: sd15")


def drop_files(widget, *paths: Path) -> None:  # type: ignore[no-untyped-def]
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(event)
    assert event.isAccepted()


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (120, 90), (200, 30, 30)).save(path)
    return path


def test_dropping_a_file_switches_to_image_to_image(parts, qtbot, photo: Path) -> None:
    window = parts.window
    quick_settings(window, steps=2)
    assert not window.settings_panel.strength.isVisibleTo(window)
    with qtbot.waitSignal(window.drop_panel.input_changed, timeout=10_000,
                          check_params_cb=lambda d: d is not None):
        drop_files(window.drop_panel, photo)
    assert window.drop_panel.image is not None and window.drop_panel.image.size == (120, 90)
    assert window.settings_panel.strength.isVisibleTo(window)
    assert window.settings_panel.scheduler.currentText() == "PNDM"  # the original design's img2img default
    assert "photo.jpg" in window.drop_panel.caption.text()
    window.settings_panel.strength.setValue(1.0)
    window.prompt_panel.set_prompt("oil painting")
    with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
        window.generate()
    job = blocker.args[0]
    assert job.state is JobState.DONE, job.error_message
    assert job.request.is_img2img and parts.store.count() == 1
    window.drop_panel.clear()
    assert not window.settings_panel.strength.isVisibleTo(window)
    assert window.settings_panel.scheduler.currentText() == window.prefs.default_scheduler


def test_dropping_onto_the_window_also_works(window, qtbot, photo: Path) -> None:
    with qtbot.waitSignal(window.drop_panel.input_changed, timeout=10_000):
        drop_files(window, photo)
    assert window.drop_panel.image is not None


@pytest.mark.parametrize("content", [b"this is not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b""])
def test_a_corrupt_file_shows_a_message_and_the_app_goes_on(window, qtbot, tmp_path: Path, content: bytes,
                                                           photo: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(content)
    with qtbot.waitSignal(window.drop_panel.failed, timeout=10_000):
        drop_files(window.drop_panel, bad)
    qtbot.waitUntil(window.banner.isVisible)
    assert "broken.png" in window.banner.message()
    assert window.drop_panel.image is None
    # Still usable: a good file works afterwards.
    with qtbot.waitSignal(window.drop_panel.input_changed, timeout=10_000):
        drop_files(window.drop_panel, photo)
    assert window.drop_panel.image is not None


def test_a_huge_image_is_refused_before_decoding(window, qtbot, tmp_path: Path) -> None:
    big = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(big)  # tiny file, 400 megapixels
    with qtbot.waitSignal(window.drop_panel.failed, timeout=20_000) as blocker:
        drop_files(window.drop_panel, big)
    assert "too large" in blocker.args[0]


@pytest.fixture()
def foreign_png(tmp_path: Path) -> Path:
    path = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text("parameters", A1111)
    Image.new("RGB", (64, 80), (10, 120, 200)).save(path, pnginfo=info)
    return path


def test_a_foreign_png_can_load_its_settings(window, qtbot, foreign_png: Path) -> None:
    asked = []
    window.ask_dropped_settings = lambda dropped: asked.append(dropped) or LOAD_SETTINGS
    drop_files(window.drop_panel, foreign_png)
    qtbot.waitUntil(lambda: bool(asked), timeout=10_000)
    assert window.prompt_panel.prompt_text() == "a castle on a hill, matte painting"
    assert window.prompt_panel.negative_text() == "lowres, watermark"
    v = window.settings_panel.values()
    assert (v["steps"], v["guidance"], v["seed"], v["width"], v["height"], v["scheduler"]) == \
        (7, 6.5, 987654, 64, 80, "Euler a")
    assert window.drop_panel.image is None  # settings only


def test_a_foreign_png_can_be_used_as_input_instead(window, qtbot, foreign_png: Path) -> None:
    window.ask_dropped_settings = lambda dropped: USE_AS_INPUT
    with qtbot.waitSignal(window.drop_panel.input_changed, timeout=10_000):
        drop_files(window.drop_panel, foreign_png)
    assert window.drop_panel.image is not None
    assert window.prompt_panel.prompt_text() == ""


def test_cancelling_the_question_changes_nothing(window, qtbot, foreign_png: Path) -> None:
    asked = []
    window.ask_dropped_settings = lambda dropped: asked.append(1) or CANCEL
    drop_files(window.drop_panel, foreign_png)
    qtbot.waitUntil(lambda: bool(asked), timeout=10_000)
    assert window.drop_panel.image is None and window.prompt_panel.prompt_text() == ""


def test_paste_from_the_clipboard(window, qtbot) -> None:
    from heyim_desktop.ui.qt import QApplication, QColor, QImage

    image = QImage(40, 30, QImage.Format.Format_RGB32)
    image.fill(QColor(0, 200, 0))
    QApplication.clipboard().setImage(image)
    with qtbot.waitSignal(window.drop_panel.input_changed, timeout=10_000):
        window.drop_panel.paste()
    assert window.drop_panel.image.size == (40, 30)
    assert window.drop_panel.image.getpixel((5, 5)) == (0, 200, 0)
