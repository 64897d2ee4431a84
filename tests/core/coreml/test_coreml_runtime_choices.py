"""Runtime choices with Core ML faked: defaults by chip, per-component units, the FastPrediction
hint, reduce-memory, and the compile cache shared by two processes."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heyim_desktop.core import GenerationRequest, ModelError
from heyim_desktop.core.coreml.compile_cache import CompiledModelCache
from heyim_desktop.core.coreml.compute_units import chip_tier, default_units, parse_units
from heyim_desktop.core.coreml.detect import detect_coreml_folder
from heyim_desktop.core.coreml.engine import load_coreml_engine, resolve_compute_units
from heyim_desktop.core.coreml.reference import TorchReferencePredictor
from heyim_desktop.core.coreml.runtime import CoreMLRuntime


@pytest.mark.parametrize(("chip", "split", "original"), [
    ("Apple M1", "CPU_AND_NE", "CPU_AND_GPU"),
    ("Apple M2 Pro", "CPU_AND_NE", "CPU_AND_GPU"),
    ("Apple M3 Max", "CPU_AND_GPU", "CPU_AND_GPU"),
    ("Apple M2 Ultra", "CPU_AND_GPU", "CPU_AND_GPU"),
    ("Apple M4", "CPU_AND_NE", "CPU_AND_GPU"),
    ("", "CPU_AND_NE", "CPU_AND_GPU"),  # unnamed chip: the model's own preference
])
def test_default_units_by_chip(chip: str, split: str, original: str) -> None:
    assert default_units("split_einsum", chip) == split
    assert default_units("original", chip) == original


def test_chip_tiers_and_unit_strings() -> None:
    assert [chip_tier(c) for c in ("Apple M1", "Apple M1 Pro", "Apple M2 Max", "Apple M1 Ultra", "Intel(R) Core(TM) i9")] == [
        "base", "pro", "max", "ultra", ""]
    choice = parse_units("auto; vaedecoder=cpu-and-gpu; TextEncoder=CPU_ONLY; reduce-memory")
    assert choice.units == "AUTO" and choice.reduce_memory is True
    assert choice.components == (("VAEDecoder", "CPU_AND_GPU"), ("TextEncoder", "CPU_ONLY"))
    assert parse_units(choice.text()) == choice
    assert parse_units("") == parse_units(None) and parse_units("full-memory").reduce_memory is False
    with pytest.raises(ModelError, match="Unknown Core ML component 'Vae'"):
        parse_units("Vae=CPU_ONLY")
    with pytest.raises(ModelError, match="not AUTO"):
        parse_units("Unet=AUTO")


class Fake:
    """Opens "models" that predict with the torch reference; records what was opened and how."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.opened: list[tuple[str, str, dict[str, str]]] = []
        self.compiled: list[str] = []

    def compile(self, package: Path, dest: Path) -> None:
        self.compiled.append(package.stem)
        shutil.copytree(package, dest)

    def factory(self, path: Path, units: str, hints: dict[str, str] | None = None) -> Any:
        name = path.stem.rsplit("-", 1)[0]
        self.opened.append((name, units, dict(hints or {})))
        predictor = self.predictor

        class Model:
            def predict(self, inputs: dict[str, np.ndarray]) -> Any:
                return predictor(name, inputs)

        return Model()


def test_fast_prediction_hint_and_per_component_units(coreml_model: Path, tmp_path: Path) -> None:
    info = detect_coreml_folder(coreml_model)
    fake = Fake(None)
    cache = CompiledModelCache(tmp_path / "c", compile_fn=fake.compile)
    CoreMLRuntime(info, "CPU_AND_NE", cache=cache, factory=fake.factory, macos=(15, 1),
                  component_units={"VAEDecoder": "CPU_ONLY"})
    assert sorted(fake.opened) == [("TextEncoder", "CPU_AND_NE", {}), ("Unet", "CPU_AND_NE", {"specializationStrategy": "FastPrediction"}),
                                   ("VAEDecoder", "CPU_ONLY", {})]
    fake.opened.clear()
    CoreMLRuntime(info, "CPU_AND_GPU", cache=cache, factory=fake.factory, macos=(14, 6))
    assert all(hints == {} for _, _, hints in fake.opened)  # older systems: unchanged


