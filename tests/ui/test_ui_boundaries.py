"""Qt enters the ui package through one module (ui/qt.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import heyim_desktop

UI = Path(heyim_desktop.__file__).parent / "ui"


def test_only_ui_qt_imports_pyside() -> None:
    offenders = []
    for path in UI.glob("*.py"):
        if path.name == "qt.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("PySide6", "shiboken6", "PyQt6")]
    assert offenders == []
