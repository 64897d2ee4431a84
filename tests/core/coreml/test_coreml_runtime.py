"""Loading logic that needs no Mac: the compiled-model cache, lazy loads, AUTO compute units.

Core ML itself is replaced by injected functions (compile, open a model, a clock); what only
a Mac can exercise is listed in test_coreml_macos.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heyim_desktop.core import GenerationRequest, ModelError
from heyim_desktop.core.coreml import compile_cache
from heyim_desktop.core.coreml.compile_cache import CompiledModelCache, content_hash
from heyim_desktop.core.coreml.compute_units import ComputeUnitChooser, normalise
from heyim_desktop.core.coreml.detect import detect_coreml_folder
from heyim_desktop.core.coreml.engine import load_coreml_engine, model_key, resolve_compute_units
from heyim_desktop.core.coreml.reference import TorchReferencePredictor


class FakeCoreML:
    """Stands in for coremlcompiler and CompiledMLModel; predictions come from a predictor."""

    def __init__(self, predictor: Any = None, step_cost: dict[str, float] | None = None) -> None:
        self.predictor = predictor
        self.compiled: list[str] = []
        self.opened: list[tuple[str, str]] = []
        self.now = 0.0
        self.step_cost = step_cost or {}

    def compile(self, package: Path, dest: Path) -> None:
        self.compiled.append(package.stem)
        shutil.copytree(package, dest)

    def clock(self) -> float:
        return self.now

    def factory(self, path: Path, units: str) -> Any:
        name = path.stem.rsplit("-", 1)[0] if path.parent.name == "coreml-compiled" else path.stem
        self.opened.append((name, units))
        fake = self

        class Model:
            def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                fake.now += fake.step_cost.get(units, 0.0)
                if fake.predictor is None:
                    info_outputs = fake.info.model(name).outputs
                    return {t.name: np.zeros(t.shape, np.dtype(t.dtype)) for t in info_outputs}
                return fake.predictor(name, inputs)  # type: ignore[no-any-return]

        return Model()


def test_packages_compile_once_and_the_encoder_loads_lazily(coreml_model: Path, tiny_model: Path, tmp_path: Path) -> None:
    info = detect_coreml_folder(coreml_model)
    fake = FakeCoreML(TorchReferencePredictor(tiny_model, info))
    cache = CompiledModelCache(tmp_path / "coreml-compiled", compile_fn=fake.compile)
    said: list[str] = []
    engine = load_coreml_engine(coreml_model, "CPU_AND_NE", factory=fake.factory, cache=cache, on_status=said.append,
                                memory=16 * 2**30)  # not a small Mac: every part stays loaded
    assert sorted(fake.compiled) == ["TextEncoder", "Unet", "VAEDecoder"]
    assert "Compiling Unet.mlpackage for this Mac (first use only)..." in said
    assert "Loading Unet on the Neural Engine..." in said
    req = GenerationRequest(prompt="a cat", steps=2, seed=3, width=256, height=256)
    assert engine.generate(req).images[0].image.size == (256, 256)
    assert "VAEEncoder" not in fake.compiled
    from PIL import Image

    engine.generate(req.replace(init_image=Image.new("RGB", (256, 256), "red"), strength=0.5, steps=4))
    assert fake.compiled.count("VAEEncoder") == 1
    engine.close()

    # A later launch: the cache already holds every model; nothing compiles again.
    fake.compiled.clear()
    said.clear()
    again = load_coreml_engine(coreml_model, "CPU_AND_GPU", factory=fake.factory, cache=CompiledModelCache(cache.root, compile_fn=fake.compile),
                               on_status=said.append, memory=16 * 2**30)
    assert fake.compiled == [] and not any("Compiling" in s for s in said)
    assert ("Unet", "CPU_AND_GPU") in fake.opened and again.name == "coreml-cpu_and_gpu"


def test_cache_key_follows_content(coreml_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "Unet.mlpackage"
    shutil.copytree(coreml_model / "VAEDecoder.mlpackage", pkg)
    fake = FakeCoreML()
    cache = CompiledModelCache(tmp_path / "cache", compile_fn=fake.compile)
    first, fresh = cache.compiled(pkg)
    assert fresh and first.is_dir() and first.name.startswith("Unet-")
    calls: list[Path] = []
    real = compile_cache.content_hash
    monkeypatch.setattr(compile_cache, "content_hash", lambda p: calls.append(p) or real(p))
    assert cache.compiled(pkg) == (first, False)
    assert calls == []  # unchanged files: the remembered hash is used, nothing is re-read
    # The same bytes elsewhere share the compiled model; edited bytes get their own.
    twin = tmp_path / "elsewhere" / "Unet.mlpackage"
    shutil.copytree(pkg, twin)
    assert cache.compiled(twin)[0] == first
    weights = pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    second, fresh = cache.compiled(pkg)
    assert fresh and second != first and fake.compiled == ["Unet", "Unet"]
    assert content_hash(pkg) != content_hash(twin)


def test_failed_compile_leaves_nothing(coreml_model: Path, tmp_path: Path) -> None:
    def broken(package: Path, dest: Path) -> None:
        dest.mkdir()
        (dest / "half").write_text("x")
        raise RuntimeError("coremlcompiler crashed")

    cache = CompiledModelCache(tmp_path / "cache", compile_fn=broken)
    with pytest.raises(RuntimeError, match="crashed"):
        cache.compiled(coreml_model / "VAEDecoder.mlpackage")
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.suffix != ".lock"] == ["hashes.json"]


def test_auto_measures_once_and_remembers(coreml_model: Path, tmp_path: Path) -> None:
    info = detect_coreml_folder(coreml_model)
    fake = FakeCoreML(step_cost={"CPU_AND_NE": 0.9, "CPU_AND_GPU": 0.4, "ALL": 0.6})
    fake.info = info  # type: ignore[attr-defined]
    cache = CompiledModelCache(tmp_path / "coreml-compiled", compile_fn=fake.compile)
    chooser = ComputeUnitChooser(tmp_path / "units.json", machine="arm64 Apple M2 Max")
    said: list[str] = []
    units = resolve_compute_units(info, "auto", chooser=chooser, cache=cache, factory=fake.factory, on_status=said.append, clock=fake.clock)
    assert units == "CPU_AND_GPU"
    assert said == ["Measuring the Neural Engine and the GPU for this model (first use only)..."]
    assert [u for n, u in fake.opened] == ["CPU_AND_NE", "CPU_AND_GPU", "ALL"]
    assert chooser.remembered(model_key(info)) == "CPU_AND_GPU"
    # Next time: no measuring, and the engine loads on the remembered units.
    fake.opened.clear()
    engine = load_coreml_engine(coreml_model, "AUTO", factory=fake.factory, cache=cache, chooser=chooser, memory=16 * 2**30)
    assert engine.name == "coreml-cpu_and_gpu"
    assert {u for _, u in fake.opened} == {"CPU_AND_GPU"}
    # Another machine measures for itself.
    other = ComputeUnitChooser(tmp_path / "units.json", machine="arm64 Apple M1")
    assert other.remembered(model_key(info)) is None


def test_chooser_handles_failures(tmp_path: Path) -> None:
    chooser = ComputeUnitChooser(tmp_path / "u.json", machine="m")

    def ne_fails(units: str) -> float:
        if units == "CPU_AND_NE":
            raise RuntimeError("ANE compile failed")
        return 2.0

    assert chooser.choose("model-a", ne_fails) == "CPU_AND_GPU"
    assert chooser.choose("model-a", lambda u: pytest.fail("measured again")) == "CPU_AND_GPU"

    def all_fail(units: str) -> float:
        raise RuntimeError("no")

    with pytest.raises(ModelError, match="could not run on the Neural Engine or the GPU"):
        chooser.choose("model-b", all_fail)
    assert chooser.choose("model-c", {"CPU_AND_NE": 1.0, "CPU_AND_GPU": 3.0}.__getitem__) == "CPU_AND_NE"
    chooser.forget("model-a")
    assert chooser.remembered("model-a") is None and chooser.remembered("model-c") == "CPU_AND_NE"
    (tmp_path / "u.json").write_text("{broken")
    assert chooser.remembered("model-c") is None  # a damaged file means measure again, not crash


def test_compute_unit_names() -> None:
    assert normalise("cpu_and_ne") == "CPU_AND_NE" and normalise("cpu-and-gpu") == "CPU_AND_GPU"
    assert normalise("Auto") == "AUTO"
    with pytest.raises(ModelError, match="choose one of AUTO, CPU_AND_NE, ALL, CPU_AND_GPU, CPU_ONLY"):
        normalise("GPU")
