"""The token counter: chunks where the engine reads them, the 77-token window and its cut where not."""

from __future__ import annotations

from pathlib import Path

import pytest

from heyim_desktop.core.capabilities import Capabilities
from heyim_desktop.core.prompts import PromptCounter
from heyim_desktop.ui.prompt_panel import PromptPanel

WORDS = "a red fox in the city with blue sky and sun on the river night cat dog house car flower bird".split()


def _words(n: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from transformers import CLIPTokenizer

    from heyim_desktop.core.demo_model import write_tokenizer

    folder: Path = tmp_path_factory.mktemp("tok")
    write_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


@pytest.fixture()
def panel(qtbot):  # type: ignore[no-untyped-def]
    p = PromptPanel()
    qtbot.addWidget(p)
    return p


def test_estimate_until_a_model_counts(panel) -> None:  # type: ignore[no-untyped-def]
    panel.set_prompt("a red fox")
    assert panel.prompt_tokens.text().startswith("~") and panel.prompt_tokens.text().endswith("/77")
    assert "estimate" in panel.prompt_tokens.toolTip()


def test_chunking_engine_shows_chunks_and_their_boundaries(panel, tokenizer) -> None:  # type: ignore[no-untyped-def]
    panel.set_counter(PromptCounter(tokenizer, max_chunks=8), Capabilities(max_prompt_chunks=8))
    panel.set_prompt(_words(83), "blurry")
    assert panel.prompt_tokens.text() == "83/150 (75|8)"
    tip = panel.prompt_tokens.toolTip()
    assert "2 chunks" in tip and "Chunk 2 starts at: " + WORDS[75 % len(WORDS)] in tip
    assert panel.negative_tokens.text() == "1/75"
    assert not panel.prompt_tokens.font().bold()
    # Past the engine's 8 chunks the rest is cut, and the counter says so.
    panel.set_prompt(_words(610) + " zebra")
    assert panel.prompt_tokens.text().endswith("cut") and panel.prompt_tokens.font().bold()
    assert "zebra" in panel.prompt_tokens.toolTip()


def test_one_window_engine_shows_n_of_77_and_marks_the_cut(panel, tokenizer) -> None:  # type: ignore[no-untyped-def]
    panel.set_counter(PromptCounter(tokenizer, max_chunks=1), Capabilities(max_prompt_chunks=1))
    panel.set_prompt("a (red:1.3) fox")
    assert panel.prompt_tokens.text() == "5/77"  # three words, start and end
    panel.set_prompt(_words(80))
    assert panel.prompt_tokens.text() == "82/77  cut" and panel.prompt_tokens.font().bold()
    assert "past 77 tokens" in panel.prompt_tokens.toolTip()
    assert _words(80).split()[-1] in panel.prompt_tokens.toolTip()


def test_a_failing_counter_falls_back_to_the_estimate(panel) -> None:  # type: ignore[no-untyped-def]
    def closed(text: str):  # type: ignore[no-untyped-def]
        raise RuntimeError("engine is closed")

    panel.set_counter(closed, Capabilities(max_prompt_chunks=8))
    panel.set_prompt("a red fox")
    assert panel.prompt_tokens.text().startswith("~")
