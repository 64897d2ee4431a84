"""Layering rules from DESIGN.md: the import contracts hold, and core imports its heavy libraries lazily."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import heyim_desktop

PKG = Path(heyim_desktop.__file__).parent


def test_import_contracts_hold() -> None:
    """The import-linter contracts in pyproject.toml: ui over api/scale over models/store over core;
    PySide6 only through ui/qt.py. CI runs `lint-imports` too; this keeps a plain pytest run honest."""
    root = PKG.parents[1]
    env = dict(os.environ, PYTHONPATH=str(PKG.parent))
    out = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                          "sys.exit(lint_imports_command())"],
                         capture_output=True, text=True, env=env, cwd=root)
    assert out.returncode == 0, out.stdout + out.stderr


def test_importing_core_and_cli_does_not_import_torch_or_diffusers() -> None:
    code = (
        "import sys, heyim_desktop.core, heyim_desktop.cli, heyim_desktop.core.metadata, "
        "heyim_desktop.core.images, heyim_desktop.core.jobs, heyim_desktop.core.host, heyim_desktop.core.codec\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'PySide6') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    env = dict(os.environ, PYTHONPATH=str(PKG.parent))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == ""
