"""LyCORIS LoHa and LoKr files on a loaded PyTorch model (SD 1.x, SD 2.x, SDXL; UNet and text encoders).

diffusers' loader does not take these for Stable Diffusion, so HeyIm applies them itself,
following LyCORIS's definitions (and AUTOMATIC1111's reading of the files):

- LoHa (``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b``, optional ``hada_t1``/``hada_t2``
  for convolutions): ``dW = (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank``; with the Tucker cores
  each factor is ``einsum("i j k l, j r, i p -> p r k l", t, w_b, w_a)``. rank = ``w1_b``'s rows.
- LoKr (``lokr_w1`` or ``lokr_w1_a @ lokr_w1_b``; ``lokr_w2`` or ``lokr_w2_a @ lokr_w2_b`` or the
  Tucker form ``einsum("i j k l, i p, j r -> p r k l", lokr_t2, lokr_w2_a, lokr_w2_b)``):
  ``dW = kron(w1, w2) * scale``, scale ``alpha / rank`` when a factor is decomposed (rank = that
  factor's ``_b`` rows), else 1.

Module names are kohya's (``lora_unet_...``, ``lora_te_...``, ``lora_te1_``/``lora_te2_``); SDXL
UNet names may be in the original (SGM) layout kohya's SDXL trainer uses (``input_blocks_4_1_...``).

The model's weights are never touched: each patched layer gets a forward hook that adds
``layer(x; weight * dW)`` (dW rebuilt from the file's small factors at each call, so a set costs
about its files' size in memory), and removing the hooks restores the model bit for bit.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from heyim_desktop.core.errors import ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

LOHA_KEYS = frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"})
LOKR_KEYS = frozenset({"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"})
PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")


@dataclass
class Factors:
    """One layer's LoHa or LoKr factors (in the file's dtype, on the layer's device) and scale."""

    algo: str  # "loha" or "lokr"
    tensors: dict[str, "torch.Tensor"]
    scale: float

    def delta(self, shape: "torch.Size", dtype: "torch.dtype") -> "torch.Tensor":
        """The layer's weight difference dW (without the user's weight), shaped like the layer's weight."""
        t = {k: v.to(dtype) for k, v in self.tensors.items()}
        return (_loha_delta(t) if self.algo == "loha" else _lokr_delta(t)).reshape(shape) * self.scale


def _loha_delta(t: dict[str, "torch.Tensor"]) -> "torch.Tensor":
    import torch

    if "hada_t1" in t:
        one = torch.einsum("i j k l, j r, i p -> p r k l", t["hada_t1"], t["hada_w1_b"], t["hada_w1_a"])
        two = torch.einsum("i j k l, j r, i p -> p r k l", t["hada_t2"], t["hada_w2_b"], t["hada_w2_a"])
        return one * two
    return (t["hada_w1_a"] @ t["hada_w1_b"].flatten(1)) * (t["hada_w2_a"] @ t["hada_w2_b"].flatten(1))


