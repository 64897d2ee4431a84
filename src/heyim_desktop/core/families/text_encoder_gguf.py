"""GGUF text encoders: a llama.cpp-format Qwen3 or T5 encoder file used instead of a family folder's full weights.

A user who brings a quantized text encoder (``Qwen3-4B-Q8_0.gguf`` for Z-Image and FLUX.2 [klein] 4B,
``t5-v1_1-xxl-encoder-Q8_0.gguf`` for SD 3.5) puts the file in the folder's text encoder subfolder
(``text_encoder/``; SD 3.5's T5 is ``text_encoder_3/``), beside that subfolder's ``config.json``. The
tokenizer stays the folder's. Recognising the file reads its header only (no torch, nothing run):
its ``general.architecture`` must be one transformers' GGUF loader reads, the one the family's
pipeline expects, and its sizes must be the folder config's.

Loading goes through transformers' own GGUF support (``from_pretrained(..., gguf_file=...)``) with the
folder's ``config.json``: transformers **dequantizes** these architectures on load, so the GGUF
saves disk space and download time, not memory (the encoder runs in the family's dtype).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.families import Family

log = logging.getLogger(__name__)

#: The text encoder classes a family pipeline takes from a GGUF file, and the ``general.architecture``
#: values (llama.cpp's names) transformers' GGUF loader reads as that class.
GGUF_TEXT_ENCODERS: dict[str, tuple[str, ...]] = {
    "Qwen3Model": ("qwen3",),
    "Qwen3ForCausalLM": ("qwen3",),
    "T5EncoderModel": ("t5encoder", "t5"),
}
#: The subfolders a family's GGUF text encoder may sit in (SD 3.5's CLIP encoders have no GGUF form).
GGUF_TEXT_PARTS: dict[str, tuple[str, ...]] = {
    "zimage": ("text_encoder",), "flux2": ("text_encoder",), "sd3": ("text_encoder_3",),
}
_ARCH_LABELS = {"qwen3": "Qwen3", "t5encoder": "T5 encoder", "t5": "T5"}
#: GGUF metadata key (after ``<arch>.``) -> the folder config's key, per model type: what must agree.
_SIZES = {
    "qwen3": (("embedding_length", "hidden_size"), ("block_count", "num_hidden_layers"),
              ("feed_forward_length", "intermediate_size"), ("attention.head_count", "num_attention_heads"),
              ("attention.head_count_kv", "num_key_value_heads"), ("attention.key_length", "head_dim")),
    "t5": (("embedding_length", "d_model"), ("block_count", "num_layers"), ("feed_forward_length", "d_ff"),
           ("attention.head_count", "num_heads"), ("attention.key_length", "d_kv")),
}


@dataclass(frozen=True)
class TextEncoderGguf:
    """A family folder's GGUF text encoder, checked from its header."""

    part: str  # "text_encoder", "text_encoder_3"
    file: Path
    cls: str  # the transformers class the pipeline takes ("Qwen3Model", ...)
    architecture: str  # the file's general.architecture ("qwen3", "t5encoder")
    quantization: str  # its main quantization ("Q8_0", "Q4_K", "F16")
    parameters: int  # weights in all: what it takes in memory once dequantized, times the dtype's size


def _gguf_files(part: Path) -> list[Path]:
    try:
        return sorted(p for p in part.iterdir() if p.suffix.lower() == ".gguf" and p.is_file()
                      and not p.name.startswith("."))
    except OSError:
        return []


def text_encoder_ggufs(folder: Path, family: Family, index: dict[str, Any], *,
                       skip: tuple[str, ...] = ()) -> tuple[TextEncoderGguf, ...]:
    """The GGUF text encoders ``folder`` holds (header-checked, without torch); raises a clear ModelError.

    ``skip``: parts an explicitly chosen file replaces (what their subfolders hold is not used)."""
    found: list[TextEncoderGguf] = []
    for part in GGUF_TEXT_PARTS.get(family.key, ()):
        if part in skip:
            continue
        files = _gguf_files(folder / part)
        if not files:
            continue
        if len(files) > 1:
            raise ModelError(f"{folder.name}/{part} holds {len(files)} GGUF files "
                             f"({', '.join(p.name for p in files)}); keep one.")
        found.append(check_text_encoder_gguf(files[0], folder, family, index, part))
    for part in _other_parts(family):
        files = _gguf_files(folder / part)
        if files:
            raise ModelError(f"{folder.name}/{part}/{files[0].name}: {family.label}'s {part} has no GGUF form in "
                             f"HeyIm; a GGUF text encoder goes in {' or '.join(p + '/' for p in GGUF_TEXT_PARTS[family.key])}.")
    return tuple(found)


def _other_parts(family: Family) -> tuple[str, ...]:
    """The family's text encoder subfolders that take no GGUF (SD 3.5's CLIP encoders)."""
    allowed = GGUF_TEXT_PARTS.get(family.key, ())
    return tuple(p for p in family.weighted_parts if p.startswith("text_encoder") and p not in allowed)


