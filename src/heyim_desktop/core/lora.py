"""LoRAs and textual-inversion embeddings: recognising the files, prompt tags, and the job's set.

Everything here is cheap and torch-free: the model library lists LoRA and embedding files
with it, and every front end resolves ``<lora:NAME:WEIGHT>`` tags against the library with
:func:`resolve_networks` before a request is queued, so the engine only ever sees file
paths. Applying them to a loaded model is :mod:`heyim_desktop.core.lora_torch`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from heyim_desktop.core.errors import InvalidRequest, ModelError

if TYPE_CHECKING:
    from heyim_desktop.core.request import GenerationRequest

#: AUTOMATIC1111's extra-network tag: ``<lora:name>`` or ``<lora:name:0.8>`` (also ``lyco``).
LORA_TAG = re.compile(r"<(lora|lyco):([^:<>]+?)(?::(-?[0-9]*\.?[0-9]+))?(?::[^<>]*)?>", re.IGNORECASE)
WEIGHT_RANGE = (-10.0, 10.0)
MAX_LORAS = 16


@dataclass(frozen=True)
class LoraUse:
    """One LoRA in a job: its file, weight, and the name the prompt calls it by."""

    #: The file; empty for a LoRA named only (resolved against the library by resolve_networks).
    path: str
    weight: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        if not self.path and not self.name:
            raise InvalidRequest("loras", "a LoRA needs a file or a name")
        lo, hi = WEIGHT_RANGE
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not lo <= self.weight <= hi:
            raise InvalidRequest("loras", f"weight of {self.name or self.path} must be from {lo:g} to {hi:g}")
        if not self.name:
            object.__setattr__(self, "name", Path(self.path).stem)


@dataclass(frozen=True)
class EmbeddingUse:
    """A textual-inversion embedding activated by ``word`` in the prompt or negative prompt."""

    path: str
    word: str


@dataclass(frozen=True)
class LoraFileInfo:
    """What a LoRA or embedding file is, read from its safetensors header."""

    kind: str  # "lora", "embedding"
    #: "kohya", "diffusers", "loha", "lokr" (LyCORIS, applied by core.lycoris), "embedding-a1111",
    #: "embedding-diffusers", "embedding-sdxl"; or another LyCORIS algorithm HeyIm does not load
    #: (see UNSUPPORTED_LYCORIS).
    layout: str
    family: str  # "sd1", "sd2", "sdxl", "zimage", "flux2", "sd3", "unknown"
    #: The width of the UNet's cross-attention (text) input the file was made for.
    cross_dim: int | None
    #: The text encoder width for embeddings (768 SD1, 1024 SD2, 768+1280 SDXL).
    text_dim: int | None
    vectors: int = 0

    @property
    def supported(self) -> bool:
        return self.layout not in UNSUPPORTED_LYCORIS

    @property
    def problem(self) -> str:
        """Why HeyIm cannot use the file ("" when it can)."""
        if self.supported:
            return ""
        return (f"a LyCORIS {UNSUPPORTED_LYCORIS[self.layout]} file; HeyIm loads LoRA (kohya, diffusers), "
                "LoHa and LoKr files, not this kind")


#: LyCORIS algorithms recognised by their key names but not loaded: layout -> name.
UNSUPPORTED_LYCORIS = {"oft": "OFT/BOFT", "ia3": "(IA)^3", "glora": "GLoRA", "full": "full fine-tune (diff)",
                       "dora": "DoRA"}


def strip_lora_tags(text: str) -> tuple[str, list[tuple[str, float]]]:
    """The prompt without its ``<lora:...>`` tags, and the tags' (name, weight) in order."""
    found: list[tuple[str, float]] = []

    def take(m: re.Match[str]) -> str:
        found.append((m.group(2).strip(), float(m.group(3)) if m.group(3) else 1.0))
        return ""

    cleaned = LORA_TAG.sub(take, text)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned)
    cleaned = re.sub(r"\s+,", ",", cleaned).strip().strip(",").strip()
    return cleaned, found


