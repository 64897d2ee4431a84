"""The Core ML smoke check a built app runs (``HeyIm --coreml-smoke``, packaging/smoke.sh):
coremltools' native extension imports, a tiny ML program compiles, loads on the Neural
Engine and predicts what numpy computes. A frozen app that cannot load Core ML fails here,
not in a user's hands. ``scripts/coreml_smoke.py`` runs the same check from a checkout.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

CHANNELS, LENGTH = 8, 16


def smoke_weights() -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    rng = np.random.default_rng(7)
    return (rng.standard_normal((CHANNELS, CHANNELS, 1, 1)).astype(np.float32) * 0.3,
            rng.standard_normal((1, CHANNELS, 1, LENGTH)).astype(np.float32))


def expected(x: NDArray[np.float32], weight: NDArray[np.float32]) -> NDArray[np.float32]:
    """What the smoke model computes: a 1x1 convolution, then softmax over channels."""
    y = np.einsum("oi,bihw->bohw", weight[:, :, 0, 0], x)
    e = np.exp(y - y.max(axis=1, keepdims=True))
    out: NDArray[np.float32] = e / e.sum(axis=1, keepdims=True)
    return out


def build_smoke_model(dest: Path) -> Path:
    """Write the tiny ML program (the Neural Engine's layout: (B, C, 1, S), conv, softmax on C)."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb  # noqa: N813 - coremltools' own spelling

    weight, _ = smoke_weights()

    spec = [mb.TensorSpec(shape=(1, CHANNELS, 1, LENGTH))]

    @mb.program(input_specs=spec, opset_version=ct.target.macOS13)  # type: ignore[untyped-decorator]
    def program(x: Any) -> Any:
        return mb.softmax(x=mb.conv(x=x, weight=weight, name="conv"), axis=1, name="y")

    model = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.macOS13,
                       compute_precision=ct.precision.FLOAT16, skip_model_load=True)
    model.save(str(dest))
    return dest


def run_coreml_smoke(compute_units: str = "CPU_AND_NE") -> int:
    """0 when Core ML works in this process (prints what it did), 1 when it does not, 2 off macOS."""
    if sys.platform != "darwin":
        print("Core ML smoke: macOS only; nothing to check here.")
        return 2
    try:
        import coremltools as ct
        import coremltools.libcoremlpython  # noqa: F401 - the native extension a frozen app must carry

        from heyim_desktop.core.coreml.compile_cache import CompiledModelCache

        work = Path(tempfile.mkdtemp(prefix="heyim-coreml-smoke-"))
        package = build_smoke_model(work / "Smoke.mlpackage")
        compiled, _ = CompiledModelCache(work / "compiled").compiled(package)
        model = ct.models.CompiledMLModel(str(compiled), compute_units=ct.ComputeUnit[compute_units])
        weight, x = smoke_weights()
        y = np.asarray(model.predict({"x": x})["y"], dtype=np.float32)
        diff = float(np.abs(y - expected(x, weight)).max())
    except Exception as exc:  # noqa: BLE001 - the point is to report any failure plainly
        print(f"Core ML smoke: FAILED ({type(exc).__name__}: {exc})")
        log.exception("Core ML smoke failed")
        return 1
    ok = diff <= 5e-3  # fp16 compute
    print(f"Core ML smoke: {'OK' if ok else 'FAILED'} (coremltools {ct.__version__}, {compute_units}, "
          f"max abs diff {diff:.2e} against numpy)")
    return 0 if ok else 1
