"""LoRAs and embeddings on a loaded PyTorch model, applied around each job.

diffusers' own LoRA loader does the work (kohya/AUTOMATIC1111 and diffusers/PEFT layouts,
through a pipeline object that shares the engine's modules, so nothing is copied): the same
code diffusers users run, hence the same images. A set stays loaded while jobs keep using
it; LoRAs a job no longer uses are deleted, and a job with none unloads them completely, so
its image is bit for bit the image of a model that never saw a LoRA.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.lora import LoraUse, check_family, inspect_network_file, strip_lora_tags

if TYPE_CHECKING:
    from heyim_desktop.core.request import GenerationRequest

log = logging.getLogger(__name__)


def _file_key(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_size, int(st.st_mtime_ns))


class NetworkPatcher:
    """Keeps a model's LoRA adapters and embeddings in step with each job's request."""

    def __init__(self, *, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, family: str,
                 text_encoder_2: Any = None, tokenizer_2: Any = None, compact: bool = True) -> None:
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.family = family
        #: keep LoRA layers in the file's (smaller) dtype; see _compact
        self.compact = compact
        self._pipe: Any = None
        #: file key -> adapter name
        self._adapters: dict[tuple[str, int, int], str] = {}
        self._words: set[str] = set()
        self._count = 0
        from heyim_desktop.core.lycoris import LycorisSet

        #: LoHa/LoKr files (applied by HeyIm's hooks, not diffusers): file key -> layers
        self._lyco = LycorisSet()
        self._index: dict[str, Any] | None = None
        #: compact adapters -> the dtype their layers are kept in
        self._stored: dict[str, Any] = {}

    def _pipeline(self) -> Any:
        if self._pipe is None:
            from diffusers import DDIMScheduler

            scheduler = DDIMScheduler()
            if self.text_encoder_2 is not None:
                from diffusers import StableDiffusionXLPipeline

                self._pipe = StableDiffusionXLPipeline(
                    vae=self.vae, text_encoder=self.text_encoder, text_encoder_2=self.text_encoder_2,
                    tokenizer=self.tokenizer, tokenizer_2=self.tokenizer_2, unet=self.unet, scheduler=scheduler,
                )
            else:
                from diffusers import StableDiffusionPipeline

                self._pipe = StableDiffusionPipeline(
                    vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
                    scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                )
            self._pipe.set_progress_bar_config(disable=True)
        return self._pipe

    @property
    def active(self) -> list[str]:
        """diffusers adapter names of the plain LoRAs applied now (LoHa/LoKr files are not adapters)."""
        return list(self._adapters.values())

    # -- LoRA -----------------------------------------------------------------------------
    def _encoders(self) -> list[Any]:
        return [e for e in (self.text_encoder, self.text_encoder_2) if e is not None]

    def _module_index(self) -> dict[str, Any]:
        if self._index is None:
            from heyim_desktop.core.lycoris import module_index

            self._index = module_index(self.unet, self._encoders())
        return self._index

    def apply(self, loras: tuple[LoraUse, ...]) -> None:
        wanted: dict[tuple[str, int, int], LoraUse] = {}
        for use in loras:
            try:
                wanted[_file_key(use.path)] = use
            except OSError as exc:
                raise ModelError(f"LoRA {use.name}: cannot read {use.path} ({exc.strerror or exc}).") from None
        for key in [k for k in self._lyco.keys() if k not in wanted]:
            self._lyco.remove(key)
        stale = [name for key, name in self._adapters.items() if key not in wanted]
        if stale:
            if len(stale) == len(self._adapters):
                self._pipeline().unload_lora_weights()  # the modules become plain again
            else:
                self._pipeline().delete_adapters(stale)
            self._adapters = {k: v for k, v in self._adapters.items() if v not in stale}
            for name in stale:
                self._stored.pop(name, None)
            log.info("LoRAs unloaded: %d", len(stale))
        for key, use in wanted.items():
            if key in self._adapters or key in self._lyco:
                continue
            self._load(key, use)
        for key, use in wanted.items():
            if key in self._lyco:
                self._lyco.set_weight(key, float(use.weight))
        plain = [k for k in wanted if k in self._adapters]
        if plain:
            self._pipeline().set_adapters([self._adapters[k] for k in plain],
                                          adapter_weights=[float(wanted[k].weight) for k in plain])

    def _load(self, key: tuple[str, int, int], use: LoraUse) -> None:
        path = Path(use.path)
        if not path.is_file():
            raise ModelError(f"LoRA {use.name}: {path} is not a file.")
        info = inspect_network_file(path)
        if info.kind != "lora":
            raise ModelError(f"{path.name} is a textual-inversion embedding, not a LoRA: use its name as a word.")
        check_family(use.name, info, self.family, int(self.unet.config.cross_attention_dim))
        if info.layout in ("loha", "lokr"):
            from heyim_desktop.core.lycoris import load_layers

            layers = load_layers(path, self.unet, self._encoders(), self._module_index)
            self._lyco.add(key, layers, float(use.weight))
            log.info("LoRA %s loaded (LyCORIS %s, %d layers, %s)", use.name, info.layout, len(layers), info.family)
            return
        self._count += 1
        name = f"heyim_{self._count}"
        try:
            self._pipeline().load_lora_weights(str(path), adapter_name=name)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise ModelError(f"LoRA {use.name} could not be applied to this model: {exc}") from exc
        self._adapters[key] = name
        if self.compact:
            self._compact(name, path)
        log.info("LoRA %s loaded (%s layout, %s)", use.name, info.layout, info.family)

    def _compact(self, adapter: str, path: Path) -> None:
        """Keep the adapters' layers in their files' dtype when it is smaller than the model's.

        peft makes every adapter layer in the model's dtype, so an fp16 file on an fp32 model
        (the usual case on a CPU) would cost twice its size. The layers keep the file's values
        instead and widen them to the input's dtype at each call: the same numbers, computed in
        the same dtype, as diffusers' own fp32 layers, at half the memory. Loading a further
        adapter into a text encoder widens the earlier ones again (transformers' adapter
        loading casts them all), so every compact adapter is narrowed again after each load.
        """
        import torch

        from heyim_desktop.core.model_files import read_safetensors_header

        dtypes = {t.dtype for k, t in read_safetensors_header(path).tensors.items() if not k.endswith("alpha")}
        stored = {"F16": torch.float16, "BF16": torch.bfloat16}.get(dtypes.pop()) if len(dtypes) == 1 else None
        if stored is not None:
            self._stored[adapter] = stored
        if not self._stored:
            return
        for module in (self.unet, *self._encoders()):
            for layer in module.modules():
                a, b = getattr(layer, "lora_A", None), getattr(layer, "lora_B", None)
                if not (isinstance(a, torch.nn.ModuleDict) and isinstance(b, torch.nn.ModuleDict)):
                    continue
                for name, dtype in self._stored.items():
                    if name not in a or name not in b:
                        continue
                    for holder in (a, b):
                        part = holder[name]
                        if part.weight.dtype.itemsize > dtype.itemsize:
                            holder[name] = _StoredLayer(getattr(part, "inner", part), dtype)
                    layer.cast_input_dtype_enabled = False  # inputs stay in the model's dtype

    # -- embeddings -----------------------------------------------------------------------
    def load_embedding(self, path: str, word: str) -> None:
        if word in self._words:
            return
        info = inspect_network_file(Path(path))
        if info.kind != "embedding":
            raise ModelError(f"{Path(path).name} is a LoRA, not an embedding: use it as <lora:{word}:1>.")
        pipe = self._pipeline()
        try:
            if info.layout == "embedding-sdxl":
                if self.text_encoder_2 is None:
                    raise ModelError(f"{word} is an SDXL embedding; the loaded model is not SDXL.")
                from safetensors.torch import load_file

                tensors = load_file(path)
                pipe.load_textual_inversion(tensors["clip_l"], token=word, text_encoder=self.text_encoder,
                                            tokenizer=self.tokenizer)
                pipe.load_textual_inversion(tensors["clip_g"], token=word, text_encoder=self.text_encoder_2,
                                            tokenizer=self.tokenizer_2)
            else:
                width = int(self.text_encoder.get_input_embeddings().weight.shape[1])
                if info.text_dim is not None and info.text_dim != width:
                    raise ModelError(f"{word} is an embedding for {info.family.upper()} models (width {info.text_dim}); "
                                     f"this model's text encoder is {width} wide.")
                pipe.load_textual_inversion(path, token=word)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"Embedding {word} could not be loaded: {exc}") from exc
        self._words.add(word)
        log.info("embedding %s loaded", word)

    def expand(self, text: str) -> str:
        """Multi-vector embedding words spelled out as their tokens (word word_1 ...)."""
        if not self._words:
            return text
        return str(self._pipeline().maybe_convert_prompt(text, self.tokenizer))

    def prepare(self, request: "GenerationRequest") -> "GenerationRequest":
        """Apply the request's LoRAs and embeddings; the request the text encoders should see."""
        self.apply(request.loras)
        for emb in request.embeddings:
            self.load_embedding(emb.path, emb.word)
        prompt, _ = strip_lora_tags(request.prompt)
        negative, _ = strip_lora_tags(request.negative_prompt)
        return with_prompts(request, self.expand(prompt), self.expand(negative))


