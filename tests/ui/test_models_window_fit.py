"""The Models window says what memory each Z-Image / FLUX.2 [klein] / SD 3.5 download needs."""

from __future__ import annotations

from pathlib import Path

from heyim_desktop.core.families.fit import fit_line


def test_the_models_window_shows_it(qtbot, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtCore import Qt

    from heyim_desktop.models.catalogue import find_entry
    from heyim_desktop.models.library import ModelLibrary
    from heyim_desktop.ui.models_window import ModelsWindow

    win = ModelsWindow(ModelLibrary(hf_cache=False))
    qtbot.addWidget(win)
    box = win.catalogue_box
    i = box.findData("z-image-turbo-gguf")
    entry = find_entry("z-image-turbo-gguf")
    assert i >= 0 and entry is not None
    line = fit_line("zimage", "Q4_K_M", transformer_gb=entry.transformer_gb)
    assert line in box.itemText(i) and line in str(box.itemData(i, Qt.ItemDataRole.ToolTipRole))
