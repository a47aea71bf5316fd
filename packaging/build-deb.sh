#!/usr/bin/env bash
# Builds the Debian package of ILDiff Studio (binary, .desktop entry, icon) with dpkg-deb, the
# same layout as the `[package.metadata.deb]` of Cargo.toml for those who use cargo-deb.
# Usage: packaging/build-deb.sh [OUT_DIR]   (then: sudo apt-get install ./ildiff-studio_*.deb)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/debian}"
# ILDIFF_BIN: package an already-built binary instead of building the release one.
if [ -n "${ILDIFF_BIN:-}" ]; then
  bin="$ILDIFF_BIN"
else
  cargo build --release --locked
  bin="${CARGO_TARGET_DIR:-target}/release/ildiff"
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
root=$(mktemp -d)
chmod 755 "$root"
trap 'rm -rf "$root"' EXIT
install -Dm755 "$bin" "$root/usr/bin/ildiff"
strip "$root/usr/bin/ildiff" 2>/dev/null || true
install -Dm644 packaging/ildiff-studio.desktop "$root/usr/share/applications/ildiff-studio.desktop"
install -Dm644 packaging/ildiff-studio.png "$root/usr/share/icons/hicolor/256x256/apps/ildiff-studio.png"
install -Dm644 README.md "$root/usr/share/doc/ildiff-studio/README.md"
for f in ildiff generator; do
  if [ -f "models/default/$f.safetensors" ]; then
    install -Dm644 "models/default/$f.safetensors" "$root/usr/share/ildiff-studio/models/default/$f.safetensors"
  fi
done
size=$(du -sk "$root/usr" | cut -f1)
mkdir -p "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<CONTROL
Package: ildiff-studio
Version: $version
Architecture: $arch
Maintainer: ILDiff Studio developers
Installed-Size: $size
Depends: libc6, libgcc-s1, ffmpeg, libgl1, libegl1, libxkbcommon-x11-0, librlottie0-1, libxcursor1, libxrandr2, libxi6
Section: graphics
Priority: optional
Description: transparent animated stickers with clean, flicker-free alpha
 Desktop studio and command line (ildiff) to re-matte clips and export sticker
 packs for messaging platforms.
CONTROL
mkdir -p "$out"
deb="$out/ildiff-studio_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "$deb"
