"""The app's rotating log file in the platform's log dir (never configured at import)."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from heyim_desktop.core import paths

LOG_NAME = "heyim.log"
_FORMAT = "%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s"
_handler: logging.Handler | None = None


def log_file() -> Path:
    return paths.log_dir() / LOG_NAME


def setup_logging(level: int = logging.INFO) -> Path:
    """Send HeyIm's log records to a rotating file (1 MB x 5); idempotent. Returns the file."""
    global _handler
    path = log_file()
    root = logging.getLogger("heyim_desktop")
    # The console keeps the level the command line chose (records now reach it at INFO).
    top = logging.getLogger()
    for h in top.handlers:
        if h.level == logging.NOTSET:
            h.setLevel(top.level)
    if _handler is not None and getattr(_handler, "baseFilename", None) == str(path):
        return path
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=1_000_000, backupCount=5, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    _handler = handler
    return path


def teardown_logging() -> None:
    global _handler
    if _handler is not None:
        logging.getLogger("heyim_desktop").removeHandler(_handler)
        _handler.close()
        _handler = None
