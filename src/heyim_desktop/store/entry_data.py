"""Settings of a history entry as plain, bounded, typed data, whoever wrote them.

A PNG dropped into the images folder, or a row written by an older HeyIm, may carry anything in
its JSON: lists where numbers belong, ``inf``, 5,000-digit integers, nesting 100,000 deep. Only
the keys HeyIm uses survive, each with its own type, so nothing downstream (SQLite binding,
GenerationRequest, the UI) ever sees a surprise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from heyim_desktop.core.metadata import MAX_TEXT_CHARS, parse_parameters

#: Key in the ``heyim`` PNG chunk of every image the history itself wrote: only those are re-indexed.
HISTORY_MARKER = "heyim_history"
_TEXT_KEYS = ("prompt", "negative_prompt", "scheduler", "model", "model_name", "engine", "queue_job", "worker", "refiner")
_INT_KEYS = ("seed", "width", "height", "steps", "count", "clip_skip", HISTORY_MARKER)
_FLOAT_KEYS = ("guidance", "strength", "guidance_boost", "refiner_switch")
_MAX_INT = 2**63 - 1
#: What GenerationRequest takes back from an entry ("Reuse settings").
REQUEST_KEYS = ("prompt", "negative_prompt", "steps", "guidance", "seed", "width", "height", "scheduler",
                "strength", "guidance_boost", "model", "clip_skip", "refiner", "refiner_switch")


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -_MAX_INT <= value <= _MAX_INT else None
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return _int(int(value))
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _plain(value: Any, depth: int = 0) -> tuple[bool, Any]:
    """(kept, value) for a value of a key HeyIm does not know: small, finite, plain JSON only."""
    if value is None or isinstance(value, bool):
        return True, value
    if isinstance(value, str):
        return len(value) <= 4096, value
    if isinstance(value, int):
        return _int(value) is not None, value
    if isinstance(value, float):
        return math.isfinite(value), value
    if depth >= 2:
        return False, None
    if isinstance(value, list) and len(value) <= 64:
        items = [_plain(v, depth + 1) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if isinstance(value, dict) and len(value) <= 64 and all(isinstance(k, str) for k in value):
        pairs = {k: _plain(v, depth + 1) for k, v in value.items()}
        return all(ok for ok, _ in pairs.values()), {k: v for k, (_, v) in pairs.items()}
    return False, None


def clean_settings(raw: Any) -> dict[str, Any]:
    """The known keys of ``raw`` with the right types (else dropped); other keys only as small plain values."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Any] = {}
    known = set(_TEXT_KEYS) | set(_INT_KEYS) | set(_FLOAT_KEYS)
    for key, value in list(raw.items())[:256]:
        if isinstance(key, str) and key not in known and len(key) <= 64:
            ok, plain = _plain(value)
            if ok:
                out[key] = plain
    for key in _TEXT_KEYS:
        value = raw.get(key)
        if isinstance(value, str):
            out[key] = value[:MAX_TEXT_CHARS]
    for key in _INT_KEYS:
        number = _int(raw.get(key))
        if number is not None:
            out[key] = number
    for key in _FLOAT_KEYS:
        real = _float(raw.get(key))
        if real is not None:
            out[key] = real
    return out


def load_settings_json(text: str | None) -> dict[str, Any]:
    """Parse a settings JSON text defensively: damaged, hostile or wrong-shaped text gives {}."""
    if not text or len(text) > 4 * MAX_TEXT_CHARS:
        return {}
    try:
        raw = json.loads(text, parse_constant=lambda name: None)  # NaN/Infinity -> None
    except (ValueError, RecursionError):
        return {}
    return clean_settings(raw)


def request_settings(settings: dict[str, Any]) -> dict[str, Any]:
    clean = clean_settings(_plain_hires(settings))
    out = {k: clean[k] for k in REQUEST_KEYS if clean.get(k) is not None}
    hires = _hires(clean.get("hires"))
    if hires is not None:
        out["hires"] = hires
    return out


def _plain_hires(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with a HiresFix (from parsed parameters) as the plain data it is stored as."""
    from heyim_desktop.core.request import HiresFix

    hires = settings.get("hires")
    return dict(settings, hires=hires.settings()) if isinstance(hires, HiresFix) else settings


def _hires(value: Any) -> Any:
    """Stored hires fix settings back as a HiresFix (None when absent or unusable)."""
    if not isinstance(value, dict):
        return None
    from heyim_desktop.core.errors import InvalidRequest
    from heyim_desktop.core.request import HiresFix

    known = ("scale", "upscaler", "steps", "denoising_strength", "resize_x", "resize_y")
    try:
        return HiresFix(**{k: value[k] for k in known if k in value})
    except (InvalidRequest, TypeError):
        return None


def settings_from_parameters(parameters: str) -> dict[str, Any]:
    if not parameters.strip():
        return {}
    return clean_settings(_plain_hires(parse_parameters(parameters).request_settings()))


def read_image_settings(path: Path) -> tuple[str, dict[str, Any], bool]:
    """(parameters text, clean settings, written by the history) of a PNG; reads two text chunks only."""
    from heyim_desktop.core.png_text import read_png_text

    found = read_png_text(path, ("parameters", "heyim")).texts
    params = found.get("parameters", "")[:MAX_TEXT_CHARS + 1]
    raw_json = found.get("heyim")
    settings = load_settings_json(raw_json)
    marked = settings.pop(HISTORY_MARKER, None) == 1
    if not settings and params:
        settings = settings_from_parameters(params)
    if "prompt" not in settings:
        settings["prompt"] = parse_parameters(params).prompt if params.strip() else ""
    return params, settings, marked
