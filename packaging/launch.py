"""PyInstaller's entry point: the same ``main`` as the ``heyim-desktop`` console script."""

import multiprocessing
import sys

from heyim_desktop.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # a frozen app re-executes itself for worker processes
    sys.exit(main())
