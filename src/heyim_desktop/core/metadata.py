"""AUTOMATIC1111-style ``parameters`` text: writing it, and reading it from any tool's images.

The format is three parts: the prompt (any number of lines), an optional block starting
``Negative prompt:``, and a last line of ``Key: value`` pairs separated by commas. Values
containing commas, colons or quotes are JSON-quoted, as AUTOMATIC1111 does.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from heyim_desktop import __version__
from heyim_desktop.core.errors import InvalidRequest

if TYPE_CHECKING:
    from heyim_desktop.core.request import GenerationRequest

log = logging.getLogger(__name__)

NEGATIVE_PREFIX = "Negative prompt:"
#: The most text read from one image; longer text is cut (and the cut is logged and flagged).
MAX_TEXT_CHARS = 64 * 1024
# A key of a "Key: value" pair: bounded, so trying it at every position of a line stays linear.
_KEY_RE = re.compile(r"\s*(\w[\w \-/+.()]{0,63}?):\s*")
#: Longest number text taken as a number (int() refuses 4,300+ digits, float() overflows to inf).
_MAX_NUMBER_CHARS = 40
#: The keys a diffusion-transformer family's images add (core.families.engine.family_parameters):
#: ``Model family`` (its label), ``Guidance kind`` (Capabilities.guidance: cfg, embedded (distilled guidance) or none), ``Shift`` (the flow-matching
#: schedule's shift, or ``dynamic`` when it follows the image size), ``Transformer`` (a single-file or
#: GGUF transformer's file name), ``Quantization`` (the GGUF file's main quantization), ``Text encoder``
#: (a GGUF text encoder's file name) and ``Text encoder quantization`` (that file's main quantization).
FAMILY_KEYS = ("Model family", "Guidance kind", "Shift", "Transformer", "Quantization", "Text encoder",
               "Text encoder quantization")
_GUIDANCE_KINDS = ("cfg", "embedded", "none")
_QUANT_RE = re.compile(r"(?:[QI]Q?\d{1,2}(?:_[0-9A-Z]{1,3}){0,2}|F16|BF16|F32|F64)")


def format_shift(shift: float) -> str:
    """A flow-matching shift as images record it (``3``, ``1.15``)."""
    return _fmt_number(round(shift, 4))


@dataclass(frozen=True)
class ImageParameters:
    """Parameters read from an image's metadata, whichever tool wrote them."""

    prompt: str
    negative_prompt: str = ""
    params: dict[str, str] = field(default_factory=dict)
    #: The text was longer than MAX_TEXT_CHARS and only its start was read.
    truncated: bool = False

    def get_float(self, key: str) -> float | None:
        """The value as a finite number, or None (missing, not a number, inf, NaN, absurdly long)."""
        value = self.params.get(key)
        if not isinstance(value, str) or len(value) > _MAX_NUMBER_CHARS:
            return None
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None

    def get_int(self, key: str) -> int | None:
        value = self.params.get(key)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d{1,30}\s*", value):
            return int(value)
        number = self.get_float(key)
        return int(number) if number is not None else None

    @property
    def steps(self) -> int | None:
        return self.get_int("Steps")

    @property
    def seed(self) -> int | None:
        return self.get_int("Seed")

    @property
    def cfg_scale(self) -> float | None:
        return self.get_float("CFG scale")

    @property
    def size(self) -> tuple[int, int] | None:
        m = re.fullmatch(r"\s*(\d{1,6})\s*x\s*(\d{1,6})\s*", self.params.get("Size", ""))
        return (int(m.group(1)), int(m.group(2))) if m else None

    @property
    def sampler(self) -> str | None:
        sampler = self.params.get("Sampler")
        if sampler is None:
            return None
        schedule = self.params.get("Schedule type", "")
        if schedule and schedule.lower() not in ("automatic", "normal", "uniform") and schedule.lower() not in sampler.lower():
            sampler = f"{sampler} {schedule}"
        return sampler

    @property
    def denoising_strength(self) -> float | None:
        return self.get_float("Denoising strength")

    @property
    def model(self) -> str | None:
        return self.params.get("Model")

    def hires_settings(self) -> Any:
        """A HiresFix from AUTOMATIC1111's ``Hires ...`` keys, or None (also when they are unusable)."""
        from heyim_desktop.core.request import HiresFix

        if not any(k in self.params for k in ("Hires upscale", "Hires upscaler", "Hires resize")):
            return None
        kwargs: dict[str, Any] = {"upscaler": self.params.get("Hires upscaler") or "Latent"}
        scale = self.get_float("Hires upscale")
        if scale is not None:
            kwargs["scale"] = scale
        steps = self.get_int("Hires steps")
        if steps is not None:
            kwargs["steps"] = steps
        if self.denoising_strength is not None:
            kwargs["denoising_strength"] = self.denoising_strength
        m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", self.params.get("Hires resize", ""))
        if m:
            kwargs["resize_x"], kwargs["resize_y"] = int(m.group(1)), int(m.group(2))
        try:
            return HiresFix(**kwargs)
        except InvalidRequest:
            return None

    @property
    def refiner(self) -> str | None:
        """The refiner's name, without the `` [hash]`` AUTOMATIC1111 appends."""
        name = self.params.get("Refiner")
        if not name:
            return None
        return re.sub(r"\s*\[[0-9a-fA-F]{8,64}\]$", "", name).strip() or None

    @property
    def clip_skip(self) -> int | None:
        return self.get_int("Clip skip")

    @property
    def styles(self) -> list[str]:
        """The prompt styles HeyIm recorded (already expanded into the prompt)."""
        raw = self.params.get("Styles")
        if not raw:
            return []
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return [raw]
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]

    def family_settings(self) -> dict[str, Any]:
        """A diffusion-transformer family's own keys (:data:`FAMILY_KEYS`), read back and checked.

        ``family`` is the family's key (``zimage``, ``flux2``, ``sd3``), ``guidance_kind`` one of cfg /
        embedded / none, ``shift`` a number or ``"dynamic"``, ``transformer`` and ``text_encoder`` file names
        (never paths) and ``quantization`` and ``text_encoder_quantization`` GGUF type names. Values that
        do not fit are left out; empty for other images.
        """
        from heyim_desktop.core.families import FAMILIES

        out: dict[str, Any] = {}
        label = self.params.get("Model family", "").strip()
        for family in FAMILIES.values():
            if label.lower() in (family.label.lower(), family.key):
                out["family"] = family.key
        kind = self.params.get("Guidance kind", "").strip().lower()
        if kind in _GUIDANCE_KINDS:
            out["guidance_kind"] = kind
        shift = self.params.get("Shift", "").strip().lower()
        number = self.get_float("Shift")
        if shift == "dynamic":
            out["shift"] = "dynamic"
        elif number is not None and 0 < number <= 100:
            out["shift"] = number
        for key, name in (("Transformer", "transformer"), ("Text encoder", "text_encoder")):
            file = self.params.get(key, "").strip()
            if file and len(file) <= 255 and not re.search(r"[\\/\x00]", file) and file not in (".", ".."):
                out[name] = file
        for key, name in (("Quantization", "quantization"), ("Text encoder quantization", "text_encoder_quantization")):
            quant = self.params.get(key, "").strip().upper()
            if _QUANT_RE.fullmatch(quant):
                out[name] = quant
        return out

    def inpaint_settings(self) -> dict[str, Any] | None:
        """The inpainting settings these parameters record (the mask itself is not in them)."""
        from heyim_desktop.core.masking import FILL_MODES, MAX_BLUR, MAX_PADDING

        if "Mask blur" not in self.params and "Masked content" not in self.params:
            return None
        out: dict[str, Any] = {}
        blur = self.get_int("Mask blur")
        if blur is not None and 0 <= blur <= MAX_BLUR:
            out["blur"] = blur
        out["invert"] = self.params.get("Mask mode", "").strip().lower() == "inpaint not masked"
        fill = self.params.get("Masked content", "").strip().lower()
        if fill in FILL_MODES:
            out["fill"] = fill
        out["only_masked"] = self.params.get("Inpaint area", "").strip().lower() == "only masked"
        padding = self.get_int("Masked area padding")
        if padding is not None and 0 <= padding <= MAX_PADDING:
            out["padding"] = padding
        return out

    def controlnet_settings(self) -> list[dict[str, Any]]:
        """The ControlNet units these parameters record (``ControlNet 0: "Module: ..."``),
        as :class:`~heyim_desktop.core.controlnet.ControlUnit` keywords; the model is its name."""
        from heyim_desktop.core.controlnet import parse_unit_text

        units = []
        for i in range(16):
            text = self.params.get(f"ControlNet {i}")
            if text is None:
                break
            unit = parse_unit_text(text)
            if unit is not None:
                units.append(unit)
        return units

    def request_settings(self) -> dict[str, Any]:
        """Keyword arguments for :class:`GenerationRequest` that these parameters support.

        Values HeyIm cannot use (an unknown sampler, an out-of-range number) are left out,
        so reusing another tool's settings never fails; the caller validates the rest.
        """
        from heyim_desktop.core.request import (
            GUIDANCE_RANGE,
            IMG2IMG_GUIDANCE_BOOST,
            MAX_SEED,
            SIZE_RANGE,
            STEPS_RANGE,
        )
        from heyim_desktop.core.schedulers import canonical_name

        out: dict[str, Any] = {"prompt": self.prompt, "negative_prompt": self.negative_prompt}
        if self.steps is not None and STEPS_RANGE[0] <= self.steps <= STEPS_RANGE[1]:
            out["steps"] = self.steps
        boost = self.get_float("Guidance boost")
        cfg = self.cfg_scale
        if cfg is not None:
            if boost is not None and self.denoising_strength is not None:
                cfg -= boost
            if GUIDANCE_RANGE[0] <= cfg <= GUIDANCE_RANGE[1]:
                out["guidance"] = round(cfg, 4)
        if boost is not None and 0 <= boost <= 10:
            out["guidance_boost"] = boost
        elif self.denoising_strength is not None:
            # Another tool's image-to-image: its CFG was used as is, with no boost.
            out["guidance_boost"] = 0.0 if cfg is not None else IMG2IMG_GUIDANCE_BOOST
        if self.seed is not None and 0 <= self.seed <= MAX_SEED:
            out["seed"] = self.seed
        if self.size is not None:
            w, h = self.size
            if all(SIZE_RANGE[0] <= v <= SIZE_RANGE[1] and v % 8 == 0 for v in (w, h)):
                out["width"], out["height"] = w, h
        if self.sampler:
            try:
                out["scheduler"] = canonical_name(self.sampler)
            except InvalidRequest:
                pass
        strength = self.denoising_strength
        hires = self.hires_settings()
        if hires is not None:
            out["hires"] = hires
            out.pop("guidance_boost", None)
            if cfg is not None and GUIDANCE_RANGE[0] <= cfg <= GUIDANCE_RANGE[1]:
                out["guidance"] = round(cfg, 4)
        elif strength is not None and 0 < strength <= 1:
            out["strength"] = strength
        if self.model:
            out["model"] = self.model
        elif "transformer" in (family := self.family_settings()):
            # a family image from a single-file transformer names the model by its file
            out["model"] = Path(family["transformer"]).stem
        if self.refiner:
            out["refiner"] = self.refiner
            switch = self.get_float("Refiner switch at")
            if switch is not None and 0 < switch < 1:
                out["refiner_switch"] = switch
        from heyim_desktop.core.request import CLIP_SKIP_RANGE

        clip_skip = self.clip_skip
        if clip_skip is not None and CLIP_SKIP_RANGE[0] <= clip_skip <= CLIP_SKIP_RANGE[1]:
            out["clip_skip"] = clip_skip
        return out