def set_lora_tag(text: str, name: str, weight: float | None) -> str:
    """``text`` with the tag for ``name`` set to ``weight`` (added at the end), or removed (None)."""
    pattern = re.compile(r"<(?:lora|lyco):" + re.escape(name) + r"(?::[^<>]*)?>", re.IGNORECASE)
    tag = "" if weight is None else f"<lora:{name}:{weight:g}>"
    first = pattern.search(text)
    if first:
        rest = pattern.sub("", text[first.end():])
        out = pattern.sub("", text[: first.start()]) + tag + rest
    elif tag:
        out = f"{text.rstrip()} {tag}" if text.strip() else tag
    else:
        out = text
    return re.sub(r"[ \t]{2,}", " ", out).strip()


def parse_lora_spec(value: str) -> tuple[str, float]:
    """``PATH_OR_NAME[:WEIGHT]`` -> (path or name, weight); weight 1 unless given (``C:\\...`` is a path)."""
    ref, weight = value.strip(), 1.0
    head, sep, tail = ref.rpartition(":")
    if sep and head and not (len(head) == 1 and head.isalpha()):
        try:
            weight = float(tail)
            ref = head
        except ValueError:
            pass
    return ref, weight


class NetworkFinder:
    """What resolving a request needs from the model library (names -> files).

    ``loras`` lists the usable LoRA files by name (for AUTOMATIC1111's ``GET /sdapi/v1/loras``
    and pickers); a finder made from a single lookup lists nothing.
    """

    def __init__(
        self,
        find_lora: Callable[[str], Path | None],
        embeddings: Callable[[], Mapping[str, Path]] = lambda: {},
        loras: Callable[[], Mapping[str, Path]] = lambda: {},
    ) -> None:
        self.find_lora = find_lora
        self.embeddings = embeddings
        self.loras = loras


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[\w\-.]+", text)}


def resolve_networks(
    request: "GenerationRequest", finder: NetworkFinder, extra: tuple[LoraUse, ...] = ()
) -> "GenerationRequest":
    """``request`` with its prompt's ``<lora:...>`` tags (and ``extra``, e.g. CLI ``--lora``) as files.

    Unknown names are a clear error naming them; embeddings whose names appear as words in
    the prompt or negative prompt are attached, as AUTOMATIC1111 does.
    """
    _, tags = strip_lora_tags(request.prompt)
    _, neg_tags = strip_lora_tags(request.negative_prompt)
    uses: dict[str, LoraUse] = {}
    missing = []
    for use in (*request.loras, *extra):
        if use.path:
            uses[str(Path(use.path))] = use
            continue
        found = finder.find_lora(use.name)  # given by name only (from a queue or the API)
        if found is None:
            missing.append(use.name)
        else:
            uses[str(found)] = LoraUse(str(found), use.weight, use.name)
    for name, weight in [*tags, *neg_tags]:
        path = finder.find_lora(name)
        if path is None:
            missing.append(name)
            continue
        uses[str(path)] = LoraUse(str(path), weight, name)
    if missing:
        raise InvalidRequest("prompt", f"unknown LoRA {', '.join(repr(m) for m in missing)}: add the file to the "
                                       "model library (its name is the file name without .safetensors)")
    if len(uses) > MAX_LORAS:
        raise InvalidRequest("loras", f"at most {MAX_LORAS} LoRAs at once, got {len(uses)}")
    words = _words(request.prompt) | _words(request.negative_prompt)
    embeddings = tuple(
        EmbeddingUse(str(path), name) for name, path in sorted(finder.embeddings().items()) if name.lower() in words
    )
    return replace(request, loras=tuple(uses.values()), embeddings=embeddings)


# -- reading the files ---------------------------------------------------------------------

_CROSS_DIMS = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


