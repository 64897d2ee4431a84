"""A catalogue GGUF variant served by the fake hub: a tiny family folder as the base repository (its
transformer weights included, as on the hub, so a test can see they are not fetched) and a second
repository holding two GGUF conversions of its transformer (written with the ``gguf`` package)."""

from __future__ import annotations

from pathlib import Path

from heyim_desktop.models.catalogue import _DIT_FILES, _DIT_GGUF_EXCLUDE, CatalogueEntry, ExtraSource

GGUF_REPO = "heyim/tiny-gguf"
#: The real repositories' shard index lies beside the transformer's config; the variant leaves it out.
INDEX = "transformer/diffusion_pytorch_model.safetensors.index.json"


def base_repo_id(family: str) -> str:
    return f"heyim/tiny-{family}"


def gguf_files(model: Path, tmp: Path, family: str) -> dict[str, bytes]:
    """The GGUF repository's files: a Q8_0 and a Q4_0 conversion of ``model``'s transformer, and a README."""
    from heyim_desktop.core.families.tiny import write_tiny_gguf

    # Like unsloth's repositories, a diffusers folder may sit beside the files: its GGUF is not a candidate.
    files = {"README.md": b"# tiny GGUF conversions\n", "text_encoder/qwen-Q8_0.gguf": b"GGUF not the transformer"}
    for quant in ("Q8_0", "Q4_0"):
        name = f"tiny-{family}-{quant}.gguf"
        files[name] = write_tiny_gguf(model, tmp / name, quantization=quant).read_bytes()
    return files


def gguf_entry(family: str, *, pattern: str = "*-q8_0.gguf", base: str = "Z-Image") -> CatalogueEntry:
    """A two-source entry as the catalogue's GGUF variants are: the folder without the transformer's
    weights, and the one GGUF file the (case-insensitive) pattern matches, saved in transformer/."""
    return CatalogueEntry(
        f"tiny-{family}-gguf", f"Tiny {family} GGUF Q8_0", base_repo_id(family), "diffusers", base, 1, _DIT_FILES,
        exclude=_DIT_GGUF_EXCLUDE,
        extra_sources=(ExtraSource(GGUF_REPO, pattern, f"transformer/tiny-{family}-Q8_0.gguf"),),
        quantization="Q8_0", folder=f"tiny-{family}-gguf", licence="Apache-2.0",
    )