def _quote(value: str) -> str:
    if any(c in value for c in ',:"\n'):
        return json.dumps(value, ensure_ascii=False)
    return value


def _fmt_number(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def model_label(ref: str) -> str:
    """A model reference as images name it: a file or folder's name (never its full path)."""
    name = re.split(r"[\\/]", ref.rstrip("/\\"))[-1] or ref
    return name[: -len(".safetensors")] if name.lower().endswith(".safetensors") else name


def format_parameters(
    request: "GenerationRequest",
    seed: int,
    model_name: str,
    *,
    model_hash: str | None = None,
    extra: dict[str, str] | None = None,
) -> str:
    """The ``parameters`` text for one image of ``request`` made with ``seed``."""
    lines = [request.prompt.strip()]
    if request.negative_prompt.strip():
        lines.append(f"{NEGATIVE_PREFIX} {request.negative_prompt.strip()}")
    pairs: list[tuple[str, str]] = [
        ("Steps", str(request.steps)),
        ("Sampler", request.scheduler_name),
        ("CFG scale", _fmt_number(request.effective_guidance)),
        ("Seed", str(seed)),
        ("Size", f"{request.width}x{request.height}"),
    ]
    if model_hash:
        pairs.append(("Model hash", model_hash))
    pairs.append(("Model", model_name))
    if request.is_img2img:
        pairs.append(("Denoising strength", _fmt_number(request.strength)))
        pairs.append(("Guidance boost", _fmt_number(request.guidance_boost)))
    hires = request.hires
    if hires is not None:  # AUTOMATIC1111's keys; Size stays the first pass's size, as there
        pairs.append(("Denoising strength", _fmt_number(hires.denoising_strength)))
        if hires.resize_x or hires.resize_y:
            w, h = hires.target_size(request.width, request.height)
            pairs.append(("Hires resize", f"{w}x{h}"))
        else:
            pairs.append(("Hires upscale", _fmt_number(hires.scale)))
        if hires.steps:
            pairs.append(("Hires steps", str(hires.steps)))
        pairs.append(("Hires upscaler", hires.upscaler))
    if request.refiner:
        pairs.append(("Refiner", model_label(request.refiner)))
        pairs.append(("Refiner switch at", _fmt_number(request.refiner_switch)))
    if request.clip_skip > 1:  # AUTOMATIC1111 leaves the default (1) out
        pairs.append(("Clip skip", str(request.clip_skip)))
    if request.styles:
        pairs.append(("Styles", json.dumps(list(request.styles), ensure_ascii=False)))
    pairs.extend(_inpaint_pairs(request))
    from heyim_desktop.core.controlnet import infotext_pairs

    pairs.extend(infotext_pairs(request))
    if request.loras or request.embeddings:
        from heyim_desktop.core.lora import network_parameters

        pairs.extend(network_parameters(request))
    for key, value in (extra or {}).items():
        pairs.append((key, value))
    pairs.append(("Version", f"HeyIm {__version__}"))
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in pairs))
    return "\n".join(lines)


