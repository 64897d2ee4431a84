"""The LoRA picker: prompt tags and rows always agree, families grey out, embeddings insert,
requests resolve through the library, and Reuse Settings finds an image's LoRAs by hash."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from conftest import GEN_TIMEOUT_MS, quick_settings
from heyim_desktop.core.capabilities import Capabilities
from heyim_desktop.core.jobs import JobState
from heyim_desktop.core.lora import lora_hash
from heyim_desktop.core.metadata import parse_parameters
from lora_helpers import write_embedding, write_lora


def _family_lora(dest: Path, cross: int) -> Path:
    """A header-true kohya LoRA for a family (its attn2 to_k input width is the text width)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    base = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file({f"{base}.lora_down.weight": torch.zeros(2, cross), f"{base}.lora_up.weight": torch.zeros(320, 2),
               f"{base}.alpha": torch.tensor(2.0)}, str(dest))
    return dest


@pytest.fixture()
def library(window, tiny_model: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "webui"
    lora = root / "models" / "Lora"
    write_lora(tiny_model, lora / "inkwash.safetensors", seed=3)
    write_lora(tiny_model, lora / "paper.safetensors", layout="kohya", seed=5)
    _family_lora(lora / "xl-detail.safetensors", 2048)
    _family_lora(lora / "lcm-lora-sdv1-5.safetensors", 768)
    write_embedding(root / "embeddings" / "easyneg.safetensors")
    window.prefs = window.prefs.replace(model_folders=(*window.prefs.model_folders, str(root)))
    window.lora_picker.refresh()
    return SimpleNamespace(root=root, lora=lora)


def test_choosing_weighing_and_removing_keep_prompt_and_rows_in_step(window, library, qtbot) -> None:  # type: ignore[no-untyped-def]
    picker = window.lora_picker
    window.prompt_panel.set_prompt("a fox in the snow")
    picker.search.setText("ink")
    shown = [picker.available.item(i).data(256) for i in range(picker.available.count())
             if not picker.available.item(i).isHidden()]
    assert shown == ["inkwash"] and picker.available.isVisible()
    picker._item_chosen(picker.available.item([picker.available.item(i).data(256)
                                               for i in range(picker.available.count())].index("inkwash")))
    assert window.prompt_panel.prompt_text() == "a fox in the snow <lora:inkwash:1>"
    assert [r.name for r in picker.rows] == ["inkwash"]
    picker.rows[0].spin.setValue(0.55)
    assert window.prompt_panel.prompt_text() == "a fox in the snow <lora:inkwash:0.55>"
    assert picker.rows[0].slider.value() == 55
    picker.rows[0].slider.setValue(-120)
    assert window.prompt_panel.prompt_text() == "a fox in the snow <lora:inkwash:-1.2>"

    # Editing the tags in the prompt updates the rows.
    window.prompt_panel.prompt.setPlainText("<lora:paper:0.3> a fox, <lora:inkwash:0.8>")
    assert [(r.name, r.weight()) for r in picker.rows] == [("paper", 0.3), ("inkwash", 0.8)]
    picker.choose("paper", 0.9)  # choosing again updates the tag in place
    assert window.prompt_panel.prompt_text() == "<lora:paper:0.9> a fox, <lora:inkwash:0.8>"
    assert picker.rows[0].weight() == 0.9
    picker.rows[1].remove.click()
    assert window.prompt_panel.prompt_text() == "<lora:paper:0.9> a fox,"
    assert [r.name for r in picker.rows] == ["paper"]
    window.prompt_panel.prompt.setPlainText("a fox <lora:nowhere:1>")
    assert picker.rows[0].label.toolTip() == "not in the model library"


def test_other_families_are_greyed_with_the_reason(window, library) -> None:  # type: ignore[no-untyped-def]
    picker = window.lora_picker
    picker.set_model(Capabilities(family="sd1", runtime_lora=True))
    items = {picker.available.item(i).data(256): picker.available.item(i) for i in range(picker.available.count())}
    xl = items["xl-detail"]
    assert not xl.flags() & xl.flags().ItemIsEnabled
    assert "SDXL" in xl.text() and xl.toolTip() == "made for SDXL; the loaded model is SD 1.x"
    assert items["lcm-lora-sdv1-5"].flags() & xl.flags().ItemIsEnabled  # an SD1 LoRA on an SD1 model
    assert items["inkwash"].flags() & xl.flags().ItemIsEnabled  # family unknown (tiny): allowed
    window.prompt_panel.set_prompt("a fox")
    picker._item_chosen(xl)
    picker.choose("xl-detail")
    assert window.prompt_panel.prompt_text() == "a fox"  # refused, with a status line
    picker.set_model(Capabilities(family="sd1", runtime_lora=False))  # Core ML
    ink = next(picker.available.item(i) for i in range(picker.available.count())
               if picker.available.item(i).data(256) == "inkwash")
    assert "Convert to Core ML" in ink.toolTip()


def test_embeddings_menu_inserts_the_word(window, library) -> None:  # type: ignore[no-untyped-def]
    picker = window.lora_picker
    window.prompt_panel.set_prompt("a fox", "blurry")
    picker.fill_embeddings_menu()
    sub = picker.embeddings_menu.actions()[0].menu()
    assert picker.embeddings_menu.actions()[0].text() == "easyneg"
    to_negative = next(a for a in sub.actions() if a.text() == "Add to Negative Prompt")
    to_negative.trigger()
    assert window.prompt_panel.negative_text() == "blurry, easyneg"
    to_negative.trigger()  # not twice
    assert window.prompt_panel.negative_text() == "blurry, easyneg"
    request = window.build_request()
    assert [e.word for e in request.embeddings] == ["easyneg"]


def test_requests_resolve_tags_and_unknown_names_are_a_banner(window, library, parts) -> None:  # type: ignore[no-untyped-def]
    window.prompt_panel.set_prompt("a fox <lora:inkwash:0.7> <lora:paper:-0.4>")
    request = window.build_request()
    assert [(Path(u.path).name, u.weight) for u in request.loras] == [("inkwash.safetensors", 0.7),
                                                                        ("paper.safetensors", -0.4)]
    quick = parts.tray.build_request("a cat <lora:paper:0.5>")  # the tray's Quick Generate too
    assert [(u.name, u.weight) for u in quick.loras] == [("paper", 0.5)]
    window.use_demo_model()
    window.prompt_panel.set_prompt("a fox <lora:nope:1>")
    assert window.generate() is None
    assert window.banner.isVisible() and "unknown LoRA 'nope'" in window.banner.message()


def test_reuse_finds_loras_by_hash_then_name_and_names_the_missing(window, library) -> None:  # type: ignore[no-untyped-def]
    ink = lora_hash(library.lora / "inkwash.safetensors")
    text = ("a fox <lora:InkWash_v2:0.7>, <lora:paper:0.4>, <lora:gone:1>\nNegative prompt: blurry\n"
            f'Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, '
            f'Lora hashes: "InkWash_v2: {ink}, paper: 000000000000, gone: 123456789abc", Version: v1.10.1')
    params = parse_parameters(text)
    window.apply_settings(params.request_settings(), params.params.get("Lora hashes", ""))
    # renamed on disk: found by its hash; paper's hash differs but its name matches; gone is named
    assert window.prompt_panel.prompt_text() == "a fox <lora:inkwash:0.7>, <lora:paper:0.4>, <lora:gone:1>"
    assert window.banner.isVisible() and "gone" in window.banner.message() and "paper" not in window.banner.message()
    assert [r.name for r in window.lora_picker.rows] == ["inkwash", "paper", "gone"]
    # A history entry: the same path (its parameters text carries the hashes).
    window.banner.dismiss()
    entry = SimpleNamespace(parameters=text, request_settings=lambda: params.request_settings())
    window.reuse_settings(entry)
    assert "<lora:inkwash:0.7>" in window.prompt_panel.prompt_text()


def test_a_few_step_lora_shows_its_recommended_settings(window, library) -> None:  # type: ignore[no-untyped-def]
    window.prompt_panel.set_prompt("a fox")
    window.lora_picker.choose("lcm-lora-sdv1-5")
    panel = window.settings_panel
    assert not panel.recommended_row.isHidden() and "LCM" in panel.recommended_label.text()
    panel.recommended_button.click()
    assert panel.scheduler.currentText() == "LCM" and panel.steps.value() == 4


@pytest.mark.slow
def test_window_generates_with_a_lora_and_records_its_hash(parts, library, qtbot) -> None:  # type: ignore[no-untyped-def]
    window = parts.window
    quick_settings(window)
    window.settings_panel.random_seed.setChecked(False)
    window.settings_panel.seed.setValue(7)
    images = []
    for prompt in ("a fox", "a fox <lora:inkwash:0.8>"):
        window.prompt_panel.set_prompt(prompt)
        with qtbot.waitSignal(window.job_shown, timeout=GEN_TIMEOUT_MS) as blocker:
            assert window.generate() is not None
        job = blocker.args[0]
        assert job.state is JobState.DONE, job.error_message
        images.append(job.result.images[0].image.tobytes())
    assert images[0] != images[1]
    assert f'Lora hashes: "inkwash: {lora_hash(library.lora / "inkwash.safetensors")}"' in job.saved[0].parameters


def test_few_step_loras_are_known_by_name_or_metadata(tmp_path: Path) -> None:
    from heyim_desktop.ui.lora_picker import few_step_recommendation

    plain = _family_lora(tmp_path / "my_lora.safetensors", 768)
    assert few_step_recommendation("my_lora", str(plain)) is None
    rec = few_step_recommendation("sdxl_lightning_4step_lora", None)
    assert rec is not None and (rec.steps, rec.guidance, rec.scheduler) == (4, 0.0, "Euler")
    base = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file({f"{base}.lora_down.weight": torch.zeros(2, 768)}, str(tmp_path / "renamed.safetensors"),
              metadata={"ss_output_name": "Hyper-SD15-8steps-lora"})
    rec = few_step_recommendation("renamed", str(tmp_path / "renamed.safetensors"))
    assert rec is not None and (rec.steps, rec.guidance, rec.scheduler) == (8, 0.0, "DDIM")


def test_convert_dialog_offers_the_prompts_loras_for_baking(window, library, qtbot, tmp_path: Path,
                                                             monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import heyim_desktop.core.coreml.convert as convert

    seen = {}

    def fake_convert(source, out, *, loras=(), **kw):  # type: ignore[no-untyped-def]
        seen["loras"] = [(Path(u.path).name, u.weight) for u in loras]
        Path(out).mkdir(parents=True)
        return Path(out)

    monkeypatch.setattr(convert, "convert_to_coreml", fake_convert)
    window.prompt_panel.set_prompt("a fox <lora:inkwash:0.8>")
    dialog = window.open_convert_dialog()
    qtbot.addWidget(dialog)
    assert dialog.loras.text() == "inkwash:0.8"
    dialog.source.setText(str(tmp_path / "sd15"))
    dialog.loras.setText("inkwash:0.8, nope")
    dialog.start()
    assert "'nope' is neither" in dialog.state.text() and not dialog.running
    dialog.loras.setText("inkwash:0.8, paper:-0.5")
    with qtbot.waitSignal(dialog.converted, timeout=30_000) as got:
        dialog.start()
    assert seen["loras"] == [("inkwash.safetensors", 0.8), ("paper.safetensors", -0.5)]
    assert Path(got.args[0]).name == "sd15+inkwash-0.8+paper--0.5-coreml-split_einsum-512"


def test_a_zimage_lora_is_offered_for_zimage_only(window, library) -> None:  # type: ignore[no-untyped-def]
    key = "transformer.layers.0.attention.to_q"
    save_file({f"{key}.lora_A.weight": torch.zeros(4, 32), f"{key}.lora_B.weight": torch.zeros(32, 4)},
              str(library.lora / "z-style.safetensors"))
    picker = window.lora_picker
    picker.refresh()
    for family, enabled in (("zimage", True), ("sd1", False), ("flux2", False)):
        picker.set_model(Capabilities(family=family, runtime_lora=True))
        item = next(picker.available.item(i) for i in range(picker.available.count())
                    if picker.available.item(i).data(256) == "z-style")
        assert bool(item.flags() & item.flags().ItemIsEnabled) is enabled, family
        assert "Z-Image" in item.text()
    assert "made for Z-Image; the loaded model is FLUX.2 [klein]" == item.toolTip()
    picker.set_model(Capabilities(family="zimage", runtime_lora=True))
    xl = next(picker.available.item(i) for i in range(picker.available.count())
              if picker.available.item(i).data(256) == "xl-detail")
    assert xl.toolTip() == "made for SDXL; the loaded model is Z-Image"
