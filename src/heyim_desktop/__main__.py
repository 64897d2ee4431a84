"""``python -m heyim_desktop`` runs the same entry point as ``heyim-desktop``."""

from __future__ import annotations

import sys

from heyim_desktop.cli import main

if __name__ == "__main__":
    sys.exit(main())
