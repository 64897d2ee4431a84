"""`heyim-desktop models ...`: outputs and exit codes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Iterator

import pytest
from fake_hub import FakeHub

from heyim_desktop.cli import main
from heyim_desktop.models import catalogue
from heyim_desktop.models.catalogue import CatalogueEntry

TINY = CatalogueEntry("tiny", "Tiny test model", "heyim/tiny-sd", "diffusers", "SD1", 10_000_000, ("*",))


@pytest.fixture()
def hub(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(catalogue, "CATALOGUE", (*catalogue.CATALOGUE, TINY))
    with FakeHub("heyim/tiny-sd", tiny_model) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def test_list_json_includes_the_demo(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[-1]["ref"] == "demo" and rows[-1]["status"] == "ready"


def test_import_then_generate_with_the_single_file(data_dir: Path, tmp_path: Path, tiny_single_file: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "import", str(tiny_single_file)]) == 0
    ref = capsys.readouterr().out.strip()
    assert main(["generate", "--model", ref, "-p", "a fox", "--steps", "1", "--size", "64x64",
                 "-o", str(tmp_path / "out"), "-q", "--device", "cpu"]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


def test_pickle_import_needs_consent(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(pickle.dumps({}, protocol=2))
    assert main(["models", "import", str(ckpt)]) == 3  # stdin is not a terminal: no silent conversion
    err = capsys.readouterr().err
    assert "can run code" in err and "--convert" in err
    assert main(["models", "import", str(tmp_path / "missing.safetensors")]) == 2


def test_download_list_download_and_verify(hub: FakeHub, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "download"]) == 0
    assert "sd15" in capsys.readouterr().out
    assert main(["models", "download", "nope"]) == 2
    assert main(["models", "download", "tiny"]) == 0
    out = capsys.readouterr()
    folder = Path(out.out.strip())
    assert "Tiny test model: " in out.err and folder.is_dir()
    assert main(["models", "verify", str(folder)]) == 0
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one flipped bit in the weights: headers are fine, the hash is not
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["models", "verify", str(folder)]) == 3
    assert "does not match the hub's checksum" in capsys.readouterr().err


def test_failed_download_exit_code(hub: FakeHub, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub.faults["model_index.json"] = "corrupt"
    assert main(["models", "download", "tiny"]) == 5
    assert "failed verification" in capsys.readouterr().err


def test_verify_unknown_model(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "verify", "no-such-model"]) == 2


def test_a_licensed_model_shows_its_terms_and_needs_them_accepted(hub: FakeHub, data_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import replace

    gated = replace(TINY, name="tiny-gated", licence_terms="The Tiny Licence: be kind.")
    monkeypatch.setattr(catalogue, "CATALOGUE", (*catalogue.CATALOGUE, gated))
    assert main(["models", "download", "tiny-gated"]) == 130  # not a terminal, not accepted: nothing fetched
    err = capsys.readouterr().err
    assert "The Tiny Licence: be kind." in err and "--accept-licence" in err and "files" not in err
    assert not [p for p in data_dir.rglob("model_index.json") if "tiny" in str(p)]
    assert main(["models", "download", "tiny-gated", "--accept-licence"]) == 0
    assert Path(capsys.readouterr().out.strip()).is_dir()
    sd35 = catalogue.find_entry("sd35-medium")
    assert sd35 is not None and "Community License" in sd35.licence_terms and sd35.base == "SD 3.5"
    assert "accept" in sd35.note.lower()
