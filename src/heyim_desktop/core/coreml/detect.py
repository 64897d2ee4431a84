"""Recognising a Core ML Stable Diffusion resources folder (Apple's layout).

Pure and cheap: no torch, no coremltools, no macOS. The model library calls
:func:`detect_coreml_folder` to list Core ML models; the engine calls it before loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from heyim_desktop.core.coreml.specs import ModelSpec, TensorSpec, read_model_spec
from heyim_desktop.core.errors import ModelError

SUFFIXES = (".mlmodelc", ".mlpackage")
TOKENIZER_FILES = ("vocab.json", "merges.txt")
OPTIONAL_MODELS = ("VAEEncoder", "SafetyChecker", "TextEncoder2")
#: Subfolders where downloads keep the resources (Hugging Face apple/coreml-*, Mochi Diffusion).
_NESTED = ("Resources", "compiled", "split_einsum/compiled", "original/compiled", "split_einsum", "original")
#: Written by HeyIm's converter into each model's metadata (preferred over op sniffing).
META_ATTENTION = "heyim.attention"

#: Written by HeyIm's converter into the VAEDecoder's metadata: the source VAE's latent scale.
META_SCALING = "heyim.scaling_factor"
#: ... and into the Unet's: whether an empty negative prompt is all zeros (SDXL base: yes).
META_FORCE_ZEROS = "heyim.force_zeros_for_empty_prompt"
#: SDXL's second tokenizer pads with "!" (OpenCLIP's pad id 0); HeyIm's own conversions keep the
#: source's tokenizer_2 configuration in this subfolder.
TOKENIZER_2 = "tokenizer_2"

KIND_SD = "SD 1.x/2.x"
KIND_SDXL = "SDXL"

#: How a VAEEncoder is called (Apple changed the contract twice).
#: "moments": one image input (named ``x`` today, ``z`` in some releases) -> mean and log-variance.
#: "noised": Apple's first form, five inputs, returns the latent already sampled, scaled and noised.
ENCODER_MOMENTS = "moments"
ENCODER_NOISED = "noised"
NOISED_ENCODER_INPUTS = ("sample", "diagonal_noise", "noise", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")


@dataclass(frozen=True)
class CoreMLModelInfo:
    """What a Core ML resources folder holds and what it can do."""

    folder: Path
    kind: str
    #: "split_einsum" (Neural Engine friendly) or "original" (GPU friendly).
    attention: str
    #: (width, height): the only image size this model makes (static shapes).
    size: tuple[int, int]
    #: Images the UNet takes per call: 2 runs guidance in one call, 1 needs two calls.
    batch: int
    img2img: bool
    chunked: bool
    has_safety_checker: bool
    models: tuple[ModelSpec, ...]
    #: ENCODER_MOMENTS, ENCODER_NOISED, or None without a usable VAEEncoder.
    encoder_form: str | None = None
    #: Why image-to-image is off when the folder has a VAEEncoder we cannot use ("" otherwise).
    img2img_note: str = ""
    #: The UNet's weight palette in bits (HeyIm's ``--quantize``), None for fp16 weights.
    bits: int | None = None
    #: An SDXL refiner: TextEncoder2 only, time ids with an aesthetic score (5 per image).
    refiner: bool = False

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def default_compute_units(self) -> str:
        return "CPU_AND_NE" if self.attention == "split_einsum" else "CPU_AND_GPU"

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def has(self, name: str) -> bool:
        return any(spec.name == name for spec in self.models)

    @property
    def text_encoder_names(self) -> tuple[str, ...]:
        return tuple(n for n in ("TextEncoder", "TextEncoder2") if self.has(n))

    @property
    def controlnet_names(self) -> tuple[str, ...]:
        """The ControlNets in the folder's ``controlnet/`` (models named ``controlnet/<name>``)."""
        return tuple(s.name.split("/", 1)[1] for s in self.models if s.name.startswith("controlnet/"))

    @property
    def unet_names(self) -> tuple[str, ...]:
        return ("UnetChunk1", "UnetChunk2") if self.chunked else ("Unet",)


