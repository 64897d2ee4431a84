"""The diffusion-transformer engine: diffusers' own pipeline for a family, behind :class:`Engine`.

Progress, previews, cancellation and timings go through the pipeline's ``callback_on_step_end``;
the step loop is diffusers' (these families do not run :func:`~heyim_desktop.core.loop.run_loop`).
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from heyim_desktop.core.cancel import Cancelled, CancelToken
from heyim_desktop.core.capabilities import Capabilities
from heyim_desktop.core.conditioning import TokenCount
from heyim_desktop.core.engine import EngineInfo, _empty_device_cache, _is_oom, check_finite, floats_to_pil
from heyim_desktop.core.errors import InvalidRequest, ModelError, OutOfMemory
from heyim_desktop.core.families import FAMILIES, Family, check_family_folder
from heyim_desktop.core.loop import PREVIEW_INTERVAL_S
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult, Progress, ProgressCallback

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger(__name__)


def family_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """bf16 where the device has it (these models are trained in it; fp16 overflows), else fp32."""
    from heyim_desktop.core.torch_engine import PRECISIONS

    if precision not in PRECISIONS:
        raise ModelError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    if precision == "fp32" or device.type == "cpu":
        if precision == "fp16":
            raise ModelError("fp16 is not supported on the CPU; use fp32 (or auto).")
        return torch.float32
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:  # MPS has bf16 from macOS 14 on
        torch.zeros(1, dtype=torch.bfloat16, device=device)
        return torch.bfloat16
    except (RuntimeError, TypeError):
        return torch.float32


@dataclass(frozen=True)
class Render:
    """What the pipeline made for one request, before conversion to Pillow."""

    request: GenerationRequest
    images: "npt.NDArray[np.float32]"  # (N, H, W, 3) in [0, 1]
    seeds: tuple[int, ...]
    timings: dict[str, float]
    warnings: tuple[str, ...]
    interrupted: bool


#: The Qwen3 layers FLUX.2 [klein] reads its prompt features from (diffusers' default).
_FLUX2_TEXT_LAYERS = (9, 18, 27)


def flux2_text_layers(num_layers: int) -> tuple[int, ...]:
    """diffusers' layers where the text encoder has them; a shallower (tiny) encoder gives its last inner one."""
    inside = tuple(layer for layer in _FLUX2_TEXT_LAYERS if layer < num_layers)
    return inside if len(inside) == len(_FLUX2_TEXT_LAYERS) else (max(1, num_layers - 1),)


