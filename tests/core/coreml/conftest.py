"""Core ML fixtures: the tiny model converted once per session, in two shapes.

* ``coreml_model``: through the CLI, Apple's default shape: split_einsum, batch 2, one Unet,
  with VAEEncoder.
* ``coreml_chunked``: through the API, the other shape: original attention, batch 1,
  UnetChunk1 + UnetChunk2, no VAEEncoder; its TextEncoder and VAEDecoder are reused from
  ``coreml_model`` (same weights, same size), as a user making a second variant would.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def conversion_log() -> dict[str, object]:
    return {}


@pytest.fixture(scope="session")
def coreml_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, conversion_log: dict[str, object]) -> Path:
    import contextlib
    import io

    from heyim_desktop import cli

    out = tmp_path_factory.mktemp("coreml") / "tiny-coreml"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(["convert", str(tiny_model), str(out)])
    conversion_log["cli"] = (code, stdout.getvalue(), stderr.getvalue())
    assert code == 0, stderr.getvalue()
    return out


@pytest.fixture(scope="session")
def coreml_chunked(
    tiny_model: Path, coreml_model: Path, tmp_path_factory: pytest.TempPathFactory, conversion_log: dict[str, object]
) -> Path:
    from heyim_desktop.core.coreml.convert import convert_to_coreml

    stages: list[object] = []
    out = convert_to_coreml(
        tiny_model,
        tmp_path_factory.mktemp("coreml") / "tiny-coreml-chunked",
        attention="original",
        batch=1,
        chunk_unet=True,
        include_encoder=False,
        reuse_from=coreml_model,
        progress=stages.append,
    )
    conversion_log["api"] = stages
    return out


@pytest.fixture()
def model_copy(coreml_model: Path, tmp_path: Path) -> Path:
    """A private copy to break (remove files) without touching the session's model."""
    dest = tmp_path / coreml_model.name
    shutil.copytree(coreml_model, dest)
    return dest