def inspect_network_file(path: Path) -> LoraFileInfo:
    """Recognise a LoRA or embedding from its header alone (no torch); ModelError if it is neither."""
    from heyim_desktop.core.model_files import read_safetensors_header

    header = read_safetensors_header(path)
    keys = list(header.tensors)
    if not keys:
        raise ModelError(f"{path.name} holds no tensors.")
    if "emb_params" in header.tensors:
        shape = header.tensors["emb_params"].shape
        dim = shape[-1]
        return LoraFileInfo("embedding", "embedding-a1111", {768: "sd1", 1024: "sd2"}.get(dim, "unknown"), None, dim,
                            shape[0] if len(shape) == 2 else 1)
    if "clip_l" in header.tensors and "clip_g" in header.tensors:
        shape = header.tensors["clip_l"].shape
        return LoraFileInfo("embedding", "embedding-sdxl", "sdxl", None, 768 + header.tensors["clip_g"].shape[-1],
                            shape[0] if len(shape) == 2 else 1)
    if len(keys) == 1 and len(header.tensors[keys[0]].shape) in (1, 2) and "lora" not in keys[0]:
        shape = header.tensors[keys[0]].shape
        dim = shape[-1]
        return LoraFileInfo("embedding", "embedding-diffusers", {768: "sd1", 1024: "sd2"}.get(dim, "unknown"), None,
                            dim, shape[0] if len(shape) == 2 else 1)
    if any(k.endswith(".dora_scale") for k in keys):
        layout = "dora"
    elif any(".hada_w1_a" in k for k in keys):
        layout = "loha"
    elif any(".lokr_w" in k for k in keys):
        layout = "lokr"
    elif any(k.endswith((".oft_blocks", ".oft_diag")) for k in keys):
        layout = "oft"
    elif any(k.endswith(".on_input") for k in keys):
        layout = "ia3"
    elif any(k.endswith((".a1.weight", ".b1.weight")) for k in keys):
        layout = "glora"
    elif any(k.endswith(".diff") for k in keys) and any(k.startswith(("lora_unet_", "lora_te")) for k in keys):
        layout = "full"
    elif any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys):
        layout = "kohya"
    elif any(("lora_A" in k or "lora.down" in k or "lora_linear_layer" in k) for k in keys):
        layout = "diffusers"
    else:
        raise ModelError(f"{path.name} is neither a LoRA nor a textual-inversion embedding HeyIm recognises.")
    cross = _cross_dim(header.tensors)
    family = _CROSS_DIMS.get(cross or 0, "unknown")
    if any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in keys):
        family = "sdxl"
    if cross is None:
        family = transformer_lora_family(keys) or family
    return LoraFileInfo("lora", layout, family, cross, None)


def _cross_dim(tensors: Mapping[str, object]) -> int | None:
    """The input width of a cross-attention key/value layer the file changes (the text width)."""
    lokr: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, info in tensors.items():
        low = key.lower()
        if "attn2" not in low or not ("to_k" in low or "to_v" in low):
            continue
        shape = tuple(getattr(info, "shape", ()))
        if len(shape) < 2:
            continue
        if any(d in low for d in ("lora_down", "lora.down", "lora_a", "down.weight", "hada_w1_b")):
            return int(shape[1])
        module, _, part = key.partition(".")
        if part.startswith("lokr_"):
            lokr.setdefault(module, {})[part] = shape
    for parts in lokr.values():  # LoKr: the width is the Kronecker product's, w1's times w2's
        w1 = parts.get("lokr_w1") or parts.get("lokr_w1_b")
        w2 = parts.get("lokr_w2") or parts.get("lokr_w2_b")
        if w1 and w2:
            return int(w1[1] * w2[1])
    return None


#: Module names only one diffusion-transformer family's LoRAs touch (diffusers, ComfyUI and
#: kohya spellings), after the ``transformer.`` / ``diffusion_model.`` / ``lora_unet_`` prefix.
_TRANSFORMER_LORA_MARKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("zimage", ("noise_refiner", "context_refiner", "attention.to_q", "attention.qkv", "feed_forward.w",
                "attention_to_q", "attention_qkv", "feed_forward_w")),
    ("flux2", ("to_qkv_mlp_proj", "ff.linear_in", "ff_context.linear_in", "double_stream_modulation",
               "single_stream_modulation", "ff_linear_in", "ff_context_linear_in")),
    ("sd3", ("joint_blocks", "attn.add_q_proj", "attn_add_q_proj", "context_block.", "x_block.")),
)
#: FLUX.1's single blocks (LoRAs for it are not FLUX.2's nor SD 3's).
_FLUX1_MARKS = ("single_transformer_blocks", "single_blocks", "proj_mlp")