def postprocess_parameters(source: str | None, scale: float, upscaler: str) -> str:
    """An upscaled image's ``parameters``: its source's, plus the keys AUTOMATIC1111's Extras adds."""
    extra = f"Postprocess upscale by: {_fmt_number(scale)}, Postprocess upscaler: {_quote(upscaler)}"
    text = (source or "").strip()
    if not text:
        return extra
    lines = text.split("\n")
    if len(_parse_pairs(lines[-1])) >= 3:
        lines[-1] = f"{lines[-1]}, {extra}"
    else:
        lines.append(extra)
    return "\n".join(lines)


def _parse_pairs(line: str) -> list[tuple[str, str]]:
    """The ``Key: value`` pairs of a line, in one left-to-right pass (linear in the line's length).

    A value is JSON-quoted (up to its closing quote) or runs to the next comma. Text that is
    not a pair is skipped up to the next comma.
    """
    pairs: list[tuple[str, str]] = []
    pos, n = 0, len(line)
    while pos < n:
        m = _KEY_RE.match(line, pos)
        if m is None:
            comma = line.find(",", pos)
            if comma < 0:
                break
            pos = comma + 1
            continue
        key, start = m.group(1).strip(), m.end()
        end = -1
        if start < n and line[start] == '"':
            end = _closing_quote(line, start)
            if end >= 0:
                after = end + 1
                while after < n and line[after] in " \t":
                    after += 1
                if after < n and line[after] != ",":
                    end = -1  # a quote, then more text: the value runs to the comma after all
        if end >= 0:
            value = line[start:end + 1]
            comma = line.find(",", end + 1)
        else:
            comma = line.find(",", start)
            value = line[start:comma if comma >= 0 else n]
        pairs.append((key, value.strip()))
        if comma < 0:
            break
        pos = comma + 1
    return pairs


