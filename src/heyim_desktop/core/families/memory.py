"""How a Z-Image / FLUX.2 [klein] / SD 3.5 model uses memory: what its weights take, and whether it
runs with model CPU offload (a CUDA GPU) or loads its parts in turn (Save memory, :mod:`.low_memory`)."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

from heyim_desktop.core.errors import ModelError, OutOfMemory
from heyim_desktop.core.families import Family

if TYPE_CHECKING:
    from heyim_desktop.core.families.low_memory import LowMemoryParts
    from heyim_desktop.core.families.text_encoder_gguf import TextEncoderGguf

log = logging.getLogger(__name__)

#: Model CPU offload is chosen when the weights take more than this share of the device's memory.
OFFLOAD_SHARE = 0.75


def weights_bytes(folder: Path, family: Family, single: Path | None,
                   encoders: "tuple[TextEncoderGguf, ...]" = (), itemsize: int = 4,
                   index: dict[str, Any] | None = None) -> int:
    """The weights' bytes in memory at ``itemsize`` bytes a weight: a GGUF transformer stays quantized; a
    GGUF text encoder is dequantized; a folder's float weights count at the dtype they load in (an fp32
    folder loaded in bf16 takes half its files' size). ``index``: the optional parts it lists count too."""
    from heyim_desktop.core.model_files import read_safetensors_header

    replaced = {e.part: e for e in encoders}
    listed = family.listed_parts(index) if index is not None else family.weighted_parts
    total = 0
    for part in (*listed, *(p for p in replaced if p not in listed)):
        if part == "transformer" and single is not None:
            total += single.stat().st_size
            continue
        if part in replaced:
            total += replaced[part].parameters * itemsize
            continue
        for file in (folder / part).glob("*.safetensors"):
            try:
                header = read_safetensors_header(file)
            except ModelError:
                total += file.stat().st_size
                continue
            total += sum(_tensor_bytes(info, itemsize) for info in header.tensors.values())
    return total


#: Bytes an element of a non-float safetensors dtype takes (floats load in the model's dtype).
_STORED_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "I32": 4,
                 "U32": 4, "I64": 8, "U64": 8}


def _tensor_bytes(info: Any, itemsize: int) -> int:
    """A tensor's bytes once loaded: floats in the load dtype, anything else as stored."""
    count = 1
    for dim in info.shape:
        count *= int(dim)
    return count * _STORED_SIZES.get(info.dtype, itemsize)


def device_memory_bytes(dev: torch.device) -> int | None:
    """The accelerator's memory (CUDA: the card's; MPS: Metal's recommended working set); None on the CPU."""
    try:
        if dev.type == "cuda":
            return int(torch.cuda.mem_get_info(dev)[1])
        if dev.type == "mps":
            return int(torch.mps.recommended_max_memory())
    except (RuntimeError, AttributeError) as exc:
        log.debug("device memory unknown: %s", exc)
    return None


@contextmanager
def loading_errors(name: str, dev: torch.device) -> Iterator[None]:
    """What a part's loading raises, said in plain words: OutOfMemory, or a ModelError naming ``name``
    (a safetensors file damaged since it was checked, too)."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError) as exc:
        if "out of memory" in str(exc).lower():
            raise OutOfMemory(f"{name} does not fit in {dev.type} memory.") from exc
        raise ModelError(f"{name} could not be loaded: {exc}") from exc


def system_memory_bytes() -> int | None:
    """The computer's physical memory (Linux, macOS), or None where it cannot be read."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def wants_offload(dev: torch.device, weights: int, offload: bool | None = None) -> bool:
    """Whether to run with model CPU offload: asked for, or the weights would crowd the device."""
    env = os.environ.get("HEYIM_OFFLOAD", "").strip().lower()
    if offload is None and env in ("on", "1", "yes", "off", "0", "no"):
        offload = env in ("on", "1", "yes")
        if offload and dev.type == "cpu":
            # Measured (bench/bench_family_memory.py): on the CPU the hooks copy the memory-mapped weights
            # into process memory, raising the peak by 1.25-1.7x and the time by 1.2-1.4x.
            log.info("HEYIM_OFFLOAD=on is ignored on the CPU: the weights already are in its memory")
            offload = False
    if offload is not None:
        return offload
    # Automatic only on a CUDA GPU: a Mac's memory is shared, so parking parts in "CPU" memory frees nothing
    # (memory_plan releases its text encoders instead).
    total = device_memory_bytes(dev) if dev.type == "cuda" else None
    return total is not None and weights > OFFLOAD_SHARE * total


