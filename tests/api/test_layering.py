"""Importing the API package starts nothing heavy (its layer is checked by the import contracts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import heyim_desktop

API = Path(heyim_desktop.__file__).parent / "api"


def test_importing_the_api_and_the_cli_loads_no_web_stack_or_torch() -> None:
    code = (
        "import sys, heyim_desktop.api, heyim_desktop.cli\n"
        "heyim_desktop.cli.build_parser()\n"
        "print(','.join(m for m in ('torch', 'fastapi', 'uvicorn', 'starlette', 'PySide6') if m in sys.modules))"
    )
    env = dict(os.environ, PYTHONPATH=str(API.parents[1]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == ""
