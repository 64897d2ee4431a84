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
from typing import TYPE_CHECKING, Any, Callable, Sequence

from heyim_desktop.core.cancel import CancelToken
from heyim_desktop.core.coreml import compression
from heyim_desktop.core.coreml.detect import META_FORCE_ZEROS, META_SCALING, TOKENIZER_2
from heyim_desktop.core.coreml.specs import read_model_spec
from heyim_desktop.core.errors import InvalidRequest, ModelError

if TYPE_CHECKING:
    from heyim_desktop.core.lora import LoraUse

log = logging.getLogger(__name__)

ATTENTIONS = ("split_einsum", "original")
BATCHES = (1, 2)
#: Keys HeyIm writes into each model's user-defined metadata (detection prefers them).
META_ATTENTION = "heyim.attention"
META_SOURCE = "heyim.source"
META_WEIGHTS = "heyim.weights"
#: The LoRAs baked into a converted model ("name:weight, ..."), absent when none.
META_LORAS = "heyim.loras"
SCHEDULER_FILE = "scheduler_config.json"
#: What a conversion did that people should know (precision choices, sizes before and after).
NOTES_FILE = "heyim-conversion.json"


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


def _convert(
    module: Any, inputs: Sequence[tuple[str, tuple[int, ...], Any]], outputs: list[tuple[str, Any]], *, precision: str = "fp16",
    macos: int = 13,
) -> Any:
    """Trace and convert ``module``; ``precision`` "fp16", "fp32" or "fp16-attention-fp32"
    (see :mod:`compression`), ``macos`` the minimum deployment target (13, 14 or 15)."""
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
            minimum_deployment_target={13: ct.target.macOS13, 14: ct.target.macOS14, 15: ct.target.macOS15}[macos],
            compute_precision=compression.compute_precision(precision),
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


