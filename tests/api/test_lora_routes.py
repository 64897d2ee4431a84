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


def test_loras_route_lists_the_library_in_a1111_shape(real_api: Running) -> None:
    from pydantic import TypeAdapter

    import a1111_schemas as A  # noqa: N812 - the schemas module, short in long expressions

    reply = call(real_api.port, "GET", "/sdapi/v1/loras")
    assert reply.status == 200, reply.body
    items = TypeAdapter(list[A.LoraItem]).validate_python(reply.json, strict=True)
    by_name = {i.name: i for i in items}
    assert set(by_name) == {"inkwash", "tagged"}
    assert by_name["inkwash"].alias == "inkwash" and by_name["inkwash"].path.endswith("inkwash.safetensors")
    # the safetensors metadata, JSON values parsed, and ss_output_name as the alias (as AUTOMATIC1111)
    assert by_name["tagged"].alias == "Tagged Style"
    assert by_name["tagged"].metadata["ss_tag_frequency"] == {"set": {"fox": 3}}
    assert call(real_api.port, "POST", "/sdapi/v1/refresh-loras", body={}).status == 200


def test_embeddings_route_reports_shape_and_vectors(real_api: Running) -> None:
    import a1111_schemas as A  # noqa: N812 - the schemas module, short in long expressions

    reply = call(real_api.port, "GET", "/sdapi/v1/embeddings")
    assert reply.status == 200, reply.body
    parsed = A.EmbeddingsResponse.model_validate(reply.json)
    assert set(parsed.loaded) == {"glimmerword"} and parsed.skipped == {}
    item = parsed.loaded["glimmerword"]
    assert (item.shape, item.vectors, item.step) == (32, 3, None)


def test_extra_generation_params_carry_the_lora_hashes(real_api: Running) -> None:
    from heyim_desktop.core.lora import lora_hash

    reply = call(real_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "a fox <lora:inkwash:0.5>", **SMALL})
    assert reply.status == 200, reply.body
    info = json.loads(reply.json["info"])
    path = next(i["path"] for i in call(real_api.port, "GET", "/sdapi/v1/loras").json if i["name"] == "inkwash")
    assert info["extra_generation_params"] == {"Lora hashes": f"inkwash: {lora_hash(path)}"}
    plain = json.loads(call(real_api.port, "POST", "/sdapi/v1/txt2img", body={"prompt": "a fox", **SMALL}).json["info"])
    assert plain["extra_generation_params"] == {}
