"""The live preview's latent-to-RGB projection, including the 16-channel and FLUX.2 latent spaces."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from heyim_desktop.core.families import FAMILIES
from heyim_desktop.core.preview import LATENT_SPACES, latents_to_rgb


@pytest.mark.parametrize("space,channels,scale", [("sd3", 16, 1), ("flux1", 16, 1), ("flux2", 128, 2)])
def test_published_factors_give_the_right_size_deterministically(space: str, channels: int, scale: int) -> None:
    lat = np.random.default_rng(0).standard_normal((channels, 6, 10)).astype(np.float32)
    rgb = latents_to_rgb(lat, space)
    assert rgb.shape == (6 * scale, 10 * scale, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, latents_to_rgb(lat.copy(), space))
    # not the fallback's normalised first three channels
    assert not np.array_equal(rgb, latents_to_rgb(lat))


def test_the_factors_are_applied_as_published() -> None:
    # zero latents show the bias colour
    factors, bias = LATENT_SPACES["sd3"]
    expected = ((np.asarray(bias) + 1.0) * 127.5).astype(np.uint8)
    assert (latents_to_rgb(np.zeros((16, 2, 2), np.float32), "sd3") == expected).all()
    # one channel on: that channel's row plus the bias
    lat = np.zeros((16, 1, 1), np.float32)
    lat[3] = 2.0
    want = ((2.0 * np.asarray(factors[3]) + np.asarray(bias) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    assert np.array_equal(latents_to_rgb(lat, "sd3")[0, 0], want)
    # FLUX.2: patch channel c*4 + dy*2 + dx lands on pixel (2y + dy, 2x + dx) of channel c
    f2, b2 = LATENT_SPACES["flux2"]
    packed = np.zeros((128, 1, 1), np.float32)
    packed[3 * 4 + 1 * 2 + 0] = 3.0  # channel 3, dy=1, dx=0
    rgb = latents_to_rgb(packed, "flux2")
    lit = ((3.0 * np.asarray(f2[3]) + np.asarray(b2) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    assert np.array_equal(rgb[1, 0], lit)
    assert np.array_equal(rgb[0, 0], ((np.asarray(b2) + 1.0) * 127.5).astype(np.uint8))


def test_other_channel_counts_keep_the_old_projection() -> None:
    lat = np.random.default_rng(1).standard_normal((4, 3, 3)).astype(np.float32)
    assert np.array_equal(latents_to_rgb(lat, "sd3"), latents_to_rgb(lat))  # SD's 4 channels
    odd = np.random.default_rng(2).standard_normal((8, 3, 3)).astype(np.float32)
    assert np.array_equal(latents_to_rgb(odd, "flux1"), latents_to_rgb(odd))
    assert {f.latent_space for f in FAMILIES.values()} == {"sd3", "flux1", "flux2"}


def test_zimage_previews_are_its_latent_size_and_repeat(zimage_engine: Any) -> None:
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.result import Progress

    request = GenerationRequest("a red fox", steps=1, guidance=0.0, seed=3, width=96, height=64)
    runs: list[list[Progress]] = [[], []]
    for seen in runs:
        zimage_engine.generate(request, progress=seen.append)
    first, again = runs[0][0].preview, runs[1][0].preview
    factor = int(zimage_engine.pipe.vae_scale_factor)
    assert first is not None and again is not None
    assert first.shape == (64 // factor, 96 // factor, 3) and np.array_equal(first, again)


def test_flux2_packed_latents_unpack_to_the_image_grid() -> None:
    """FLUX.2 [klein] hands the callback packed (tokens, 128) latents: they unpack to the wide grid they
    came from (diffusers' own patchify and pack), not to a square-ish guess."""
    import types

    import torch
    from diffusers import Flux2KleinPipeline

    from heyim_desktop.core.families.engine import FamilyEngine

    grid = torch.randn(1, 32, 2 * 8, 2 * 24)  # VAE latents of a 3:1 image (vae_scale_factor 8: 384x128 px)
    patches = Flux2KleinPipeline._patchify_latents(grid)  # (1, 128, 8, 24)
    packed = Flux2KleinPipeline._pack_latents(patches)  # (1, 192, 128)
    stub: Any = types.SimpleNamespace(pipe=types.SimpleNamespace(vae_scale_factor=8))
    lat = FamilyEngine._preview_latents(stub, packed, 128)
    assert lat.shape == (128, 8, 24) and np.array_equal(lat, patches[0].numpy())
    rgb = latents_to_rgb(lat, "flux2")
    assert rgb.shape == (16, 48, 3)  # the VAE latents' own size: 32 channels at twice the patch grid
    ref = np.einsum("chw,cr->hwr", grid[0].numpy(), np.asarray(LATENT_SPACES["flux2"][0], np.float32))
    ref = ((ref + np.asarray(LATENT_SPACES["flux2"][1], np.float32) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    assert int(np.abs(rgb.astype(int) - ref.astype(int)).max()) <= 1
