"""Converting a diffusers-format SD 1.x/2.x model to Core ML in Apple's layout and naming.

The result is a resources folder of fp16 ``.mlpackage`` files (TextEncoder, Unet or
UnetChunk1/UnetChunk2, VAEDecoder, VAEEncoder) plus ``vocab.json`` and ``merges.txt``, with
static shapes for one image size. It runs on Linux and macOS; compiling to ``.mlmodelc``
happens on the Mac at first load (see ``compile_cache``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.coreml.specs import read_model_spec
from heyim_desktop.core.errors import InvalidRequest, ModelError
from heyim_desktop.core.storage import full_reason, storage_error

log = logging.getLogger(__name__)

ATTENTIONS = ("split_einsum", "original")
BATCHES = (1, 2)
#: Keys HeyIm writes into each model's user-defined metadata (detection prefers them).
META_ATTENTION = "heyim.attention"
META_SOURCE = "heyim.source"
META_WEIGHTS = "heyim.weights"
SCHEDULER_FILE = "scheduler_config.json"


@dataclass(frozen=True)
class ConversionProgress:
    """One stage of a conversion: ``stage`` of ``total`` done or starting, with a label for people."""

    stage: int
    total: int
    label: str
    elapsed: float


ConversionCallback = Callable[[ConversionProgress], None]


def _check_size(size: tuple[int, int], unet: Any) -> tuple[int, int]:
    factor = 8 * 2 ** (len(unet.config.block_out_channels) - 1)
    w, h = size
    if w < factor or h < factor or w % factor or h % factor:
        raise InvalidRequest("size", f"width and height must be positive multiples of {factor} for this model, got {w}x{h}")
    if w * h > 2048 * 2048:
        raise InvalidRequest("size", f"{w}x{h} is larger than 2048x2048")
    return w, h


def _convert(module: Any, inputs: Sequence[tuple[str, tuple[int, ...], Any]], outputs: list[tuple[str, Any]]) -> Any:
    import coremltools as ct
    import torch

    examples = tuple(torch.rand(shape) * (76.0 if name == "input_ids" else 1.0) for name, shape, _ in inputs)
    ct_inputs = [ct.TensorType(name=n, shape=s, dtype=d) for n, s, d in inputs]
    ct_outputs = [ct.TensorType(name=n, dtype=d) for n, d in outputs]
    noise = io.StringIO()
    # Tracing warns about shape asserts (static shapes are the point here) and coremltools
    # draws progress bars on stderr; the caller reports progress itself.
    with warnings.catch_warnings(), contextlib.redirect_stderr(noise), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module.eval(), examples, check_trace=False)  # type: ignore[no-untyped-call]
        model = ct.convert(
            traced,
            inputs=ct_inputs,
            outputs=ct_outputs,
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.macOS13,
            compute_precision=ct.precision.FLOAT16,
            skip_model_load=True,  # loading needs macOS; the Mac compiles at first use
        )
    log.debug("coremltools: %s", noise.getvalue()[-2000:])
    return model


def _weights_id(part: Path) -> str:
    """A content hash of one component (its config and weights), to know a package is reusable."""
    digest = hashlib.sha256()
    for path in sorted(part.glob("*.json")) + sorted(part.glob("*.safetensors")):
        digest.update(path.name.encode("utf-8") + b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _reusable(folder: str | os.PathLike[str] | None, name: str, weights: str, inputs: Sequence[tuple[str, tuple[int, ...], Any]]) -> Path | None:
    if folder is None:
        return None
    package = Path(folder).expanduser() / f"{name}.mlpackage"
    if not package.is_dir():
        return None
    try:
        spec = read_model_spec(name, package)
    except ModelError:
        return None
    same_shapes = [(t.name, t.shape) for t in spec.inputs] == [(n, tuple(s)) for n, s, _ in inputs]
    return package if same_shapes and spec.meta(META_WEIGHTS) == weights else None


def _quiet_coremltools() -> None:
    # It warns about untested torch versions and tuple outputs, which are fine here.
    logging.getLogger("coremltools").setLevel(logging.ERROR)


def convert_to_coreml(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    size: tuple[int, int] | None = None,
    attention: str = "split_einsum",
    batch: int = 2,
    chunk_unet: bool = False,
    include_encoder: bool = True,
    overwrite: bool = False,
    reuse_from: str | os.PathLike[str] | None = None,
    progress: ConversionCallback | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Convert ``model_dir`` into a Core ML resources folder at ``out_dir`` and return it.

    The folder appears complete or not at all (built beside the target and renamed).
    ``cancel`` is checked between models: a running coremltools conversion cannot be
    interrupted, so a cancel takes effect when the current model is done.
    ``reuse_from``: an earlier conversion of the same model at the same size; its TextEncoder
    and VAE packages are copied when their weights and shapes match (say, to make a batch-1 or
    chunked variant without converting everything again).
    """
    import numpy as np
    import torch

    from heyim_desktop.core.coreml import modules as M  # noqa: N812 - the torch modules, short in long expressions
    from heyim_desktop.core.model_folder import check_diffusers_folder, folder_family
    from heyim_desktop.core.thirdparty import quiet_third_party
    from heyim_desktop.core.torch_engine import TorchComponents

    if attention not in ATTENTIONS:
        raise InvalidRequest("attention", f"choose one of {', '.join(ATTENTIONS)}, got {attention!r}")
    if batch not in BATCHES:
        raise InvalidRequest("batch", f"choose 1 or 2, got {batch}")
    src = Path(model_dir).expanduser()
    dest = Path(out_dir).expanduser()
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not overwrite)):
        raise ModelError(f"{dest} exists and is not an empty folder; choose another output folder.")
    if folder_family(check_diffusers_folder(src)) != "sd":
        raise ModelError(f"{src.name} is an SDXL model; the Core ML converter handles SD 1.x and 2.x models.")
    cancel = cancel or CancelToken()
    quiet_third_party()
    _quiet_coremltools()
    t0 = time.perf_counter()
    stages = ["Loading the model", "TextEncoder", "Unet", "VAEDecoder"] + (["VAEEncoder"] if include_encoder else []) + ["Saving"]
    total = len(stages)

    def report(i: int) -> None:
        log.info("convert %s: %s (%d/%d)", src.name, stages[i], i, total)
        if progress is not None:
            progress(ConversionProgress(i, total, stages[i], time.perf_counter() - t0))

    report(0)
    parts = TorchComponents(src, torch.device("cpu"), torch.float32)
    unet, vae, text_encoder = parts.unet_model, parts.vae, parts.text_encoder
    native = parts.sample_size * parts.vae_scale_factor
    w, h = _check_size(size or (native, native), unet)
    lh, lw = h // parts.vae_scale_factor, w // parts.vae_scale_factor
    cross = int(unet.config.cross_attention_dim)
    channels = int(unet.config.in_channels)
    f16, f32 = np.float16, np.float32
    meta = {META_ATTENTION: attention, META_SOURCE: src.name, "heyim.size": f"{w}x{h}"}

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".coreml-convert-", dir=dest.parent))
    except OSError as exc:
        parts.release()
        raise storage_error(exc, dest.parent, "the Core ML model") from exc
    try:
        def save(model: Any, name: str, description: str, extra: dict[str, str] | None = None) -> None:
            model.short_description = description
            model.user_defined_metadata.update({**meta, **(extra or {})})
            model.save(str(tmp / f"{name}.mlpackage"))

        def reused(stage: int, name: str, weights: str, inputs: Sequence[tuple[str, tuple[int, ...], Any]]) -> bool:
            found = _reusable(reuse_from, name, weights, inputs)
            if found is not None:
                stages[stage] = f"{name} (reused)"
                shutil.copytree(found, tmp / found.name)
            report(stage)
            return found is not None

        te_weights = _weights_id(src / "text_encoder")
        vae_weights = _weights_id(src / "vae")
        cancel.raise_if_cancelled()
        te_inputs = [("input_ids", (1, M.TEXT_LENGTH), f32)]
        if not reused(1, "TextEncoder", te_weights, te_inputs):
            te = _convert(M.TextEncoderModule(text_encoder), te_inputs, [("last_hidden_state", f32), ("pooled_outputs", f32)])
            save(te, "TextEncoder", f"{src.name}: text encoder", {META_WEIGHTS: te_weights})

        cancel.raise_if_cancelled()
        report(2)
        M.use_attention(unet, attention)
        unet_inputs = [
            ("sample", (batch, channels, lh, lw), f16),
            ("timestep", (batch,), f16),
            ("encoder_hidden_states", (batch, cross, 1, M.TEXT_LENGTH), f16),
        ]
        if chunk_unet:
            names = M.chunk1_output_names(unet)
            with torch.no_grad():
                outs = M.UnetChunk1Module(unet)(*(torch.zeros(s) for _, s, _ in unet_inputs))
            c1 = _convert(M.UnetChunk1Module(unet), unet_inputs, [(n, f16) for n in names])
            save(c1, "UnetChunk1", f"{src.name}: UNet, first half")
            cancel.raise_if_cancelled()
            c2_inputs = [unet_inputs[2]] + [(n, tuple(o.shape), f16) for n, o in zip(names, outs)]
            c2 = _convert(M.UnetChunk2Module(unet), c2_inputs, [("noise_pred", f16)])
            save(c2, "UnetChunk2", f"{src.name}: UNet, second half")
        else:
            un = _convert(M.UnetModule(unet), unet_inputs, [("noise_pred", f16)])
            save(un, "Unet", f"{src.name}: UNet")

        cancel.raise_if_cancelled()
        # An inpainting UNet takes 9 channels (latents + mask + masked latents); the VAE still makes 4.
        dec_inputs = [("z", (1, int(vae.config.latent_channels), lh, lw), f16)]
        if not reused(3, "VAEDecoder", vae_weights, dec_inputs):
            dec = _convert(M.VAEDecoderModule(vae), dec_inputs, [("image", f16)])
            save(dec, "VAEDecoder", f"{src.name}: VAE decoder", {META_WEIGHTS: vae_weights})
        if include_encoder:
            cancel.raise_if_cancelled()
            enc_inputs = [("x", (1, 3, h, w), f16)]
            if not reused(4, "VAEEncoder", vae_weights, enc_inputs):
                enc = _convert(M.VAEEncoderModule(vae), enc_inputs, [("latent", f16)])
                save(enc, "VAEEncoder", f"{src.name}: VAE encoder", {META_WEIGHTS: vae_weights})

        cancel.raise_if_cancelled()
        report(total - 1)
        for name in ("vocab.json", "merges.txt"):
            shutil.copy2(src / "tokenizer" / name, tmp / name)
        # Not part of Apple's layout; it keeps the model's own scheduler (prediction type, betas).
        (tmp / SCHEDULER_FILE).write_text(json.dumps(parts.scheduler_config, indent=2), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        # coremltools and protobuf report a full disk in their own words; OSError text is kept.
        if isinstance(exc, OSError) or (isinstance(exc, Exception) and full_reason(exc)):
            raise storage_error(exc, dest.parent, "the Core ML model") from exc
        raise
    finally:
        parts.release()
    if progress is not None:
        progress(ConversionProgress(total, total, "Done", time.perf_counter() - t0))
    log.info("converted %s to %s in %.1fs", src, dest, time.perf_counter() - t0)
    return dest
