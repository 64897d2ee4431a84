"""The API package stays off Qt and the window, and importing it starts nothing heavy."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import heyim_desktop

API = Path(heyim_desktop.__file__).parent / "api"


def test_api_never_imports_qt_or_the_window() -> None:
    offenders = []
    for path in API.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                if name.split(".")[0] in ("PySide6", "PyQt5", "PyQt6", "shiboken6") or name.startswith("heyim_desktop.ui"):
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []


def test_importing_the_api_and_the_cli_loads_no_web_stack_or_torch() -> None:
    code = (
        "import sys, heyim_desktop.api, heyim_desktop.cli\n"
        "heyim_desktop.cli.build_parser()\n"
        "print(','.join(m for m in ('torch', 'fastapi', 'uvicorn', 'starlette', 'PySide6') if m in sys.modules))"
    )
    env = dict(os.environ, PYTHONPATH=str(API.parents[1]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == ""
