"""Core ML catalogue entries fetch only what the engine loads (a fake hub listing Apple's layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from fake_hub import FakeHub

from heyim_desktop.models.catalogue import CatalogueEntry, coreml_files, find_entry
from heyim_desktop.models.download import plan_download

ALL_MODELS = ("TextEncoder", "Unet", "UnetChunk1", "UnetChunk2", "VAEDecoder", "VAEEncoder", "SafetyChecker")


def _apple_repo(root: Path) -> Path:
    """Apple's repository layout: two attention variants, compiled and package forms, chunks, a safety checker."""
    for variant in ("split_einsum", "original"):
        for form in ("compiled", "packages"):
            folder = root / variant / form
            for i, name in enumerate(ALL_MODELS):
                model = folder / (f"{name}.mlmodelc" if form == "compiled" else f"{name}.mlpackage")
                (model / "weights").mkdir(parents=True)
                (model / "model.mil").write_text(f"{variant} {name}")
                (model / "weights" / "weight.bin").write_bytes(bytes(100 * (i + 1)))
            (folder / "vocab.json").write_text("{}")
            (folder / "merges.txt").write_text("#version: 0.2\n")
    (root / "README.md").write_text("readme")
    return root


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub("apple/coreml-stable-diffusion-v1-5", _apple_repo(tmp_path / "repo")) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def test_plan_lists_only_the_files_the_engine_loads(hub: FakeHub, data_dir: Path) -> None:
    entry = find_entry("coreml-sd15")
    assert entry is not None
    plan = plan_download(entry)
    paths = [f.path for f in plan.files]
    wanted = [p for p in hub.files if p.startswith("split_einsum/compiled/")
              and not any(f"/{n}.mlmodelc/" in p for n in ("UnetChunk1", "UnetChunk2", "SafetyChecker"))]
    assert sorted(paths) == sorted(wanted) and len(paths) == 4 * 2 + 2
    assert plan.total_bytes == sum(len(hub.files[p]) for p in wanted)  # the size shown is what is fetched
    # The downloader fetches exactly the plan's files (tests/models/test_download.py); it asks for nothing else.
    assert not any(method == "GET" for method, _, _ in hub.requests)


def test_variant_patterns() -> None:
    assert coreml_files("original/compiled", sdxl=True)[:2] == ("original/compiled/TextEncoder.mlmodelc/*",
                                                                "original/compiled/TextEncoder2.mlmodelc/*")
    chunked = coreml_files("split_einsum/compiled", chunked=True)
    assert "split_einsum/compiled/UnetChunk1.mlmodelc/*" in chunked and "split_einsum/compiled/Unet.mlmodelc/*" not in chunked
    entry = CatalogueEntry("x", "x", "a/b", "coreml", "SD1", 1, coreml_files("c"), subfolder="c")
    assert not any("Safety" in p for p in entry.files)
