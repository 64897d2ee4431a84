"""Tiled super-resolution against spandrel's own untiled call, and safe .pth loading."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from heyim_desktop.core.cancel import Cancelled, CancelToken
from heyim_desktop.core.errors import InvalidRequest, ModelError
from heyim_desktop.core.model_files import UnsafeModel
from heyim_desktop.core.result import Progress
from heyim_desktop.core.upscale import (
    LANCZOS,
    NEAREST,
    auto_tile_size,
    load_upscaler,
    tile_grid,
    upscale_image,
    upscale_tensor,
)
from tiny_upscaler import make_esrgan


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("upscalers")
    return {s: make_esrgan(folder, s) for s in (2, 4)}


def _seam_distance(size: int, tile: int, overlap: int) -> torch.Tensor:
    """Per input coordinate: distance to the nearest tile edge that lies inside the image."""
    from heyim_desktop.core.upscale import _spans

    edges = set()
    for s, length, _, _ in _spans(size, tile, overlap):
        for e in (s, s + length):
            if 0 < e < size:
                edges.add(e)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    if not edges:
        return torch.full((size,), float(size))
    return torch.stack([(coords - e).abs() for e in sorted(edges)]).amin(0)


@pytest.mark.parametrize("scale", [2, 4])
def test_tiled_equals_untiled_away_from_seams(models: dict[int, tuple[Path, Path]], scale: int) -> None:
    model = load_upscaler(models[scale][0], device="cpu")
    assert model.scale == scale and model.architecture == "ESRGAN"
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 120, 152, generator=gen)
    with torch.inference_mode():
        reference = model.descriptor(image)  # spandrel's own untiled call
    tile, overlap = 64, 16
    assert len(tile_grid(120, 152, tile, overlap)) >= 6
    tiled = upscale_tensor(model, image, scale, tile=tile, overlap=overlap)
    assert tiled.shape == (1, 3, 120 * scale, 152 * scale) == reference.shape
    diff = (tiled - reference).abs()[0].amax(0)
    dy = _seam_distance(120, tile, overlap).repeat_interleave(scale)
    dx = _seam_distance(152, tile, overlap).repeat_interleave(scale)
    far = (dy[:, None] >= 8) & (dx[None, :] >= 8)
    assert far.float().mean() > 0.15
    assert diff[far].max().item() < 1e-5  # measured ~5e-8
    assert diff.max().item() < 1e-2  # at the seams themselves: bounded (measured ~4e-3)
    assert diff.mean().item() < 5e-4


def test_one_tile_is_exactly_the_untiled_call(models: dict[int, tuple[Path, Path]]) -> None:
    model = load_upscaler(models[2][0], device="cpu")
    image = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        reference = model.descriptor(image)
    assert torch.equal(upscale_tensor(model, image, 2, tile=64), reference)


def test_pth_is_converted_out_of_process_and_matches(models: dict[int, tuple[Path, Path]], data_dir: Path) -> None:
    st, pth = models[4]
    from_st = load_upscaler(st, device="cpu")
    from_pth = load_upscaler(pth, device="cpu")  # {"params_ema": ...} as Real-ESRGAN ships it
    converted = list((data_dir / "cache" / "upscalers").glob("*.safetensors")) or list(data_dir.rglob("upscalers/*.safetensors"))
    assert converted, "the .pth went through the converter's safetensors copy"
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.equal(from_st(image), from_pth(image))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_booby_trapped_pth_never_runs(tmp_path: Path, data_dir: Path) -> None:
    marker = tmp_path / "pwned"
    trap = tmp_path / "4x_trap.pth"
    torch.save({"conv_first.weight": torch.zeros(8, 3, 3, 3), "evil": _Payload(marker)}, trap)
    with pytest.raises(UnsafeModel, match="not converted"):
        load_upscaler(trap, device="cpu")
    assert not marker.exists()
    bare = tmp_path / "bare.pth"
    bare.write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    with pytest.raises(UnsafeModel):
        load_upscaler(bare, device="cpu")
    assert not marker.exists()


def test_not_an_upscaler_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "random.safetensors"
    save_file({"foo.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(ModelError, match="not an upscaler architecture"):
        load_upscaler(path, device="cpu")


@pytest.mark.parametrize("scale", [2, 4])
def test_sizes_exact_with_model_and_builtins(models: dict[int, tuple[Path, Path]], scale: int) -> None:
    image = Image.new("RGB", (37, 23), (200, 10, 30))
    model = load_upscaler(models[scale][0], device="cpu")
    out = upscale_image(image, scale=scale, model=model, tile=16)
    assert out.image.size == (37 * scale, 23 * scale) and out.tiles > 1
    for name in (LANCZOS, NEAREST):
        assert upscale_image(image, scale=scale, upscaler=name).image.size == (37 * scale, 23 * scale)
    # A 2x model asked for 4x runs twice.
    if scale == 2:
        assert upscale_image(image, scale=4, model=model, tile=64).image.size == (148, 92)
    assert upscale_image(image, scale=1.5, upscaler=LANCZOS).image.size == (56, 34)
    assert upscale_image(image, size=(50, 40), upscaler=NEAREST).image.size == (50, 40)


def test_progress_per_tile_and_cancel_between_tiles(models: dict[int, tuple[Path, Path]]) -> None:
    model = load_upscaler(models[2][0], device="cpu")
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    seen: list[Progress] = []
    upscale_tensor(model, image, 2, tile=24, overlap=8, progress=seen.append)
    assert [p.step for p in seen] == list(range(1, len(seen) + 1)) and seen[-1].total == len(seen) == 9
    token = CancelToken()
    calls: list[int] = []

    def stop_after_two(p: Progress) -> None:
        calls.append(p.step)
        if p.step == 2:
            token.cancel()

    with pytest.raises(Cancelled):
        upscale_tensor(model, image, 2, tile=24, overlap=8, progress=stop_after_two, cancel=token)
    assert calls == [1, 2]


def test_tile_size_follows_memory_and_preference(models: dict[int, tuple[Path, Path]]) -> None:
    model = load_upscaler(models[4][0], device="cpu")
    small = auto_tile_size(model, free_bytes=64 * 1024 * 1024)
    large = auto_tile_size(model, free_bytes=8 * 1024**3)
    assert 32 <= small < large <= 2048
    assert auto_tile_size(model, free_bytes=8 * 1024**3, preference=256) == 256


def test_bad_scale_is_a_clear_error() -> None:
    image = Image.new("RGB", (8, 8))
    with pytest.raises(InvalidRequest, match="scale"):
        upscale_image(image, scale=0.5)
    with pytest.raises(InvalidRequest, match="pixel limit"):
        upscale_image(Image.new("RGB", (4000, 10)), scale=4)
    with pytest.raises(InvalidRequest, match="built-in"):
        upscale_image(image, scale=2, upscaler="Bogus")


@pytest.mark.parametrize("size, tile, overlap", [(512, 256, 32), (120, 64, 16), (2048, 512, 32), (100, 100, 8), (37, 16, 8)])
def test_tiles_cover_the_image_with_their_overlap_and_no_more_than_needed(size: int, tile: int, overlap: int) -> None:
    from heyim_desktop.core.upscale import _spans

    spans = _spans(size, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == size
    assert all(length <= tile for _, length, _, _ in spans)
    for (s0, l0, _, t0), (s1, _, lead, _) in zip(spans, spans[1:]):
        assert t0 == lead == s0 + l0 - s1 >= overlap - 1
    n = len(spans)
    assert n == 1 or (n - 1) * tile - (n - 2) * overlap < size  # one tile fewer would not cover it
    if (size, tile) == (512, 256):
        assert [length for _, length, _, _ in spans] == [192, 192, 192]