def _convert_single_file(file: Path, dest: Path, options: dict[str, Any]) -> Path:
    import shutil
    import tempfile

    from heyim_desktop.core.coreml.source import single_file_as_folder
    from heyim_desktop.core.storage import writing

    if file.suffix.lower() != ".safetensors":
        raise ModelError(f"{file.name}: the converter reads .safetensors checkpoints or diffusers folders "
                         "(HeyIm never loads pickle files; import it into the library first to convert it safely).")
    parent = dest.parent if dest.parent.is_dir() else None
    with writing(dest.parent, "the staging copy of the model"):
        staging = Path(tempfile.mkdtemp(prefix=".heyim-convert-", dir=parent))
    try:
        log.info("convert %s: writing the single file out as a diffusers folder first", file.name)
        with writing(staging, "the staging copy of the model"):
            folder = single_file_as_folder(file, staging / file.stem)
        return convert_to_coreml(folder, dest, **options)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
    loras: Sequence["LoraUse"] = (),
    controlnets: Sequence[str | os.PathLike[str]] = (),
    quantize: int | None = None,
) -> Path:
    """Convert ``model_dir`` into a Core ML resources folder at ``out_dir`` and return it.

    The folder appears complete or not at all (built beside the target and renamed).
    ``cancel`` is checked between models: a running coremltools conversion cannot be
    interrupted, so a cancel takes effect when the current model is done.
    ``reuse_from``: an earlier conversion of the same model at the same size; its TextEncoder
    and VAE packages are copied when their weights and shapes match (say, to make a batch-1 or
    chunked variant without converting everything again).
    ``controlnets``: ControlNets (diffusers folders or ``.safetensors``) to convert into
    ``controlnet/<name>.mlpackage``; the UNet is then Apple's ``ControlledUnet``, which takes
    their residuals as ``additional_residual_*`` inputs (zeros when no ControlNet is used).
    ``quantize``: 8, 6 or 4 palettizes the UNet's and text encoders' weights (see
    :mod:`compression`); the VAE and ControlNets stay fp16. What was done (precision choices,
    sizes before and after) is logged and kept in ``NOTES_FILE`` (:func:`conversion_notes`).
    ``model_dir`` may also be a single-file ``.safetensors`` checkpoint: it is written out as a
    diffusers folder in a HeyIm-owned staging folder beside ``out_dir`` first, removed afterwards.
    """
    if Path(model_dir).expanduser().is_file():
        return _convert_single_file(Path(model_dir).expanduser(), Path(out_dir).expanduser(), dict(
            size=size, attention=attention, batch=batch, chunk_unet=chunk_unet, include_encoder=include_encoder,
            overwrite=overwrite, reuse_from=reuse_from, progress=progress, cancel=cancel, loras=loras,
            controlnets=controlnets, quantize=quantize))
    import numpy as np
    import torch

    from heyim_desktop.core.coreml import modules as M  # noqa: N812 - the torch modules, short in long expressions
    from heyim_desktop.core.coreml.source import load_source
    from heyim_desktop.core.model_folder import check_diffusers_folder, folder_family
    from heyim_desktop.core.thirdparty import quiet_third_party

    if attention not in ATTENTIONS:
        raise InvalidRequest("attention", f"choose one of {', '.join(ATTENTIONS)}, got {attention!r}")
    if batch not in BATCHES:
        raise InvalidRequest("batch", f"choose 1 or 2, got {batch}")
    bits = compression.check_bits(quantize)
    macos = compression.minimum_macos(bits)
    src = Path(model_dir).expanduser()
    dest = Path(out_dir).expanduser()
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not overwrite)):
        raise ModelError(f"{dest} exists and is not an empty folder; choose another output folder.")
    family = folder_family(check_diffusers_folder(src))
    if family not in ("sd", "sdxl", "sdxl-refiner"):
        raise ModelError(f"{src.name} is a {family} model; the Core ML converter handles SD 1.x/2.x, SDXL and SDXL refiners.")
    xl = family in ("sdxl", "sdxl-refiner")
    refiner = family == "sdxl-refiner"
    if chunk_unet and xl:
        raise InvalidRequest("chunk_unet", "chunked UNets are for SD 1.x/2.x conversions")
    if loras and refiner:
        raise InvalidRequest("lora", "LoRAs are baked into SDXL base conversions only; convert the refiner without --lora")
    if controlnets and (xl or chunk_unet):
        raise InvalidRequest("controlnet", "Core ML ControlNet conversion handles SD 1.x/2.x models with one "
                             "(unchunked) UNet; convert without --chunk-unet")
    net_paths = [Path(p).expanduser() for p in controlnets]
    net_names = [p.stem if p.suffix == ".safetensors" else p.name for p in net_paths]
    if len(set(net_names)) != len(net_names):
        raise InvalidRequest("controlnet", f"two ControlNets share a name ({', '.join(net_names)})")
    cancel = cancel or CancelToken()
    quiet_third_party()
    _quiet_coremltools()
    t0 = time.perf_counter()
    # Apple's refiner layout: the second text encoder alone, named TextEncoder2.
    text_names = ["TextEncoder2"] if refiner else ["TextEncoder", "TextEncoder2"] if xl else ["TextEncoder"]
    unet_name = "ControlledUnet" if net_paths else "Unet"
    stages = (["Loading the model", *text_names, unet_name, *(f"ControlNet {n}" for n in net_names), "VAEDecoder"]
              + (["VAEEncoder"] if include_encoder else []) + ["Saving"])
    total = len(stages)

    def report(i: int) -> None:
        log.info("convert %s: %s (%d/%d)", src.name, stages[i], i, total)
        if progress is not None:
            progress(ConversionProgress(i, total, stages[i], time.perf_counter() - t0))

    report(0)
    parts = load_source(src)
    baked = tuple(loras)
    if baked:  # merged into the UNet and text encoders for good: Core ML cannot take LoRAs at run time
        from transformers import CLIPTokenizer

        from heyim_desktop.core.lora import lora_hash
        from heyim_desktop.core.lora_torch import bake_modules, baked_label

        try:
            tokenizers = [CLIPTokenizer.from_pretrained(d, local_files_only=True) for d in parts.tokenizer_dirs]
            family = "sdxl" if xl else ("sd2" if int(parts.unet.config.cross_attention_dim) == 1024 else "sd1")
            bake_modules(unet=parts.unet, vae=parts.vae, text_encoders=list(parts.text_encoders),
                         tokenizers=tokenizers, family=family, loras=baked)
        except BaseException:
            parts.release()
            raise
    unet, vae = parts.unet, parts.vae
    native = parts.sample_size * parts.vae_scale_factor
    w, h = _check_size(size or (native, native), unet)
    lh, lw = h // parts.vae_scale_factor, w // parts.vae_scale_factor
    cross = int(unet.config.cross_attention_dim)
    channels = int(unet.config.in_channels)
    f16, f32 = np.float16, np.float32
    # SDXL's VAE overflows in fp16: fp32 (and on the GPU, see runtime), unless it is a fixed fp16 VAE.
    vae_precision, vae_note = compression.vae_precision(vae.config, xl)
    vae_type = f32 if vae_precision == "fp32" else f16
    unet_precision, unet_note = compression.unet_precision(unet.config)
    notes = [n for n in (unet_note, vae_note) if n]
    if bits:
        notes.append(f"Weights palettized to {bits} bits (UNet and text encoders; the VAE stays fp16): "
                     f"needs macOS {macos} or later.")
    for note in notes:
        log.info("convert %s: %s", src.name, note)
    sizes: list[compression.Palettized] = []
    meta = {META_ATTENTION: attention, META_SOURCE: src.name, "heyim.size": f"{w}x{h}"}
    label = f"{src.name} + LoRA {baked_label(baked)}" if baked else src.name
    if baked:
        meta[META_LORAS] = baked_label(baked)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".coreml-convert-", dir=dest.parent))
    try:
        def save(model: Any, name: str, description: str, extra: dict[str, str] | None = None,
                 compress: bool = False) -> None:
            model.short_description = description
            model.user_defined_metadata.update({**meta, **(extra or {})})
            if compress and bits:
                plain = tmp / f".{name}-fp16.mlpackage"
                model.save(str(plain))  # only to report the size before
                before = compression.package_bytes(plain)
                shutil.rmtree(plain)
                cancel.raise_if_cancelled()
                model = compression.palettize(model, bits)
                model.short_description = description
                model.user_defined_metadata.update({**meta, **(extra or {}), compression.META_BITS: str(bits)})
                model.save(str(tmp / f"{name}.mlpackage"))
                sizes.append(compression.Palettized(name, bits, before, compression.package_bytes(tmp / f"{name}.mlpackage")))
                log.info("convert %s: %s", src.name, sizes[-1].describe())
                return
            model.save(str(tmp / f"{name}.mlpackage"))

        def reused(name: str, weights: str, inputs: Sequence[tuple[str, tuple[int, ...], Any]]) -> bool:
            found = _reusable(reuse_from, name, weights, inputs)
            index = stages.index(name)
            if found is not None:
                stages[index] = f"{name} (reused)"
                shutil.copytree(found, tmp / found.name)
            report(index)
            return found is not None

        vae_weights = _weights_id(src / "vae")
        for name, encoder in zip(text_names, parts.text_encoders):
            cancel.raise_if_cancelled()
            folder = "text_encoder" if name == "TextEncoder" else "text_encoder_2"
            te_weights = _weights_id(src / folder)
            if baked:  # a text encoder with LoRAs in it is another text encoder
                te_weights = hashlib.sha256("|".join([te_weights] + [f"{lora_hash(u.path)}:{u.weight!r}" for u in baked])
                                            .encode()).hexdigest()
            if bits:  # and so is a palettized one
                te_weights = f"{te_weights}:q{bits}"
            te_inputs = [("input_ids", (1, M.TEXT_LENGTH), f32)]
            if not reused(name, te_weights, te_inputs):
                if xl:
                    module: Any = M.TextEncoderXLModule(encoder)
                    outputs = [("hidden_embeds", f32), ("pooled_outputs", f32)]
                else:
                    module = M.TextEncoderModule(encoder)
                    outputs = [("last_hidden_state", f32), ("pooled_outputs", f32)]
                te = _convert(module, te_inputs, outputs, macos=macos)
                save(te, name, f"{label}: text encoder{' 2' if name == 'TextEncoder2' else ''}", {META_WEIGHTS: te_weights},
                     compress=True)

        cancel.raise_if_cancelled()
        report(stages.index(unet_name))
        nets = []
        if net_paths:
            from heyim_desktop.core.controlnet_models import check_compatible, load_controlnet

            for path in net_paths:
                net = load_controlnet(path, device=torch.device("cpu"), dtype=torch.float32)
                check_compatible(net, path.name, cross)
                nets.append(net)
        unet = M.unet_for(unet, attention)
        unet_inputs = [
            ("sample", (batch, channels, lh, lw), f16),
            ("timestep", (batch,), f16),
            ("encoder_hidden_states", (batch, cross, 1, M.TEXT_LENGTH), f16),
        ]
        unet_meta: dict[str, str] = {compression.META_FP32_OPS: "attention scores, softmax"} if unet_note else {}
        if xl:
            per_id = int(parts.unet.config.addition_time_embed_dim)
            pooled = int(parts.text_encoders[-1].config.projection_dim)
            source_unet: Any = parts.unet
            count = (int(source_unet.add_embedding.linear_1.in_features) - pooled) // per_id
            expected = 5 if refiner else 6  # a refiner's ids end in an aesthetic score, the base's in a target size
            if count != expected:
                raise ModelError(f"{label}: the UNet takes {count} time ids; an SDXL {'refiner' if refiner else 'base'} "
                                 f"model takes {expected}.")
            unet_inputs += [("time_ids", (batch, count), f16), ("text_embeds", (batch, pooled), f16)]
            unet_meta[META_FORCE_ZEROS] = "true" if parts.force_zeros_for_empty_prompt else "false"
        if chunk_unet:
            names = M.chunk1_output_names(unet)
            with torch.no_grad():
                outs = M.UnetChunk1Module(unet)(*(torch.zeros(s) for _, s, _ in unet_inputs))
            c1 = _convert(M.UnetChunk1Module(unet), unet_inputs, [(n, f16) for n in names], precision=unet_precision, macos=macos)
            save(c1, "UnetChunk1", f"{label}: UNet, first half", unet_meta, compress=True)
            cancel.raise_if_cancelled()
            c2_inputs = [unet_inputs[2]] + [(n, tuple(o.shape), f16) for n, o in zip(names, outs)]
            c2 = _convert(M.UnetChunk2Module(unet), c2_inputs, [("noise_pred", f32)], precision=unet_precision, macos=macos)
            save(c2, "UnetChunk2", f"{label}: UNet, second half", unet_meta, compress=True)
        elif nets:
            from heyim_desktop.core.coreml.controlnet import controlnet_inputs, residual_specs

            residuals = residual_specs(nets[0], unet_inputs, (h, w))
            un = _convert(M.ControlledUnetModule(unet), [*unet_inputs, *residuals], [("noise_pred", f32)],
                          precision=unet_precision, macos=macos)
            save(un, "ControlledUnet", f"{label}: UNet taking ControlNet residuals", unet_meta, compress=True)
            (tmp / "controlnet").mkdir()
            for name, path, net in zip(net_names, net_paths, nets):
                cancel.raise_if_cancelled()
                report(stages.index(f"ControlNet {name}"))
                if residual_specs(net, unet_inputs, (h, w)) != residuals:
                    raise ModelError(f"{path.name} gives residuals of other shapes than the UNet takes.")
                M.use_attention(net, attention)
                cn = _convert(M.ControlNetModule(net), controlnet_inputs(unet_inputs, (h, w)),
                              [(n, f16) for n, _, _ in residuals])
                save(cn, f"controlnet/{name}", f"ControlNet {name} for {label}", {META_SOURCE: path.name})
        else:
            # fp16 compute, fp32 out: the scheduler's arithmetic wants the full-precision prediction.
            module = M.UnetXLModule(unet) if xl else M.UnetModule(unet)
            un = _convert(module, unet_inputs, [("noise_pred", f32)], precision=unet_precision, macos=macos)
            save(un, "Unet", f"{label}: UNet", unet_meta, compress=True)

        cancel.raise_if_cancelled()
        # An inpainting UNet takes 9 channels (latents + mask + masked latents); the VAE still makes 4.
        dec_inputs = [("z", (1, int(vae.config.latent_channels), lh, lw), vae_type)]
        vae_meta = {META_WEIGHTS: vae_weights, META_SCALING: repr(parts.scaling_factor)}
        if not reused("VAEDecoder", vae_weights, dec_inputs):
            dec = _convert(M.VAEDecoderModule(vae), dec_inputs, [("image", vae_type)], precision=vae_precision)
            save(dec, "VAEDecoder", f"{label}: VAE decoder", vae_meta)
        if include_encoder:
            cancel.raise_if_cancelled()
            enc_inputs = [("x", (1, 3, h, w), vae_type)]
            if not reused("VAEEncoder", vae_weights, enc_inputs):
                enc = _convert(M.VAEEncoderModule(vae), enc_inputs, [("latent", vae_type)], precision=vae_precision)
                save(enc, "VAEEncoder", f"{label}: VAE encoder", vae_meta)

        cancel.raise_if_cancelled()
        report(total - 1)
        for name in ("vocab.json", "merges.txt"):
            shutil.copy2(parts.tokenizer_dirs[0] / name, tmp / name)
        if xl:
            # The second tokenizer's own settings (SDXL's pads with "!"), so our engine pads alike.
            shutil.copytree(parts.tokenizer_dirs[-1], tmp / TOKENIZER_2)
        # Not part of Apple's layout; it keeps the model's own scheduler (prediction type, betas).
        (tmp / SCHEDULER_FILE).write_text(json.dumps(parts.scheduler_config, indent=2), encoding="utf-8")
        notes += [s.describe() for s in sizes]
        record = {"notes": notes, "quantize": bits, "minimum_macos": macos,
                  "sizes": {s.name: {"before": s.before, "after": s.after} for s in sizes}}
        (tmp / NOTES_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        parts.release()
    if progress is not None:
        progress(ConversionProgress(total, total, "Done", time.perf_counter() - t0))
    log.info("converted %s to %s in %.1fs", src, dest, time.perf_counter() - t0)
    return dest


def conversion_notes(folder: str | os.PathLike[str]) -> list[str]:
    """What the conversion into ``folder`` did, for people ([] for folders HeyIm did not convert)."""
    try:
        data = json.loads((Path(folder) / NOTES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    notes = data.get("notes") if isinstance(data, dict) else None
    return [str(n) for n in notes] if isinstance(notes, list) else []
