"""Hostile metadata: long, malformed and absurd texts and PNGs are bounded, skipped, and never raise."""

from __future__ import annotations

import json
import logging
import random
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from heyim_desktop.core.metadata import MAX_TEXT_CHARS, parse_parameters, read_parameters, read_parameters_text
from heyim_desktop.core.png_text import read_png_text
from heyim_desktop.store import HistoryStore
from heyim_desktop.store.entry_data import HISTORY_MARKER, load_settings_json

A1111 = ("masterpiece, a castle\nNegative prompt: lowres\n"
         'Steps: 28, Sampler: DPM++ 2M, CFG scale: 6.5, Seed: 3, Size: 512x768, Lora hashes: "a: 1, b: 2", '
         "Model: v1-5")


def test_a_40000_character_last_line_parses() -> None:
    line = "Steps: 20, Sampler: Euler, Seed: 1, " + "x" * 40_000
    p = parse_parameters("a prompt\n" + line)
    assert p.steps == 20 and p.seed == 1
    for hostile in ("a " * 20_000, "a:" * 20_000, '"' * 40_000, 'K: "' + "\\" * 40_000, ", " * 20_000,
                    "k" * 70 + ": v, " * 8000):
        parse_parameters("p\n" + hostile).request_settings()


def test_a_20kb_text_parses_and_long_text_is_cut_and_flagged() -> None:
    p = parse_parameters("word, " * 3400 + "\n" + A1111.split("\n", 2)[2])
    assert p.steps == 28 and not p.truncated
    cut = parse_parameters("y" * (MAX_TEXT_CHARS + 10))
    assert cut.truncated and len(cut.prompt) == MAX_TEXT_CHARS


def test_the_pair_parser_reads_quotes_commas_and_junk_like_before() -> None:
    p = parse_parameters(A1111)
    assert p.params["Lora hashes"] == "a: 1, b: 2" and p.params["Model"] == "v1-5" and p.cfg_scale == 6.5
    p = parse_parameters('x\nSteps: 5, junk without colon, Seed: 9, Note: "open quote, Size: 64x64')
    assert p.steps == 5 and p.seed == 9 and p.size == (64, 64) and p.params["Note"] == '"open quote'
    assert parse_parameters('x\nA: "q\\"uote", B: 2, C: 3').params["A"] == 'q"uote'


@pytest.mark.parametrize("value", ["1e999", "-1e999", "inf", "nan", "9" * 4400, "1" * 5000 + ".5", "0x10", "[1, 2]"])
def test_request_settings_never_raise_on_absurd_numbers(value: str) -> None:
    text = (f"x\nSteps: {value}, Sampler: {value}, CFG scale: {value}, Seed: {value}, Size: {value}x{value}, "
            f"Denoising strength: {value}, Guidance boost: {value}")
    settings = parse_parameters(text).request_settings()
    assert set(settings) <= {"prompt", "negative_prompt", "guidance_boost"}


def test_fuzzed_texts_never_raise() -> None:
    rng = random.Random(12)
    alphabet = 'abc:,"\\\n -.0123456789eE+xinfaN[]{}' + "\u00e9\ud800"
    seeds = [A1111, "x\nSteps: 1, Seed: 2, Size: 8x8", 'p\nA: "b", C: d, E: "f\\"g"']
    for _ in range(3000):
        base = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 12)):
            i = rng.randrange(len(base) + 1)
            op = rng.random()
            if op < 0.4:
                base.insert(i, rng.choice(alphabet) * rng.choice((1, 1, 2, 50, 400)))
            elif op < 0.7 and base:
                del base[min(i, len(base) - 1)]
            elif base:
                base[min(i, len(base) - 1)] = rng.choice(alphabet)
        text = "".join(base)
        if not text.strip():
            continue
        p = parse_parameters(text)
        p.request_settings()
        _ = (p.steps, p.seed, p.size, p.sampler, p.cfg_scale, p.denoising_strength)


def _png_bytes(chunks: list[tuple[bytes, bytes]]) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PNG")
    raw = buf.getvalue()
    iend = raw.rindex(b"IEND") - 4
    extra = b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d)) for k, d in chunks)
    return raw[:33] + extra + raw[33:iend] + raw[iend:]