_STORED_CLASS: Any = None


def _StoredLayer(part: Any, dtype: Any) -> Any:  # noqa: N802 (builds a module, reads like a class)
    """``part`` (a LoRA layer's lora_A/lora_B) with its weight kept in ``dtype``, widened at each call."""
    global _STORED_CLASS
    if _STORED_CLASS is None:
        _STORED_CLASS = _stored_layer_class()
    return _STORED_CLASS(part, dtype)


def _stored_layer_class() -> Any:
    import torch

    class StoredLayer(torch.nn.Module):
        """A LoRA ``lora_A``/``lora_B`` Linear or Conv2d whose weight is kept in a smaller dtype."""

        def __init__(self, part: Any, dtype: Any) -> None:
            super().__init__()
            self.inner = part
            with torch.no_grad():
                part.weight = torch.nn.Parameter(part.weight.detach().to(dtype), requires_grad=False)

        @property
        def weight(self) -> Any:
            return self.inner.weight

        def forward(self, x: Any) -> Any:
            weight = self.inner.weight.to(x.dtype)
            if isinstance(self.inner, torch.nn.Conv2d):
                return self.inner._conv_forward(x, weight, self.inner.bias)
            return torch.nn.functional.linear(x, weight, self.inner.bias)

    return StoredLayer


