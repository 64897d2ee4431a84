from __future__ import annotations

import base64

import pytest
from PIL import Image

from heyim_desktop.core.codec import encode_image, request_from_data, request_to_data
from heyim_desktop.core.errors import InvalidRequest
from heyim_desktop.core.request import GenerationRequest


def test_round_trip_with_image() -> None:
    img = Image.new("RGB", (16, 8), (1, 2, 3))
    req = GenerationRequest(prompt="a", seed=4, init_image=img, strength=0.5, scheduler="DDIM", model="m")
    back = request_from_data(request_to_data(req))
    assert back == req
    assert back.init_image is not None and back.init_image.getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        ({}, "prompt", "is required"),
        ({"prompt": "a", "stepz": 3}, "stepz", "unknown field"),
        ({"prompt": "a", "steps": "3"}, "steps", "must be integer"),
        ({"prompt": "a", "steps": True}, "steps", "must be integer"),
        ({"prompt": "a", "steps": 0}, "steps", "from 1 to 150"),
        ({"prompt": "a", "init_image": "%%%"}, "init_image", "not valid base64"),
        ({"prompt": "a", "init_image": base64.b64encode(b"not an image").decode()}, "init_image", "not an image format"),
    ],
)
def test_invalid_data_names_the_field(data: dict, field: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        request_from_data(data)
    assert info.value.field == field and fragment in str(info.value)


def test_data_url_images_are_accepted() -> None:
    url = "data:image/png;base64," + encode_image(Image.new("RGB", (8, 8)))
    assert request_from_data({"prompt": "a", "init_image": url}).is_img2img
