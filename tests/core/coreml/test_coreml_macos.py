"""Real Core ML prediction (macOS only; skipped elsewhere, run by .github/workflows/macos.yml).

What these add to the Linux tests: Core ML's compiler and runtime on the converted tiny
model, the compiled-model cache with the real compiler, and fp16 arithmetic on CPU_AND_NE.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heyim_desktop.core import GenerationRequest

pytestmark = pytest.mark.macos

# Core ML computes in fp16 throughout; the torch engine in fp32. Random tiny weights amplify
# small differences, so this bound is looser than the Linux adapter tests'.
MEAN_LEVELS = 6.0


def _pixels(result) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.stack([np.asarray(g.image, dtype=np.float32) for g in result.images])


@pytest.mark.parametrize("units", ["CPU_AND_NE", "CPU_ONLY"])
def test_real_prediction_matches_torch(coreml_model: Path, tiny_engine, tmp_path: Path, units: str) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.coreml.compile_cache import CompiledModelCache
    from heyim_desktop.core.coreml.engine import load_coreml_engine

    cache = CompiledModelCache(tmp_path / "compiled")
    engine = load_coreml_engine(coreml_model, units, cache=cache)
    assert engine.name == f"coreml-{units.lower()}"
    req = GenerationRequest(prompt="a red fox", negative_prompt="blurry", steps=4, seed=5, width=256, height=256)
    ours = _pixels(engine.generate(req))
    theirs = _pixels(tiny_engine.generate(req))
    assert np.abs(ours - theirs).mean() <= MEAN_LEVELS
    engine.close()
    compiled = sorted(p.name.rsplit("-", 1)[0] for p in cache.root.glob("*.mlmodelc"))
    assert compiled == ["TextEncoder", "Unet", "VAEDecoder"]


def test_real_chunked_batch1_and_auto(coreml_chunked: Path, tiny_engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.coreml.compile_cache import CompiledModelCache
    from heyim_desktop.core.coreml.compute_units import ComputeUnitChooser
    from heyim_desktop.core.coreml.detect import detect_coreml_folder
    from heyim_desktop.core.coreml.engine import load_coreml_engine, model_key

    chooser = ComputeUnitChooser(tmp_path / "units.json")
    engine = load_coreml_engine(coreml_chunked, "AUTO", cache=CompiledModelCache(tmp_path / "c"), chooser=chooser)
    assert chooser.remembered(model_key(detect_coreml_folder(coreml_chunked))) in ("CPU_AND_NE", "CPU_AND_GPU")
    req = GenerationRequest(prompt="a cat", steps=3, seed=2, width=256, height=256)
    assert np.abs(_pixels(engine.generate(req)) - _pixels(tiny_engine.generate(req))).mean() <= MEAN_LEVELS


def test_load_engine_routes_core_ml_on_macos(coreml_model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.core.paths import DATA_DIR_ENV

    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    engine = load_engine(str(coreml_model), device="auto")
    assert engine.name == "coreml-cpu_and_ne" and engine.fixed_size == (256, 256)
    engine.close()
    assert any((tmp_path / "cache" / "coreml-compiled").glob("Unet-*.mlmodelc"))
