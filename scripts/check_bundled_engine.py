"""Checks the packaged engine child: the bundled binary's hidden ``engine-process`` argument.

    .venv/bin/python scripts/check_bundled_engine.py dist/HeyIm/heyim-desktop

The parent side is this checkout's code (as in the app); the child is the frozen binary,
started exactly as the frozen app starts it (``<binary> engine-process --device ...``). In a
throwaway data folder it loads the demo model, makes one 64x64 image, upscales it (Lanczos)
and counts tokens, and compares the image with the same job run here in-process, pixel for
pixel. Exit 0 when all of it worked, 1 with the reason. Slow (the bundle's torch import and the
demo model's build): run it after ``./build_app.sh``, before a release, as packaging/smoke.sh's
companion.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary", type=Path, help="the bundled heyim-desktop (dist/HeyIm/heyim-desktop)")
    args = parser.parse_args()
    binary = args.binary.resolve()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        print(f"FAIL: {binary} is not an executable file", file=sys.stderr)
        return 1
    data = tempfile.TemporaryDirectory(prefix="heyim-bundle-check-")
    os.environ["HEYIM_DATA_DIR"] = data.name
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import numpy as np

    from heyim_desktop.core.process import remote
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.upscale_job import UpscaleRequest

    # The frozen app's own command line for its child (remote.child_command when sys.frozen).
    remote.child_command = lambda device, precision, units: [  # type: ignore[assignment]
        str(binary), remote.FROZEN_ARGUMENT, "--device", device, "--precision", precision, "--compute-units", units or ""]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    t0 = time.perf_counter()
    engine = remote.ProcessLoader(device="cpu", env=env)("demo")
    try:
        loaded = time.perf_counter() - t0
        if engine.pid == os.getpid() or not engine.process.alive:
            print("FAIL: no engine child is running", file=sys.stderr)
            return 1
        request = GenerationRequest("a red fox in the snow", steps=2, width=64, height=64, seed=3)
        result = engine.generate(request)
        tiles: list[int] = []
        upscaled = engine.upscale(UpscaleRequest(image=result.images[0].image, scale=2.0, upscaler="Lanczos"),
                                  progress=lambda p: tiles.append(p.step))
        tokens = engine.count_tokens("a red fox", timeout=30)
    finally:
        engine.close()
    from heyim_desktop.core.loading import load_engine

    local = load_engine("demo", device="cpu")
    try:
        theirs = local.generate(request)
    finally:
        local.close()
    same = np.array_equal(np.asarray(result.images[0].image), np.asarray(theirs.images[0].image))
    print(f"bundled engine child (pid {engine.pid}): model loaded in {loaded:.1f} s ({engine.name}, {engine.model_name})")
    print(f"  64x64 image: {'equal to' if same else 'DIFFERENT from'} the in-process engine, pixel for pixel")
    print(f"  Lanczos 2x upscale: {upscaled.images[0].image.size}; token count: {tokens.tokens}/{tokens.limit}")
    print(f"  child exited with code {engine.process.returncode}")
    if not same or upscaled.images[0].image.size != (128, 128) or engine.process.returncode != 0:
        print("FAIL", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
