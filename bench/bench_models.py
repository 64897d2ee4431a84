"""Model-library figures: listing, single-file vs folder load, download throughput.

    .venv/bin/python bench/bench_models.py [--mb 256]

Downloads run against the tests' fake hub on 127.0.0.1 (no network): the figure is HeyIm's own
overhead (HTTP client, writing, SHA-256 verification), not a real connection's speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=256, help="size of the synthetic weights file to download")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from heyim_desktop.core.thirdparty import quiet_third_party

    quiet_third_party()
    tmp = Path(tempfile.mkdtemp(prefix="heyim-bench-"))
    os.environ["HEYIM_DATA_DIR"] = str(tmp / "data")
    try:
        from heyim_desktop.core import paths
        from heyim_desktop.core.loading import load_engine
        from heyim_desktop.models.library import ModelLibrary
        from ldm_layout import write_single_file

        model = paths.ensure_demo_model()
        single = write_single_file(model, tmp / "tiny.safetensors")
        lib_dir = tmp / "lib"
        lib_dir.mkdir()
        for i in range(50):
            os.link(single, lib_dir / f"ckpt{i:02d}.safetensors")
        for i in range(10):
            shutil.copytree(model, lib_dir / f"folder{i}")
        t0 = time.perf_counter()
        n = len(ModelLibrary([lib_dir], hf_cache=False).list())
        print(f"list: {n} models (50 single files, 10 folders, demo) in {1000 * (time.perf_counter() - t0):.1f} ms")
        for kind, ref in (("folder", str(model)), ("single-file", str(single))):
            load_engine(ref, device=args.device).close()  # warm imports and caches
            t0 = time.perf_counter()
            load_engine(ref, device=args.device).close()
            print(f"load tiny model ({kind}, {args.device}): {time.perf_counter() - t0:.2f} s")
        _download(tmp, model, args.mb)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download(tmp: Path, model: Path, mb: int) -> None:
    from huggingface_hub import constants

    from fake_hub import FakeHub
    from heyim_desktop.models.catalogue import CatalogueEntry
    from heyim_desktop.models.download import Downloader, plan_download

    constants.HF_HUB_OFFLINE = False
    src = tmp / "hubrepo"
    shutil.copytree(model, src)
    n = mb * 1024 * 1024 // 4
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, n * 4]}}).encode()
    (src / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + os.urandom(n * 4))
    entry = CatalogueEntry("bench", "bench", "heyim/bench", "diffusers", "SD1", 0, ("*",))
    with FakeHub("heyim/bench", src) as hub:
        t0 = time.perf_counter()
        plan = plan_download(entry, endpoint=hub.url)
        Downloader(plan, dest_dir=tmp / "dl", endpoint=hub.url).run()
        dt = time.perf_counter() - t0
    print(f"download {plan.total_bytes / 1e6:.0f} MB from 127.0.0.1 incl. SHA-256 verification: {dt:.2f} s "
          f"({plan.total_bytes / 1e6 / dt:.0f} MB/s)")


if __name__ == "__main__":
    main()
