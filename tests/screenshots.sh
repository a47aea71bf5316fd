#!/usr/bin/env bash
# Regenerates the README's screenshots in assets/: the real studio window under Xvfb (Mesa
# software OpenGL) with a synthetic sticker (`ildiff data synth`, exact alpha) loaded, one PNG
# per main view. Needs xvfb (apt-get install xvfb libgl1-mesa-dri); builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
bin="${CARGO_TARGET_DIR:-target}/release/ildiff"
work=$(mktemp -d)
trap 'kill "${xvfb_pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" data synth -o "$work/synth" --count 1 --size 256 --frames 16 --fps 12 --quiet --jobs 1
rgba=$(find "$work/synth" -type d -name rgba | head -n 1)
"$bin" export "$rgba" -o "$work/sticker.png" >/dev/null
display=":$((90 + RANDOM % 100))"
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp &
xvfb_pid=$!
for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X${display#:}" ] && break; sleep 0.1; done
mkdir -p assets
for view in checker alpha compare chat; do
  extra=()
  [ "$view" = alpha ] && extra=(--heatmap)
  DISPLAY="$display" LIBGL_ALWAYS_SOFTWARE=1 "$bin" "$work/sticker.png" --config-dir "$work/config" \
    --view "$view" "${extra[@]}" --screenshot "assets/studio-$view.png"
done
ls -la assets/studio-*.png
