#!/usr/bin/env bash
# Creates .venv and installs HeyIm with pinned dependencies; does nothing when already current.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $($PY --version)..." >&2
  "$PY" -m venv .venv
fi
stamp=".venv/.heyim-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Installing HeyIm and its dependencies into .venv (first time: a few minutes)..." >&2
  .venv/bin/python -m pip install --quiet --upgrade pip >&2
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test,coreml]" >&2
  # Upscaler models (the [upscale] extra) without torchvision: PyPI's Linux torchvision is built for
  # CUDA torch and breaks transformers' imports next to the CPU build; HeyIm does not need it.
  .venv/bin/python -m pip install --quiet -c constraints.txt --no-deps spandrel einops >&2
  echo "$want" > "$stamp"
fi