def transformer_lora_family(keys: "list[str] | tuple[str, ...]") -> str | None:
    """The diffusion-transformer family (Z-Image, FLUX.2, SD 3) a LoRA's tensor names belong to, if any."""
    unet_style = ("unet.", "lora_unet_down", "lora_unet_up", "lora_unet_mid", "lora_unet_input", "lora_unet_output",
                  "text_encoder", "lora_te")
    names = [k for k in keys if not k.startswith(unet_style)]
    if not names or len(names) < len(keys) // 2:
        return None
    for family, marks in _TRANSFORMER_LORA_MARKS:
        if any(mark in key for key in names for mark in marks):
            if family == "sd3" and any(mark in key for key in names for mark in _FLUX1_MARKS):
                return None  # FLUX.1 has SD 3's joint attention too, plus single blocks
            return family
    return None


FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "zimage": "Z-Image", "flux2": "FLUX.2 [klein]",
                 "sd3": "SD 3.5", "unknown": "an unknown base model"}


def check_family(name: str, info: LoraFileInfo, model_family: str, model_cross_dim: int | None) -> None:
    """Refuse a LoRA made for another base model, naming both."""
    if not info.supported:
        raise ModelError(f"{name} is {info.problem}.")
    transformers = ("zimage", "flux2", "sd3")
    if (info.family in transformers or model_family in transformers) and info.family != "unknown" \
            and info.family != model_family:
        raise ModelError(f"{name} is a LoRA for {FAMILY_LABELS.get(info.family, info.family)} models; the loaded model is "
                         f"{FAMILY_LABELS.get(model_family, model_family)}.")
    if info.cross_dim is not None and model_cross_dim is not None and info.cross_dim != model_cross_dim:
        raise ModelError(f"{name} is a LoRA for {FAMILY_LABELS.get(info.family, info.family)} models; the loaded model is "
                         f"{FAMILY_LABELS.get(model_family, model_family)}.")


# -- hashes as AUTOMATIC1111 writes them ----------------------------------------------------

_HASHES: dict[tuple[str, int, int, str], str] = {}


def _cached(path: Path, kind: str, compute: Callable[[], str]) -> str:
    import os

    st = os.stat(path)
    key = (str(path.resolve()), st.st_size, int(st.st_mtime_ns), kind)
    if key not in _HASHES:
        _HASHES[key] = compute()
    return _HASHES[key]


def lora_hash(path: str | Path) -> str:
    """AUTOMATIC1111's LoRA short hash: the first 12 hex digits of the SHA-256 of the tensor data
    after a safetensors file's header (the "addnet" hash), or of the whole file otherwise."""
    import hashlib

    p = Path(path)

    def compute() -> str:
        digest = hashlib.sha256()
        with open(p, "rb") as fh:
            head = fh.read(8)
            if p.suffix.lower() == ".safetensors" and len(head) == 8:
                fh.seek(8 + int.from_bytes(head, "little"))
            else:
                fh.seek(0)
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    return _cached(p, "lora", compute)[:12]


def file_hash(path: str | Path) -> str:
    """SHA-256 of a whole file, hex, cached by path, size and mtime (embeddings: first 12 shown)."""
    import hashlib

    p = Path(path)

    def compute() -> str:
        digest = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    return _cached(p, "file", compute)


def _clean(name: str) -> str:
    return name.replace(":", "").replace(",", "")


def network_parameters(request: "GenerationRequest") -> list[tuple[str, str]]:
    """``Lora hashes`` and ``TI hashes`` as AUTOMATIC1111 writes them (files that vanished are skipped)."""
    pairs: list[tuple[str, str]] = []
    loras = []
    for use in request.loras:
        try:
            loras.append(f"{_clean(use.name)}: {lora_hash(use.path)}")
        except OSError:
            continue
    if loras:
        pairs.append(("Lora hashes", ", ".join(loras)))
    tis = []
    for emb in request.embeddings:
        try:
            tis.append(f"{_clean(emb.word)}: {file_hash(emb.path)[:12]}")
        except OSError:
            continue
    if tis:
        pairs.append(("TI hashes", ", ".join(tis)))
    return pairs


def parse_network_hashes(value: str) -> dict[str, str]:
    """``"a: 0123456789ab, b: ..."`` -> {"a": "0123456789ab", ...}."""
    out: dict[str, str] = {}
    for part in value.split(","):
        if ":" in part:
            name, h = part.rsplit(":", 1)
            if name.strip() and h.strip():
                out[name.strip()] = h.strip()
    return out
