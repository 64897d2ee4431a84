"""Two-source downloads (the catalogue's GGUF variants) against a fake hub on 127.0.0.1: the base
folder without its transformer weights plus one GGUF file, verified, all-or-nothing, resumable, and
a folder the families engine loads (the GGUF in transformer/, staying quantized)."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from fake_hub import FakeHub
from gguf_variant import GGUF_REPO, INDEX, base_repo_id, gguf_entry, gguf_files

from heyim_desktop.core.cancel import CancelToken, Cancelled
from heyim_desktop.models.catalogue import CATALOGUE, describe, find_entry
from heyim_desktop.models.download import DownloadError, DownloadProgress, Downloader, download_model, plan_download
from heyim_desktop.models.library import ModelLibrary

ENTRY = gguf_entry("zimage")
GGUF = "transformer/tiny-zimage-Q8_0.gguf"
REMOTE_GGUF = f"{GGUF_REPO}/tiny-zimage-Q8_0.gguf"  # the fake hub's name for it (second repository)
WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def zimage_gguf_files(tiny_zimage: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return gguf_files(tiny_zimage, tmp_path_factory.mktemp("gguf-repo"), "zimage")


def _serve(folder: Path, family: str, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 8 * 1024)  # several chunks per tiny file
    hub = FakeHub(base_repo_id(family), folder)
    hub.files[INDEX] = b'{"metadata": {}, "weight_map": {}}'
    hub.add_repo(GGUF_REPO, files)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    return hub


@pytest.fixture()
def hub(tiny_zimage: Path, zimage_gguf_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with _serve(tiny_zimage, "zimage", zimage_gguf_files, monkeypatch) as server:
        yield server


def _fetched(hub: FakeHub) -> list[str]:
    return [p for m, p, _ in hub.requests if m == "GET"]


def test_plan_is_the_folder_without_transformer_weights_then_one_gguf(hub: FakeHub, data_dir: Path) -> None:
    plan = plan_download(ENTRY)
    paths = [f.path for f in plan.files]
    assert WEIGHTS not in paths and INDEX not in paths and "transformer/config.json" in paths
    assert paths[-1] == GGUF and paths[:-1] == sorted(paths[:-1])  # the second source comes last
    last = plan.files[-1]
    assert (last.repo_id, last.source_path) == (GGUF_REPO, "tiny-zimage-Q8_0.gguf") and last.sha256
    expected = sum(len(d) for p, d in hub.files.items() if p in paths) + len(hub.repos[GGUF_REPO][0]["tiny-zimage-Q8_0.gguf"])
    from fake_hub import COMMIT

    assert plan.total_bytes == expected and plan.commit == COMMIT  # each file is fetched at its own repo's commit
    assert plan.source_commits == {GGUF_REPO: hub.repos[GGUF_REPO][1]} != {GGUF_REPO: COMMIT}
    assert _fetched(hub) == []  # planning fetches no file


def test_both_sources_land_and_the_folder_loads_quantized(hub: FakeHub, data_dir: Path) -> None:
    from heyim_desktop.core.families.single_file import folder_transformer_file
    from heyim_desktop.models.verify import verify_model

    seen: list[DownloadProgress] = []
    plan = plan_download(ENTRY)
    info = Downloader(plan, progress=seen.append).run()
    folder = data_dir / "models" / "tiny-zimage-gguf"
    assert Path(info.ref) == folder and info.ready
    assert (info.base, info.quantization, info.kind) == ("Z-Image", "Q8_0", "diffusers")
    assert (folder / GGUF).read_bytes() == hub.repos[GGUF_REPO][0]["tiny-zimage-Q8_0.gguf"]
    assert not list((folder / "transformer").glob("*.safetensors")) and not (folder / INDEX).exists()
    assert WEIGHTS not in _fetched(hub) and f"{GGUF_REPO}/tiny-zimage-Q4_0.gguf" not in _fetched(hub)
    assert folder_transformer_file(folder) == folder / GGUF
    assert seen[-1].done_bytes == plan.total_bytes and seen[-1].files_done == len(plan.files)
    assert not (data_dir / "models" / ".tiny-zimage-gguf.partial").exists()
    manifest = json.loads((folder / ".heyim-download.json").read_text())
    assert [s["repo_id"] for s in manifest["sources"]] == [ENTRY.repo_id, GGUF_REPO]
    assert manifest["files"][-1]["source_path"] == "tiny-zimage-Q8_0.gguf"
    listed = {m.name: m for m in ModelLibrary(include_demo=False, hf_cache=False).list()}
    assert listed["tiny-zimage-gguf"].quantization == "Q8_0" and listed["tiny-zimage-gguf"].base == "Z-Image"
    assert verify_model(info, ModelLibrary(include_demo=False, hf_cache=False)) == []
    (folder / GGUF).write_bytes((folder / GGUF).read_bytes()[:-1] + b"\x00")  # not the hub's bytes any more
    assert any("checksum" in p for p in verify_model(info, ModelLibrary(include_demo=False, hf_cache=False)))


@pytest.mark.parametrize("family", ["zimage", pytest.param("flux2", marks=pytest.mark.slow)])  # ~3 s each on a core
def test_the_downloaded_folder_generates_with_the_families_engine(family: str, request: pytest.FixtureRequest,
                                                                  tmp_path: Path, data_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from heyim_desktop.core.loading import load_engine
    from heyim_desktop.core.request import GenerationRequest

    model: Path = request.getfixturevalue(f"tiny_{family}")
    files = gguf_files(model, tmp_path, family)
    entry = gguf_entry(family, base="Z-Image" if family == "zimage" else "FLUX.2 [klein]")
    with _serve(model, family, files, monkeypatch):
        info = download_model(entry)
    assert info.ready and info.quantization == "Q8_0"
    req = GenerationRequest(prompt="a red fox", steps=2, guidance=1.0, seed=3, width=64, height=64)
    images = []
    for ref in (info.ref, str(model)):  # the downloaded GGUF folder, then the unquantized model it came from
        engine: Any = load_engine(ref, device="cpu")
        try:
            if ref == info.ref:
                quantized = [p for p in engine.pipe.transformer.parameters() if type(p).__name__ == "GGUFParameter"]
                assert quantized and all(p.dtype == torch.uint8 for p in quantized)  # the GGUF file, kept quantized
            images.append(np.asarray(engine.render(req).images[0], dtype=np.float32))
        finally:
            engine.close()
    # The same model, quantized: close to its unquantized twin within Q8_0's error, yet not identical.
    assert images[0].shape == (64, 64, 3) and 0.0 < float(np.abs(images[0] - images[1]).max()) <= 0.05


@pytest.mark.parametrize(("pattern", "message"), [("*-Q6_K.gguf", "no file matching '\\*-Q6_K.gguf'"),
                                                  ("*.GGUF", "2 files matching .*tiny-zimage-Q4_0.gguf")])
def test_a_pattern_matching_nothing_or_several_files_is_refused(hub: FakeHub, data_dir: Path, pattern: str,
                                                                message: str) -> None:
    entry = gguf_entry("zimage", pattern=pattern)
    with pytest.raises(DownloadError, match=message):
        download_model(entry)
    assert _fetched(hub) == []  # refused before the first byte
    assert not (data_dir / "models").exists() or not any((data_dir / "models").iterdir())


def test_cancel_in_the_second_source_keeps_the_first_and_resumes(hub: FakeHub, data_dir: Path) -> None:
    plan = plan_download(ENTRY)
    token = CancelToken()

    def cancel_in_gguf(p: DownloadProgress) -> None:
        if p.file == GGUF:
            token.cancel()

    with pytest.raises(Cancelled):
        Downloader(plan, progress=cancel_in_gguf, cancel=token, report_every_s=0).run()
    staging = data_dir / "models" / ".tiny-zimage-gguf.partial"
    assert not (data_dir / "models" / "tiny-zimage-gguf").exists()  # nothing half-made is listed
    assert ModelLibrary(include_demo=False, hf_cache=False).list() == []
    kept = (staging / (GGUF + ".part")).stat().st_size
    assert 0 < kept < len(hub.repos[GGUF_REPO][0]["tiny-zimage-Q8_0.gguf"]) and not (staging / GGUF).exists()
    assert (staging / "model_index.json").is_file()  # the first source's files wait, verified, for the resume
    before = len(hub.gets("model_index.json"))
    info = Downloader(plan).run()
    assert info.ready and info.quantization == "Q8_0"
    assert hub.gets(REMOTE_GGUF)[-1] == f"bytes={kept}-"
    assert len(hub.gets("model_index.json")) == before  # the first source is not fetched again


def test_a_gguf_repository_that_moved_on_refetches_only_its_file(hub: FakeHub, data_dir: Path) -> None:
    token = CancelToken()

    def cancel_in_gguf(p: DownloadProgress) -> None:
        if p.file == GGUF:
            token.cancel()

    with pytest.raises(Cancelled):
        Downloader(plan_download(ENTRY), progress=cancel_in_gguf, cancel=token, report_every_s=0).run()
    files, _commit = hub.repos[GGUF_REPO]
    hub.repos[GGUF_REPO] = (files, "c" * 40)  # a new commit of the GGUF repository (a README edit, say)
    before = len(hub.gets("model_index.json"))
    info = download_model(ENTRY)
    assert info.ready and hub.gets(REMOTE_GGUF)[-1] is None  # fetched whole: the old partial file is not resumed
    assert len(hub.gets("model_index.json")) == before  # the base folder's files stay
    manifest = json.loads((Path(info.ref) / ".heyim-download.json").read_text())
    assert manifest["sources"][1] == {"repo_id": GGUF_REPO, "commit": "c" * 40}


def test_a_damaged_gguf_is_discarded_and_only_it_is_fetched_again(hub: FakeHub, data_dir: Path) -> None:
    hub.faults[REMOTE_GGUF] = "corrupt"
    with pytest.raises(DownloadError, match="failed verification"):
        download_model(ENTRY)
    staging = data_dir / "models" / ".tiny-zimage-gguf.partial"
    assert not (data_dir / "models" / "tiny-zimage-gguf").exists()
    assert not list(staging.rglob("*.part")) and not (staging / GGUF).exists()
    del hub.faults[REMOTE_GGUF]
    before = len(hub.gets("model_index.json"))
    assert download_model(ENTRY).ready
    assert len(hub.gets("model_index.json")) == before and len(hub.gets(REMOTE_GGUF)) == 2


def test_a_disk_that_fills_during_the_gguf_is_disk_full_and_keeps_the_first_source(
        hub: FakeHub, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from huggingface_hub import file_download

    from heyim_desktop.core.errors import DiskFull

    real = file_download.http_get

    def full_on_gguf(*args: Any, **kwargs: Any) -> Any:
        if str(kwargs.get("displayed_filename", "")).endswith(".gguf"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(file_download, "http_get", full_on_gguf)
    with pytest.raises(DiskFull, match="disk is full"):
        download_model(ENTRY)
    staging = data_dir / "models" / ".tiny-zimage-gguf.partial"
    assert not (data_dir / "models" / "tiny-zimage-gguf").exists() and (staging / "vae" / "config.json").is_file()
    monkeypatch.setattr(file_download, "http_get", real)  # space freed: the next run fetches only the GGUF
    before = len(hub.gets("model_index.json"))
    assert download_model(ENTRY).ready and len(hub.gets("model_index.json")) == before


def test_a_downloaded_folder_is_never_overwritten(hub: FakeHub, data_dir: Path) -> None:
    mine = data_dir / "models" / "tiny-zimage-gguf"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("the user's")
    with pytest.raises(Exception, match="already exists"):
        download_model(ENTRY)
    assert (mine / "notes.txt").read_text() == "the user's" and _fetched(hub) == []


def test_a_hub_file_name_that_leaves_the_folder_is_refused(hub: FakeHub, data_dir: Path) -> None:
    hub.files["../escape.json"] = b"{}"
    with pytest.raises(DownloadError, match="will not write"):
        download_model(replace(ENTRY, files=("*",)))
    assert _fetched(hub) == []


def test_cli_lists_sizes_and_licences_then_downloads_both_sources(hub: FakeHub, data_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from heyim_desktop.cli import main
    from heyim_desktop.models import catalogue

    monkeypatch.setattr(catalogue, "CATALOGUE", (*catalogue.CATALOGUE, ENTRY))
    assert main(["models", "download"]) == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in capsys.readouterr().out.splitlines()}
    z = rows["z-image-turbo-gguf"]
    assert "about 13.2 GB" in z[3] and "GGUF Q4_K_M" in z[3] and "Apache-2.0" in z[3]
    assert z[4] == "Tongyi-MAI/Z-Image-Turbo + unsloth/Z-Image-Turbo-GGUF"
    assert "Stability AI Community License" in rows["sd35-medium"][3]
    assert main(["models", "download", "tiny-zimage-gguf"]) == 0
    out = capsys.readouterr()
    assert f"from {ENTRY.repo_id} + {GGUF_REPO}; licence: Apache-2.0" in out.err
    assert "tiny-zimage-Q8_0.gguf" in out.err and f"from {GGUF_REPO} -> {GGUF}" in out.err
    assert Path(out.out.strip()) == data_dir / "models" / "tiny-zimage-gguf"
    assert main(["models", "list"]) == 0
    listed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert ["tiny-zimage-gguf", "diffusers Q8_0", "Z-Image"] in [row[:3] for row in listed]
    assert main(["models", "verify", "tiny-zimage-gguf"]) == 0


# --- the real catalogue entries (no hub: their patterns against the published repositories' layouts) ---

_ZIMAGE_REPO = ("model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
                "text_encoder/model-00001-of-00003.safetensors", "text_encoder/model.safetensors.index.json",
                "tokenizer/tokenizer.json", "transformer/config.json",
                "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
                "transformer/diffusion_pytorch_model.safetensors.index.json", "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors", "README.md", "assets/showcase.jpg")


@pytest.mark.parametrize(("name", "full"), [("z-image-turbo-gguf", "z-image-turbo"),
                                            ("flux2-klein-4b-gguf", "flux2-klein-4b")])
def test_catalogue_gguf_variants(name: str, full: str) -> None:
    entry, base = find_entry(name), find_entry(full)
    assert entry is not None and base is not None and entry in CATALOGUE
    assert entry.repo_id == base.repo_id and entry.base == base.base and entry.folder_name != base.folder_name
    assert entry.licence == base.licence == "Apache-2.0" and not entry.licence_terms
    assert entry.quantization == "Q4_K_M" and "about" in describe(entry) and "GGUF Q4_K_M" in describe(entry)
    assert entry.approx_bytes < base.approx_bytes
    (source,) = entry.extra_sources
    assert source.repo_id.endswith("-GGUF") and source.dest.startswith("transformer/") and source.dest.endswith(".gguf")
    assert "*" in source.pattern and "Q4_K_M" in source.pattern  # a pattern, so a renamed file still matches
    taken = [p for p in _ZIMAGE_REPO if any(fnmatch.fnmatch(p, f) for f in entry.files)
             and not any(fnmatch.fnmatch(p, x) for x in entry.exclude)]
    assert "transformer/config.json" in taken and "text_encoder/model-00001-of-00003.safetensors" in taken
    assert not [p for p in taken if p.startswith("transformer/") and p != "transformer/config.json"]
    assert find_entry(base.repo_id) is base  # the repository id still names the full variant
