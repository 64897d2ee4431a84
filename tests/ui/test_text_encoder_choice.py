"""Choosing a GGUF text encoder for a family folder in the Models window; the window keeps it and loads with it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from heyim_desktop.models.library import ModelLibrary

pytest.importorskip("pytestqt")
from heyim_desktop.ui.models_window import ModelsWindow  # noqa: E402


def _llama_gguf(path: Path) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_models_window_checks_and_passes_on_a_gguf_text_encoder(qtbot, data_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                    tiny_zimage: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.core.families.tiny import write_tiny_text_encoder_gguf

    models = tmp_path / "models"
    models.mkdir()
    folder = models / "z"
    shutil.copytree(tiny_zimage, folder)
    gguf = write_tiny_text_encoder_gguf(tiny_zimage, tmp_path / "qwen3-F32.gguf", quantization="F32")
    win = ModelsWindow(ModelLibrary([models], include_demo=False, hf_cache=False))
    qtbot.addWidget(win)
    win.select(str(folder))
    assert win.text_encoder_button.isEnabled()
    monkeypatch.setattr(win, "ask_text_encoder", lambda: str(gguf))
    with qtbot.waitSignal(win.textEncoderChosen) as chosen:
        win.text_encoder_button.click()
    assert chosen.args == [str(folder), str(gguf)]
    assert "qwen3-F32.gguf (F32, dequantized on load)" in win.status.text()
    kinds = {win.tree.topLevelItem(i).text(0): win.tree.topLevelItem(i).text(1)
             for i in range(win.tree.topLevelItemCount())}
    assert kinds["z"] == "diffusers, text encoder qwen3-F32.gguf"  # the list shows the choice
    # a foreign file is refused in the window, naming both; nothing is passed on
    monkeypatch.setattr(win, "ask_text_encoder", lambda: str(_llama_gguf(tmp_path / "llama.gguf")))
    with qtbot.assertNotEmitted(win.textEncoderChosen):
        win.text_encoder_button.click()
    assert "GGUF llama model" in win.status.text() and "Qwen3" in win.status.text()
    # cancelling the dialog for a folder with a choice offers its own text encoder again
    win.text_encoders = {str(folder): str(gguf)}
    monkeypatch.setattr(win, "ask_text_encoder", lambda: "")
    monkeypatch.setattr(win, "confirm", lambda title, text: True)
    with qtbot.waitSignal(win.textEncoderChosen) as cleared:
        win.text_encoder_button.click()
    assert cleared.args == [str(folder), ""]


def test_the_window_keeps_the_choice_and_loads_with_it(window: Any, tiny_zimage: Path, tmp_path: Path) -> None:
    from heyim_desktop.core.families.tiny import write_tiny_text_encoder_gguf
    from heyim_desktop.store.preferences import load_preferences
    from heyim_desktop.ui.worker import default_loader

    gguf = write_tiny_text_encoder_gguf(tiny_zimage, tmp_path / "qwen3-F16.gguf", quantization="F16")
    window._text_encoder_chosen(str(tiny_zimage), str(gguf))
    assert window.prefs.text_encoders == {str(tiny_zimage): str(gguf)}
    assert load_preferences().text_encoders == {str(tiny_zimage): str(gguf)}
    engine: Any = default_loader("cpu", in_process=True, text_encoders=window.prefs.text_encoders)(str(tiny_zimage))
    try:
        assert dict(engine.parameters_extra)["Text encoder"] == "qwen3-F16.gguf"
    finally:
        engine.close()
    window._text_encoder_chosen(str(tiny_zimage), "")
    assert load_preferences().text_encoders == {}


def test_a_damaged_chosen_file_is_named_not_the_folder(qtbot, tmp_path: Path, tiny_zimage: Path,  # type: ignore[no-untyped-def]
                                                        tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from heyim_desktop.core.families.tiny import write_tiny_text_encoder_gguf

    models = tmp_path / "models"
    models.mkdir()
    folder = models / "z"
    shutil.copytree(tiny_zimage, folder)
    shutil.copytree(tiny_model, models / "sd15")
    win = ModelsWindow(ModelLibrary([models], include_demo=False, hf_cache=False))
    qtbot.addWidget(win)
    win.select(str(models / "sd15"))  # the disabled button says which folders it is for
    assert not win.text_encoder_button.isEnabled() and "Z-Image" in win.text_encoder_button.toolTip()
    win.select(str(folder))
    junk = tmp_path / "downloaded.gguf"
    junk.write_bytes(b"<html>not found</html>" * 8)
    monkeypatch.setattr(win, "ask_text_encoder", lambda: str(junk))
    with qtbot.assertNotEmitted(win.textEncoderChosen):
        win.text_encoder_button.click()
    message = win.status.text()
    assert "downloaded.gguf" in message and "z is damaged" not in message and "unchanged" in message
    gguf = write_tiny_text_encoder_gguf(tiny_zimage, tmp_path / "qwen3-F32.gguf", quantization="F32")
    monkeypatch.setattr(win, "ask_text_encoder", lambda: str(gguf))
    win.text_encoder_button.click()
    assert "as its text encoder from its next load" in win.status.text()  # plain words, not the folder name
