"""The low-memory mode of the family engines: each big part is loaded only while it runs.

Z-Image's and FLUX.2 [klein]'s Qwen3-4B (8 GB in bf16, also when read from a GGUF file: transformers
dequantizes it) and SD 3.5's T5-XXL (9.5 GB) are needed for a moment per prompt, then sit idle beside
the transformer for every step. In this mode a new prompt is encoded with only the text encoders
loaded: the transformer is dropped first, the pipeline runs up to its first step with a weightless
stand-in in the transformer's place (so it encodes exactly as it always does), the encoders are
dropped, and the transformer is loaded back for the steps. The features of the last prompts are
kept, so generating again with the same prompt (a new seed, more images) loads nothing. The peak is
the larger of the text encoders and transformer + VAE + one image's working set, instead of their sum
(core.families.fit); the cost is loading the transformer again for each new prompt (seconds). This is
the Mac's way to save memory: its memory is shared, so diffusers' model CPU offload (parts parked in
CPU memory) saves nothing there; Apple's Core ML pipeline does the same on 8 GB Macs.
"""

from __future__ import annotations

import gc
import logging
from typing import Any, Callable, Hashable

import torch

log = logging.getLogger(__name__)


def _plain(value: Any) -> Hashable | None:
    """``value`` as a hashable key part, or None for anything that is not plain data (a tensor)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return (type(value).__name__, value)
    if isinstance(value, torch.device):
        return ("device", str(value))
    if isinstance(value, torch.dtype):
        return ("dtype", str(value))
    if isinstance(value, (list, tuple)):
        parts = [_plain(v) for v in value]
        return None if any(p is None for p in parts) else ("seq", tuple(parts))
    return None


def _copy_containers(value: Any) -> Any:
    """Fresh lists and tuples around the same tensors: a pipeline may change the lists it is given."""
    if isinstance(value, list):
        return [_copy_containers(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy_containers(v) for v in value)
    return value


#: Prompt features kept (the prompt and the negative prompt of the last two jobs): a few MB.
KEEP_FEATURES = 4


class PromptFeatures:
    """The text encoders' output for the last prompts, keyed by the exact arguments of ``encode_prompt``.

    Every family engine keeps them: the images of a job run one pipeline call each (one seed each), and
    the same prompt again needs no text encoder (SD 3.5's T5-XXL takes seconds per prompt on a CPU).
    Only plain arguments make a key (a call given tensors is not kept); the lists and tuples handed
    out are fresh, around the same tensors, which the pipelines only read.
    """

    def __init__(self) -> None:
        self._kept: dict[Hashable, Any] = {}
        #: how often a prompt was encoded, and how often features were reused (the tests read them)
        self.encoded = 0
        self.reused = 0

    @staticmethod
    def key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable | None:
        return _plain(("encode_prompt", args, tuple(sorted(kwargs.items()))))

    def get(self, key: Hashable | None) -> Any:
        """The kept features for ``key`` (fresh containers), or None."""
        if key is None or key not in self._kept:
            return None
        self.reused += 1
        return _copy_containers(self._kept[key])

    def keep(self, key: Hashable | None, out: Any) -> Any:
        self.encoded += 1
        if key is not None:
            self._kept[key] = out
            while len(self._kept) > KEEP_FEATURES:
                self._kept.pop(next(iter(self._kept)))
        return _copy_containers(out)

    def wrap(self, pipe: Any) -> None:
        """Route ``pipe``'s ``encode_prompt`` through the kept features (its text encoders stay loaded)."""
        original = type(pipe).encode_prompt.__get__(pipe)

        def encode_prompt(*args: Any, **kwargs: Any) -> Any:
            key = self.key(args, kwargs)
            found = self.get(key)
            return found if found is not None else self.keep(key, original(*args, **kwargs))

        pipe.encode_prompt = encode_prompt

    def clear(self) -> None:
        self._kept.clear()


class _Encoded(Exception):
    """Raised by the stand-in transformer: the pipeline has encoded its prompts and is about to step."""


class _StandIn:
    """Takes the transformer's place while prompts are encoded: answers for it from a weightless
    (meta-device) copy, and stops the pipeline when it is first called."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Encoded()


class LowMemoryParts:
    """The text encoders, loaded only to encode new prompts, and the transformer, dropped meanwhile.

    ``text_loaders`` maps each text-encoder component to a function that loads it; ``load_transformer``
    loads the transformer (on the device); ``stand_in`` is a weightless copy of it (meta device).
    :meth:`attach` routes a pipeline's ``encode_prompt`` through here; :meth:`prepare` makes sure a call's
    prompt features are known before it runs (the engine calls it once per job).
    """

    def __init__(self, text_loaders: dict[str, Callable[[], Any]], load_transformer: Callable[[], Any],
                 stand_in: Any, device: torch.device) -> None:
        self.text_loaders = text_loaders
        self.load_transformer = load_transformer
        self.device = device
        #: how often the text encoders and the transformer were loaded (the log and the tests read them)
        self.text_loads = 0
        self.transformer_loads = 0
        #: how often a job's call ran up to its first step to learn its prompts
        self.probes = 0
        #: called with the transformer after it was loaded again (the engine puts its LoRAs back on)
        self.on_transformer: Callable[[Any], None] | None = None
        self.transformer: Any = None
        self._stand_in = _StandIn(stand_in)
        self.features = PromptFeatures()
        self._encoders: dict[str, Any] = {}
        self._pipes: list[Any] = []
        self._prepared: Hashable | None = None

    def attach(self, pipe: Any) -> None:
        """Encode ``pipe``'s prompts through this object; its transformer is this object's to give."""
        pipe.register_modules(**{part: None for part in self.text_loaders})
        pipe.register_modules(transformer=self.transformer)
        original = type(pipe).encode_prompt.__get__(pipe)

        def encode_prompt(*args: Any, **kwargs: Any) -> Any:
            return self._encode(pipe, original, args, kwargs)

        pipe.encode_prompt = encode_prompt
        self._pipes.append(pipe)

    @property
    def transformer_config(self) -> Any:
        """The transformer's config (from its stand-in: known while the transformer is not loaded)."""
        return self._stand_in.config

    @property
    def text_encoders_loaded(self) -> bool:
        return bool(self._encoders)

    def prepare(self, pipe: Any, call: Callable[[], Any], arguments: dict[str, Any] | None = None) -> None:
        """Run ``call`` (``pipe`` with a job's arguments) up to its first step with the stand-in, so every
        prompt it encodes is known; then make sure the transformer is loaded for the real run.

        ``arguments``: the call's text-side arguments (prompts, guidance...); when they are the last
        prepared call's and the transformer is loaded, nothing needs to run (an image-to-image job would
        otherwise encode its image with the VAE once more for nothing)."""
        key = _plain((type(pipe).__name__, tuple(sorted((arguments or {}).items())))) if arguments is not None else None
        if key is not None and key == self._prepared and self.transformer is not None:
            return
        self._prepared = None
        self.probes += 1
        self._set_transformer(self._stand_in)
        try:
            with torch.no_grad():
                call()
        except _Encoded:
            pass
        finally:
            self.release_encoders()
            self._set_transformer(self.transformer)
        if self.transformer is None:
            self.transformer = self.load_transformer()
            self.transformer_loads += 1
            self._set_transformer(self.transformer)
            log.info("transformer loaded for the steps")
            if self.on_transformer is not None:
                self.on_transformer(self.transformer)
        self._prepared = key

    def _set_transformer(self, module: Any) -> None:
        for pipe in self._pipes:
            pipe.register_modules(transformer=module)

    def _encode(self, pipe: Any, original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = self.features.key(args, kwargs)
        found = self.features.get(key)
        if found is not None:
            log.debug("prompt features reused; the text encoders stay unloaded")
            return found
        probing = pipe.transformer is self._stand_in
        try:
            if not self._encoders:
                if probing and self.transformer is not None:  # room for the encoders: drop the transformer
                    self.transformer = None
                    gc.collect()
                    _empty_cache(self.device)
                for part, load in self.text_loaders.items():
                    self._encoders[part] = load().to(self.device).eval()
                self.text_loads += 1
                log.info("loaded %s to encode a new prompt", ", ".join(self.text_loaders))
            pipe.register_modules(**self._encoders)
            with torch.no_grad():
                out = original(*args, **kwargs)
        except BaseException:
            self.release_encoders()
            raise
        finally:
            if not probing:  # an encode outside prepare (not expected): release at once
                self.release_encoders()
        return self.features.keep(key, out)

    def release_encoders(self) -> None:
        if not self._encoders:
            return
        for pipe in self._pipes:
            pipe.register_modules(**{part: None for part in self.text_loaders})
        self._encoders.clear()
        gc.collect()
        _empty_cache(self.device)
        log.debug("text encoders released")

    def close(self) -> None:
        self.release_encoders()
        self._pipes.clear()
        self.transformer = None
        self.on_transformer = None


def _empty_cache(device: torch.device) -> None:
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        elif device.type == "mps":
            torch.mps.empty_cache()
    except (RuntimeError, AttributeError) as exc:  # pragma: no cover - a backend without a cache
        log.debug("no device cache to empty: %s", exc)


__all__ = ["LowMemoryParts", "PromptFeatures"]