def _closing_quote(line: str, start: int) -> int:
    """Index of the quote closing the JSON string that opens at ``start``, or -1."""
    i, n = start + 1, len(line)
    while i < n:
        j = line.find('"', i)
        if j < 0:
            return -1
        backslashes = 0
        k = j - 1
        while k > start and line[k] == "\\":
            backslashes += 1
            k -= 1
        if backslashes % 2 == 0:
            return j
        i = j + 1
    return -1


def _inpaint_pairs(request: "GenerationRequest") -> list[tuple[str, str]]:
    """AUTOMATIC1111's inpainting keys, as its img2img writes them."""
    spec = request.inpaint
    if spec is None:
        return []
    pairs = [("Mask blur", str(spec.blur))]
    if spec.invert:
        pairs.append(("Mask mode", "Inpaint not masked"))
    pairs.append(("Masked content", spec.fill))
    if spec.only_masked:
        pairs.append(("Inpaint area", "Only masked"))
        pairs.append(("Masked area padding", str(spec.padding)))
    return pairs


def parse_parameters(text: str) -> ImageParameters:
    """Parse AUTOMATIC1111-style ``parameters`` text (HeyIm's or another tool's).

    Linear in the text's length; text past MAX_TEXT_CHARS is cut (``truncated`` says so).
    """
    truncated = len(text) > MAX_TEXT_CHARS
    if truncated:
        text = text[:MAX_TEXT_CHARS]
    text = text.replace("\r\n", "\n").strip()
    if not text:
        raise ValueError("empty parameters text")
    lines = text.split("\n")
    params: dict[str, str] = {}
    found = _parse_pairs(lines[-1])
    if len(found) >= 3:
        lines = lines[:-1]
        for key, value in found:
            if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                try:
                    decoded = json.loads(value)
                except (ValueError, RecursionError):
                    decoded = value[1:-1]
                value = decoded if isinstance(decoded, str) else value[1:-1]
            params[key] = value
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        if line.startswith(NEGATIVE_PREFIX) and not in_negative:
            in_negative = True
            line = line[len(NEGATIVE_PREFIX):].lstrip()
        (negative_lines if in_negative else prompt_lines).append(line)
    return ImageParameters(
        prompt="\n".join(prompt_lines).strip(),
        negative_prompt="\n".join(negative_lines).strip(),
        params=params,
        truncated=truncated,
    )


