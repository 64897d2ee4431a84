"""The diffusion-transformer engine: diffusers' own pipeline for a family, behind :class:`Engine`.

Progress, previews, cancellation and timings go through the pipeline's ``callback_on_step_end``;
the step loop is diffusers' (these families do not run :func:`~heyim_desktop.core.loop.run_loop`).
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from heyim_desktop.core.cancel import Cancelled, CancelToken
from heyim_desktop.core.capabilities import Capabilities
from heyim_desktop.core.conditioning import TokenCount
from heyim_desktop.core.engine import EngineInfo, _empty_device_cache, _is_oom, check_finite, floats_to_pil
from heyim_desktop.core.errors import InvalidRequest, ModelError, OutOfMemory
from heyim_desktop.core.families import FAMILIES, Family, check_family_folder, read_family_index
from heyim_desktop.core.families.low_memory import PromptFeatures
from heyim_desktop.core.families.memory import loading_errors, low_memory_parts, memory_plan, weights_bytes
from heyim_desktop.core.loop import PREVIEW_INTERVAL_S
from heyim_desktop.core.request import GenerationRequest
from heyim_desktop.core.result import GeneratedImage, GenerationResult, Progress, ProgressCallback

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from heyim_desktop.core.families.low_memory import LowMemoryParts
    from heyim_desktop.core.families.text_encoder_gguf import TextEncoderGguf
    from heyim_desktop.core.lora import LoraUse

log = logging.getLogger(__name__)


def family_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """bf16 where the device has it (these models are trained in it; fp16 overflows), else fp32;
    on the CPU fp32 unless bf16 is asked for (half the memory)."""
    from heyim_desktop.core.devices import PRECISIONS
    from heyim_desktop.core.torch_engine import check_bf16

    if precision not in PRECISIONS:
        raise ModelError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    if precision == "bf16":
        check_bf16(device)
        return torch.bfloat16
    if precision == "fp32" or device.type == "cpu":
        if precision == "fp16":
            raise ModelError("fp16 is not supported on the CPU; use bf16, fp32 or automatic.")
        return torch.float32
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        from heyim_desktop.core.torch_engine import cuda_bf16_native

        if cuda_bf16_native():
            return torch.bfloat16
        # Emulated bf16 (before Ampere) is several times slower; fp16 is fast but can overflow in
        # these models (a black or noisy image): bf16 stays one choice away in Preferences.
        log.warning("this GPU has no native bf16: using fp16; choose bf16 in Preferences if images come out black")
        return torch.float16
    try:  # MPS has bf16 from macOS 14 on
        check_bf16(device)
        return torch.bfloat16
    except ModelError:
        log.info("this Mac has no bf16 on the GPU (macOS 13 or earlier); using fp32")
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


#: Images larger than this many pixels are decoded by the VAE in tiles (diffusers' ``enable_tiling``): a
#: 2048x2048 decode in one piece needs several GB on top of the model. At and below 1280x1280 the
#: decode is whole, so those images are exactly diffusers' pipeline output.
TILE_ABOVE_PIXELS = 1280 * 1280

#: AUTOMATIC1111's latent fills, which diffusers' family inpainting pipelines have no way to take.
_LATENT_FILLS = ("latent noise", "latent nothing")

#: The Qwen3 layers FLUX.2 [klein] reads its prompt features from (diffusers' default).
_FLUX2_TEXT_LAYERS = (9, 18, 27)


def flux2_text_layers(num_layers: int) -> tuple[int, ...]:
    """diffusers' layers where the text encoder has them; a shallower (tiny) encoder gives its last inner one."""
    inside = tuple(layer for layer in _FLUX2_TEXT_LAYERS if layer < num_layers)
    return inside if len(inside) == len(_FLUX2_TEXT_LAYERS) else (max(1, num_layers - 1),)