def test_only_the_chunks_we_use_are_read_within_pillows_limit(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    many = [(b"tEXt", b"junk%d\0" % i + b"x" * 1000) for i in range(3000)]
    big = (b"tEXt", b"heyim\0" + b"y" * (PngImagePlugin.MAX_TEXT_CHUNK + 1))
    bomb = (b"zTXt", b"parameters\0\0" + zlib.compress(b"z" * (50 * 1024 * 1024)))
    path = tmp_path / "many.png"
    path.write_bytes(_png_bytes(many + [big, bomb, (b"iTXt", b"parameters\0\0\0\0\0late one")]))
    found = read_png_text(path)
    assert found.texts == {"parameters": "late one"} and found.skipped == ["heyim", "parameters"]
    assert read_parameters_text(path) == "late one"


def test_long_text_in_a_file_is_cut_with_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    info = PngInfo()
    info.add_text("parameters", "w" * (MAX_TEXT_CHARS * 2))
    path = tmp_path / "long.png"
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    with caplog.at_level(logging.WARNING):
        params = read_parameters(path)
    assert params is not None and params.truncated and len(params.prompt) == MAX_TEXT_CHARS
    assert "only the first" in caplog.text


def test_hostile_settings_json_is_reduced_to_clean_values() -> None:
    assert load_settings_json("[" * 100_000 + "]" * 100_000) == {}
    assert load_settings_json('{"seed": 1e999, "steps": NaN, "width": [64], "prompt": {"a": 1}, "guidance": 7}') \
        == {"guidance": 7.0}
    assert load_settings_json('{"seed": ' + "9" * 5000 + "}") == {}
    assert load_settings_json('{"seed": 12345678901234567890123}') == {}


def _stray(folder: Path, name: str, heyim: str, parameters: str = "x\nSteps: 1, Seed: 1, Size: 8x8") -> Path:
    info = PngInfo()
    info.add_text("parameters", parameters)
    info.add_text("heyim", heyim)
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(folder / name, pnginfo=info)
    return folder / name


def test_stray_hostile_pngs_never_stop_the_history_from_opening(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    month = tmp_path / "history" / "images" / "2026-01"
    mark = f'"{HISTORY_MARKER}": 1'
    _stray(month, "20260101-000000-1-inf.png", "{" + mark + ', "seed": Infinity, "steps": 1e999, "prompt": "inf"}')
    _stray(month, "20260101-000000-2-deep.png", "{" + mark + ', "a": ' + "[" * 50_000 + "]" * 50_000 + "}")
    _stray(month, "20260101-000000-3-list.png", "{" + mark + ', "seed": [1, 2], "prompt": ["a"], "width": {}}')
    _stray(month, "20260101-000000-4-num.png", "{" + mark + ', "seed": ' + "9" * 5000 + "}",
           parameters="x\nSteps: 1e999, Seed: " + "9" * 5000 + ", Size: 8x8")
    (month / "20260101-000000-5-trunc.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with caplog.at_level(logging.INFO), HistoryStore.open(tmp_path / "history") as store:
        entries = {e.path.name: e for e in store.page(0, 10)}
        assert set(entries) == {"20260101-000000-1-inf.png", "20260101-000000-3-list.png"}
        assert entries["20260101-000000-1-inf.png"].seed is None
        listed = entries["20260101-000000-3-list.png"]  # the wrong-typed values dropped, the A1111 text used
        assert listed.prompt == "x" and listed.seed == 1 and listed.width is None
        for e in entries.values():
            e.request_settings()
    assert "skipped" in caplog.text and "20260101-000000-5-trunc.png" in caplog.text


def test_entry_request_settings_never_raise_on_a_damaged_row(tmp_path: Path) -> None:
    from heyim_desktop.core.request import GenerationRequest
    from heyim_desktop.core.result import GeneratedImage, GenerationResult

    req = GenerationRequest(prompt="a red fox", seed=1, width=64, height=64)
    result = GenerationResult(req, (GeneratedImage(Image.new("RGB", (64, 64)), 1, 0),), "tiny", "torch-cpu", {})
    with HistoryStore.open(tmp_path / "history") as store:
        entry = store.save_result(result)[0]
        with store._write() as conn:
            conn.execute("UPDATE entries SET settings = ?", (json.dumps({"seed": [1], "steps": "x", "prompt": 3}),))
        e = store.get(entry.id)
        assert e is not None and e.settings == {}  # every value had the wrong type
        again = GenerationRequest(**e.request_settings())  # taken from the PNG's A1111 text instead
        assert again.prompt == "a red fox" and again.seed == 1


def test_settings_keys_added_later_survive_as_plain_values() -> None:
    from heyim_desktop.store.entry_data import clean_settings

    raw = {"inpaint": {"mask_blur": 4, "invert": False, "fill": "original"}, "extend": [8, 0, 8, 0],
           "huge": "x" * 10_000, "deep": {"a": {"b": {"c": 1}}}, "nan": float("nan"), "seed": 3}
    assert clean_settings(raw) == {"inpaint": raw["inpaint"], "extend": [8, 0, 8, 0], "seed": 3}
