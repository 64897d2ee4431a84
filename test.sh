#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite. Arguments go to pytest.
# Tests run in parallel, one worker per CPU core (HEYIM_TEST_WORKERS=N to choose, 0 for one process).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
workers="${HEYIM_TEST_WORKERS:-auto}"
if [ "$workers" = "0" ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
