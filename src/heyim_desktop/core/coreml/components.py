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
from heyim_desktop.core.conditioning import PromptEncoding, TokenCount, UNetCall
from heyim_desktop.core.coreml.detect import CoreMLModelInfo
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
# Output names of Apple's conversions; a model with one output may name it otherwise.
OUTPUTS = {"TextEncoder": "last_hidden_state", "Unet": "noise_pred", "UnetChunk2": "noise_pred", "VAEDecoder": "image", "VAEEncoder": "latent"}
INPUTS = {"TextEncoder": ("input_ids",), "VAEDecoder": ("z",), "VAEEncoder": ("x",)}


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
    if len(outputs) == 1:
        return np.asarray(next(iter(outputs.values())))
    raise ModelError(f"{spec.path.name}: output '{wanted}' is missing from the prediction (got {', '.join(outputs)}).")


def load_tokenizer(info: CoreMLModelInfo, max_length: int) -> Any:
    """A CLIP tokenizer from the folder's own vocab.json and merges.txt (never the network)."""
    from transformers import CLIPTokenizer

    folder = info.folder
    try:
        if (folder / "tokenizer_config.json").is_file():
            tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        else:
            tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")
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


class CoreMLComponents:
    """Array adapters between the loop's torch tensors and Core ML's named numpy inputs."""

    def __init__(self, info: CoreMLModelInfo, predict: Predictor, *, release: Callable[[], None] | None = None) -> None:
        if info.kind != "SD 1.x/2.x":
            raise ModelError(f"{info.name} is an {info.kind} Core ML model; HeyIm runs SD 1.x/2.x Core ML models for now.")
        self.info = info
        self._predict = predict
        self._release = release
        self.te = info.model("TextEncoder")
        self.unets = tuple(info.model(n) for n in info.unet_names)
        self.decoder = info.model("VAEDecoder")
        self.encoder = info.model("VAEEncoder") if info.img2img else None
        for spec in (self.te, self.decoder, *([self.encoder] if self.encoder else [])):
            for name in INPUTS[spec.name]:
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
        self.scaling_factor = SD_SCALING_FACTOR
        self.scheduler_config: Mapping[str, Any] = _scheduler_config(info)
        self.tokenizer = load_tokenizer(info, self.text_length)
        self.guidance_embedding_dim: int | None = None
        self._capabilities = Capabilities(
            family="sd1" if self.text_channels == 768 else "sd2",
            img2img=info.img2img,
            inpaint="concat" if unet_channels == 9 else "blend",
            max_prompt_chunks=1,
            token_window=self.text_length,
            fixed_size=info.size,
            default_size=info.size,
            max_batch=1,
            clip_skip=False,
            recommended=recommended_for(_model_name(info.folder)),
        )
        self._counter = PromptCounter(self.tokenizer, max_chunks=1)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def predict(self, spec: ModelSpec, inputs: Arrays) -> Arrays:
        return self._predict(spec.name, check_inputs(spec, inputs))

    # -- the loop's contract ---------------------------------------------------------

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        rows = []
        for row in input_ids.cpu().numpy():
            out = self.predict(self.te, {"input_ids": row[None, :]})
            rows.append(_output(self.te, out))
        hidden = np.concatenate(rows, axis=0)
        if hidden.shape[-1] != self.text_channels:
            raise ModelError(
                f"{self.te.path.name} gives {hidden.shape[-1]}-wide embeddings but the UNet expects {self.text_channels}."
            )
        return torch.from_numpy(hidden.astype(np.float32))

    def _clip_encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.encode_text(input_ids, attention_mask), None

    def encode_prompts(self, request: GenerationRequest, *, with_negative: bool) -> PromptEncoding:
        return encode_prompt_pair(
            request, encoders=(ClipEncoder(self.tokenizer, self._clip_encode),), with_negative=with_negative,
            device=self.device, dtype=self.dtype, max_chunks=1,
        )

    def prepare_networks(self, request: GenerationRequest) -> GenerationRequest:
        from heyim_desktop.core.lora_torch import refuse_networks

        return refuse_networks(request, "Core ML")

    def count_tokens(self, text: str) -> TokenCount:
        return self._counter(text)

    def _unet_call(self, sample: Array, timestep: Array, hidden: Array) -> Array:
        values: dict[str, Array] = {"sample": sample, "timestep": timestep, "encoder_hidden_states": hidden}
        out: Arrays = {}
        for spec in self.unets:
            # A chunked UNet's second half takes the first half's outputs by name.
            out = self.predict(spec, {t.name: values[t.name] for t in spec.inputs if t.name in values})
            values.update({k: np.asarray(v) for k, v in out.items()})
        return _output(self.unets[-1], out)

    def unet(self, call: UNetCall) -> torch.Tensor:
        if call.down_residuals is not None or call.mid_residual is not None:
            raise ModelError(f"{self.info.name}: this Core ML UNet takes no ControlNet inputs.")
        if call.concat is not None and self._capabilities.inpaint != "concat":
            raise ModelError(f"{self.info.name}: this Core ML UNet is not an inpainting UNet.")
        latents = call.sample if call.concat is None else torch.cat([call.sample, call.concat], dim=1)
        timestep = call.timestep
        n = latents.shape[0]
        sample = latents.cpu().float().numpy()
        # Apple's layout: (B, 77, C) -> (B, C, 1, 77).
        hidden = call.text.hidden.cpu().float().permute(0, 2, 1).unsqueeze(2).numpy()
        t = np.full((n,), float(timestep.reshape(-1)[0]), dtype=np.float32)
        b = self.unet_batch
        if n == b:
            pred = self._unet_call(sample, t, hidden)
        elif b == 1:
            pred = np.concatenate([self._unet_call(sample[i : i + 1], t[i : i + 1], hidden[i : i + 1]) for i in range(n)])
        elif n < b:
            # No guidance with a batch-2 UNet: fill the batch with copies, keep the first rows.
            reps = -(-b // n)

            def pad(a: Array) -> Array:
                return np.concatenate([a] * reps)[:b]

            pred = self._unet_call(pad(sample), pad(t), pad(hidden))[:n]
        else:
            parts = [self._unet_call(sample[i : i + b], t[i : i + b], hidden[i : i + b]) for i in range(0, n, b)]
            pred = np.concatenate(parts)
        return torch.from_numpy(np.asarray(pred, dtype=np.float32))

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        arr = latents.cpu().float().numpy()
        images = [_output(self.decoder, self.predict(self.decoder, {"z": arr[i : i + 1]})) for i in range(arr.shape[0])]
        return torch.from_numpy(np.concatenate(images).astype(np.float32))

    def vae_encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise ModelError(f"{self.info.name} has no VAEEncoder, so it cannot do image-to-image.")
        arr = images.cpu().float().numpy()
        moments = [_output(self.encoder, self.predict(self.encoder, {"x": arr[i : i + 1]})) for i in range(arr.shape[0])]
        return torch.from_numpy(np.concatenate(moments).astype(np.float32))

    def release(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None
