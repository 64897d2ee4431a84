"""Keeping diffusers and transformers quiet: their progress bars and advice go to our log.

Called by entry points (CLI, GUI worker), never at import time.
"""

from __future__ import annotations

import logging
import os


def quiet_third_party() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import diffusers.utils.logging as dlog

        dlog.disable_progress_bar()
        dlog.set_verbosity_error()
    except ImportError:  # pragma: no cover - diffusers is a dependency
        pass
    try:
        import transformers.utils.logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    logging.getLogger("accelerate").setLevel(logging.ERROR)
