"""Layering rules from DESIGN.md: core/store/models never import Qt or ui; core imports lazily."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import heyim_desktop

PKG = Path(heyim_desktop.__file__).parent
FORBIDDEN = ("PySide6", "PyQt5", "PyQt6", "shiboken6", "heyim_desktop.ui")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_core_layers_do_not_import_qt_or_ui() -> None:
    offenders = []
    for layer in ("core", "store", "models"):
        for path in (PKG / layer).rglob("*.py"):
            for name in _imports(path):
                if name.split(".")[0] in FORBIDDEN or name.startswith("heyim_desktop.ui"):
                    offenders.append(f"{path.relative_to(PKG)}: {name}")
    assert offenders == []


def test_importing_core_and_cli_does_not_import_torch_or_diffusers() -> None:
    code = (
        "import sys, heyim_desktop.core, heyim_desktop.cli, heyim_desktop.core.metadata, "
        "heyim_desktop.core.images, heyim_desktop.core.jobs, heyim_desktop.core.host, heyim_desktop.core.codec\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'PySide6') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    import os

    env = dict(os.environ, PYTHONPATH=str(PKG.parent))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == ""
