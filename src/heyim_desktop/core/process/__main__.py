"""``python -m heyim_desktop.core.process``: the engine child (started by the parent only)."""

import sys

from heyim_desktop.core.process.child import main

sys.exit(main(sys.argv[1:]))
