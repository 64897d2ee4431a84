from __future__ import annotations

import shutil
from pathlib import Path

from heyim_desktop.models.library import ModelLibrary, ModelStatus


def test_lists_ready_and_incomplete_models_and_the_demo(data_dir: Path, tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copytree(tiny_model, folder / "good")
    shutil.copytree(tiny_model, folder / "broken")
    shutil.rmtree(folder / "broken" / "unet")
    (folder / "not-a-model").mkdir()
    models = ModelLibrary([folder]).list()
    by_ref = {m.ref: m for m in models}
    good = by_ref[str(folder / "good")]
    assert good.ready and good.base == "unknown" and good.size_bytes > 0
    broken = by_ref[str(folder / "broken")]
    assert broken.status is ModelStatus.INCOMPLETE and "missing unet/" in broken.problem
    assert models[-1].ref == "demo" and models[-1].kind == "demo"
    assert str(folder / "not-a-model") not in by_ref
    assert ModelLibrary([folder]).find(str(folder / "good")) == good
    assert ModelLibrary([folder]).find("broken") == broken


def test_listing_imports_no_heavy_library() -> None:
    import os
    import subprocess
    import sys

    import heyim_desktop

    code = (
        "import sys\n"
        "from heyim_desktop.models import library, download, importer, verify, catalogue, cli\n"
        "import heyim_desktop.core.single_file, heyim_desktop.core.checkpoint\n"
        "library.ModelLibrary(hf_cache=False).list()\n"
        "print(','.join(m for m in ('torch', 'diffusers', 'transformers', 'PySide6', 'huggingface_hub') if m in sys.modules))"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(heyim_desktop.__file__).parents[1]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == ""


def test_sdxl_folders_and_checkpoints_are_ready(data_dir: Path, tmp_path: Path, tiny_sdxl: Path,  # type: ignore[no-untyped-def]
                                                tiny_sdxl_refiner: Path, tiny_sdxl_single_file: Path) -> None:
    folder = tmp_path / "xl"
    folder.mkdir()
    shutil.copytree(tiny_sdxl, folder / "base")
    shutil.copytree(tiny_sdxl_refiner, folder / "refiner")
    shutil.copy(tiny_sdxl_single_file, folder / "base-file.safetensors")
    shutil.copytree(tiny_sdxl, folder / "broken")
    shutil.rmtree(folder / "broken" / "text_encoder_2")
    by_name = {m.name: m for m in ModelLibrary([folder], include_demo=False, hf_cache=False).list()}
    assert by_name["base"].ready and by_name["base"].base == "SDXL" and not by_name["base"].is_refiner
    assert by_name["base-file"].ready and by_name["base-file"].base == "SDXL"
    assert by_name["refiner"].ready and by_name["refiner"].is_refiner
    assert by_name["broken"].status is ModelStatus.INCOMPLETE and "text_encoder_2/" in by_name["broken"].problem
