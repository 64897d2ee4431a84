"""The diffusion-transformer model families (Z-Image, FLUX.2 [klein], SD 3.5) as plain data.

Each family runs diffusers' own pipeline on PyTorch (see :mod:`.engine`); this table says what
the window, the API and the CLI need to know of it. No torch here: the model library reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from heyim_desktop.core.capabilities import Capabilities, GuidanceKind, Recommended

#: The sampler a flow-matching family runs: its pipeline's own FlowMatchEulerDiscreteScheduler, named
#: as AUTOMATIC1111 Forge and ComfyUI name it in metadata ("Euler"), so Reuse Settings reads it back.
FLOW_MATCH_SAMPLER = "Euler"


@dataclass(frozen=True)
class Family:
    """One diffusion-transformer family."""

    key: str  # Capabilities.family
    label: str  # what the model library shows
    #: diffusers pipeline class names a model_index.json may name for this family.
    pipelines: tuple[str, ...]
    #: the class the engine drives (text-to-image)
    pipeline: str
    #: diffusers' image-to-image and inpainting pipelines for this family (None: diffusers has none)
    img2img_pipeline: str | None
    inpaint_pipeline: str | None
    #: components every model folder of this family has (subfolders with weights).
    weighted_parts: tuple[str, ...]
    text_encoders: tuple[str, ...]
    sampler: str
    guidance: GuidanceKind
    negative_prompt: bool
    default_size: tuple[int, int]
    native_sizes: tuple[tuple[int, int], ...]
    recommended_steps: int
    recommended_guidance: float
    #: guidance range the window offers (the pipeline's own convention).
    guidance_range: tuple[float, float]
    #: safetensors key prefixes (after any ``model.diffusion_model.``) only this family's transformer
    #: has; any one of them marks a single-file checkpoint as this family.
    transformer_keys: tuple[str, ...]
    #: where the recommended settings come from
    source: str
    #: image-to-image runs the inpainting pipeline with a white (repaint everything) mask: diffusers'
    #: FLUX.2 [klein] has no image-to-image pipeline, and its inpainting one with a full mask is one.
    img2img_by_full_mask: bool = False
    #: the VAE's latent space for the live preview's published factors (core.preview.LATENT_SPACES)
    latent_space: str | None = None
    #: components a folder may leave out (SD 3.5's T5: diffusers runs without it); weighed when present.
    optional_parts: tuple[str, ...] = ()

    def listed_parts(self, index: dict[str, object]) -> tuple[str, ...]:
        """The weighted components a model_index.json lists (the optional ones only when named)."""
        return tuple(p for p in (*self.weighted_parts, *self.optional_parts)
                     if isinstance(index.get(p), list) and index.get(p) != [None, None])

    def capabilities(self, *, size_step: int, default_size: tuple[int, int] | None = None,
                     max_batch: int = 1, guidance: GuidanceKind | None = None) -> Capabilities:
        return Capabilities(
            family=self.key,
            img2img=self.img2img_pipeline is not None,
            # diffusers' family inpainting pipelines blend the kept area back after each step
            inpaint="blend" if self.inpaint_pipeline is not None else "none",
            prompt_weights=False,
            max_prompt_chunks=1,
            token_window=512,
            guidance=guidance or self.guidance,
            guidance_range=self.guidance_range,
            negative_prompt=self.negative_prompt,
            default_size=default_size or self.default_size,
            size_step=size_step,
            max_batch=max_batch,
            runtime_lora=True,  # diffusers' load_lora_weights on the transformer
            clip_skip=False,
            schedulers=(self.sampler,),
            recommended=Recommended(
                steps=self.recommended_steps, guidance=self.recommended_guidance,
                scheduler=self.sampler, source=self.source,
            ),
        )


_SQUAREISH = ((1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768), (768, 1344))

ZIMAGE = Family(
    key="zimage",
    label="Z-Image",
    pipelines=("ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline"),
    pipeline="ZImagePipeline",
    img2img_pipeline="ZImageImg2ImgPipeline",
    inpaint_pipeline="ZImageInpaintPipeline",
    weighted_parts=("transformer", "vae", "text_encoder"),
    text_encoders=("Qwen3",),
    sampler=FLOW_MATCH_SAMPLER,
    # Z-Image's pipeline applies true CFG when guidance_scale > 0; Turbo is distilled to run at 0.
    guidance="cfg",
    negative_prompt=True,
    default_size=(1024, 1024),
    native_sizes=_SQUAREISH,
    recommended_steps=9,
    recommended_guidance=0.0,
    guidance_range=(0.0, 10.0),
    transformer_keys=("noise_refiner.", "context_refiner.", "cap_embedder."),
    source="Z-Image Turbo model card (9 steps, guidance 0)",
    latent_space="flux1",  # Z-Image decodes with FLUX.1's 16-channel VAE
)

FLUX2_KLEIN = Family(
    key="flux2",
    label="FLUX.2 [klein]",
    pipelines=("Flux2KleinPipeline", "Flux2KleinInpaintPipeline"),
    pipeline="Flux2KleinPipeline",
    img2img_pipeline="Flux2KleinInpaintPipeline",
    inpaint_pipeline="Flux2KleinInpaintPipeline",
    img2img_by_full_mask=True,
    weighted_parts=("transformer", "vae", "text_encoder"),
    text_encoders=("Qwen3",),
    sampler=FLOW_MATCH_SAMPLER,
    # True CFG (against an empty prompt) on the base model; the step-distilled [klein] ignores it
    # (the engine reports "none" for a folder whose model_index says is_distilled).
    guidance="cfg",
    negative_prompt=False,
    default_size=(1024, 1024),
    native_sizes=_SQUAREISH,
    recommended_steps=4,
    recommended_guidance=1.0,
    guidance_range=(0.0, 10.0),
    transformer_keys=("double_stream_modulation_img.", "single_stream_modulation."),
    source="FLUX.2 [klein] model card (4 steps, distilled)",
    latent_space="flux2",  # FLUX.2's 32-channel VAE, packed into 128-channel 2x2 patches
)

SD3 = Family(
    key="sd3",
    label="SD 3.5",
    pipelines=("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline"),
    pipeline="StableDiffusion3Pipeline",
    img2img_pipeline="StableDiffusion3Img2ImgPipeline",
    inpaint_pipeline="StableDiffusion3InpaintPipeline",
    weighted_parts=("transformer", "vae", "text_encoder", "text_encoder_2"),
    text_encoders=("CLIP-L", "CLIP-G", "T5-XXL"),
    sampler=FLOW_MATCH_SAMPLER,
    guidance="cfg",
    negative_prompt=True,
    default_size=(1024, 1024),
    native_sizes=_SQUAREISH,
    recommended_steps=40,
    recommended_guidance=4.5,
    guidance_range=(1.0, 15.0),
    # SAI's layout names its MMDiT blocks joint_blocks; diffusers' layout has time_text_embed.
    transformer_keys=("joint_blocks.", "time_text_embed."),
    source="SD 3.5 Medium model card (40 steps, CFG 4.5)",
    latent_space="sd3",  # SD 3's 16-channel VAE
    optional_parts=("text_encoder_3",),
)

FAMILIES: dict[str, Family] = {f.key: f for f in (ZIMAGE, FLUX2_KLEIN, SD3)}


def family_for_pipeline(class_name: str) -> Family | None:
    """The family whose pipeline a model_index.json's ``_class_name`` names, if any."""
    for family in FAMILIES.values():
        if class_name in family.pipelines:
            return family
    return None


