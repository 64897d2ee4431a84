"""Downloads against a fake hub on 127.0.0.1: resumed, verified, all-or-nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from fake_hub import FakeHub

from heyim_desktop.core.cancel import CancelToken, Cancelled
from heyim_desktop.core.errors import StorageError
from heyim_desktop.models.catalogue import CatalogueEntry
from heyim_desktop.models.download import DownloadError, DownloadProgress, Downloader, download_model, plan_download
from heyim_desktop.models.library import ModelLibrary

ENTRY = CatalogueEntry("tiny", "Tiny test model", "heyim/tiny-sd", "diffusers", "SD1", 1, ("*",))
UNET = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture()
def hub(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest keeps the rest of the suite offline
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)  # several chunks per tiny file
    with FakeHub("heyim/tiny-sd", tiny_model) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def _models(data_dir: Path) -> dict[str, str]:
    return {m.name: m.status.value for m in ModelLibrary(include_demo=False, hf_cache=False).list()}


def test_plan_shows_size_then_download_appears_complete(hub: FakeHub, data_dir: Path, tiny_model: Path) -> None:
    plan = plan_download(ENTRY)
    expected = sum(p.stat().st_size for p in tiny_model.rglob("*") if p.is_file())
    assert plan.total_bytes == expected and len(plan.files) == len(hub.files)
    seen: list[DownloadProgress] = []
    info = Downloader(plan, progress=seen.append).run()
    assert info.ready and Path(info.ref) == data_dir / "models" / "tiny-sd"
    assert seen[-1].done_bytes == expected and seen[-1].files_done == len(plan.files)
    assert not (data_dir / "models" / ".tiny-sd.partial").exists()
    assert _models(data_dir) == {"HeyIm demo (tiny random model)": "ready"}  # the copy is the demo model


def test_dropped_connection_is_resumed_with_range(hub: FakeHub, data_dir: Path) -> None:
    hub.faults[UNET] = "drop"
    info = download_model(ENTRY)
    size = len(hub.files[UNET])
    assert info.ready
    first, second = hub.gets(UNET)
    assert first is None and second is not None  # the second request picks up where the first broke
    assert 0 < int(second[len("bytes="):-1]) <= size // 2
    assert (Path(info.ref) / UNET).read_bytes() == hub.files[UNET]


def test_corrupted_byte_is_rejected_and_nothing_appears(hub: FakeHub, data_dir: Path) -> None:
    hub.faults["vae/diffusion_pytorch_model.safetensors"] = "corrupt"
    with pytest.raises(DownloadError, match="failed verification"):
        download_model(ENTRY)
    assert not (data_dir / "models" / "tiny-sd").exists()
    assert _models(data_dir) == {}
    assert not list((data_dir / "models").rglob("diffusion_pytorch_model.safetensors.part"))


def test_html_error_page_is_rejected(hub: FakeHub, data_dir: Path) -> None:
    hub.faults["text_encoder/config.json"] = "html"
    with pytest.raises(DownloadError, match="text_encoder/config.json"):
        download_model(ENTRY)
    assert not (data_dir / "models" / "tiny-sd").exists()


def test_html_page_of_the_right_length_fails_the_checksum(hub: FakeHub, data_dir: Path) -> None:
    from fake_hub import HTML

    name = "scheduler/scheduler_config.json"
    hub.files[name] = b"x" * len(HTML)  # sizes and hashes now describe a file the size of the page
    hub.faults[name] = "html"
    with pytest.raises(DownloadError, match="failed verification"):
        download_model(ENTRY)


def test_cancel_keeps_partial_file_and_next_run_resumes(hub: FakeHub, data_dir: Path) -> None:
    plan = plan_download(ENTRY)
    token = CancelToken()

    def cancel_in_unet(p: DownloadProgress) -> None:
        if p.file == UNET:
            token.cancel()

    with pytest.raises(Cancelled):
        Downloader(plan, progress=cancel_in_unet, cancel=token, report_every_s=0).run()
    part = data_dir / "models" / ".tiny-sd.partial" / (UNET + ".part")
    kept = part.stat().st_size
    assert 0 < kept < len(hub.files[UNET])
    assert not (data_dir / "models" / "tiny-sd").exists()
    before = len(hub.gets("model_index.json"))
    info = Downloader(plan).run()
    assert info.ready
    assert hub.gets(UNET)[-1] == f"bytes={kept}-"
    assert len(hub.gets("model_index.json")) == before  # verified files are not fetched again


def test_free_space_is_checked_before_any_byte(hub: FakeHub, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 1000))
    with pytest.raises(StorageError, match="Not enough free space"):
        download_model(ENTRY)
    assert hub.requests == []


def test_partial_from_another_revision_is_discarded(hub: FakeHub, data_dir: Path) -> None:
    staging = data_dir / "models" / ".tiny-sd.partial"
    (staging / "unet").mkdir(parents=True)
    (staging / (UNET + ".part")).write_bytes(b"stale bytes of an older revision")
    (staging / ".heyim-verified.json").write_text('{"_commit": "' + "f" * 40 + '"}')
    info = download_model(ENTRY)
    assert info.ready and hub.gets(UNET) == [None]  # fetched whole, not resumed from the stale part


def test_one_download_at_a_time(hub: FakeHub, data_dir: Path) -> None:
    from filelock import FileLock

    (data_dir / "models").mkdir(parents=True)
    with FileLock(str(data_dir / "models" / ".tiny-sd.partial") + ".lock"):
        with pytest.raises(DownloadError, match="already being downloaded"):
            download_model(ENTRY)


@pytest.mark.parametrize("where", ["while fetching", "writing the progress record"])
def test_a_disk_that_fills_during_the_download_is_disk_full(hub: FakeHub, data_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    import errno

    from huggingface_hub import file_download

    from heyim_desktop.core.errors import DiskFull

    def full(*a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "while fetching":
        monkeypatch.setattr(file_download, "http_get", full)
    else:
        monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DiskFull, match=f"disk is full.*{data_dir / 'models'}"):
        download_model(ENTRY)
    assert not (data_dir / "models" / "tiny-sd").exists()  # the model appears complete or not at all
