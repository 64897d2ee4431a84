#!/usr/bin/env bash
# Build the desktop app with PyInstaller from packaging/heyim.spec:
#   macOS: dist/HeyIm.app    elsewhere: dist/HeyIm/ (one folder; run dist/HeyIm/heyim-desktop)
# Needs the `package` extra: .venv/bin/pip install -c constraints.txt -e ".[package]"
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-.venv/bin/python}"
if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
  echo "PyInstaller is missing: $PY -m pip install -c constraints.txt -e '.[package]'" >&2
  exit 2
fi
[ -f packaging/icon.icns ] && [ -f packaging/icon.ico ] || "$PY" packaging/make_icon.py
"$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath dist --workpath build/pyinstaller packaging/heyim.spec
if [ "$(uname)" = Darwin ]; then
  echo "Built dist/HeyIm.app"
else
  echo "Built dist/HeyIm/ (run dist/HeyIm/heyim-desktop)"
fi