def _find(folder: Path, name: str) -> Path | None:
    for suffix in SUFFIXES:
        path = folder / f"{name}{suffix}"
        if path.is_dir():
            return path
    return None


def resources_folder(path: Path) -> Path:
    """``path`` itself or the nested folder of a download that holds the models."""
    if _find(path, "TextEncoder") or _find(path, "TextEncoder2") or _find(path, "Unet") or _find(path, "UnetChunk1") or _find(path, "ControlledUnet"):
        return path
    for sub in _NESTED:
        nested = path / sub
        if nested.is_dir() and (_find(nested, "Unet") or _find(nested, "UnetChunk1") or _find(nested, "ControlledUnet")):
            return nested
    return path


def looks_like_coreml_folder(path: Path) -> bool:
    """A quick check for routing: does ``path`` (or its resources subfolder) hold Core ML models?"""
    if not path.is_dir():
        return False
    folder = resources_folder(path)
    return any(_find(folder, n) for n in ("Unet", "UnetChunk1", "ControlledUnet", "TextEncoder", "TextEncoder2", "VAEDecoder"))


def _missing(folder: Path, what: str) -> ModelError:
    return ModelError(f"{folder.name} is not a complete Core ML model: {what} is missing.")


def _need(folder: Path, name: str) -> Path:
    path = _find(folder, name)
    if path is None:
        raise _missing(folder, f"{name}.mlmodelc (or {name}.mlpackage)")
    return path


def _unet_sample(spec: ModelSpec) -> TensorSpec:
    sample = spec.input("sample")
    if sample is None or len(sample.shape) != 4:
        raise ModelError(f"{spec.path.name} has no 4-D 'sample' input; it is not a Stable Diffusion UNet.")
    return sample


def encoder_form(spec: ModelSpec, latent_channels: int = 4) -> tuple[str | None, str]:
    """How to call a VAEEncoder, or (None, the reason it cannot be used)."""
    names = {t.name for t in spec.inputs}
    if names == set(NOISED_ENCODER_INPUTS):
        image, latent = spec.input("sample"), spec.input("noise")
        assert image is not None and latent is not None
        if len(image.shape) != 4 or len(latent.shape) != 4 or latent.shape[1] != latent_channels:
            return None, f"{spec.path.name}: unexpected shapes {image.shape} / {latent.shape} for its image and noise inputs"
        if len(spec.outputs) != 1:
            return None, f"{spec.path.name}: expected one output (the noised latent), found {len(spec.outputs)}"
        return ENCODER_NOISED, ""
    if len(spec.inputs) != 1:
        listed = ", ".join(t.name for t in spec.inputs) or "none"
        return None, f"{spec.path.name} takes inputs HeyIm does not know ({listed})"
    image = spec.inputs[0]
    if len(image.shape) != 4 or image.shape[1] != 3:
        return None, f"{spec.path.name}: its input '{image.name}' is {image.shape}, not an RGB image (1, 3, H, W)"
    out = spec.outputs[0] if len(spec.outputs) == 1 else spec.output("latent")
    if out is None or len(out.shape) != 4 or out.shape[1] != 2 * latent_channels:
        got = "several outputs" if out is None else f"{out.shape}"
        return None, f"{spec.path.name} returns {got}, not the latent distribution (1, {2 * latent_channels}, h, w)"
    return ENCODER_MOMENTS, ""


