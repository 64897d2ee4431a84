"""Upscaler models in the library: the usual folders, their scale, downloads, the CLI listing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import torch
from fake_hub import FakeHub
from safetensors.torch import save_file

from heyim_desktop.models.catalogue import CATALOGUE, CatalogueEntry
from heyim_desktop.models.download import Downloader, plan_download
from heyim_desktop.models.library import ModelLibrary
from heyim_desktop.models.upscalers import find_upscaler, hires_upscaler_names, scale_from_name, upscaler_names


def _esrgan(path: Path, scale: int) -> Path:
    from heyim_desktop.core.upscale import import_spandrel

    import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".pth":
        torch.save(net.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def test_usual_folders_are_found_with_their_scale(tmp_path: Path, data_dir: Path) -> None:
    webui = tmp_path / "stable-diffusion-webui"
    comfy = tmp_path / "ComfyUI"
    _esrgan(webui / "models" / "ESRGAN" / "myupscaler.safetensors", 4)
    _esrgan(webui / "models" / "RealESRGAN" / "RealESRGAN_x2plus.pth", 2)
    _esrgan(comfy / "models" / "upscale_models" / "other.safetensors", 2)
    _esrgan(data_dir / "models" / "upscalers" / "mine" / "mine.safetensors", 4)
    loose = tmp_path / "ESRGAN"  # a folder added directly
    _esrgan(loose / "direct.safetensors", 4)
    library = ModelLibrary([webui, comfy, loose], include_demo=False, hf_cache=False)
    found = {m.name: m for m in library.list_upscalers()}
    assert set(found) == {"myupscaler", "RealESRGAN_x2plus", "other", "mine", "direct"}
    assert all(m.kind == "upscaler" and m.ready for m in found.values())
    # Scale from the name, or from the safetensors header when the name does not say.
    assert found["RealESRGAN_x2plus"].scale == 2 and found["myupscaler"].scale == 4 and found["other"].scale == 2
    assert "restricted process" in found["RealESRGAN_x2plus"].problem
    assert found["mine"].source == "app"
    # Upscalers are not generation models.
    assert not [m for m in library.list() if m.kind in ("pickle", "safetensors")]
    names = upscaler_names(library)
    assert names[:2] == ["Lanczos", "Nearest"] and "myupscaler" in names
    assert hires_upscaler_names(library)[0] == "Latent"
    assert find_upscaler(library, "MYUPSCALER") is found["myupscaler"] or find_upscaler(library, "MYUPSCALER") == found["myupscaler"]
    assert find_upscaler(library, "nope") is None


@pytest.mark.parametrize("name,scale", [("RealESRGAN_x4plus", 4), ("4x-UltraSharp", 4), ("2xNomosUni_span", 2),
                                        ("realesr-general-x4v3", 4), ("plain", 0)])
def test_scale_from_name(name: str, scale: int) -> None:
    assert scale_from_name(name) == scale


def test_catalogue_has_two_upscalers_with_sizes_and_licences() -> None:
    ups = [e for e in CATALOGUE if e.kind == "upscaler"]
    assert len(ups) == 2 and all(e.approx_bytes > 0 and "Licence" in e.note for e in ups)


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    repo = tmp_path / "repo"
    _esrgan(repo / "4x_tiny.pth", 4)
    (repo / "README.md").write_text("tiny")
    with FakeHub("heyim/tiny-upscaler", repo) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def test_upscaler_download_lands_in_upscalers(hub: FakeHub, data_dir: Path) -> None:
    entry = CatalogueEntry("tiny-up", "Tiny upscaler", "heyim/tiny-upscaler", "upscaler", "x4", 1, ("4x_tiny.pth",))
    info = Downloader(plan_download(entry)).run()
    assert info.kind == "upscaler" and info.ready and info.scale == 4
    assert Path(info.ref) == data_dir / "models" / "upscalers" / "tiny-upscaler" / "4x_tiny.pth"
    library = ModelLibrary(include_demo=False, hf_cache=False)
    listed = library.list_upscalers()
    assert [m.name for m in listed] == ["4x_tiny"]
    library.delete(listed[0])
    assert not (data_dir / "models" / "upscalers" / "tiny-upscaler").exists() and library.list_upscalers() == []


def test_models_list_json_shows_upscalers(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from heyim_desktop.cli import main

    _esrgan(data_dir / "models" / "upscalers" / "x2_thing.safetensors", 2)
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    ups = [r for r in rows if r["kind"] == "upscaler"]
    assert ups == [dict(ups[0], name="x2_thing", scale=2, status="ready")]
