from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bench_coreml.py"


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the benchmark runs for real")
def test_bench_explains_it_needs_macos() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--demo"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "runs only on macOS" in out.stderr and out.stdout == ""
