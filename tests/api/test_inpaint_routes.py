"""Inpainting over both API dialects, with the real tiny model."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image

from api_helpers import Running, call, decode_png

SMALL = {"steps": 3, "width": 64, "height": 64}


def _b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pair() -> tuple[Image.Image, Image.Image]:
    rng = np.random.RandomState(0)
    image = Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8))
    arr = np.zeros((64, 64), np.uint8)
    arr[10:30, 20:50] = 255
    return image, Image.fromarray(arr, mode="L")


def test_a1111_img2img_with_a_mask_repaints_only_the_mask(real_api: Running) -> None:
    image, mask = _pair()
    reply = call(real_api.port, "POST", "/sdapi/v1/img2img", body={
        "prompt": "a fox", "init_images": [_b64(image)], "mask": _b64(mask), "mask_blur": 0,
        "inpainting_fill": 1, "denoising_strength": 1.0, "seed": 3, **SMALL})
    assert reply.status == 200, reply.body
    out = np.asarray(decode_png(reply.json["images"][0]))
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], np.asarray(image)[keep])
    infotext = json.loads(reply.json["info"])["infotexts"][0]
    assert "Mask blur: 0" in infotext and "Masked content: original" in infotext


def test_a1111_mask_that_is_not_an_image_is_a_422_naming_it(real_api: Running) -> None:
    image, _ = _pair()
    reply = call(real_api.port, "POST", "/sdapi/v1/img2img", body={
        "prompt": "a fox", "init_images": [_b64(image)], "mask": base64.b64encode(b"nope").decode(), **SMALL})
    assert reply.status == 422 and "mask" in reply.body.decode()
    bad_fill = call(real_api.port, "POST", "/sdapi/v1/img2img", body={
        "prompt": "a fox", "init_images": [_b64(image)], "mask": _b64(_pair()[1]), "inpainting_fill": 9, **SMALL})
    assert bad_fill.status == 422 and "inpainting_fill" in bad_fill.body.decode()


def test_heyim_generate_takes_a_mask_image(real_api: Running) -> None:
    image, mask = _pair()
    reply = call(real_api.port, "POST", "/api/generate", body={
        "prompt": "a fox", "inputImage": _b64(image), "maskImage": _b64(mask), "strength": 1.0, "seed": 5, **SMALL})
    assert reply.status == 200, reply.body
    out = np.asarray(decode_png(reply.json["imageBase64"]))
    assert out.shape == (64, 64, 3)
    keep = np.asarray(mask.resize((64, 64))) == 0
    # HeyIm's default mask blur (4) softens the edge; far from it the picture is untouched.
    far = keep.copy()
    far[0:44, 6:64] = False
    assert np.array_equal(out[far], np.asarray(image)[far])
