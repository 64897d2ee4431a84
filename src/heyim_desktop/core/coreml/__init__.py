"""The Core ML engine: Apple's Stable Diffusion layout on the Neural Engine (macOS).

Importing this package is cheap (no torch, no coremltools). Entry points:

* ``detect.detect_coreml_folder(path) -> CoreMLModelInfo``: pure, any OS (model library).
* ``engine.load_coreml_engine(folder, compute_units=None) -> PipelineEngine``: macOS.
* ``convert.convert_to_coreml(model_dir, out_dir, ..., progress=, cancel=)``: any OS.
* ``compute_units.CHOICES`` / ``LABELS``: the Preferences choice; ``AUTO`` measures once.
* ``runtime.FIRST_LOAD_NOTE``: what the window says while a first load takes minutes.
"""

from __future__ import annotations

from heyim_desktop.core.coreml.compute_units import AUTO, CHOICES, LABELS
from heyim_desktop.core.coreml.detect import CoreMLModelInfo, detect_coreml_folder, looks_like_coreml_folder

__all__ = ["AUTO", "CHOICES", "LABELS", "CoreMLModelInfo", "detect_coreml_folder", "looks_like_coreml_folder"]
