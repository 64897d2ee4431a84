#!/usr/bin/env bash
# Build the bundle and run the bundled binary: --version, then an offscreen --self-test
# (window + real worker + the tiny demo model, in a throwaway data folder), and on macOS
# --coreml-smoke (Core ML from inside the bundle: see core/coreml/smoke.py). Too slow for CI
# (minutes: PyInstaller walks torch); run it before a release. Prints build time and size.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
./build_app.sh
built=$(date +%s)
if [ "$(uname)" = Darwin ]; then
  BIN="dist/HeyIm.app/Contents/MacOS/HeyIm"; BUNDLE="dist/HeyIm.app"
else
  BIN="dist/HeyIm/heyim-desktop"; BUNDLE="dist/HeyIm"
fi
echo "build: $((built - start)) s; bundle: $(du -sh "$BUNDLE" | cut -f1) ($BUNDLE)"
"$BIN" --version
version_end=$(date +%s)
QT_QPA_PLATFORM=offscreen OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "$BIN" --self-test
if [ "$(uname)" = Darwin ]; then
  # coremltools' native extension inside the bundle: a tiny model compiles, loads on the Neural Engine, predicts.
  "$BIN" --coreml-smoke
fi
end=$(date +%s)
echo "smoke: OK (--version $((version_end - built)) s, --self-test $((end - version_end)) s)"