def _lokr_delta(t: dict[str, "torch.Tensor"]) -> "torch.Tensor":
    import torch

    w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
    if "lokr_w2" in t:
        w2 = t["lokr_w2"]
    elif "lokr_t2" in t:
        w2 = torch.einsum("i j k l, i p, j r -> p r k l", t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"])
    else:
        w2 = t["lokr_w2_a"] @ t["lokr_w2_b"].flatten(1)  # a conv's w2_b may be (rank, in, kh, kw)
    while w1.dim() < w2.dim():
        w1 = w1.unsqueeze(-1)
    return torch.kron(w1, w2.contiguous())


def _factors(module: str, algo: str, tensors: dict[str, "torch.Tensor"], alpha: float | None) -> Factors:
    need = ({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} if algo == "loha" else set())
    missing = need - set(tensors)
    if algo == "loha" and ("hada_t1" in tensors) != ("hada_t2" in tensors):
        missing |= {"hada_t1" if "hada_t2" in tensors else "hada_t2"}
    if algo == "lokr":
        if "lokr_w1" not in tensors and not {"lokr_w1_a", "lokr_w1_b"} <= set(tensors):
            missing |= {"lokr_w1"}
        if "lokr_w2" not in tensors and not {"lokr_w2_a", "lokr_w2_b"} <= set(tensors):
            missing |= {"lokr_w2"}
    if missing:
        raise ModelError(f"layer {module} lacks {', '.join(sorted(missing))}")
    if algo == "loha":
        rank: int | None = int(tensors["hada_w1_b"].shape[0])
    else:
        rank = next((int(tensors[k].shape[0]) for k in ("lokr_w1_b", "lokr_w2_b") if k in tensors), None)
    scale = alpha / rank if (alpha is not None and rank) else 1.0
    return Factors(algo, tensors, scale)


def read_lycoris(path: Path) -> dict[str, Factors]:
    """A LoHa/LoKr file's layers by kohya module name; ModelError for anything HeyIm cannot apply."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path.name} cannot be read: {exc}") from None
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        module, _, part = key.partition(".")
        grouped.setdefault(module, {})[part] = value
    del state
    layers: dict[str, Factors] = {}
    for module, parts in grouped.items():
        alpha_t = parts.pop("alpha", None)
        if "dora_scale" in parts:
            raise ModelError(f"{path.name} is a DoRA (weight-decomposed) LyCORIS file, which HeyIm does not load.")
        names = set(parts)
        if names <= LOHA_KEYS:
            algo = "loha"
        elif names <= LOKR_KEYS:
            algo = "lokr"
        else:
            odd = sorted(names - LOHA_KEYS - LOKR_KEYS) or sorted(names)
            raise ModelError(f"{path.name}: layer {module} has parts HeyIm does not know ({', '.join(odd)}); "
                             "HeyIm loads LoRA, LoHa and LoKr files.")
        if not module.startswith(PREFIXES):
            raise ModelError(f"{path.name}: layer {module} is not named as kohya/LyCORIS name them (lora_unet_..., "
                             "lora_te_...).")
        alpha = float(alpha_t.item()) if alpha_t is not None else None
        try:
            layers[module] = _factors(module, algo, parts, alpha)
        except ModelError as exc:
            raise ModelError(f"{path.name}: {exc}") from None
    if not layers:
        raise ModelError(f"{path.name} holds no LoHa or LoKr layers.")
    return layers


# -- kohya module names -> the loaded model's layers ------------------------------------------

_RESNET = {"in_layers_2": "conv1", "out_layers_3": "conv2", "emb_layers_1": "time_emb_proj",
           "skip_connection": "conv_shortcut"}
_TOP = {"time_embed_0": "time_embedding_linear_1", "time_embed_2": "time_embedding_linear_2",
        "label_emb_0_0": "add_embedding_linear_1", "label_emb_0_2": "add_embedding_linear_2",
        "out_2": "conv_out", "input_blocks_0_0": "conv_in"}
_SGM = re.compile(r"^(input_blocks|output_blocks)_(\d+)_(\d+)(?:_(.*))?$")
_SGM_MIDDLE = re.compile(r"^middle_block_(\d+)_(.*)$")


def sgm_to_diffusers(name: str, layers_per_block: int, up_attention: list[bool]) -> str | None:
    """A kohya SDXL UNet name in the SGM layout (without ``lora_unet_``) as the diffusers module
    path spelled with underscores, or None when it is not one.

    SGM's input_blocks are conv_in, then per down block ``layers_per_block`` slots (0: resnet,
    1: attention) and a downsampler slot; middle_block is resnet, attention, resnet; each up
    block has ``layers_per_block + 1`` output_blocks (0: resnet, 1: attention or upsampler,
    2: upsampler).
    """
    if name in _TOP:
        return _TOP[name]
    def inner(kind: str, idx: int) -> str:
        tail = _RESNET.get(rest, rest) if kind == "resnets" else rest
        return f"{kind}_{idx}_{tail}"

    middle = _SGM_MIDDLE.match(name)
    if middle is not None:
        rest = middle.group(2)
        kind, idx = {0: ("resnets", 0), 1: ("attentions", 0), 2: ("resnets", 1)}.get(int(middle.group(1)), ("", 0))
        return f"mid_block_{inner(kind, idx)}" if kind else None
    m = _SGM.match(name)
    if m is None:
        return None
    where, n, slot, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4) or ""
    step = layers_per_block + 1

    if where == "input_blocks":
        block, idx = divmod(n - 1, step)
        if idx == layers_per_block:
            return f"down_blocks_{block}_downsamplers_0_conv" if rest == "op" else None
        return f"down_blocks_{block}_" + inner("resnets" if slot == 0 else "attentions", idx)
    block, idx = divmod(n, step)
    attention = block < len(up_attention) and up_attention[block]
    if slot == 0:
        return f"up_blocks_{block}_" + inner("resnets", idx)
    if slot == 1 and attention:
        return f"up_blocks_{block}_" + inner("attentions", idx)
    return f"up_blocks_{block}_upsamplers_0_conv" if rest == "conv" else None


def _plain_name(name: str) -> str | None:
    """A module path without peft's wrapper parts, or None for peft's own sub-layers."""
    parts = [p for p in name.split(".") if p != "base_layer"]
    if any(p.startswith("lora_") for p in parts):
        return None
    return ".".join(parts)


def module_index(unet: Any, text_encoders: list[Any]) -> dict[str, Any]:
    """kohya module name -> Linear/Conv2d layer of the loaded UNet and text encoder(s)."""
    import torch

    index: dict[str, Any] = {}
    for name, module in unet.named_modules():
        plain = _plain_name(name)
        if plain and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            index["lora_unet_" + plain.replace(".", "_")] = module
    prefixes = ["lora_te_"] if len(text_encoders) == 1 else ["lora_te1_", "lora_te2_"]
    for prefix, encoder in zip(prefixes, text_encoders):
        for name, module in encoder.named_modules():
            plain = _plain_name(name)
            if plain and isinstance(module, torch.nn.Linear):
                # kohya names CLIP layers from transformers' CLIPTextModel (text_model.encoder...).
                full = plain if plain.startswith("text_model.") else f"text_model.{plain}"
                index[prefix + full.replace(".", "_")] = module
    if len(text_encoders) == 2:  # some SDXL tools write the first encoder as lora_te_
        index.update({"lora_te_" + k[len("lora_te1_"):]: v for k, v in list(index.items()) if k.startswith("lora_te1_")})
    return index


def resolve_layers(layers: dict[str, Factors], index: dict[str, Any], unet_config: Any, file_name: str) -> dict[Any, Factors]:
    """The file's layers matched to the model's modules (shapes checked); ModelError when any do not match."""
    lpb = unet_config.layers_per_block
    lpb = int(lpb if isinstance(lpb, int) else lpb[0])
    up_attention = ["CrossAttn" in t for t in unet_config.up_block_types]
    out: dict[Any, Factors] = {}
    unknown: list[str] = []
    for name, factors in layers.items():
        module = index.get(name)
        if module is None and name.startswith("lora_unet_"):
            diffusers = sgm_to_diffusers(name[len("lora_unet_"):], lpb, up_attention)
            module = index.get(f"lora_unet_{diffusers}") if diffusers else None
        if module is None:
            unknown.append(name)
            continue
        shape = module.weight.shape
        try:
            delta = factors.delta(shape, factors.tensors[next(iter(factors.tensors))].dtype)
        except RuntimeError as exc:
            raise ModelError(f"{file_name}: layer {name} does not fit this model ({exc}).") from None
        if delta.shape != shape:
            raise ModelError(f"{file_name}: layer {name} does not fit this model.")
        device = module.weight.device
        factors.tensors = {k: v.to(device) for k, v in factors.tensors.items()}
        out[module] = factors
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise ModelError(f"{file_name} names layers this model does not have ({shown}): it was made for another "
                         "kind of model.")
    return out


# -- applying: forward hooks that add the layer's output for weight * dW ----------------------

@dataclass
class _Net:
    weight: float
    layers: dict[Any, Factors] = field(default_factory=dict)


class LycorisSet:
    """The LoHa/LoKr files applied to a model, by key; each patched layer holds one hook."""

    def __init__(self) -> None:
        self._nets: dict[Any, _Net] = {}
        self._handles: dict[Any, Any] = {}

    def keys(self) -> list[Any]:
        return list(self._nets)

    def __contains__(self, key: object) -> bool:
        return key in self._nets

    def add(self, key: Any, layers: dict[Any, Factors], weight: float) -> None:
        self._nets[key] = _Net(weight, layers)
        for module in layers:
            if module not in self._handles:
                self._handles[module] = module.register_forward_hook(self._hook)

    def held_bytes(self) -> int:
        """Bytes of the factors held for all files (what the set costs in memory)."""
        return sum(t.numel() * t.element_size() for n in self._nets.values() for f in n.layers.values()
                   for t in f.tensors.values())

    def set_weight(self, key: Any, weight: float) -> None:
        self._nets[key].weight = weight

    def remove(self, key: Any) -> None:
        net = self._nets.pop(key, None)
        if net is None:
            return
        still = {m for n in self._nets.values() for m in n.layers}
        for module in net.layers:
            if module not in still:
                self._handles.pop(module).remove()

    def clear(self) -> None:
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()
        self._nets.clear()

    def _hook(self, module: Any, args: tuple[Any, ...], output: Any) -> Any:
        x = args[0]
        for net in self._nets.values():
            factors = net.layers.get(module)
            if factors is None or net.weight == 0:
                continue
            delta = factors.delta(module.weight.shape, module.weight.dtype) * net.weight
            output = output + _apply(module, x.to(delta.dtype), delta)
        return output

    def merge(self) -> None:
        """Add weight * dW into the layers' weights for good and drop the hooks (baking)."""
        import torch

        with torch.no_grad():
            for net in self._nets.values():
                for module, factors in net.layers.items():
                    module.weight += factors.delta(module.weight.shape, module.weight.dtype) * net.weight
        self.clear()


def _apply(module: Any, x: "torch.Tensor", delta: "torch.Tensor") -> "torch.Tensor":
    import torch

    if isinstance(module, torch.nn.Conv2d):
        conv: torch.Tensor = module._conv_forward(x, delta, None)  # the layer's stride, padding, groups
        return conv
    return torch.nn.functional.linear(x, delta)


def load_layers(path: Path, unet: Any, text_encoders: list[Any], index: Callable[[], dict[str, Any]]) -> dict[Any, Factors]:
    """Read a LoHa/LoKr file and match it to the model (see :func:`resolve_layers`)."""
    layers = read_lycoris(path)
    if any(n.startswith(("lora_te_", "lora_te1_", "lora_te2_")) for n in layers) and not text_encoders:
        raise ModelError(f"{path.name} changes a text encoder this model does not have.")
    return resolve_layers(layers, index(), unet.config, path.name)