def read_parameters_text(path: "str | Path | BinaryIO") -> str | None:
    """The raw ``parameters`` text of an image file, or None if it carries none.

    Reads the PNG ``parameters`` chunk (AUTOMATIC1111, HeyIm, many others) without loading
    any other text chunk, and the EXIF UserComment that AUTOMATIC1111 writes into JPEG and
    WebP files. Text past MAX_TEXT_CHARS is cut, with a log line.
    """
    from heyim_desktop.core.png_text import is_png, read_png_text

    text: str | None
    if is_png(path):
        text = read_png_text(path, ("parameters",)).texts.get("parameters")
        return _capped(text, path) if text and text.strip() else None
    from PIL import Image

    with Image.open(path) as img:
        raw = img.info.get("parameters")
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        if isinstance(raw, str) and raw.strip():
            return _capped(raw, path)
        exif = img.getexif()
        comment = exif.get_ifd(0x8769).get(0x9286) if exif else None
    if isinstance(comment, bytes):
        text = _decode_user_comment(comment[: 2 * MAX_TEXT_CHARS + 8])
        return _capped(text, path) if text else None
    if isinstance(comment, str) and comment.strip():
        return _capped(comment, path)
    return None


def _capped(text: str, path: "str | Path | BinaryIO") -> str:
    if len(text) > MAX_TEXT_CHARS:
        log.warning("the parameters text of %s is %d characters; only the first %d were read",
                    path, len(text), MAX_TEXT_CHARS)
        # One character past the cap, so parse_parameters marks the result as cut.
        return text[:MAX_TEXT_CHARS + 1]
    return text


def _decode_user_comment(raw: bytes) -> str | None:
    prefix, body = raw[:8], raw[8:]
    if prefix.startswith(b"UNICODE"):
        # piexif writes UTF-16 big-endian; some writers use little-endian.
        for enc in ("utf-16-be", "utf-16-le"):
            try:
                text = body.decode(enc)
            except UnicodeDecodeError:
                continue
            if text.isprintable() or "\n" in text:
                return text.strip("\x00") or None
        return None
    text = body.decode("utf-8", "replace").strip("\x00")
    return text or None


def read_parameters(path: str | Path) -> ImageParameters | None:
    """Parsed parameters of an image file, or None when it has none."""
    text = read_parameters_text(path)
    return parse_parameters(text) if text else None
