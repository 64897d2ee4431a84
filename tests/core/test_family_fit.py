"""What fits in 8, 16 and 32 GB (core.families.fit): the arithmetic, the words, and where they are shown."""

from __future__ import annotations

import pytest

from heyim_desktop.core.families.fit import (
    PARTS_GB,
    USABLE_SHARE,
    WORKING_SET_GB,
    Fit,
    fit,
    fit_line,
    format_share,
)


def test_the_two_peaks_follow_from_the_parts_and_the_working_set() -> None:
    for family, parts in PARTS_GB.items():
        got = fit(family)
        encoders = sum(v for k, v in parts.items() if k.startswith("text_encoder"))
        working = WORKING_SET_GB[family]
        assert got.whole_gb == pytest.approx(sum(parts.values()) + working, abs=0.01)
        # Save memory: the text encoders and the transformer in turn, the VAE beside each
        low = max(encoders + parts["vae"], parts["transformer"] + parts["vae"] + working)
        assert got.low_gb == pytest.approx(low, abs=0.01) and got.low_gb < got.whole_gb
        # a quantized transformer only ever lowers both peaks
        for smaller in (fit(family, "Q8_0"), fit(family, "Q4_K_M")):
            assert smaller.whole_gb < got.whole_gb and smaller.low_gb <= got.low_gb
    # a file's own size wins over the format's estimate
    assert fit("zimage", "Q4_K_M", transformer_gb=5.0).whole_gb == pytest.approx(
        5.0 + 8.04 + 0.17 + WORKING_SET_GB["zimage"], abs=0.01)


def test_a_verdict_is_whole_low_or_no_at_three_quarters_of_the_memory() -> None:
    peaks = Fit(whole_gb=13.0, low_gb=11.0)
    assert peaks.verdict(32) == "whole"
    assert peaks.verdict(16) == "low"  # 12 GB usable: 11 fits, 13 does not
    assert peaks.verdict(8) == "no"
    assert Fit(12.0, 9.0).verdict(16) == "whole"  # exactly 3/4 fits
    assert USABLE_SHARE == 0.75


def test_formats_by_name() -> None:
    assert format_share("bf16") == format_share("F16") == 1.0 and format_share("F32") == 2.0
    assert format_share("Q8_0") == pytest.approx(34 / 64)
    assert format_share("Q4_K") == format_share("Q4_K_M") == format_share("Q3_K_S")  # unknown: counts as Q4_K_M
    assert format_share("Q6_K") > format_share("Q5_K") > format_share("Q4_K")


def test_the_words_go_from_the_smallest_memory_up_to_as_it_is() -> None:
    for family in PARTS_GB:
        line = fit_line(family)
        assert line.startswith("Memory: ") and line.endswith("32 GB as it is")  # every family, in bf16
        sizes = [int(part.split()[0]) for part in line.removeprefix("Memory: ").split("; ")]
        assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
        quantized = fit_line(family, "Q4_K_M")
        assert int(quantized.split()[1]) <= sizes[0]  # a 4-bit transformer never needs more memory
    # the catalogue's GGUF variants fit a 16 GB Mac with Save memory (the 8 GB Qwen3-4B alone does not fit 8 GB)
    assert fit_line("zimage", "Q4_K_M", transformer_gb=5.0) == "Memory: 16 GB with Save memory; 32 GB as it is"
    assert fit_line("flux2", "Q4_K_M", transformer_gb=2.6) == "Memory: 16 GB with Save memory; 32 GB as it is"
    assert fit("flux2", "Q4_K_M", transformer_gb=2.6).verdict(8) == "no"


def test_the_catalogue_and_the_library_say_what_fits() -> None:
    from heyim_desktop.models.catalogue import describe, find_entry, library_memory_line
    from heyim_desktop.models.types import ModelStatus

    full, gguf, sd15 = find_entry("flux2-klein-4b"), find_entry("flux2-klein-4b-gguf"), find_entry("sd15")
    assert full is not None and gguf is not None and sd15 is not None
    assert describe(full).endswith(fit_line("flux2"))
    assert describe(gguf).endswith(fit_line("flux2", "Q4_K_M", transformer_gb=2.6))
    assert "Memory" not in describe(sd15)

    from heyim_desktop.models.types import ModelInfo

    model = ModelInfo(name="klein-Q4_K.gguf", ref="/m/klein-Q4_K.gguf", kind="gguf", base="FLUX.2 [klein]",
                      size_bytes=2_600_000_000, status=ModelStatus.READY, quantization="Q4_K")
    assert library_memory_line(model) == fit_line("flux2", "Q4_K", transformer_gb=2.6)
    sd = ModelInfo(name="sd", ref="/m/sd", kind="diffusers", base="SD1", size_bytes=10, status=ModelStatus.READY)
    assert library_memory_line(sd) == ""

