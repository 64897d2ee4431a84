"""A stand-in for Core ML prediction: the torch modules a resources folder was converted from.

It takes and returns exactly what the converted models do (names from their specs, their
dtypes), so the engine's adapters run unchanged on Linux. Used by the tests, and to check a
conversion against its source model without a Mac.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from numpy.typing import NDArray

from heyim_desktop.core.coreml import modules as M  # noqa: N812 - the torch modules, short in long expressions
from heyim_desktop.core.coreml.detect import ENCODER_NOISED, CoreMLModelInfo


class TorchReferencePredictor:
    """``predict(name, inputs) -> outputs`` over the diffusers model at ``source`` (fp32, CPU)."""

    def __init__(self, source: Path, info: CoreMLModelInfo, controlnets: Mapping[str, Path] | None = None) -> None:
        """``controlnets``: the source of each of the folder's ControlNets, by name."""
        from heyim_desktop.core.coreml.controlnet import residual_inputs
        from heyim_desktop.core.coreml.source import load_source

        self.info = info
        self.parts = load_source(source)
        unet = M.unet_for(self.parts.unet, info.attention)
        vae = self.parts.vae
        if self.parts.xl:
            te2 = self.parts.text_encoders[-1]
            self.modules: dict[str, torch.nn.Module] = {"TextEncoder2": M.TextEncoderXLModule(te2), "Unet": M.UnetXLModule(unet)}
            if len(self.parts.text_encoders) == 2:  # a refiner has the second encoder only
                self.modules["TextEncoder"] = M.TextEncoderXLModule(self.parts.text_encoders[0])
        else:
            self.modules = {
                "TextEncoder": M.TextEncoderModule(self.parts.text_encoders[0]),
                "Unet": M.UnetModule(unet),
                "UnetChunk1": M.UnetChunk1Module(unet),
                "UnetChunk2": M.UnetChunk2Module(unet),
            }
        if residual_inputs(info.model("Unet") if info.has("Unet") else info.models[0]):
            self.modules["Unet"] = M.ControlledUnetModule(unet)
        for name, path in (controlnets or {}).items():
            from heyim_desktop.core.controlnet_models import load_controlnet

            net = load_controlnet(path, device=torch.device("cpu"), dtype=torch.float32)
            M.use_attention(net, info.attention)
            self.modules[f"controlnet/{name}"] = M.ControlNetModule(net)
        self.modules["VAEDecoder"] = M.VAEDecoderModule(vae)
        self.modules["VAEEncoder"] = M.VAEEncoderModule(vae)
        if info.encoder_form == ENCODER_NOISED:
            self.modules["VAEEncoder"] = M.NoisedVAEEncoderModule(vae, self.parts.scaling_factor)
        self.calls: list[tuple[str, dict[str, tuple[tuple[int, ...], str]]]] = []

    @torch.inference_mode()
    def __call__(self, name: str, inputs: Mapping[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        spec = self.info.model(name)
        self.calls.append((name, {k: (tuple(v.shape), str(v.dtype)) for k, v in inputs.items()}))
        # Positional order is the spec's input order, which is the traced forward's order.
        args = [torch.from_numpy(np.asarray(inputs[t.name], dtype=np.float32)) for t in spec.inputs]
        out = self.modules[name](*args)
        values = out if isinstance(out, tuple) else (out,)
        if len(values) != len(spec.outputs):
            raise RuntimeError(f"{name}: module gave {len(values)} outputs, spec has {len(spec.outputs)}")
        return {t.name: v.numpy().astype(np.dtype(t.dtype)) for t, v in zip(spec.outputs, values)}
