"""Batch files: CSV (with a header row) or JSON Lines, one prompt per line.

Columns / keys: ``prompt`` (required), ``negative``, ``seed`` (a number, or a range such as
``1-20`` giving one job per seed; empty: random), ``steps``, ``guidance`` (or ``cfg``),
``size`` (``512x512``; default 512x512), ``scheduler``, ``model`` (a name the workers serve),
``strength`` and ``image`` (an input image the *submitter* reads, relative to the batch
file, and sends inline; workers never read paths). Every line is checked before anything is
submitted; an error names the line and the field.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Iterator

from heyim_desktop.core.errors import ImageError, InvalidRequest
from heyim_desktop.scale.errors import BatchFileError
from heyim_desktop.scale.records import NewJob

MAX_JOBS = 100_000
MAX_SEED_RANGE = 10_000
ALIASES = {"negative_prompt": "negative", "cfg": "guidance", "cfg_scale": "guidance", "sampler": "scheduler"}
COLUMNS = ("prompt", "negative", "seed", "steps", "guidance", "size", "width", "height", "scheduler",
           "model", "strength", "image")


def _rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    name = path.name
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BatchFileError(name, number, "", f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise BatchFileError(name, number, "", "each line must be a JSON object")
            yield number, row
        return
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "prompt" not in [f.strip().lower() for f in reader.fieldnames]:
        raise BatchFileError(name, 1, "", "a CSV batch needs a header row with a 'prompt' column")
    for row in reader:
        if None in row:
            raise BatchFileError(name, reader.line_num, "", "more cells than header columns")
        cleaned = {k.strip().lower(): (v or "").strip() for k, v in row.items()}
        if not any(cleaned.values()):
            continue
        yield reader.line_num, {k: v for k, v in cleaned.items() if v != ""}


def _number(value: Any, kind: type, field: str) -> Any:
    if isinstance(value, str):
        try:
            return kind(value.strip())
        except ValueError:
            raise InvalidRequest(field, f"must be a {'whole number' if kind is int else 'number'}, got {value!r}") from None
    return value


def _seeds(value: Any) -> list[int | None]:
    if value is None:
        return [None]
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-|\.\.)\s*(\d+)\s*", value)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise InvalidRequest("seed", f"range {value!r} ends before it starts")
            if hi - lo + 1 > MAX_SEED_RANGE:
                raise InvalidRequest("seed", f"range {value!r} has more than {MAX_SEED_RANGE} seeds")
            return list(range(lo, hi + 1))
        return [_number(value, int, "seed")]
    return [value]


def _request_data(row: dict[str, Any], folder: Path) -> tuple[dict[str, Any], list[int | None]]:
    row = {ALIASES.get(k, k): v for k, v in row.items()}
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown column; allowed: {', '.join(COLUMNS)}")
    data: dict[str, Any] = {"prompt": row.get("prompt"), "count": 1}
    if "negative" in row:
        data["negative_prompt"] = row["negative"]
    for field in ("steps", "width", "height"):
        if field in row:
            data[field] = _number(row[field], int, field)
    for field in ("guidance", "strength"):
        if field in row:
            data[field] = _number(row[field], float, field)
    if "size" in row:
        m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", str(row["size"]))
        if not m:
            raise InvalidRequest("size", f"must look like 512x512, got {row['size']!r}")
        data["width"], data["height"] = int(m.group(1)), int(m.group(2))
    for field in ("scheduler", "model"):
        if field in row:
            data[field] = row[field]
    if "image" in row:
        from heyim_desktop.core.codec import MAX_INLINE_IMAGE_BYTES, encode_image
        from heyim_desktop.core.images import load_image

        image_path = (folder / str(row["image"])).expanduser()
        try:
            if image_path.stat().st_size > MAX_INLINE_IMAGE_BYTES:
                raise InvalidRequest("image", f"{row['image']} is larger than {MAX_INLINE_IMAGE_BYTES // 2**20} MB")
            data["init_image"] = encode_image(load_image(image_path))
        except OSError as exc:
            raise InvalidRequest("image", f"cannot read {row['image']}: {exc.strerror or exc}") from None
        except ImageError as exc:
            raise InvalidRequest("image", str(exc)) from None
    return data, _seeds(row.get("seed"))


def read_batch_file(path: str | Path) -> list[NewJob]:
    """Every job of the file, validated (seeds resolved), or :class:`BatchFileError`."""
    from heyim_desktop.core.codec import request_from_data, request_to_data

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BatchFileError(str(path), 0, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchFileError(str(path), 0, "", f"cannot read it ({exc})") from None
    jobs: list[NewJob] = []
    for number, row in _rows(path, text):
        try:
            data, seeds = _request_data(row, path.parent)
            template = request_from_data({**data, "seed": 0})  # validates every field once
            for seed in seeds:
                request = template.replace(seed=seed).with_seed()
                jobs.append(NewJob(request=request_to_data(request), line=number))
        except InvalidRequest as exc:
            raise BatchFileError(path.name, number, exc.field, exc.detail) from None
        if len(jobs) > MAX_JOBS:
            raise BatchFileError(path.name, number, "", f"more than {MAX_JOBS} jobs in one batch; split the file")
    if not jobs:
        raise BatchFileError(path.name, 0, "", "no jobs in the file")
    return jobs
