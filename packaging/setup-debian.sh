#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine to build and run ILDiff Studio: the C toolchain (libwebp
# is built from bundled source), ffmpeg with libvpx (WebM/VP9-alpha and video import), rlottie
# and libclang (Telegram .tgs import; the binding is generated at build time), and Rust.
set -euo pipefail
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends build-essential pkg-config ffmpeg curl ca-certificates \
  librlottie-dev libclang-dev
if ! command -v cargo >/dev/null 2>&1; then
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
cargo build --release --locked
echo "built: $(pwd)/target/release/ildiff"