def memory_plan(dev: torch.device, weights: int, memory: str = "auto",
                offload: bool | None = None) -> tuple[bool, bool]:
    """(model CPU offload, parts loaded in turn) for ``memory`` (:data:`~heyim_desktop.core.devices.MEMORY_MODES`)
    and ``weights`` bytes of weights.

    On a CUDA GPU "low" is model CPU offload (each part on the GPU only while it runs), which already
    takes the text encoders off the GPU after encoding. On a Mac or the CPU, whose memory the parts
    share with each other and the system, offload saves nothing: "low" loads the text encoders and
    the transformer in turn (:mod:`.low_memory`). "auto" chooses either when the weights would take more than
    :data:`OFFLOAD_SHARE` of the memory; "full" neither. An explicit ``offload`` (or HEYIM_OFFLOAD) wins.
    """
    if offload is None and memory == "low" and dev.type == "cuda":
        offload = True
    if offload is None and memory == "full":
        offload = False
    if wants_offload(dev, weights, offload):
        return True, False
    if memory != "auto" or dev.type == "cuda":
        return False, memory == "low"
    total = system_memory_bytes()
    return False, total is not None and weights > OFFLOAD_SHARE * total


def low_memory_parts(folder: Path, family: Family, index: dict[str, Any], encoders: "tuple[TextEncoderGguf, ...]",
                      single: Path | None, dtype: torch.dtype, dev: torch.device) -> "LowMemoryParts":
    """Loaders for each text encoder the folder lists (its GGUF file where one replaces it) and for the
    transformer (its single file, if any), and the transformer's weightless stand-in."""
    import diffusers

    from heyim_desktop.core.families.low_memory import LowMemoryParts
    from heyim_desktop.core.families.single_file import load_transformer

    ggufs = {e.part: e for e in encoders}
    loaders: dict[str, Any] = {}
    for part in family.listed_parts(index):
        if not part.startswith("text_encoder"):
            continue
        loaders[part] = lambda part=part: _text_encoder(folder, part, index, ggufs.get(part), dtype, dev)
    transformer_cls: Any = getattr(diffusers, str(index["transformer"][1]))

    def transformer() -> Any:
        with loading_errors(f"{folder.name}'s transformer", dev):
            if single is not None:
                model = load_transformer(single, folder, index, dtype)
            else:
                model = transformer_cls.from_pretrained(folder / "transformer", local_files_only=True,
                                                        use_safetensors=True, torch_dtype=dtype)
            return model.to(dev).eval()

    with torch.device("meta"):
        stand_in = transformer_cls.from_config(transformer_cls.load_config(folder / "transformer")).to(dtype)
    return LowMemoryParts(loaders, transformer, stand_in, dev)


def _text_encoder(folder: Path, part: str, index: dict[str, Any], gguf: "TextEncoderGguf | None",
                  dtype: torch.dtype, dev: torch.device) -> Any:
    """One text encoder of ``folder`` (from its GGUF file where one replaces it), on ``dev``."""
    import transformers

    from heyim_desktop.core.families.text_encoder_gguf import load_text_encoder

    with loading_errors(f"{folder.name}/{part}", dev):
        if gguf is not None:
            model = load_text_encoder(gguf, folder, dtype)
        else:
            cls: Any = getattr(transformers, str(index[part][1]))
            model = cls.from_pretrained(folder / part, local_files_only=True, use_safetensors=True, dtype=dtype)
        return model.to(dev).eval()


__all__ = ["OFFLOAD_SHARE", "loading_errors", "system_memory_bytes", "device_memory_bytes", "low_memory_parts", "memory_plan", "wants_offload", "weights_bytes"]
