"""Batch files: CSV and JSONL, seed ranges, inline images, errors naming the line and field."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from heyim_desktop.core.codec import request_from_data
from heyim_desktop.scale.batchfile import read_batch_file
from heyim_desktop.scale.errors import BatchFileError


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_a_seed_range_gives_one_job_per_seed(tmp_path: Path) -> None:
    path = _write(tmp_path, "b.csv", "prompt,negative,seed,steps,guidance,size,scheduler,model\n"
                                     "a red fox,blurry,1-3,20,6.5,640x384,Euler a,sd15\n"
                                     ",,,,,,,\n"
                                     "\"a cat, sitting\",,,,,,,\n")
    jobs = read_batch_file(path)
    assert [j.line for j in jobs] == [2, 2, 2, 4]
    first = request_from_data(jobs[0].request)
    assert (first.prompt, first.negative_prompt, first.seed, first.steps, first.guidance) == ("a red fox", "blurry", 1, 20, 6.5)
    assert (first.width, first.height, first.scheduler, first.model, first.count) == (640, 384, "Euler a", "sd15", 1)
    assert [j.request["seed"] for j in jobs[:3]] == [1, 2, 3]
    cat = request_from_data(jobs[3].request)
    assert cat.prompt == "a cat, sitting" and cat.seed is not None and (cat.width, cat.height) == (512, 512)


def test_jsonl_accepts_numbers_aliases_and_comments(tmp_path: Path) -> None:
    path = _write(tmp_path, "b.jsonl", '# a comment\n\n{"prompt": "a", "seed": 7, "cfg": 3, "width": 64, "height": 128}\n'
                                       '{"prompt": "b", "seed": "10..11", "negative_prompt": "x", "sampler": "DDIM"}\n')
    jobs = read_batch_file(path)
    assert [(j.line, j.request["seed"]) for j in jobs] == [(3, 7), (4, 10), (4, 11)]
    assert jobs[0].request["guidance"] == 3 and (jobs[0].request["width"], jobs[0].request["height"]) == (64, 128)
    assert jobs[1].request["scheduler"] == "DDIM" and jobs[1].request["negative_prompt"] == "x"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("b.csv", "prompt,steps\nok,2\nbad,500\n", "b.csv line 3: steps: must be from 1 to 150, got 500"),
        ("b.csv", "prompt,steps\nok,two\n", "b.csv line 2: steps: must be a whole number, got 'two'"),
        ("b.csv", "prompt,size\nok,big\n", "b.csv line 2: size: must look like 512x512, got 'big'"),
        ("b.csv", "prompt,size\nok,100x100\n", "b.csv line 2: width: must be a multiple of 8"),
        ("b.csv", "prompt,colour\nok,red\n", "b.csv line 2: colour: unknown column"),
        ("b.csv", "text\nhello\n", "b.csv line 1: a CSV batch needs a header row with a 'prompt' column"),
        ("b.csv", "prompt,seed\nok,9-1\n", "b.csv line 2: seed: range '9-1' ends before it starts"),
        ("b.csv", "prompt,seed\nok,1-20000\n", "b.csv line 2: seed: range '1-20000' has more than 10000 seeds"),
        ("b.csv", "prompt,seed\nok,-4\n", "b.csv line 2: seed: must be from 0 to 4294967295, got -4"),
        ("b.csv", "prompt,scheduler\nok,Warp\n", "b.csv line 2: scheduler: "),
        ("b.jsonl", '{"prompt": "a"}\n{"prompt": "b", "steps": 2.5}\n', "b.jsonl line 2: steps: must be integer"),
        ("b.jsonl", '{"prompt": "a"}\n{"prompt": \n', "b.jsonl line 2: not valid JSON"),
        ("b.jsonl", '["a"]\n', "b.jsonl line 1: each line must be a JSON object"),
        ("b.jsonl", '{"negative": "x"}\n', "b.jsonl line 1: prompt: "),
        ("b.jsonl", "\n# nothing\n", "b.jsonl: no jobs in the file"),
    ],
)
def test_a_bad_line_names_the_line_and_the_field(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(BatchFileError) as info:
        read_batch_file(_write(tmp_path, name, text))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BatchFileError, match="no such file"):
        read_batch_file(tmp_path / "nope.csv")


def test_an_input_image_is_read_by_the_submitter_and_sent_inline(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "red.png")
    path = _write(tmp_path, "b.csv", "prompt,image,strength,seed,size\nrepaint,red.png,0.5,4,64x64\n")
    (job,) = read_batch_file(path)
    assert "red.png" not in str(job.request) and "image" not in job.request
    raw = base64.b64decode(job.request["init_image"])
    with Image.open(io.BytesIO(raw)) as img:
        assert img.size == (64, 64) and img.getpixel((0, 0)) == (200, 10, 10)
    assert request_from_data(job.request).strength == 0.5

    missing = _write(tmp_path, "m.csv", "prompt,image\nrepaint,gone.png\n")
    with pytest.raises(BatchFileError, match=r"m.csv line 2: image: cannot read gone.png"):
        read_batch_file(missing)
