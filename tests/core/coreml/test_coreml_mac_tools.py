"""The Mac-only tools, as far as Linux can check them: the compute-plan arithmetic, the smoke
model (built and read back here; compiled and predicted on macOS), the CLI switch."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from heyim_desktop.core.coreml.compute_plan import GPU, NEURAL_ENGINE, Placement, check_neural_engine, summarise
from heyim_desktop.core.coreml.smoke import build_smoke_model, expected, run_coreml_smoke, smoke_weights


def test_compute_plan_summary_and_check() -> None:
    plan = [Placement("conv", NEURAL_ENGINE, 0.5), Placement("einsum", NEURAL_ENGINE, 0.3),
            Placement("softmax", GPU, 0.15), Placement("add", NEURAL_ENGINE, 0.05)]
    summary = summarise(plan)
    assert summary.ne_share == pytest.approx(0.85) and [p.op for p in summary.top[:2]] == ["conv", "einsum"]
    assert check_neural_engine(summary, 0.8, top=2) == []
    problems = check_neural_engine(summary, 0.9, top=3)
    assert len(problems) == 2 and "85.0%" in problems[0] and "softmax (15.0%) is placed on the GPU" in problems[1]
    assert "NE 85.0%" in summary.describe()


def test_smoke_model_builds_and_matches_its_reference(tmp_path: Path) -> None:
    import torch
    from coremltools.models.utils import load_spec

    package = build_smoke_model(tmp_path / "Smoke.mlpackage")
    spec = load_spec(str(package))
    ops = [op.type for op in spec.mlProgram.functions["main"].block_specializations["CoreML6"].operations]
    assert "conv" in ops and "softmax" in ops
    weight, x = smoke_weights()
    want = torch.softmax(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight)), dim=1).numpy()
    assert np.abs(expected(x, weight) - want).max() < 1e-6


@pytest.mark.skipif(sys.platform == "darwin", reason="off macOS only")
def test_smoke_says_macos_only_elsewhere(capsys: pytest.CaptureFixture[str]) -> None:
    from heyim_desktop import cli

    assert cli.main(["--coreml-smoke"]) == 2 and "macOS only" in capsys.readouterr().out


@pytest.mark.macos
def test_smoke_passes_on_a_mac() -> None:
    assert run_coreml_smoke() == 0
