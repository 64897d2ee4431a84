"""Save a screenshot of the LoRA picker into docs/screenshots/ (offscreen, throwaway folders).

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/lora_screenshot.py

A few header-true LoRA files (SD 1.x, SDXL, an LCM-LoRA) and an embedding in an
AUTOMATIC1111-style folder; an SD 1.x model is assumed loaded, so the SDXL one is greyed.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


def _lora(dest: Path, cross: int) -> None:
    import torch
    from safetensors.torch import save_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    base = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file({f"{base}.lora_down.weight": torch.zeros(4, cross), f"{base}.lora_up.weight": torch.zeros(320, 4),
               f"{base}.alpha": torch.tensor(4.0)}, str(dest))


def main() -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="heyim-lora-shot-"))
    os.environ["HEYIM_DATA_DIR"] = str(tmp / "data")
    webui = tmp / "stable-diffusion-webui"
    for name, cross in (("add_detail", 768), ("ghibli_style_v2", 768), ("lcm-lora-sdv1-5", 768),
                        ("film_grain", 768), ("sdxl_offset_noise", 2048)):
        _lora(webui / "models" / "Lora" / f"{name}.safetensors", cross)
    import torch
    from safetensors.torch import save_file

    (webui / "embeddings").mkdir(parents=True)
    save_file({"emb_params": torch.zeros(8, 768)}, str(webui / "embeddings" / "easynegative.safetensors"))

    from heyim_desktop.core.capabilities import Capabilities
    from heyim_desktop.ui.app import build_app

    parts = build_app(["screenshots"])
    app, w = parts.app, parts.window
    w.resize(1280, 820)
    w.prefs = w.prefs.replace(model_folders=(str(webui),))
    picker = w.lora_picker
    picker.set_model(Capabilities(family="sd1", runtime_lora=True))
    w.prompt_panel.set_prompt("a lighthouse on a cliff at dusk, dramatic sky", "easynegative, blurry")
    picker.choose("add_detail", 0.6)
    picker.choose("ghibli_style_v2", 0.85)
    picker.search.setText("_")  # four of the five: the SDXL one greyed with its reason
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)
    OUT.mkdir(parents=True, exist_ok=True)
    w.grab().save(str(OUT / "10-lora-picker.png"))
    parts.shutdown()


if __name__ == "__main__":
    main()
