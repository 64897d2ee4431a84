#!/usr/bin/env bash
# Set up (first run only) and start HeyIm Desktop. Arguments go to the heyim-desktop command:
#   ./heyim.sh                                       the desktop window
#   ./heyim.sh generate --demo --prompt "a red fox"  one image from the command line
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/heyim-desktop "$@"