class FamilyEngine:
    """A loaded Z-Image / FLUX.2 [klein] / SD 3.5 pipeline."""

    def __init__(self, pipe: Any, family: Family, *, name: str, model_name: str, model_hash: str | None = None,
                 offloaded: bool = False, transformer_file: Path | None = None,
                 text_encoders: "tuple[TextEncoderGguf, ...]" = (),
                 low: "LowMemoryParts | None" = None, text_layers: int | None = None) -> None:
        self.pipe: Any = pipe
        #: The low-memory mode (core.families.low_memory): text encoders and transformer loaded in turn.
        self.low = low
        if low is not None:
            low.attach(pipe)
            low.on_transformer = lambda _t: self._adapters.clear()  # a fresh transformer: its LoRAs go back on
        #: the last prompts' text-encoder output: the same prompt again (a job's next image) skips encoding
        self.features: PromptFeatures = low.features if low is not None else PromptFeatures()
        if low is None:
            self.features.wrap(pipe)
        #: the Qwen3 text encoder's depth (FLUX.2 [klein] reads features from three of its layers), from its config
        self.text_layers = text_layers
        #: Components live on the CPU and move to the device one at a time (diffusers' model CPU offload):
        #: the text encoder leaves the device once the prompt is encoded, the transformer after the steps.
        self.offloaded = offloaded
        self.tile_above_pixels = TILE_ABOVE_PIXELS
        self.family = family
        self.name = name
        self.model_name = model_name
        self.model_hash = model_hash
        self._edit_pipes: dict[str, Any] = {}
        #: LoRAs on the transformer: (path, size, mtime) -> adapter name, in load order
        self._adapters: dict[tuple[str, int, int], str] = {}
        self._adapter_count = 0
        # Sizes must be whole latent patches: the VAE's factor times the transformer's 2x2 patch.
        self.size_step = max(8, int(pipe.vae_scale_factor) * 2)
        distilled = bool(getattr(pipe.config, "is_distilled", False))
        caps = family.capabilities(size_step=self.size_step, guidance="none" if distilled else None)
        transformer_config = (low.transformer_config if low is not None else pipe.transformer.config)
        if family.key == "sd3" and int(transformer_config.in_channels) not in (16, 33):
            # diffusers' SD3 inpainting takes SD 3's 16 latent channels (or 33 for an inpainting model)
            caps = replace(caps, inpaint="none")
        self._capabilities: Capabilities = caps
        #: GGUF text encoders used instead of the folder's full weights (core.families.text_encoder_gguf)
        self.text_encoders = text_encoders
        self.parameters_extra = family_parameters(family, caps.guidance, pipe.scheduler.config, transformer_file,
                                                  text_encoders)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(self.name, self.model_name, self.default_size, self._capabilities, self.model_hash,
                          memory=self.memory_note)

    @property
    def memory_note(self) -> str:
        if self.low is not None:
            return "saving memory: text encoders and transformer load in turn"
        if self.offloaded:
            return "saving memory: each part moves to the GPU only while it runs"
        return ""

    @property
    def default_size(self) -> tuple[int, int]:
        return self._capabilities.default_size

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        return None

    @property
    def supports_img2img(self) -> bool:
        return self._capabilities.img2img

    def count_tokens(self, text: str) -> TokenCount:
        if self.pipe is None:
            raise RuntimeError("engine is closed")
        tokenizer = self.pipe.tokenizer
        n = len(tokenizer(text, add_special_tokens=False).input_ids)
        window = self._capabilities.token_window
        return TokenCount(tokens=n, limit=window, cut_at=window if n > window else None, window=window)

    def _check(self, request: GenerationRequest) -> None:
        label = self.family.label
        caps = self._capabilities
        if request.init_image is not None and not caps.img2img:
            raise InvalidRequest("init_image", f"{label} models run text-to-image only: diffusers has no "
                                               "image-to-image pipeline for them")
        if (request.inpaint is not None or request.extend is not None) and caps.inpaint == "none":
            raise InvalidRequest("mask", f"{label} models cannot inpaint: diffusers has no inpainting pipeline for them")
        if request.inpaint is not None and request.inpaint.fill in _LATENT_FILLS:
            raise InvalidRequest(
                "inpainting_fill",
                f"{label} inpaints with diffusers' pipeline, which starts the masked area from the image or from "
                f"noise only; choose \"original\" or \"fill\" instead of {request.inpaint.fill!r}",
            )
        if request.controlnets:
            raise InvalidRequest("controlnet", f"ControlNet is not available for {label} models in HeyIm")
        if request.hires is not None:
            raise InvalidRequest("hires", f"hires fix is not available for {label} models yet")
        self._check_size(request)

    def _check_size(self, request: GenerationRequest) -> None:
        for field_name in ("width", "height"):
            value = getattr(request, field_name)
            if value % self.size_step:
                raise InvalidRequest(field_name, f"{self.family.label} needs a multiple of {self.size_step}, got {value}")

    def _edit_pipe(self, class_name: str) -> Any:
        """diffusers' image-to-image or inpainting pipeline on the loaded components (shared, not copied)."""
        pipe = self._edit_pipes.get(class_name)
        if pipe is None:
            import diffusers

            pipe = getattr(diffusers, class_name).from_pipe(self.pipe)
            pipe.set_progress_bar_config(disable=True)
            if self.low is not None:
                self.low.attach(pipe)
            else:
                self.features.wrap(pipe)
            self._edit_pipes[class_name] = pipe
        return pipe

    def _pipe_and_kwargs(self, request: GenerationRequest) -> tuple[Any, dict[str, Any]]:
        """The pipeline a request needs (text-to-image, image-to-image or inpainting) and its arguments."""
        kwargs = self._call_kwargs(request)
        if request.init_image is None:
            return self.pipe, kwargs
        from PIL import Image

        from heyim_desktop.core.images import fit_to_size

        family = self.family
        image = fit_to_size(request.init_image.convert("RGB"), request.width, request.height)
        kwargs.update(image=image, strength=request.strength)
        if request.inpaint is not None:  # plan_edit has fitted and prepared the mask
            assert family.inpaint_pipeline is not None
            kwargs["mask_image"] = fit_to_size(request.inpaint.mask.convert("L"), request.width, request.height)
            return self._edit_pipe(family.inpaint_pipeline), kwargs
        assert family.img2img_pipeline is not None
        if family.img2img_by_full_mask:
            kwargs["mask_image"] = Image.new("L", (request.width, request.height), 255)
        return self._edit_pipe(family.img2img_pipeline), kwargs

    def _set_tiling(self, request: GenerationRequest) -> bool:
        """Tile the VAE's work for large images only; True when it is tiled."""
        vae = self.pipe.vae
        tiled = request.width * request.height > self.tile_above_pixels and hasattr(vae, "enable_tiling")
        if tiled:
            vae.enable_tiling()
        elif hasattr(vae, "disable_tiling"):
            vae.disable_tiling()
        return tiled

    def apply_loras(self, loras: "tuple[LoraUse, ...]") -> None:
        """Put exactly these LoRAs on the transformer with their weights (diffusers' ``load_lora_weights``).

        Adapters stay loaded between jobs and only change when the set of files does; the image-to-image
        and inpainting pipelines share the transformer, so they see the same LoRAs.
        """
        from safetensors.torch import load_file

        from heyim_desktop.core.lora import check_family, inspect_network_file

        wanted: dict[tuple[str, int, int], LoraUse] = {}
        for use in loras:
            path = Path(use.path)
            try:
                st = path.stat()
            except OSError as exc:
                raise ModelError(f"LoRA {use.name}: {path} cannot be read ({exc.strerror or exc}).") from exc
            wanted[(str(path.resolve()), st.st_size, st.st_mtime_ns)] = use
        if list(wanted) == list(self._adapters) and not wanted:
            return
        pipe = self.pipe
        stale = [name for key, name in self._adapters.items() if key not in wanted]
        if not wanted:
            pipe.unload_lora_weights()
            self._adapters.clear()
            log.info("LoRAs unloaded")
            return
        if stale:
            pipe.delete_adapters(stale)
            self._adapters = {k: v for k, v in self._adapters.items() if v not in stale}
        for key, use in wanted.items():
            if key in self._adapters:
                continue
            path = Path(use.path)
            info = inspect_network_file(path)  # safetensors header only; a pickle file never gets here
            if info.kind != "lora":
                raise ModelError(f"{path.name} is a textual-inversion embedding, not a LoRA.")
            check_family(use.name, info, self.family.key, None)
            self._adapter_count += 1
            name = f"heyim_{self._adapter_count}"
            try:
                pipe.load_lora_weights(load_file(str(path)), adapter_name=name)
            except (ValueError, KeyError, RuntimeError, OSError, AttributeError) as exc:
                raise ModelError(f"LoRA {use.name} could not be applied to this {self.family.label} model: {exc}") \
                    from exc
            self._adapters[key] = name
            log.info("LoRA %s loaded (%s layout, %s)", use.name, info.layout, info.family)
        pipe.set_adapters([self._adapters[k] for k in wanted],
                          adapter_weights=[float(wanted[k].weight) for k in wanted])

    def _call_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        from heyim_desktop.core.lora import strip_lora_tags

        kwargs: dict[str, Any] = {
            # <lora:...> tags are the LoRAs already applied (resolve_networks); the text encoder never sees them
            "prompt": strip_lora_tags(request.prompt)[0],
            "height": request.height,
            "width": request.width,
            "num_inference_steps": request.steps,
            # image-to-image adds the request's guidance boost, as for SD (and as the metadata records)
            "guidance_scale": request.effective_guidance,
            "output_type": "np",
        }
        if self.family.negative_prompt:
            kwargs["negative_prompt"] = strip_lora_tags(request.negative_prompt)[0] or None
        if self.family.key == "flux2":
            kwargs["text_encoder_out_layers"] = flux2_text_layers(self.text_layers or 0)
        return kwargs

    def render(
        self,
        request: GenerationRequest,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Render:
        """Run the pipeline for every image of ``request`` (seed resolved): float images in [0, 1]."""
        from heyim_desktop.core.inpaint import plan_edit

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
        if request.embeddings:
            words = ", ".join(e.word for e in request.embeddings)
            warnings.append(f"Textual-inversion embeddings are for SD models; {words} stayed plain words.")
        # Inpainting and outpainting: the mask fitted and prepared, the canvas grown, the paste-back after.
        plan = plan_edit(request)
        self._check_size(plan.request)
        if self._set_tiling(plan.request):
            warnings.append(f"The VAE decoded this {plan.request.width}x{plan.request.height} image in tiles to save memory.")
        started = time.perf_counter()
        timings = {"steps": 0.0, "decode": 0.0}
        arrays: list[Any] = []
        seeds: list[int] = []
        interrupted = False
        try:
            if self.low is not None:  # a new prompt: encoded with only the text encoders loaded
                pipe, kwargs = self._pipe_and_kwargs(plan.request)
                text_side = {k: v for k, v in kwargs.items() if k not in ("image", "mask_image", "strength")}
                self.low.prepare(pipe, lambda: pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(0)),
                                 text_side)
            self.apply_loras(request.loras)  # after prepare: a transformer loaded anew gets its LoRAs back
            for index, seed in enumerate(plan.request.image_seeds()):
                if cancel is not None and cancel.cancelled:
                    if not cancel.interrupted:
                        raise Cancelled()
                    interrupted = True
                    break
                image, step_time, decode_time, stopped = self._one_image(
                    plan.request, seed, index, started, progress, cancel)
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
        finally:
            if self.low is not None:  # released before the first step already, unless encoding failed
                self.low.release_encoders()
        import numpy as np

        images = plan.finish(np.concatenate(arrays, axis=0).astype(np.float32)).astype(np.float32)
        timings["total"] = time.perf_counter() - started
        timings["per_step"] = timings["steps"] / max(1, state_steps(request) * len(seeds))
        return Render(plan.result_request, images, tuple(seeds), timings, tuple(warnings), interrupted)

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
            warnings=out.warnings, interrupted=out.interrupted, parameters_extra=self.parameters_extra,
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
                    preview = latents_to_rgb(self._preview_latents(latents, request.height), self.family.latent_space)
                    state["last_preview"] = now
                # Steps over the whole job (the images run one after another), as core.loop counts
                # them; per image, the steps the pipeline really runs (image-to-image runs fewer).
                per = int(getattr(pipe, "_num_timesteps", 0) or request.steps)
                progress(Progress(index * per + step + 1, per * request.count, now - started,
                                  index, request.count, preview))
            # A cancel raises Cancelled out of the pipeline (nothing is decoded); an interrupt or a
            # skip lets diffusers skip the remaining steps and decode what it has.
            if cancel is not None and cancel.stop_sampling():
                pipe._interrupt = True
                state["stopped"] = True
            return {}

        generator = torch.Generator("cpu").manual_seed(seed)
        pipe, kwargs = self._pipe_and_kwargs(request)
        out = pipe(**kwargs, generator=generator, callback_on_step_end=on_step_end,
                   callback_on_step_end_tensor_inputs=["latents"])
        end = time.perf_counter()
        return out.images, float(state["last_step"]) - t0, end - float(state["last_step"]), bool(state["stopped"])

    def _preview_latents(self, latents: torch.Tensor, height: int | None = None) -> Any:
        """The first image's latents as (C, h, w) floats, unpacked where the pipeline packs them."""
        lat = latents[0].detach().float().cpu()
        if lat.ndim == 2:  # packed (seq, C) tokens, row by row: lay them out on the grid they came from
            seq, channels = lat.shape
            # one token per 2x2 patch of latent pixels
            rows = height // (int(self.pipe.vae_scale_factor) * 2) if height else 0
            if rows <= 0 or seq % rows:
                rows = int(seq ** 0.5)
                while rows > 1 and seq % rows:
                    rows -= 1
            lat = lat.T.reshape(channels, rows, seq // rows)
        return lat.numpy()

    def close(self) -> None:
        if self.low is not None:
            self.low.close()
        self.features.clear()
        self._edit_pipes.clear()
        self._adapters.clear()
        if self.pipe is not None:
            self.pipe = None
        gc.collect()
        _empty_device_cache()


def state_steps(request: GenerationRequest) -> int:
    """The steps a request runs: image-to-image skips the first ``1 - strength`` of the schedule."""
    if request.init_image is None:
        return request.steps
    # diffusers' get_timesteps: the schedule starts at int(steps - steps * strength)
    return max(1, request.steps - int(max(request.steps - request.steps * request.strength, 0)))


def load_family_engine(
    folder: Path, index: dict[str, Any], *, device: str = "auto", precision: str = "auto", name: str | None = None,
    transformer_file: Path | None = None, offload: bool | None = None, text_encoder_file: Path | None = None,
    memory: str = "auto",
) -> FamilyEngine:
    """Load a diffusers-format folder of a family (local files only, safetensors only).

    ``transformer_file`` (a GGUF or single-file ``.safetensors`` transformer) replaces the folder's own
    transformer; a GGUF file inside the folder's ``transformer/`` is used the same way. A GGUF text
    encoder in the folder's ``text_encoder/`` (SD 3.5: ``text_encoder_3/``) replaces that encoder's full
    weights (transformers dequantizes it on load: :mod:`.text_encoder_gguf`); ``text_encoder_file``
    (a GGUF anywhere, chosen explicitly) does the same from outside the folder. ``offload``
    (None: when the weights would take more than :data:`.memory.OFFLOAD_SHARE` of the device's memory; also
    the ``HEYIM_OFFLOAD`` environment variable, ``on``/``off``) keeps the parts on the CPU and moves
    each to the device only while it runs (accelerate's hooks, through diffusers). ``memory``
    (:data:`~heyim_desktop.core.devices.MEMORY_MODES`, :func:`.memory.memory_plan`) may instead load the text
    encoders only while a prompt is encoded (:mod:`.low_memory`).
    """
    import diffusers

    from heyim_desktop.core.devices import check_memory_mode
    from heyim_desktop.core.families.single_file import folder_transformer_file, load_transformer
    from heyim_desktop.core.families.text_encoder_gguf import (
        GGUF_TEXT_PARTS,
        explicit_text_encoder,
        load_text_encoder,
        text_encoder_ggufs,
    )
    from heyim_desktop.core.torch_engine import pick_device

    check_memory_mode(memory)
    found = read_family_index(folder)
    chosen = None
    if text_encoder_file is not None:
        if found is None:
            raise ModelError(f"{folder.name} is not a Z-Image, FLUX.2 [klein] or SD 3.5 model.")
        chosen = explicit_text_encoder(text_encoder_file, folder, found[0], index)
    family = check_family_folder(folder, index, replaced=(chosen.part,) if chosen is not None else ())
    dev = pick_device(device)
    dtype = family_dtype(dev, precision)
    cls = getattr(diffusers, family.pipeline)
    log.info("loading %s (%s) on %s (%s)", folder, family.label, dev, dtype)
    # Components a folder leaves out (SD 3.5 without T5, no image encoder) are passed as None, as diffusers allows.
    expected, _optional = cls._get_signature_keys(cls)
    parts: dict[str, Any] = {k: None for k in expected if index.get(k) in (None, [None, None])}
    single = transformer_file or folder_transformer_file(folder)
    encoders = text_encoder_ggufs(folder, family, index, skip=GGUF_TEXT_PARTS[family.key] if chosen else ())
    if chosen is not None:
        encoders = (chosen, *encoders)
    weights = weights_bytes(folder, family, single, encoders, dtype.itemsize, index)
    offloaded, low = memory_plan(dev, weights, memory, offload)
    low_parts = None
    text_layers = _config_layers(folder / "text_encoder")
    with loading_errors(folder.name, dev):
        if low:  # nothing big is loaded now: the first job loads each part when it runs
            low_parts = low_memory_parts(folder, family, index, encoders, single, dtype, dev)
            parts.update({part: None for part in (*low_parts.text_loaders, "transformer")})
        elif single is not None:
            parts["transformer"] = load_transformer(single, folder, index, dtype)
        for encoder in encoders if not low else ():
            parts[encoder.part] = load_text_encoder(encoder, folder, dtype)
        pipe = cls.from_pretrained(folder, local_files_only=True, use_safetensors=True, dtype=dtype, **parts)
    if low:
        log.info("low memory for %s (%.1f GB of weights on %s): text encoders and transformer load in turn",
                 folder.name, weights / 1e9, dev)
    if offloaded:
        log.info("model CPU offload for %s (%.1f GB of weights on %s)", folder.name, weights / 1e9, dev)
        pipe.enable_model_cpu_offload(device=dev)
    else:
        pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    model_name = name or ("HeyIm tiny " + family.label if index.get("_heyim_tiny") else folder.name)
    if single is not None and name is None:
        model_name = single.stem
    return FamilyEngine(pipe, family, name=f"torch-{dev.type}", model_name=model_name, offloaded=offloaded,
                        transformer_file=single, text_encoders=encoders, low=low_parts,
                        text_layers=text_layers)


def _config_layers(part: Path) -> int | None:
    """A text encoder's layer count from its config.json (None when it has none)."""
    import json

    try:
        config = json.loads((part / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    layers = config.get("num_hidden_layers", config.get("num_layers")) if isinstance(config, dict) else None
    return int(layers) if isinstance(layers, int) else None


def family_parameters(family: Family, guidance: str, scheduler_config: Any,
                      transformer_file: Path | None = None,
                      text_encoders: "tuple[TextEncoderGguf, ...]" = ()) -> tuple[tuple[str, str], ...]:
    """A family image's own ``parameters`` keys (:data:`~heyim_desktop.core.metadata.FAMILY_KEYS`):
    the family, its guidance kind, the flow-matching shift, a single-file transformer with its
    GGUF quantization, and a GGUF text encoder with its quantization."""
    from heyim_desktop.core.families.single_file import gguf_quantization
    from heyim_desktop.core.metadata import format_shift

    pairs = [("Model family", family.label), ("Guidance kind", guidance)]
    if bool(scheduler_config.get("use_dynamic_shifting", False)):
        pairs.append(("Shift", "dynamic"))
    else:
        pairs.append(("Shift", format_shift(float(scheduler_config.get("shift", 1.0)))))
    if transformer_file is not None:
        pairs.append(("Transformer", transformer_file.name))
        if transformer_file.suffix.lower() == ".gguf":
            pairs.append(("Quantization", gguf_quantization(transformer_file)))
    for encoder in text_encoders[:1]:  # a family has one GGUF-capable text encoder (Qwen3, or SD 3.5's T5)
        pairs.append(("Text encoder", encoder.file.name))
        pairs.append(("Text encoder quantization", encoder.quantization))
    return tuple(pairs)


def load_family_file_engine(path: Path, *, device: str = "auto", precision: str = "auto",
                            text_encoder_file: Path | None = None, memory: str = "auto") -> FamilyEngine:
    """A single-file transformer (GGUF or ``.safetensors``) with its family folder's other parts."""
    from heyim_desktop.core.families.single_file import find_base_folder, no_base_message, transformer_file_family

    family = transformer_file_family(path)
    if family is None:
        raise ModelError(f"{path.name} is not a Z-Image, FLUX.2 [klein] or SD 3.5 transformer.")
    base = find_base_folder(path, family)
    found = read_family_index(base) if base is not None else None
    if base is None or found is None:
        raise ModelError(no_base_message(path, family))
    return load_family_engine(base, found[1], device=device, precision=precision, transformer_file=path,
                              text_encoder_file=text_encoder_file, memory=memory)


__all__ = ["FAMILIES", "FamilyEngine", "family_dtype", "load_family_engine", "load_family_file_engine"]
