"""LoRA tags in API prompts: resolved against the library, unknown names are a 422."""

from __future__ import annotations

import json

from api_helpers import Running, call, decode_png

SMALL = {"steps": 2, "width": 64, "height": 64, "seed": 9}


def test_lora_tag_in_a1111_prompt_changes_the_image_and_lands_in_info(real_api: Running) -> None:
    plain = call(real_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "a fox", **SMALL})
    tagged = call(real_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "a fox <lora:inkwash:0.9>", **SMALL})
    assert plain.status == tagged.status == 200, tagged.body
    assert decode_png(plain.json["images"][0]).tobytes() != decode_png(tagged.json["images"][0]).tobytes()
    infotext = json.loads(tagged.json["info"])["infotexts"][0]
    assert "<lora:inkwash:0.9>" in infotext and 'Lora hashes: "inkwash: ' in infotext


def test_unknown_lora_is_a_422_naming_the_field(real_api: Running) -> None:
    reply = call(real_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "a fox <lora:nope:1>", **SMALL})
    assert reply.status == 422 and "unknown LoRA 'nope'" in reply.body.decode()
    heyim = call(real_api.port, "POST", "/api/generate", body={"prompt": "a fox <lora:nope>", **SMALL})
    assert heyim.status == 422 and "nope" in heyim.body.decode()