def bake_loras(parts: Any, loras: tuple[LoraUse, ...]) -> None:
    """Merge ``loras`` into a loaded TorchComponents' weights for good (see :func:`bake_modules`)."""
    encoders = [parts.text_encoder] + ([parts.text_encoder_2] if getattr(parts, "text_encoder_2", None) is not None else [])
    tokenizers = [parts.tokenizer] + ([parts.tokenizer_2] if getattr(parts, "tokenizer_2", None) is not None else [])
    bake_modules(unet=parts.unet_model, vae=parts.vae, text_encoders=encoders, tokenizers=tokenizers,
                 family=parts.capabilities.family, loras=loras)


def bake_modules(*, unet: Any, vae: Any, text_encoders: list[Any], tokenizers: list[Any], family: str,
                 loras: tuple[LoraUse, ...]) -> None:
    """Merge ``loras`` into these modules' weights for good (before a Core ML conversion).

    The LoRAs are applied through the same loader as at run time, fused with diffusers'
    ``fuse_lora`` at their weights, and their layers removed, so the modules are plain again
    with the LoRA inside their weights.
    """
    if not loras:
        return
    patcher = NetworkPatcher(
        unet=unet, vae=vae, text_encoder=text_encoders[0], tokenizer=tokenizers[0], family=family,
        text_encoder_2=text_encoders[1] if len(text_encoders) > 1 else None,
        tokenizer_2=tokenizers[1] if len(tokenizers) > 1 else None,
        compact=False,  # fused at the model's precision: the layers must not be narrowed first
    )
    patcher.apply(loras)
    components = ["unet", "text_encoder"] + (["text_encoder_2"] if patcher.text_encoder_2 is not None else [])
    try:
        if patcher.active:
            pipe = patcher._pipeline()
            pipe.fuse_lora(components=components, lora_scale=1.0, adapter_names=patcher.active)
            pipe.unload_lora_weights()
        patcher._lyco.merge()  # LoHa/LoKr: weight * dW added to the weights, hooks dropped
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"The LoRAs could not be baked into the model: {exc}") from exc
    log.info("baked %d LoRA(s): %s", len(loras), ", ".join(f"{u.name}:{u.weight:g}" for u in loras))


def baked_label(loras: tuple[LoraUse, ...]) -> str:
    """``name:0.8, other:-0.5``: how a converted model records the LoRAs baked into it."""
    return ", ".join(f"{u.name}:{u.weight:g}" for u in loras)


def refuse_networks(request: "GenerationRequest", engine: str) -> "GenerationRequest":
    """For engines that cannot apply LoRAs at run time: refuse them clearly, strip stray tags."""
    if request.loras:
        raise ModelError(
            f"LoRAs cannot be applied to a compiled {engine} model at run time. Bake them in when converting: "
            "heyim-desktop convert MODEL OUT --lora FILE:WEIGHT (or File > Convert to Core ML...)."
        )
    if request.embeddings:
        raise ModelError(f"Textual-inversion embeddings cannot be added to a compiled {engine} model.")
    prompt, _ = strip_lora_tags(request.prompt)
    negative, _ = strip_lora_tags(request.negative_prompt)
    return with_prompts(request, prompt, negative)


def with_prompts(request: "GenerationRequest", prompt: str, negative: str) -> "GenerationRequest":
    """The loop's copy of ``request`` with the text the encoders see (may be empty once tags are gone)."""
    out = copy.copy(request)
    object.__setattr__(out, "prompt", prompt)
    object.__setattr__(out, "negative_prompt", negative)
    return out
