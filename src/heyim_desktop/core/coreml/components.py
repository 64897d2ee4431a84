"""Core ML models behind the shared loop's :class:`Components` contract.

Prediction is a plain function ``predict(model_name, inputs) -> outputs`` over numpy arrays:
on macOS it is coremltools' ``CompiledMLModel.predict``; on Linux the tests pass one that runs
the same torch modules the models were converted from. Everything here (names, dtypes, the
(B, C, 1, 77) text layout, batch 1 or 2, chunk 1 -> chunk 2 by name) is shared by both.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Mapping

import numpy as np
import torch
from numpy.typing import NDArray

from heyim_desktop.core.capabilities import Capabilities
from heyim_desktop.core.conditioning import PromptEncoding, TextCond, TokenCount, UNetCall
from heyim_desktop.core.coreml.detect import (
    ENCODER_NOISED,
    KIND_SD,
    KIND_SDXL,
    META_FORCE_ZEROS,
    META_SCALING,
    TOKENIZER_2,
    CoreMLModelInfo,
)
from heyim_desktop.core.coreml.specs import ModelSpec
from heyim_desktop.core.errors import ModelError
from heyim_desktop.core.prompts import ClipEncoder, PromptCounter, encode_prompt_pair
from heyim_desktop.core.recommended import recommended_for
from heyim_desktop.core.request import GenerationRequest

log = logging.getLogger(__name__)

Array = NDArray[Any]
Arrays = Mapping[str, Array]
#: ``predict(model_name, inputs) -> outputs``: one Core ML prediction.
Predictor = Callable[[str, Arrays], Arrays]

#: Stable Diffusion 1.x/2.x's training schedule: Apple's resources carry no scheduler config.
DEFAULT_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "clip_sample": False,
}
SD_SCALING_FACTOR = 0.18215
SDXL_SCALING_FACTOR = 0.13025
# Output names of Apple's conversions; a model with one output may name it otherwise.
OUTPUTS = {"TextEncoder": "last_hidden_state", "TextEncoder2": "hidden_embeds", "Unet": "noise_pred", "UnetChunk2": "noise_pred", "VAEDecoder": "image", "VAEEncoder": "latent"}
INPUTS = {"TextEncoder": ("input_ids",), "VAEDecoder": ("z",)}
#: The diagonal noise fed to a five-input ("noised") VAEEncoder's second call; see ``vae_encode``.
NOISED_PROBE = 4.0


def check_inputs(spec: ModelSpec, inputs: Arrays) -> dict[str, Array]:
    """Every input the model declares, with its exact shape, cast to its dtype; clear errors otherwise."""
    checked: dict[str, Array] = {}
    for t in spec.inputs:
        if t.name not in inputs:
            raise ModelError(f"{spec.path.name}: input '{t.name}' was not supplied (model expects {t.describe()}).")
        arr = np.asarray(inputs[t.name])
        if tuple(arr.shape) != t.shape:
            raise ModelError(f"{spec.path.name}: input '{t.name}' has shape {tuple(arr.shape)}, the model expects {t.shape}.")
        try:
            checked[t.name] = np.ascontiguousarray(arr, dtype=np.dtype(t.dtype))
        except TypeError:
            raise ModelError(f"{spec.path.name}: input '{t.name}' has unsupported type {t.dtype}.") from None
    return checked


def _output(spec: ModelSpec, outputs: Arrays) -> Array:
    wanted = OUTPUTS.get(spec.name)
    if wanted and wanted in outputs:
        return np.asarray(outputs[wanted])
    if spec.name == "TextEncoder" and "hidden_embeds" in outputs:  # Apple's SDXL TextEncoder
        return np.asarray(outputs["hidden_embeds"])
    if len(outputs) == 1:
        return np.asarray(next(iter(outputs.values())))
    raise ModelError(f"{spec.path.name}: output '{wanted}' is missing from the prediction (got {', '.join(outputs)}).")


def load_tokenizer(info: CoreMLModelInfo, max_length: int, *, second: bool = False) -> Any:
    """A CLIP tokenizer from the folder's own vocab.json and merges.txt (never the network).

    ``second``: SDXL's TextEncoder2 tokenizer: the same vocabulary, padded with ``!`` unless the
    folder carries its own ``tokenizer_2`` configuration (HeyIm's conversions do).
    """
    from transformers import CLIPTokenizer

    folder = info.folder
    try:
        if second and (folder / TOKENIZER_2 / "tokenizer_config.json").is_file():
            tok = CLIPTokenizer.from_pretrained(folder / TOKENIZER_2, local_files_only=True)
        elif not second and (folder / "tokenizer_config.json").is_file():
            tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        else:
            pad = "!" if second else "<|endoftext|>"
            tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ModelError(f"{folder.name}: the tokenizer files could not be read ({exc}).") from exc
    tok.model_max_length = max_length
    return tok


#: Folder names inside Apple's layout that say nothing about the model itself.
_LAYOUT_PARTS = {"compiled", "packages", "split_einsum", "original", "resources", "coreml"}


def _model_name(folder: Any) -> str:
    """The model's own name from its resources path (``coreml-sd-turbo/split_einsum/compiled``)."""
    parts = [p for p in getattr(folder, "parts", ()) if p.lower() not in _LAYOUT_PARTS]
    return parts[-1] if parts else ""


def _scheduler_config(info: CoreMLModelInfo) -> dict[str, Any]:
    path = info.folder / "scheduler_config.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return data
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            log.warning("%s is unreadable; using Stable Diffusion's default schedule", path)
    return dict(DEFAULT_SCHEDULER_CONFIG)


def _in_batches(batched: dict[str, Array], n: int, b: int, call: Callable[[dict[str, Array]], Array]) -> Array:
    """``call`` over ``n`` rows of ``batched`` for a model taking batches of ``b``: as is, row by
    row, padded with copies (no guidance on a batch-2 model; the first rows kept), or in chunks."""

    def rows(start: int, stop: int) -> dict[str, Array]:
        return {k: v[start:stop] for k, v in batched.items()}

    def run(values: dict[str, Array], keep: int) -> Array:
        return call(values)[:keep]

    if n == b:
        return run(batched, n)
    if b == 1:
        return np.concatenate([run(rows(i, i + 1), 1) for i in range(n)])
    if n < b:
        reps = -(-b // n)
        return run({k: np.concatenate([v] * reps)[:b] for k, v in batched.items()}, n)
    # Several batches; a last partial one (AND's negative + parts: 3 rows on a batch-2 model) is
    # filled with copies of its last row, whose predictions are dropped.
    total = -(-n // b) * b
    if total != n:
        batched = {k: np.concatenate([v, np.repeat(v[-1:], total - n, axis=0)]) for k, v in batched.items()}
    return np.concatenate([run(rows(i, i + b), b) for i in range(0, total, b)])[:n]


class CoreMLControlNet:
    """A Core ML ControlNet as :class:`~heyim_desktop.core.controlnet.ControlNetExtension` uses it."""

    dtype = torch.float32

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.config = type("Config", (), {"global_pool_conditions": False})()


class CoreMLComponents:
    """Array adapters between the loop's torch tensors and Core ML's named numpy inputs."""

    def __init__(self, info: CoreMLModelInfo, predict: Predictor, *, release: Callable[[], None] | None = None) -> None:
        if info.kind not in (KIND_SD, KIND_SDXL):
            raise ModelError(f"{info.name} is an {info.kind} Core ML model; HeyIm runs SD 1.x/2.x and SDXL Core ML models.")
        self.info = info
        self.xl = info.kind == KIND_SDXL
        self._predict = predict
        self._release = release
        #: None for an SDXL refiner, which has the second text encoder only.
        self.refiner = info.refiner
        self.te = None if self.refiner else info.model("TextEncoder")
        self.te2 = info.model("TextEncoder2") if info.has("TextEncoder2") else None
        self.unets = tuple(info.model(n) for n in info.unet_names)
        self.decoder = info.model("VAEDecoder")
        self.encoder = info.model("VAEEncoder") if info.img2img else None
        if info.img2img_note:
            log.warning("%s: %s", info.name, info.img2img_note)
        for spec in (self.te or self.te2, self.decoder):
            assert spec is not None
            for name in INPUTS.get(spec.name, INPUTS["TextEncoder"]):
                if spec.input(name) is None:
                    raise ModelError(f"{spec.path.name} has no '{name}' input; it is not a Stable Diffusion {spec.name}.")
        first = self.unets[0]
        for name in ("sample", "timestep", "encoder_hidden_states"):
            if first.input(name) is None:
                raise ModelError(f"{first.path.name} has no '{name}' input; it is not a Stable Diffusion UNet.")
        ehs = first.input("encoder_hidden_states")
        assert ehs is not None
        if len(ehs.shape) != 4 or ehs.shape[2] != 1:
            raise ModelError(f"{first.path.name}: encoder_hidden_states is {ehs.shape}, expected (B, C, 1, 77).")
        self.unet_batch = info.batch
        self.text_length = ehs.shape[3]
        self.text_channels = ehs.shape[1]
        self.device = torch.device("cpu")
        # The loop's arithmetic (scheduler, guidance) runs in float32 on the CPU; Core ML's
        # fp16 happens inside the models, as in Apple's own pipeline.
        self.dtype = torch.float32
        self.vae_scale_factor = 8
        unet_channels = int(first.input("sample").shape[1])  # type: ignore[union-attr]
        # An inpainting UNet (9 channels) takes the mask and masked latents through UNetCall.concat.
        self.latent_channels = 4 if unet_channels == 9 else unet_channels
        recorded = self.decoder.meta(META_SCALING)
        self.scaling_factor = float(recorded) if recorded else SDXL_SCALING_FACTOR if self.xl else SD_SCALING_FACTOR
        self.scheduler_config: Mapping[str, Any] = _scheduler_config(info)
        self.tokenizer_2 = load_tokenizer(info, self.text_length, second=True) if self.xl else None
        # The refiner counts and cuts prompts with the second tokenizer, the only one it has.
        self.tokenizer = self.tokenizer_2 if self.refiner else load_tokenizer(info, self.text_length)
        if self.xl:
            self._check_sdxl(first)
        self.guidance_embedding_dim: int | None = None
        from heyim_desktop.core.coreml.controlnet import residual_inputs

        #: A ControlledUnet's ``additional_residual_*`` inputs (fed zeros without a ControlNet).
        self.residuals = residual_inputs(first) if len(self.unets) == 1 else []
        self._controlnets: dict[str, "CoreMLControlNet"] = {}
        self._capabilities = Capabilities(
            family=("sdxl-refiner" if self.refiner else "sdxl") if self.xl else "sd1" if self.text_channels == 768 else "sd2",
            img2img=info.img2img,
            inpaint="concat" if unet_channels == 9 else "blend",
            max_prompt_chunks=1,
            token_window=self.text_length,
            fixed_size=info.size,
            default_size=info.size,
            max_batch=1,
            clip_skip=False,
            controlnet=bool(self.residuals) and bool(info.controlnet_names),
            recommended=recommended_for(_model_name(info.folder)),
        )
        self._counter = PromptCounter(self.tokenizer, max_chunks=1)

    def _check_sdxl(self, unet: ModelSpec) -> None:
        if self.te2 is None:
            raise ModelError(f"{self.info.name}: an SDXL model needs TextEncoder2.mlmodelc (or .mlpackage); it is missing.")
        ids, embeds = unet.input("time_ids"), unet.input("text_embeds")
        if ids is None or embeds is None:
            raise ModelError(f"{unet.path.name} takes no 'time_ids' and 'text_embeds'; it is not an SDXL UNet.")
        per_row, rest = divmod(int(np.prod(ids.shape)), self.unet_batch)
        if rest or per_row not in (5, 6):
            raise ModelError(f"{unet.path.name}: time_ids is {ids.shape}, expected {self.unet_batch} rows of 6 (or 5 for a refiner).")
        #: 6 ids (original size, crop, target size) for the base, 5 (with an aesthetic score) for a refiner.
        self.time_id_count = per_row
        self.pooled_channels = int(embeds.shape[-1])
        if self.refiner and per_row != 5:
            raise ModelError(f"{self.info.name} has TextEncoder2 only, but its UNet takes {per_row} time ids, not a refiner's 5.")
        widths = [int(s.outputs[0].shape[-1]) for s in (self.te, self.te2) if s is not None and s.outputs]
        if sum(widths) != self.text_channels:
            raise ModelError(
                f"{self.info.name}: the text encoders give {' + '.join(map(str, widths))} channels but the UNet expects {self.text_channels}."
            )
        flag = unet.meta(META_FORCE_ZEROS)
        self.force_zeros_for_empty_prompt = flag != "false"

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def predict(self, spec: ModelSpec, inputs: Arrays) -> Arrays:
        return self._predict(spec.name, check_inputs(spec, inputs))

    # -- the loop's contract ---------------------------------------------------------

    def _encode_rows(self, spec: ModelSpec, input_ids: torch.Tensor) -> tuple[Array, Array | None]:
        hidden, pooled = [], []
        for row in input_ids.cpu().numpy():
            out = self.predict(spec, {"input_ids": row[None, :]})
            hidden.append(_output(spec, out))
            if "pooled_outputs" in out:
                pooled.append(np.asarray(out["pooled_outputs"]))
        return np.concatenate(hidden, axis=0), (np.concatenate(pooled, axis=0) if pooled else None)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.te is None:  # an SDXL refiner: its only text encoder is TextEncoder2
            return self._clip_encode_2(input_ids, attention_mask)[0]
        hidden, _ = self._encode_rows(self.te, input_ids)
        if not self.xl and hidden.shape[-1] != self.text_channels:
            raise ModelError(
                f"{self.te.path.name} gives {hidden.shape[-1]}-wide embeddings but the UNet expects {self.text_channels}."
            )
        return torch.from_numpy(hidden.astype(np.float32))

    def _clip_encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.encode_text(input_ids, attention_mask), None

    def _clip_encode_2(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.te2 is not None
        hidden, pooled = self._encode_rows(self.te2, input_ids)
        if pooled is None:
            raise ModelError(f"{self.te2.path.name} gives no 'pooled_outputs'; SDXL needs the pooled text.")
        return torch.from_numpy(hidden.astype(np.float32)), torch.from_numpy(pooled.astype(np.float32))

    def encode_prompts(self, request: GenerationRequest, *, with_negative: bool) -> PromptEncoding:
        if not self.xl:
            return encode_prompt_pair(
                request, encoders=(ClipEncoder(self.tokenizer, self._clip_encode),), with_negative=with_negative,
                device=self.device, dtype=self.dtype, max_chunks=1,
            )
        # SDXL, as diffusers' pipeline: both encoders' hidden states side by side, the second's
        # pooled text, time ids; an empty negative prompt is all zeros when the model says so.
        zero_negative = with_negative and self.force_zeros_for_empty_prompt and not request.negative_prompt.strip()
        second = ClipEncoder(self.tokenizer_2, self._clip_encode_2)
        # The refiner, as diffusers' StableDiffusionXLImg2ImgPipeline without text_encoder: bigG alone.
        encoders = (second,) if self.refiner else (ClipEncoder(self.tokenizer, self._clip_encode), second)
        enc = encode_prompt_pair(
            request, encoders=encoders, with_negative=with_negative and not zero_negative,
            device=self.device, dtype=self.dtype, max_chunks=1,
        )
        cond = self._with_time_ids(enc.cond, request, negative=False)
        uncond = enc.cond.map(torch.zeros_like) if zero_negative else enc.uncond
        if uncond is not None:
            uncond = self._with_time_ids(uncond, request, negative=True)
        return PromptEncoding(cond, uncond, enc.warnings, enc.truncated_prompt, enc.truncated_negative)

    def _with_time_ids(self, text: TextCond, request: GenerationRequest, *, negative: bool) -> TextCond:
        """Original size, crop top-left and target size (6 ids), or for a refiner original size,
        crop and an aesthetic score (5 ids: 6 for the prompt, 2.5 for the negative, as diffusers)."""
        from heyim_desktop.core.sdxl import AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE

        size = [float(request.height), float(request.width)]
        if self.time_id_count == 5:
            values = [*size, 0.0, 0.0, NEGATIVE_AESTHETIC_SCORE if negative else AESTHETIC_SCORE]
        else:
            values = [*size, 0.0, 0.0, *size]
        ids = torch.tensor([values], dtype=self.dtype).expand(text.batch, -1)
        return TextCond(text.hidden, text.pooled, {**text.extras, "time_ids": ids})

    def prepare_networks(self, request: GenerationRequest) -> GenerationRequest:
        from heyim_desktop.core.lora_torch import refuse_networks

        return refuse_networks(request, "Core ML")

    def count_tokens(self, text: str) -> TokenCount:
        return self._counter(text)

    def _unet_call(self, values: dict[str, Array]) -> Array:
        out: Arrays = {}
        for spec in self.unets:
            # A chunked UNet's second half takes the first half's outputs by name; inputs take
            # the shape the spec declares (SDXL's time_ids are (B, 6) or flat).
            feed = {t.name: np.reshape(values[t.name], t.shape) for t in spec.inputs if t.name in values}
            out = self.predict(spec, feed)
            values = {**values, **{k: np.asarray(v) for k, v in out.items()}}
        return _output(self.unets[-1], out)

    def unet(self, call: UNetCall) -> torch.Tensor:
        if call.intrablock_residuals is not None:
            raise ModelError(f"{self.info.name}: Core ML UNets (Apple's layout) take no T2I-Adapter features.")
        if not self.residuals and (call.down_residuals is not None or call.mid_residual is not None):
            raise ModelError(f"{self.info.name}: this Core ML UNet takes no ControlNet inputs.")
        if call.concat is not None and self._capabilities.inpaint != "concat":
            raise ModelError(f"{self.info.name}: this Core ML UNet is not an inpainting UNet.")
        latents = call.sample if call.concat is None else torch.cat([call.sample, call.concat], dim=1)
        n = latents.shape[0]
        batched: dict[str, Array] = {
            "sample": latents.cpu().float().numpy(),
            "timestep": np.full((n,), float(call.timestep.reshape(-1)[0]), dtype=np.float32),
            # Apple's layout: (B, 77, C) -> (B, C, 1, 77).
            "encoder_hidden_states": call.text.hidden.cpu().float().permute(0, 2, 1).unsqueeze(2).numpy(),
        }
        if self.xl:
            if call.text.pooled is None or "time_ids" not in call.text.extras:
                raise ModelError(f"{self.info.name}: an SDXL UNet needs the pooled text and time ids.")
            batched["text_embeds"] = call.text.pooled.cpu().float().numpy()
            batched["time_ids"] = call.text.extras["time_ids"].cpu().float().numpy()
        if self.residuals:
            batched.update(self._residual_feed(call, n))
        pred = _in_batches(batched, n, self.unet_batch, self._unet_call)
        return torch.from_numpy(np.asarray(pred, dtype=np.float32))

    def _residual_feed(self, call: UNetCall, n: int) -> dict[str, Array]:
        """The ControlledUnet's residual inputs: the ControlNets' sum, or zeros without one."""
        if call.down_residuals is None and call.mid_residual is None:
            return {t.name: np.zeros((n, *t.shape[1:]), np.float32) for t in self.residuals}
        given = [*(call.down_residuals or []), call.mid_residual]
        if len(given) != len(self.residuals) or any(r is None for r in given):
            raise ModelError(f"{self.info.name}: the ControlNet gives {len(given)} residuals; "
                             f"this UNet takes {len(self.residuals)}.")
        return {t.name: r.cpu().float().numpy() for t, r in zip(self.residuals, given)}  # type: ignore[union-attr]

    # -- ControlNet (Apple's layout) ------------------------------------------------------

    def controlnet_model(self, name: str) -> "CoreMLControlNet":
        """The folder's ControlNet called ``name`` (a unit's model, by name or path)."""
        from pathlib import Path

        from heyim_desktop.core.errors import InvalidRequest

        key = Path(str(name)).name.removesuffix(".mlmodelc").removesuffix(".mlpackage").removesuffix(".safetensors")
        if key not in self.info.controlnet_names:
            names = ", ".join(self.info.controlnet_names) or "none"
            raise InvalidRequest("controlnet.model", f"{self.info.name} has no Core ML ControlNet {key!r} in its "
                                 f"controlnet folder; it has: {names} (convert one with --controlnet)")
        net = self._controlnets.get(key)
        if net is None:
            spec = self.info.model(f"controlnet/{key}")
            outs = [t.name for t in spec.outputs]
            if outs != [t.name for t in self.residuals] or spec.input("controlnet_cond") is None:
                raise ModelError(f"{spec.path.name} does not fit {self.info.name}'s UNet (its outputs are "
                                 f"{', '.join(outs)}; the UNet takes {len(self.residuals)} additional residuals).")
            net = self._controlnets[key] = CoreMLControlNet(spec)
        return net

    def run_controlnet(
        self, net: "CoreMLControlNet", sample: torch.Tensor, timestep: torch.Tensor, text: TextCond,
        image: torch.Tensor, *, scale: float, guess_mode: bool,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The residuals of one ControlNet, scaled as diffusers' ControlNetModel scales them."""
        n = sample.shape[0]
        feed: dict[str, Array] = {
            "sample": sample.cpu().float().numpy(),
            "timestep": np.full((n,), float(timestep.reshape(-1)[0]), dtype=np.float32),
            "encoder_hidden_states": text.hidden.cpu().float().permute(0, 2, 1).unsqueeze(2).numpy(),
            "controlnet_cond": image.cpu().float().numpy(),
        }
        spec = net.spec
        names = [t.name for t in spec.outputs]

        def call(values: dict[str, Array]) -> Array:
            out = self.predict(spec, values)
            arrays = [np.asarray(out[k], np.float32) for k in names]
            return np.concatenate([a.reshape(a.shape[0], -1) for a in arrays], axis=1)

        flat = _in_batches(feed, n, int(spec.inputs[0].shape[0]), call)
        residuals, offset = [], 0
        for t in spec.outputs:
            size = int(np.prod(t.shape[1:]))
            residuals.append(torch.from_numpy(flat[:, offset:offset + size].reshape(n, *t.shape[1:]).copy()))
            offset += size
        # diffusers: guess mode scales the residuals from 0.1 (first) to 1 (the middle block).
        scales = torch.logspace(-1, 0, len(residuals)).tolist() if guess_mode else [1.0] * len(residuals)
        scaled = [r * (s * scale) for r, s in zip(residuals, scales)]
        return scaled[:-1], scaled[-1]

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        arr = latents.cpu().float().numpy()
        images = [_output(self.decoder, self.predict(self.decoder, {"z": arr[i : i + 1]})) for i in range(arr.shape[0])]
        return torch.from_numpy(np.concatenate(images).astype(np.float32))

    def vae_encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            reason = self.info.img2img_note or f"{self.info.name} has no VAEEncoder"
            raise ModelError(f"{reason}, so it cannot do image-to-image.")
        arr = images.cpu().float().numpy()
        encode = self._encode_noised if self.info.encoder_form == ENCODER_NOISED else self._encode_moments
        return torch.from_numpy(np.concatenate([encode(arr[i : i + 1]) for i in range(arr.shape[0])]).astype(np.float32))

    def _encode_moments(self, image: Array) -> Array:
        assert self.encoder is not None
        # One image input, whatever the release named it (``x`` today, ``z`` before).
        return _output(self.encoder, self.predict(self.encoder, {self.encoder.inputs[0].name: image}))

    def _encode_noised(self, image: Array) -> Array:
        """The moments from Apple's first encoder form, which samples, scales and noises inside.

        That model returns ``s * (mean + std * diagonal_noise)`` noised by the alphas it is given.
        With no noise (alphas 1 and 0) two calls, diagonal noise 0 and then ``NOISED_PROBE``,
        give the mean and the standard deviation, so the loop draws its own noise and applies its
        scheduler exactly as for every other encoder, and image-to-image matches the torch engine.
        """
        enc = self.encoder
        assert enc is not None
        shapes = {t.name: t.shape for t in enc.inputs}

        def call(probe: float) -> Array:
            feed = {
                "sample": image,
                "diagonal_noise": np.full(shapes["diagonal_noise"], probe, np.float32),
                "noise": np.zeros(shapes["noise"], np.float32),
                "sqrt_alphas_cumprod": np.ones(shapes["sqrt_alphas_cumprod"], np.float32),
                "sqrt_one_minus_alphas_cumprod": np.zeros(shapes["sqrt_one_minus_alphas_cumprod"], np.float32),
            }
            out = np.asarray(next(iter(self.predict(enc, feed).values())), dtype=np.float32)
            return out / np.float32(self.scaling_factor)

        mean = call(0.0)
        std = (call(NOISED_PROBE) - mean) / np.float32(NOISED_PROBE)
        # The encoder clamps log-variance to [-30, 20]; rounding may leave a zero or negative std.
        logvar = 2.0 * np.log(np.clip(std, np.exp(-15.0), np.exp(10.0)))
        return np.concatenate([mean, logvar.astype(np.float32)], axis=1)

    def release(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None