def check_family_folder(folder: Path, index: dict[str, object], *, replaced: tuple[str, ...] = ()) -> Family:
    """Validate a family model folder without torch (weights are safetensors, headers sound).

    ``replaced``: parts whose weights come from elsewhere (a GGUF text encoder chosen explicitly), so
    their subfolders need only their ``config.json``."""
    from heyim_desktop.core.errors import ModelError
    from heyim_desktop.core.model_folder import _check_weights

    family = family_for_pipeline(str(index.get("_class_name", "")))
    if family is None:
        raise ModelError(f"{folder.name} is not a Z-Image, FLUX.2 [klein] or SD 3.5 model.")
    parts = list(family.listed_parts(index))
    missing = [p for p in (*parts, "tokenizer", "scheduler") if not (folder / p).is_dir()]
    if missing:
        raise ModelError(f"{folder.name} is incomplete: missing {', '.join(p + '/' for p in missing)}.")
    for part in parts:
        if part in replaced:
            if not (folder / part / "config.json").is_file():
                raise ModelError(f"{folder.name} is incomplete: {part}/config.json is missing.")
            continue
        files = sorted((folder / part).glob("*.safetensors"))
        if part == "transformer" and not files and any((folder / part).glob("*.gguf")):
            if not (folder / part / "config.json").is_file():
                raise ModelError(f"{folder.name} is incomplete: {part}/config.json is missing.")
            continue  # a GGUF-quantized transformer (core.families.single_file), header-checked when listed
        if part.startswith("text_encoder") and not files and any((folder / part).glob("*.gguf")):
            continue  # a GGUF text encoder (core.families.text_encoder_gguf), checked below
        if not files:
            if any(p.suffix in (".bin", ".ckpt", ".pt", ".pth") for p in (folder / part).iterdir()):
                raise ModelError(
                    f"{folder.name}/{part} has only pickle weights, which HeyIm never loads because they can "
                    "run code. Convert the model to .safetensors in the model library."
                )
            raise ModelError(f"{folder.name} is incomplete: {part}/ has no .safetensors weights.")
        if not (folder / part / "config.json").is_file():
            raise ModelError(f"{folder.name} is incomplete: {part}/config.json is missing.")
        for weights in files:
            _check_weights(folder, part, weights)
    from heyim_desktop.core.families.text_encoder_gguf import text_encoder_ggufs

    text_encoder_ggufs(folder, family, index, skip=replaced)  # header, architecture and sizes (no torch)
    return family


def read_family_index(folder: Path) -> tuple[Family, dict[str, object]] | None:
    """A folder's family and model_index.json when the index names a family pipeline (reads only the index)."""
    import json

    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict):
        return None
    family = family_for_pipeline(str(index.get("_class_name", "")))
    return (family, index) if family is not None else None


_WRAPPERS = ("model.diffusion_model.", "diffusion_model.", "model.")


def family_of_keys(keys: Iterable[str]) -> Family | None:
    """The family a single-file transformer's tensor names belong to (safetensors header only, no torch)."""
    stripped = set()
    for key in keys:
        for wrapper in _WRAPPERS:
            if key.startswith(wrapper):
                key = key[len(wrapper):]
                break
        stripped.add(key.split(".", 1)[0] + ".")
    for family in FAMILIES.values():
        if any(k in stripped for k in family.transformer_keys):
            return family
    return None
