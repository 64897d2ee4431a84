"""Recommended models HeyIm can download, with their size and licence shown before anything starts.

Sizes here are approximate (for the list); the exact size comes from the hub when a download is
planned (``download.plan_download``). On macOS the list is Apple's Core ML conversions (Neural
Engine); elsewhere diffusers-format PyTorch models. fp32 weights are fetched for PyTorch models
because they load on every device (the engine casts to fp16 on a GPU).

An entry can come from more than one repository: a GGUF variant is the family's diffusers folder
from the base repository without its transformer weights, plus one GGUF transformer file from a
GGUF repository, placed in the folder's ``transformer/`` (where ``core.families.single_file`` finds it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

_TORCH_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/*",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)

#: SDXL's second text encoder and tokenizer join the SD files.
_SDXL_FILES = (
    *_TORCH_FILES,
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "tokenizer_2/*",
)

#: SD 3.5: two CLIP encoders and T5-XXL (sharded), each with its tokenizer.
_SD3_FILES = (
    "model_index.json",
    "scheduler/*",
    *(f"{part}/*.json" for part in ("text_encoder", "text_encoder_2", "text_encoder_3", "transformer", "vae")),
    *(f"{part}/*.safetensors" for part in ("text_encoder", "text_encoder_2", "text_encoder_3", "transformer", "vae")),
    "tokenizer/*",
    "tokenizer_2/*",
    "tokenizer_3/*",
)

SD35_MEDIUM_TERMS = (
    "Stable Diffusion 3.5 Medium is released under the Stability AI Community License. It is free for research, "
    "non-commercial use, and commercial use by individuals and organisations with less than USD 1 million in "
    "annual revenue; above that, Stability AI's Enterprise licence is needed. The model is gated on Hugging "
    "Face: sign in at huggingface.co, open stabilityai/stable-diffusion-3.5-medium and accept the licence "
    "there, then run `hf auth login` (or set HF_TOKEN) on this computer; HeyIm downloads with that token. "
    "Read the full licence on the model's page before accepting."
)

#: A diffusion-transformer folder (Z-Image, FLUX.2 [klein]): sharded weights, so whole subfolders.
_DIT_FILES = (
    "model_index.json",
    "scheduler/*",
    "text_encoder/*.json",
    "text_encoder/*.safetensors",
    "tokenizer/*",
    "transformer/*.json",
    "transformer/*.safetensors",
    "vae/*.json",
    "vae/*.safetensors",
)


#: The GGUF variants' base files: the same folder with the transformer's config but not its weights
#: (nor the weights' shard index, which would name files that are not there).
_DIT_GGUF_EXCLUDE = ("transformer/*.safetensors", "transformer/*.index.json")


def coreml_files(subfolder: str, *, sdxl: bool = False, chunked: bool = False) -> tuple[str, ...]:
    """The files of one Core ML variant that HeyIm's engine loads: the text encoder(s), the
    whole UNet (or its two chunks, for a variant that only has those), the VAE decoder and
    encoder, the tokenizer; never the other chunks or the safety checker it does not run."""
    models = ["TextEncoder", *(["TextEncoder2"] if sdxl else []),
              *(["UnetChunk1", "UnetChunk2"] if chunked else ["Unet"]), "VAEDecoder", "VAEEncoder"]
    return (*(f"{subfolder}/{m}.mlmodelc/*" for m in models), f"{subfolder}/vocab.json", f"{subfolder}/merges.txt")


@dataclass(frozen=True)
class ExtraSource:
    """One more repository a catalogue entry takes files from (a GGUF transformer, say).

    ``pattern`` (fnmatch, case-insensitive; without a ``/`` it looks at the top level only) must match
    exactly one file of the repository, so a renamed file still matches and an ambiguous one is
    refused before anything is fetched. The file
    is saved as ``dest`` inside the model folder: a name HeyIm chose, never one taken from the hub.
    """

    repo_id: str
    pattern: str
    dest: str
    revision: str = "main"


@dataclass(frozen=True)
class CatalogueEntry:
    name: str  # what the user types: `heyim-desktop models download sd15`
    title: str
    repo_id: str
    kind: str  # "diffusers", "coreml" or "upscaler"
    base: str
    approx_bytes: int
    files: tuple[str, ...]  # fnmatch patterns of the repo files to fetch
    subfolder: str = ""  # the model's root inside the repo (Core ML: "split_einsum/compiled")
    revision: str = "main"
    note: str = ""
    platform: str = "any"  # "darwin" for Core ML entries, "any" otherwise
    #: Terms the user must accept before HeyIm downloads the model (shown in full; "" for open licences).
    licence_terms: str = ""
    #: The licence's name, shown in the list before download ("" where the note says it).
    licence: str = ""
    #: fnmatch patterns of ``repo_id``'s files left out although ``files`` matches them.
    exclude: tuple[str, ...] = ()
    #: Files from other repositories that complete the model (GGUF variants: the transformer).
    extra_sources: tuple[ExtraSource, ...] = ()
    #: The GGUF quantization of a quantized variant ("Q4_K_M"), for the list; "" otherwise.
    quantization: str = ""
    #: The model's folder name ("" : the repository's name). Variants of one repository need their own.
    folder: str = ""
    #: A quantized variant's transformer file size (GB, published listings), for what fits; 0: from the format.
    transformer_gb: float = 0.0

    @property
    def folder_name(self) -> str:
        return self.folder or self.repo_id.split("/")[-1]

    @property
    def repos(self) -> tuple[str, ...]:
        """Every repository the download takes files from, the base one first."""
        return (self.repo_id, *(s.repo_id for s in self.extra_sources))


CATALOGUE: tuple[CatalogueEntry, ...] = (
    CatalogueEntry("sd15", "Stable Diffusion 1.5", "stable-diffusion-v1-5/stable-diffusion-v1-5", "diffusers",
                   "SD1", 4_270_000_000, _TORCH_FILES, note="512x512, the classic general-purpose model."),
    CatalogueEntry("lcm-dreamshaper", "LCM Dreamshaper v7 (4-8 steps)", "SimianLuo/LCM_Dreamshaper_v7", "diffusers",
                   "SD1", 4_270_000_000, _TORCH_FILES,
                   note="Few-step model: the LCM scheduler, 4-8 steps, guidance 8 (set when you pick it)."),
    CatalogueEntry("sd-turbo", "SD-Turbo (1-4 steps)", "stabilityai/sd-turbo", "diffusers", "SD2", 5_210_000_000,
                   _TORCH_FILES, note="1-4 steps, guidance 0 (set when you pick it), 512x512. Non-commercial licence."),
    CatalogueEntry("sdxl-base", "Stable Diffusion XL base 1.0", "stabilityai/stable-diffusion-xl-base-1.0",
                   "diffusers", "SDXL", 13_880_000_000, _SDXL_FILES,
                   note="1024x1024, the general-purpose SDXL model. Needs 16 GB of memory or more."),
    CatalogueEntry("sdxl-turbo", "SDXL-Turbo (1-4 steps)", "stabilityai/sdxl-turbo", "diffusers", "SDXL",
                   13_880_000_000, _SDXL_FILES,
                   note="1-4 steps, guidance 0 (set when you pick it), 512x512. Non-commercial licence."),
    # Sizes estimated from the published parameter counts in bf16 (no network here): Z-Image Turbo's
    # 6B transformer (12 GB) + Qwen3-4B text encoder (8 GB) + VAE; [klein] 4B's 4B transformer (8 GB)
    # + Qwen3-4B (8 GB) + VAE. The exact size comes from the hub when the download is planned.
    CatalogueEntry("z-image-turbo", "Z-Image Turbo (8-9 steps)", "Tongyi-MAI/Z-Image-Turbo", "diffusers", "Z-Image",
                   20_500_000_000, _DIT_FILES,
                   note="Apache-2.0. 9 steps, guidance 0 (set when you pick it), 1024x1024. "
                        "Its weights are about 20 GB in bf16 (estimated from its parameter count).",
                   licence="Apache-2.0"),
    # GGUF variants: the base repo's folder without the transformer's weights (text encoder in bf16,
    # about 8 GB for Qwen3-4B, VAE about 0.2 GB) plus unsloth's Q4_K_M conversion of the transformer
    # (published listings give about 5.0 GB for Z-Image Turbo's; [klein] 4B's Q5_K_M is listed at
    # 3.1 GB, so about 2.6 GB for its Q4_K_M, from 4B parameters at about 4.9 bits each).
    CatalogueEntry("z-image-turbo-gguf", "Z-Image Turbo, GGUF Q4_K_M (8-9 steps)", "Tongyi-MAI/Z-Image-Turbo",
                   "diffusers", "Z-Image", 13_200_000_000, _DIT_FILES, exclude=_DIT_GGUF_EXCLUDE,
                   extra_sources=(ExtraSource("unsloth/Z-Image-Turbo-GGUF", "*-Q4_K_M.gguf",
                                              "transformer/z-image-turbo-Q4_K_M.gguf"),),
                   quantization="Q4_K_M", folder="Z-Image-Turbo-GGUF-Q4_K_M", licence="Apache-2.0", transformer_gb=5.0,
                   note="Apache-2.0 (the model's; unsloth's GGUF conversion keeps it). The transformer quantized "
                        "to 4 bits (about 5 GB instead of 12), the text encoder and VAE from Tongyi-MAI's folder. "
                        "About 13 GB in all (estimated). 9 steps, guidance 0, 1024x1024."),
    CatalogueEntry("flux2-klein-4b", "FLUX.2 [klein] 4B (4 steps)", "black-forest-labs/FLUX.2-klein-4B", "diffusers",
                   "FLUX.2 [klein]", 16_300_000_000, _DIT_FILES,
                   note="Apache-2.0. 4 steps (set when you pick it), 1024x1024, no negative prompt. "
                        "Its weights are about 16 GB in bf16 (estimated from its parameter count).",
                   licence="Apache-2.0"),
    CatalogueEntry("flux2-klein-4b-gguf", "FLUX.2 [klein] 4B, GGUF Q4_K_M (4 steps)",
                   "black-forest-labs/FLUX.2-klein-4B", "diffusers", "FLUX.2 [klein]", 10_800_000_000, _DIT_FILES,
                   exclude=_DIT_GGUF_EXCLUDE,
                   extra_sources=(ExtraSource("unsloth/FLUX.2-klein-4B-GGUF", "*-Q4_K_M.gguf",
                                              "transformer/flux-2-klein-4b-Q4_K_M.gguf"),),
                   quantization="Q4_K_M", folder="FLUX.2-klein-4B-GGUF-Q4_K_M", licence="Apache-2.0", transformer_gb=2.6,
                   note="Apache-2.0 (the model's; unsloth's GGUF conversion keeps it). The transformer quantized "
                        "to 4 bits (about 2.6 GB instead of 7.8), the text encoder and VAE from Black Forest Labs' "
                        "folder. About 11 GB in all (estimated). 4 steps, 1024x1024, no negative prompt."),
    # Estimated from the published parameter counts in bf16/fp16: 2.5B MMDiT-X (5 GB), T5-XXL 4.8B
    # (9.5 GB), CLIP-G (1.4 GB), CLIP-L (0.25 GB), VAE. The exact size comes from the hub.
    CatalogueEntry("sd35-medium", "Stable Diffusion 3.5 Medium", "stabilityai/stable-diffusion-3.5-medium",
                   "diffusers", "SD 3.5", 16_200_000_000, _SD3_FILES,
                   note="Stability AI Community License (accept it on the hub first). 40 steps, CFG 4.5, "
                        "1024x1024. About 16 GB (estimated from its parameter count).",
                   licence_terms=SD35_MEDIUM_TERMS, licence="Stability AI Community License"),
    CatalogueEntry("coreml-sd15", "Stable Diffusion 1.5 (Core ML, Neural Engine)", "apple/coreml-stable-diffusion-v1-5",
                   "coreml", "SD1", 2_580_000_000, coreml_files("split_einsum/compiled"), subfolder="split_einsum/compiled",
                   platform="darwin"),
    CatalogueEntry("coreml-sd21", "Stable Diffusion 2.1 base (Core ML, Neural Engine)",
                   "apple/coreml-stable-diffusion-2-1-base", "coreml", "SD2", 2_600_000_000,
                   coreml_files("split_einsum/compiled"), subfolder="split_einsum/compiled", platform="darwin"),
    CatalogueEntry("coreml-sdxl", "Stable Diffusion XL base (Core ML)", "apple/coreml-stable-diffusion-xl-base",
                   "coreml", "SDXL", 6_950_000_000, coreml_files("original/compiled", sdxl=True), subfolder="original/compiled",
                   platform="darwin", note="Needs 16 GB of memory or more."),
    # Upscalers land in models/upscalers/. Real-ESRGAN ships as .pth: converted to safetensors on first use, out
    # of process. Repo ids and file names as public download scripts use them (resolve/main/<file>); the SPAN
    # file's size is the one those scripts pin (4,461,056 bytes). plan_download shows the exact size first.
    CatalogueEntry("realesrgan-x4", "Real-ESRGAN x4 (photos, general)", "ai-forever/Real-ESRGAN", "upscaler", "x4",
                   67_000_000, ("RealESRGAN_x4.pth",),
                   note="RRDBNet, 4x. Licence: BSD-3-Clause. Slow on a CPU; tiles keep memory bounded."),
    CatalogueEntry("span-x2", "2x NomosUni SPAN (small, fast)", "Phips/2xNomosUni_span_multijpg", "upscaler", "x2",
                   4_461_056, ("2xNomosUni_span_multijpg.safetensors",),
                   note="SPAN, 2x, about 4.5 MB: fast enough for a CPU. Licence: CC-BY-4.0 (credit Philip Hofmann)."),
)


def catalogue(platform: str | None = None) -> list[CatalogueEntry]:
    """Entries that run on ``platform`` (default: this machine)."""
    plat = platform or sys.platform
    if plat == "darwin":
        return [e for e in CATALOGUE if e.platform == "darwin"] + [e for e in CATALOGUE if e.platform == "any"]
    return [e for e in CATALOGUE if e.platform == "any"]


def find_entry(name: str) -> CatalogueEntry | None:
    """The entry called ``name``, or the one whose (base) repository it is: the full variant, listed first."""
    for entry in CATALOGUE:
        if name.lower() in (entry.name, entry.repo_id.lower()):
            return entry
    return None


def describe(entry: CatalogueEntry) -> str:
    """One line for the lists shown before download: the estimated size, the licence, the sources."""
    from heyim_desktop.models.types import human_size

    parts = [f"about {human_size(entry.approx_bytes)}"]
    if entry.quantization:
        parts.append(f"GGUF {entry.quantization}")
    if entry.licence:
        parts.append(entry.licence + (" (accept it on the hub first)" if entry.licence_terms else ""))
    fits = memory_line(entry)
    if fits:
        parts.append(fits)
    return " · ".join(parts)


def memory_line(entry: CatalogueEntry) -> str:
    """What memory a Z-Image / FLUX.2 [klein] / SD 3.5 entry needs (core.families.fit); "" for the others."""
    from heyim_desktop.core.families.fit import FAMILY_OF_BASE, fit_line

    family = FAMILY_OF_BASE.get(entry.base)
    if family is None:
        return ""
    return fit_line(family, entry.quantization or "bf16", transformer_gb=entry.transformer_gb or None)


def library_memory_line(model: Any) -> str:
    """What memory a model in the library needs (a Z-Image / FLUX.2 [klein] / SD 3.5 folder or GGUF file)."""
    from heyim_desktop.core.families.fit import FAMILY_OF_BASE, fit_line

    family = FAMILY_OF_BASE.get(str(getattr(model, "base", "")))
    if family is None:
        return ""
    size = int(getattr(model, "size_bytes", 0) or 0)
    single = getattr(model, "kind", "") in ("gguf", "safetensors") and size > 0
    return fit_line(family, getattr(model, "quantization", "") or "bf16", transformer_gb=size / 1e9 if single else None)
