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