class FamilyEngine:
    """A loaded Z-Image / FLUX.2 [klein] / SD 3.5 pipeline."""

    def __init__(self, pipe: Any, family: Family, *, name: str, model_name: str, model_hash: str | None = None) -> None:
        self.pipe: Any = pipe
        self.family = family
        self.name = name
        self.model_name = model_name
        self.model_hash = model_hash
        # Sizes must be whole latent patches: the VAE's factor times the transformer's 2x2 patch.
        self.size_step = max(8, int(pipe.vae_scale_factor) * 2)
        distilled = bool(getattr(pipe.config, "is_distilled", False))
        self._capabilities: Capabilities = family.capabilities(
            size_step=self.size_step, guidance="none" if distilled else None)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(self.name, self.model_name, self.default_size, self._capabilities, self.model_hash)

    @property
    def default_size(self) -> tuple[int, int]:
        return self._capabilities.default_size

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        return None

    @property
    def supports_img2img(self) -> bool:
        return False

    def count_tokens(self, text: str) -> TokenCount:
        if self.pipe is None:
            raise RuntimeError("engine is closed")
        tokenizer = self.pipe.tokenizer
        n = len(tokenizer(text, add_special_tokens=False).input_ids)
        window = self._capabilities.token_window
        return TokenCount(tokens=n, limit=window, cut_at=window if n > window else None)

    def _check(self, request: GenerationRequest) -> None:
        label = self.family.label
        if request.init_image is not None:
            raise InvalidRequest("init_image", f"{label} models run text-to-image only in HeyIm so far")
        if request.loras or request.embeddings:
            raise InvalidRequest("loras", f"LoRAs and embeddings are not supported for {label} models yet")
        for field_name in ("width", "height"):
            value = getattr(request, field_name)
            if value % self.size_step:
                raise InvalidRequest(field_name, f"{label} needs a multiple of {self.size_step}, got {value}")

    def _call_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "prompt": request.prompt,
            "height": request.height,
            "width": request.width,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance,
            "output_type": "np",
        }
        if self.family.negative_prompt:
            kwargs["negative_prompt"] = request.negative_prompt or None
        if self.family.key == "flux2":
            kwargs["text_encoder_out_layers"] = flux2_text_layers(self.pipe.text_encoder.config.num_hidden_layers)
        return kwargs

    def render(
        self,
        request: GenerationRequest,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Render:
        """Run the pipeline for every image of ``request`` (seed resolved): float images in [0, 1]."""
        if self.pipe is None:
            raise RuntimeError("engine is closed")
        self._check(request)
        request = request.with_seed()
        warnings: list[str] = []
        if request.scheduler_name != self.family.sampler:
            warnings.append(
                f"{self.family.label} uses its own flow-matching {self.family.sampler} sampler; "
                f"{request.scheduler_name} does not apply and was not used."
            )
            request = request.replace(scheduler=self.family.sampler)
        if request.negative_prompt.strip() and not self.family.negative_prompt:
            warnings.append(f"{self.family.label} takes no negative prompt; it was ignored.")
        started = time.perf_counter()
        timings = {"steps": 0.0, "decode": 0.0}
        arrays: list[Any] = []
        seeds: list[int] = []
        interrupted = False
        try:
            for index, seed in enumerate(request.image_seeds()):
                if cancel is not None and cancel.cancelled:
                    if not cancel.interrupted:
                        raise Cancelled()
                    interrupted = True
                    break
                image, step_time, decode_time, stopped = self._one_image(request, seed, index, started, progress, cancel)
                arrays.append(image)
                seeds.append(seed)
                timings["steps"] += step_time
                timings["decode"] += decode_time
                if stopped and cancel is not None and cancel.interrupted:
                    interrupted = True
                    break
        except Exception as exc:
            if _is_oom(exc):
                gc.collect()
                _empty_device_cache()
                raise OutOfMemory(
                    f"Out of memory on {self.pipe.device} for {request.width}x{request.height} "
                    f"x{request.count}. Try a smaller size or fewer images."
                ) from exc
            raise
        import numpy as np

        images = np.concatenate(arrays, axis=0).astype(np.float32)
        timings["total"] = time.perf_counter() - started
        timings["per_step"] = timings["steps"] / max(1, request.steps * len(seeds))
        return Render(request, images, tuple(seeds), timings, tuple(warnings), interrupted)

    def generate(
        self,
        request: GenerationRequest,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult:
        out = self.render(request, progress, cancel)
        check_finite(out.images, str(self.pipe.device.type), self.model_name)
        pil = floats_to_pil(out.images)
        images = tuple(GeneratedImage(image=img, seed=s, index=i) for i, (img, s) in enumerate(zip(pil, out.seeds)))
        req = out.request
        log.info("generated %d image(s) %dx%d in %.2fs (%s, %s)", len(images), req.width, req.height,
                 out.timings["total"], self.name, self.model_name)
        return GenerationResult(
            request=req, images=images, model_name=self.model_name, engine=self.name, timings=out.timings,
            warnings=out.warnings, interrupted=out.interrupted,
        )

    def _one_image(
        self, request: GenerationRequest, seed: int, index: int, started: float,
        progress: ProgressCallback | None, cancel: CancelToken | None,
    ) -> tuple[Any, float, float, bool]:
        from heyim_desktop.core.preview import latents_to_rgb

        state = {"last_preview": 0.0, "last_step": time.perf_counter(), "stopped": False}
        t0 = time.perf_counter()

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            now = time.perf_counter()
            state["last_step"] = now
            if progress is not None:
                preview = None
                latents = tensors.get("latents")
                if latents is not None and now - state["last_preview"] >= PREVIEW_INTERVAL_S:
                    preview = latents_to_rgb(self._preview_latents(latents))
                    state["last_preview"] = now
                # Steps over the whole job (the images run one after another), as core.loop counts them.
                progress(Progress(index * request.steps + step + 1, request.steps * request.count, now - started,
                                  index, request.count, preview))
            # A cancel raises Cancelled out of the pipeline (nothing is decoded); an interrupt or a
            # skip lets diffusers skip the remaining steps and decode what it has.
            if cancel is not None and cancel.stop_sampling():
                pipe._interrupt = True
                state["stopped"] = True
            return {}

        generator = torch.Generator("cpu").manual_seed(seed)
        out = self.pipe(**self._call_kwargs(request), generator=generator, callback_on_step_end=on_step_end,
                        callback_on_step_end_tensor_inputs=["latents"])
        end = time.perf_counter()
        return out.images, float(state["last_step"]) - t0, end - float(state["last_step"]), bool(state["stopped"])

    def _preview_latents(self, latents: torch.Tensor) -> Any:
        """The first image's latents as (C, h, w) floats, unpacked where the pipeline packs them."""
        lat = latents[0].detach().float().cpu()
        if lat.ndim == 2:  # packed (seq, C) tokens: lay them out on the square-ish grid they came from
            seq, channels = lat.shape
            side = int(seq ** 0.5)
            while side > 1 and seq % side:
                side -= 1
            lat = lat.T.reshape(channels, side, seq // side)
        return lat.numpy()

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe = None
        gc.collect()
        _empty_device_cache()


def load_family_engine(
    folder: Path, index: dict[str, Any], *, device: str = "auto", precision: str = "auto", name: str | None = None,
) -> FamilyEngine:
    """Load a diffusers-format folder of a family (local files only, safetensors only)."""
    import diffusers

    from heyim_desktop.core.torch_engine import pick_device

    family = check_family_folder(folder, index)
    dev = pick_device(device)
    dtype = family_dtype(dev, precision)
    cls = getattr(diffusers, family.pipeline)
    log.info("loading %s (%s) on %s (%s)", folder, family.label, dev, dtype)
    # Components a folder leaves out (SD 3.5 without T5, no image encoder) are passed as None, as diffusers allows.
    expected, _optional = cls._get_signature_keys(cls)
    absent = {k: None for k in expected if index.get(k) in (None, [None, None])}
    try:
        pipe = cls.from_pretrained(folder, local_files_only=True, use_safetensors=True, dtype=dtype, **absent)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        if "out of memory" in str(exc).lower():
            raise OutOfMemory(f"{folder.name} does not fit in {dev.type} memory.") from exc
        raise ModelError(f"{folder.name} could not be loaded: {exc}") from exc
    pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    model_name = name or ("HeyIm tiny " + family.label if index.get("_heyim_tiny") else folder.name)
    return FamilyEngine(pipe, family, name=f"torch-{dev.type}", model_name=model_name)


__all__ = ["FAMILIES", "FamilyEngine", "family_dtype", "load_family_engine"]
