"""ControlNet preprocessors (OpenCV), control-image fitting, infotext and the request's JSON form."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from heyim_desktop.core.codec import request_from_data, request_to_data
from heyim_desktop.core.control_preprocess import (
    PREPROCESSORS,
    control_array,
    detect,
    fit_control_image,
    network_preprocessors,
)
from heyim_desktop.core.controlnet import ControlUnit, parse_unit_text, unit_infotext
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.metadata import format_parameters, parse_parameters
from heyim_desktop.core.request import GenerationRequest


def _photo(w: int = 96, h: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.RandomState(seed)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[10:40, 20:70] = (200, 60, 30)
    arr[30:60, 50:90] = (20, 180, 220)
    arr = np.clip(arr.astype(int) + rng.randint(-20, 20, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


@pytest.mark.parametrize(("low", "high"), [(100, 200), (30, 90)])
def test_canny_equals_opencv(low: int, high: int) -> None:
    img = _photo()
    ours = np.asarray(detect(img, "canny", processor_res=64, threshold_a=low, threshold_b=high))
    ref = cv2.Canny(np.asarray(img), low, high)
    assert ours.shape == (64, 96, 3)
    assert np.array_equal(ours[:, :, 0], ref) and np.array_equal(ours[:, :, 2], ref)
    assert ref.any()


def test_canny_defaults_and_resolution() -> None:
    img = _photo()
    out = detect(img, "canny", processor_res=128)
    assert out.size == (192, 128)
    scaled = np.asarray(img.resize((192, 128), Image.Resampling.LANCZOS))
    assert np.array_equal(np.asarray(out)[:, :, 0], cv2.Canny(scaled, 100, 200))


@pytest.mark.parametrize("module", [n for n in PREPROCESSORS if n != "inpaint"])
def test_every_preprocessor_makes_an_rgb_map(module: str) -> None:
    arr = control_array(_photo(), module, 64, 64, processor_res=64)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.float32
    assert 0.0 <= arr.min() and arr.max() <= 1.0


def test_none_is_diffusers_control_image_processor() -> None:
    from diffusers.image_processor import VaeImageProcessor

    img = _photo(80, 48)
    proc = VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True, do_normalize=False)
    ref = proc.preprocess(img, height=64, width=64)[0].permute(1, 2, 0).numpy()
    ours = control_array(img, "none", 64, 64, resize_mode="Just Resize")
    assert np.abs(ours - ref).max() == 0.0


def test_resize_modes() -> None:
    img = Image.new("RGB", (100, 50), (255, 255, 255))
    assert fit_control_image(img, 64, 64, "Crop and Resize").getpixel((0, 32)) == (255, 255, 255)
    filled = fit_control_image(img, 64, 64, "Resize and Fill")
    assert filled.getpixel((32, 0)) == (0, 0, 0) and filled.getpixel((32, 32)) == (255, 255, 255)
    with pytest.raises(InvalidRequest, match="resize_mode"):
        control_array(img, "none", 64, 64, resize_mode="stretch")


def test_inpaint_sets_masked_pixels_to_minus_one() -> None:
    mask = np.zeros((64, 64), np.float32)
    mask[10:20, 30:50] = 1.0
    arr = control_array(_photo(64, 64), "inpaint_global_harmonious", 64, 64, mask=mask)
    assert (arr[10:20, 30:50] == -1.0).all()
    assert (arr[mask < 0.5] >= 0).all()
    with pytest.raises(InvalidRequest, match="inpainting mask"):
        control_array(_photo(64, 64), "inpaint", 64, 64)


def test_tile_downscales_and_shuffle_is_seeded() -> None:
    small = detect(_photo(), "tile_resample", threshold_a=4)
    assert small.size == (24, 16)
    a = np.asarray(detect(_photo(), "shuffle", seed=1))
    b = np.asarray(detect(_photo(), "shuffle", seed=1))
    c = np.asarray(detect(_photo(), "shuffle", seed=2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_control_images_give_clear_errors() -> None:
    with pytest.raises(InvalidRequest, match="no pixels"):
        detect(Image.new("RGB", (0, 0)), "canny")
    with pytest.raises(InvalidRequest, match="processor_res"):
        detect(_photo(), "canny", processor_res=10)
    grey16 = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
    assert control_array(grey16, "none", 64, 64).shape == (64, 64, 3)
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert control_array(rgba, "none", 64, 64).min() == 1.0  # transparency is white, as for input images
    with pytest.raises(InvalidRequest, match="control_image|controlnet"):
        request_from_data({"prompt": "x", "controlnet": [{"model": "m", "image": "not base64!"}]})


def test_network_preprocessors_need_their_weights(tmp_path: Path) -> None:
    listed = dict((p.name, ok) for p, ok in network_preprocessors([tmp_path / "body_pose_model.safetensors"]))
    assert listed == {"depth_midas": False, "depth_anything_v2": False, "openpose": True, "openpose_hand": False,
                      "openpose_face": False, "openpose_faceonly": False, "openpose_full": False,
                      "inpaint_only+lama": False}


def test_infotext_round_trip(tmp_path: Path) -> None:
    weights = tmp_path / "control_sd15_canny.safetensors"
    weights.write_bytes(b"\0" * (0x100000 + 0x10000))
    unit = ControlUnit(model=str(weights), preprocessor="canny", weight=0.75, start=0.1, end=0.9, mode="prompt",
                       threshold_a=50)
    text = unit_infotext(unit)
    assert text.startswith("Module: canny, Model: control_sd15_canny [")
    assert "Weight: 0.75, Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 50.0, Threshold B: 200.0" in text
    assert text.endswith("Guidance Start: 0.1, Guidance End: 0.9, Pixel Perfect: False, Control Mode: My prompt is more important")
    req = GenerationRequest(prompt="fox", seed=1, controlnets=(unit, ControlUnit(model="depth", weight=1)))
    params = parse_parameters(format_parameters(req, 1, "m"))
    assert params.params["ControlNet 0"] == text
    units = params.controlnet_settings()
    assert units[0] == {"model": "control_sd15_canny", "weight": 0.75, "start": 0.1, "end": 0.9, "threshold_a": 50.0,
                        "threshold_b": 200.0, "processor_res": 512, "preprocessor": "canny",
                        "resize_mode": "Crop and Resize", "mode": "prompt", "pixel_perfect": False}
    assert units[1]["model"] == "depth" and units[1]["mode"] == "balanced"
    ControlUnit(**units[0])  # what is read back builds a unit
    assert parse_unit_text("Module: canny") is None


def test_request_json_round_trip() -> None:
    unit = ControlUnit(model="/models/cn", image=_photo(64, 64), preprocessor="canny", weight=0.5, mode="controlnet")
    req = GenerationRequest(prompt="fox", seed=3, controlnets=(unit, ControlUnit(model="/models/b")))
    untrusted = request_from_data(request_to_data(req))
    assert [u.model for u in untrusted.controlnets] == ["cn", "b"]  # names only; receivers look them up
    back = request_from_data(request_to_data(req), trust_paths=True)
    assert back.controlnets[0] == unit
    assert back.controlnets[0].image is not None and np.array_equal(np.asarray(back.controlnets[0].image), np.asarray(unit.image))
    assert back.controlnets[1].image is None
    with pytest.raises(InvalidRequest, match=r"controlnet\[0\].bogus"):
        request_from_data({"prompt": "x", "controlnet": [{"model": "m", "bogus": 1}]})
    with pytest.raises(InvalidRequest, match="at most"):
        GenerationRequest(prompt="x", controlnets=tuple(ControlUnit(model="m") for _ in range(5)))


def test_pixel_perfect_resolution_follows_the_extension() -> None:
    from heyim_desktop.core.control_preprocess import control_array
    from heyim_desktop.core.controlnet import control_images, pixel_perfect_resolution

    # The short side scaled by the larger factor (crop, just resize) or the smaller (fill).
    assert pixel_perfect_resolution((1000, 500), 512, 512, "Crop and Resize") == 512
    assert pixel_perfect_resolution((1000, 500), 512, 512, "Just Resize") == 512
    assert pixel_perfect_resolution((1000, 500), 512, 512, "Resize and Fill") == 256
    assert pixel_perfect_resolution((640, 480), 768, 512, "Crop and Resize") == 576
    assert pixel_perfect_resolution((64, 64), 32, 32, "Crop and Resize") == 64  # the detectors' floor
    photo = _photo(128, 96)
    unit = ControlUnit(model="m", image=photo, preprocessor="canny", pixel_perfect=True)
    req = GenerationRequest(prompt="x", seed=1, width=64, height=64, controlnets=(unit,))
    (ours,) = control_images(req)
    assert np.array_equal(ours, control_array(photo, "canny", 64, 64, processor_res=64))
    assert not np.array_equal(ours, control_array(photo, "canny", 64, 64))  # the default 512 differs
    text = unit_infotext(unit)
    assert "Pixel Perfect: True" in text and parse_unit_text(text)["pixel_perfect"] is True
    back = request_from_data(request_to_data(req), trust_paths=True)
    assert back.controlnets[0].pixel_perfect is True
    with pytest.raises(InvalidRequest, match="pixel_perfect"):
        ControlUnit(model="m", pixel_perfect=1)  # type: ignore[arg-type]


def test_recolor_colour_grid_and_inpaint_only() -> None:
    import cv2

    from heyim_desktop.core.control_preprocess import canonical

    photo = _photo(128, 128)
    rgb = np.asarray(photo)
    lum = np.asarray(detect(photo, "recolor_luminance", threshold_a=0.8))
    level = cv2.cvtColor(rgb, cv2.COLOR_BGR2LAB)[:, :, 0].astype(np.float32) / 255.0
    assert np.array_equal(lum[:, :, 0], (level ** 0.8 * 255).clip(0, 255).astype(np.uint8))
    assert np.array_equal(lum[:, :, 0], lum[:, :, 2])
    value = np.asarray(detect(photo, "recolor_intensity"))  # gamma 1: the HSV value channel
    assert np.array_equal(value[:, :, 1], cv2.cvtColor(rgb, cv2.COLOR_BGR2HSV)[:, :, 2])
    grid = np.asarray(detect(photo, "t2ia_color_grid", processor_res=128))
    assert grid.shape == (128, 128, 3) and len(np.unique(grid[:64, :64].reshape(-1, 3), axis=0)) == 1
    assert canonical("inpaint_only") == "inpaint"
    assert canonical("inpaint_only+lama") == "inpaint_only+lama"  # runs with a LaMa model (test_lama_preprocess)