def explicit_text_encoder(file: Path, folder: Path, family: Family, index: dict[str, Any]) -> TextEncoderGguf:
    """A GGUF text encoder chosen by the user (anywhere on disk) for ``folder``: the family's GGUF-capable
    encoder (Qwen3, SD 3.5's T5), checked against that subfolder's ``config.json`` as an in-folder one is."""
    parts = GGUF_TEXT_PARTS.get(family.key, ())
    if not parts:
        raise ModelError(f"{family.label} models take no GGUF text encoder.")
    if file.suffix.lower() != ".gguf":
        raise ModelError(f"{file.name}: a text encoder file must be a .gguf (llama.cpp's format).")
    if not file.is_file():
        raise ModelError(f"Text encoder file not found: {file} (chosen for {folder.name} with --text-encoder or the "
                         "Models window's Text encoder… button; choose it again, or cancel that dialog to use the "
                         "folder's own)")
    return check_text_encoder_gguf(file, folder, family, index, parts[0])


def check_text_encoder_gguf(file: Path, folder: Path, family: Family, index: dict[str, Any],
                            part: str) -> TextEncoderGguf:
    """``file`` as ``folder``'s ``part``: an architecture transformers reads, the family's, the folder's sizes."""
    from heyim_desktop.core.gguf_header import read_gguf_header
    from heyim_desktop.core.model_files import CorruptModel

    where = f"{folder.name}/{part}/{file.name}" if file.parent == folder / part else f"{file.name} (for {folder.name})"
    entry = index.get(part)
    cls = entry[1] if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str) else ""
    if not cls:
        raise ModelError(f"{where}: {folder.name}/model_index.json names no {part}, so the pipeline has no place "
                         f"for it; use a {family.label} folder whose model_index.json lists {part}.")
    if cls not in GGUF_TEXT_ENCODERS:
        raise ModelError(f"{where}: {folder.name}'s {part} is a {cls}, which HeyIm does not load from GGUF "
                         "(Qwen3 and T5 encoders only).")
    tokenizer = "tokenizer" + part[len("text_encoder"):]
    if not (folder / tokenizer).is_dir():
        raise ModelError(f"{folder.name} is incomplete: missing {tokenizer}/ (the GGUF text encoder uses the "
                         "folder's tokenizer).")
    try:
        header = read_gguf_header(file)
    except CorruptModel as exc:  # a file chosen from elsewhere is the damaged one, not the folder
        raise ModelError(f"{folder.name} is damaged: {exc}" if file.parent == folder / part
                         else f"{where} cannot be used: {exc} {folder.name} itself is unchanged.") from exc
    arch = header.metadata.get("general.architecture")
    arch = arch if isinstance(arch, str) else ""
    expected = GGUF_TEXT_ENCODERS[cls]
    wanted = _ARCH_LABELS[expected[0]]
    if arch not in expected:
        what = f"a GGUF {arch} model" if arch else "a GGUF file without an architecture"
        if arch and arch not in _ARCH_LABELS:
            raise ModelError(f"{where} is {what}, which HeyIm cannot load as a text encoder (transformers' GGUF "
                             f"loader reads {wanted} for {family.label}); {family.label} needs a {wanted} GGUF here.")
        raise ModelError(f"{where} is {what}, not the {wanted} text encoder {family.label} needs ({cls}).")
    try:
        config = json.loads((folder / part / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder.name} is incomplete: {part}/config.json is missing or unreadable "
                         f"(the GGUF text encoder needs it).") from exc
    model_type = "t5" if arch.startswith("t5") else arch
    mismatched = []
    for gguf_key, config_key in _SIZES[model_type]:
        got, want = header.metadata.get(f"{arch}.{gguf_key}"), config.get(config_key)
        if isinstance(got, int) and isinstance(want, int) and got != want:
            mismatched.append(f"{config_key} {got}, not {want}")
    embed = header.tensors.get("token_embd.weight")
    vocab = config.get("vocab_size")
    if embed is not None and len(embed.shape) == 2 and isinstance(vocab, int) and embed.shape[1] != vocab:
        mismatched.append(f"vocabulary {embed.shape[1]}, not {vocab}")
    if mismatched:
        name = header.metadata.get("general.name")
        named = f" ({name})" if isinstance(name, str) and name else ""
        raise ModelError(f"{where} is a {wanted}{named} of another size than {folder.name}'s {family.label} text "
                         f"encoder ({part}/config.json): {'; '.join(mismatched)}. Use the GGUF of the model "
                         "this folder was made with.")
    parameters = 0
    for tensor in header.tensors.values():
        count = 1
        for dim in tensor.shape:
            count *= dim
        parameters += count
    return TextEncoderGguf(part, file, cls, arch, header.quantization, parameters)


def load_text_encoder(found: TextEncoderGguf, folder: Path, dtype: Any) -> Any:
    """The text encoder from its GGUF file, dequantized by transformers to ``dtype`` (local files only)."""
    import transformers

    cls: Any = getattr(transformers, found.cls)
    part = folder / found.part
    log.info("loading %s's %s from %s (%s, GGUF dequantized to %s by transformers on load)",
             folder.name, found.part, found.file.name, found.quantization, dtype)
    try:
        config = transformers.AutoConfig.from_pretrained(str(part), local_files_only=True)
        return cls.from_pretrained(str(part), gguf_file=str(found.file), config=config, dtype=dtype,
                                   local_files_only=True)
    except ImportError as exc:
        raise ModelError(f"{found.file.name} needs the gguf package: pip install gguf ({exc})") from exc
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, NotImplementedError) as exc:
        raise ModelError(f"{found.file.name} could not be loaded as {folder.name}'s {found.part} "
                         f"({found.cls}): {exc}") from exc


def describe(found: TextEncoderGguf) -> str:
    """How the model library and the log name it: ``Qwen3-4B-Q8_0.gguf (Q8_0)``."""
    return f"{found.file.name} ({found.quantization})"