@pytest.mark.slow  # two 2-step generations through the torch reference (a few seconds)
def test_reduce_memory_keeps_one_step_loaded_and_changes_nothing(coreml_model: Path, tiny_model: Path, tmp_path: Path) -> None:
    info = detect_coreml_folder(coreml_model)
    fake = Fake(TorchReferencePredictor(tiny_model, info))
    cache = CompiledModelCache(tmp_path / "c", compile_fn=fake.compile)
    request = GenerationRequest(prompt="a cat", steps=2, seed=5, width=256, height=256)
    full = load_coreml_engine(coreml_model, "CPU_AND_NE;full-memory", factory=fake.factory, cache=cache, memory=8 * 2**30)
    expected = np.asarray(full.generate(request).images[0].image)
    full.close()
    fake.opened.clear()
    engine = load_coreml_engine(coreml_model, None, factory=fake.factory, cache=cache, chip="Apple M1", memory=8 * 2**30)
    runtime = engine.components._predict.__self__  # type: ignore[attr-defined]
    assert runtime.reduce_memory and fake.opened == []  # 8 GB: on by default; compiled, nothing held
    seen: list[tuple[str, list[str]]] = []
    real = runtime.predict

    def spy(name: str, inputs: Any) -> Any:
        out = real(name, inputs)
        seen.append((name, sorted(runtime.models)))
        return out

    engine.components._predict = spy  # type: ignore[attr-defined]
    got = np.asarray(engine.generate(request).images[0].image)
    assert np.array_equal(got, expected)
    assert ("TextEncoder", ["TextEncoder"]) in seen and ("Unet", ["Unet"]) in seen and ("VAEDecoder", ["VAEDecoder"]) in seen
    engine.close()
    big = load_coreml_engine(coreml_model, None, factory=fake.factory, cache=cache, chip="Apple M1", memory=16 * 2**30)
    assert not big.components._predict.__self__.reduce_memory  # type: ignore[attr-defined]
    big.close()


def test_auto_on_original_attention_measures_nothing(coreml_chunked: Path) -> None:
    info = detect_coreml_folder(coreml_chunked)
    assert info.attention == "original"
    assert resolve_compute_units(info, "AUTO", chooser=None, factory=lambda *a, **k: pytest.fail("measured")) == "CPU_AND_GPU"


def test_compile_cache_is_safe_across_processes(tmp_path: Path) -> None:
    package = tmp_path / "Unet.mlpackage"
    package.mkdir()
    (package / "Manifest.json").write_text("{}")
    log = tmp_path / "log.txt"
    ctx = multiprocessing.get_context("spawn")
    barrier, compiling, arrived = ctx.Barrier(2), ctx.Event(), ctx.Event()
    from compile_child import compile_in_child  # a small module: the children import nothing heavy

    procs = [ctx.Process(target=compile_in_child, args=(str(tmp_path / "cache"), str(package), str(log), barrier, compiling,
                                                        arrived, first)) for first in (True, False)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    lines = log.read_text().splitlines()
    assert lines.count("compile") == 1  # the second process waited on the lock and used the result
    results = [line for line in lines if line != "compile"]
    assert len(results) == 2 and len(set(results)) == 1 and results[0].endswith(" compiled")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".compile-")]


def test_preferences_carry_per_part_units_and_memory_mode(qtbot, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from heyim_desktop.core.coreml.compute_units import compose_units
    from heyim_desktop.store.preferences import Preferences
    from heyim_desktop.ui.preferences_dialog import PreferencesDialog
    from heyim_desktop.ui.qt import QMessageBox

    dialog = PreferencesDialog(Preferences())
    qtbot.addWidget(dialog)
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda *a, **k: shown.append(a[2])))
    dialog.component_units.setText("Vae=CPU_AND_GPU")
    dialog.accept()
    assert shown and "Unknown Core ML component 'Vae'" in shown[0] and dialog.result() == 0
    dialog.component_units.setText("VAEDecoder=CPU_AND_GPU, TextEncoder=CPU_ONLY")
    dialog.coreml_memory.setCurrentIndex(dialog.coreml_memory.findData("reduce-memory"))
    dialog.accept()
    prefs = dialog.result_preferences()
    value = compose_units(prefs.coreml_compute_units, prefs.coreml_component_units, prefs.coreml_memory)
    assert value == "VAEDecoder=CPU_AND_GPU; TextEncoder=CPU_ONLY;reduce-memory"
    choice = parse_units(value)
    assert choice.units is None and choice.reduce_memory is True and dict(choice.components)["TextEncoder"] == "CPU_ONLY"
    assert compose_units("", "", "") is None