def detect_coreml_folder(path: str | Path) -> CoreMLModelInfo:
    """Read a resources folder; raise :class:`ModelError` naming what is missing or wrong."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ModelError(f"Core ML model folder not found: {root}")
    folder = resources_folder(root)
    # An SDXL refiner has the second text encoder only (checked against its UNet below).
    first_text = _find(folder, "TextEncoder")
    paths: dict[str, Path] = {"TextEncoder": first_text} if first_text else {}
    if first_text is None and _find(folder, "TextEncoder2") is None:
        raise _missing(folder, "TextEncoder.mlmodelc (or TextEncoder.mlpackage)")
    # Apple's UNet with ControlNet inputs stands in for the plain one (fed zeros without a ControlNet).
    unet = _find(folder, "Unet") or _find(folder, "ControlledUnet")
    chunk1, chunk2 = _find(folder, "UnetChunk1"), _find(folder, "UnetChunk2")
    if unet is not None:
        paths["Unet"] = unet
    elif chunk1 is not None or chunk2 is not None:
        paths["UnetChunk1"] = _need(folder, "UnetChunk1")
        paths["UnetChunk2"] = _need(folder, "UnetChunk2")
    else:
        raise _missing(folder, "Unet.mlmodelc (or UnetChunk1 and UnetChunk2)")
    paths["VAEDecoder"] = _need(folder, "VAEDecoder")
    for name in TOKENIZER_FILES:
        if not (folder / name).is_file():
            raise _missing(folder, name)
    for name in OPTIONAL_MODELS:
        found = _find(folder, name)
        if found is not None:
            paths[name] = found
    nets = folder / "controlnet"
    if nets.is_dir():
        for item in sorted(nets.iterdir()):
            if item.is_dir() and item.suffix in SUFFIXES:
                paths.setdefault(f"controlnet/{item.stem}", item)
    try:
        specs = tuple(read_model_spec(name, p) for name, p in paths.items())
    except ModelError as exc:  # the messages start with the model's file name
        raise ModelError(f"{folder.name}/{exc}") from None
    by_name = {s.name: s for s in specs}
    chunked = "Unet" not in by_name
    first = by_name["UnetChunk1" if chunked else "Unet"]
    sample = _unet_sample(first)
    batch, _, lh, lw = sample.shape
    if batch not in (1, 2):
        raise ModelError(f"{first.path.name}: unsupported UNet batch size {batch} (expected 1 or 2).")
    unet_inputs = {t.name for s in specs if s.name.startswith("Unet") for t in s.inputs}
    kind = KIND_SDXL if {"time_ids", "text_embeds"} & unet_inputs or "TextEncoder2" in by_name else KIND_SD
    unets = [s for s in specs if s.name.startswith("Unet")]
    refiner = kind == KIND_SDXL and _time_ids_per_row(first, batch) == 5
    if "TextEncoder" not in by_name and not refiner:
        raise _missing(folder, "TextEncoder.mlmodelc (or TextEncoder.mlpackage); only an SDXL refiner has TextEncoder2 alone")
    form: str | None = None
    note = ""
    if "VAEEncoder" in by_name:
        decoder_z = by_name["VAEDecoder"].inputs[0].shape if by_name["VAEDecoder"].inputs else ()
        channels = decoder_z[1] if len(decoder_z) == 4 else 4
        form, note = encoder_form(by_name["VAEEncoder"], channels)
        if form is None:
            note = f"image-to-image is off: {note}"
    tagged = next((s.meta(META_ATTENTION) for s in unets if s.meta(META_ATTENTION)), None)
    if tagged in ("split_einsum", "original"):
        attention = tagged
    elif any(s.has_einsum for s in unets):
        attention = "split_einsum"
    else:
        attention = "original"
    return CoreMLModelInfo(
        folder=folder,
        kind=kind,
        attention=attention,
        size=(lw * 8, lh * 8),
        batch=batch,
        img2img=form is not None,
        chunked=chunked,
        has_safety_checker="SafetyChecker" in by_name,
        models=specs,
        encoder_form=form,
        img2img_note=note,
        bits=next((int(b) for s in unets if (b := s.meta("heyim.bits") or "").isdigit()), None),
        refiner=refiner,
    )


def _time_ids_per_row(unet: ModelSpec, batch: int) -> int | None:
    """Time ids per image the UNet's spec declares ((B, 6) or flat (6B,) for the base, 5 for a refiner)."""
    ids = unet.input("time_ids")
    if ids is None:
        return None
    count = 1
    for dim in ids.shape:
        count *= int(dim)
    per_row, rest = divmod(count, batch)
    return None if rest else per_row
