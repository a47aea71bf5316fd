#!/usr/bin/env bash
# Fetches openly licensed artwork and photo backgrounds for training the matting model:
#   DEST/art/<set>/*.svg   emoji artwork from npm (twemoji, fluent-emoji-flat, openmoji colour)
#   DEST/photos/*.jpg      desktop wallpapers from Debian packages, downscaled to <= 1600 px
#   DEST/SOURCES.md        each set, its version, licence and file count
# Usage: packaging/fetch-training-data.sh DEST
# Idempotent: a set whose marker (.version) matches is not fetched again. Needs npm, tar, node,
# apt-get/dpkg (apt-get download + dpkg -x: no root), and ffmpeg for downscaling (optional).
# Noto Color Emoji is held out for evaluation: anything named "noto" is refused.
set -euo pipefail

if [[ $# -ne 1 || "$1" == -h || "$1" == --help ]]; then
    echo "usage: $0 DEST" >&2
    exit 2
fi
DEST=$1
MAX_SIDE=1600
mkdir -p "$DEST/art" "$DEST/photos"
DEST=$(cd "$DEST" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Artwork sets: name, npm package@version, licence, path glob inside the package tarball.
ART_SETS=(
    "twemoji|@twemoji/svg@15.0.0|CC-BY-4.0 (graphics; code MIT), (c) Twitter and contributors|package/*.svg"
    "fluent-emoji-flat|@iconify-json/fluent-emoji-flat@1.2.6|MIT, (c) Microsoft Corporation|iconify"
    "openmoji|openmoji@17.0.0|CC-BY-SA-4.0, (c) OpenMoji contributors|package/color/svg/*.svg"
)
# The first three are the desktop sets; the rest add photographs (CC-BY/CC-BY-SA/CC0, see
# licences/) and are skipped where the archive lacks them.
PHOTO_PKGS=(gnome-backgrounds plasma-workspace-wallpapers mate-backgrounds
    ukui-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04)

log() { echo "fetch-training-data: $*" >&2; }

# Refuses the evaluation hold-out.
not_noto() {
    if [[ "${1,,}" == *noto* ]]; then
        log "refusing '$1': Noto Color Emoji is held out for evaluation"
        return 1
    fi
}

up_to_date() { [[ -f "$1/.version" && "$(cat "$1/.version")" == "$2" ]]; }

fetch_art() {
    local name=$1 spec=$2 glob=$3 out="$DEST/art/$1"
    not_noto "$name" || return 0
    not_noto "$spec" || return 0
    if up_to_date "$out" "$spec"; then
        log "$name: $spec already present"
        return 0
    fi
    log "$name: fetching $spec"
    local work="$TMP/$name"
    mkdir -p "$work"
    (cd "$work" && npm pack --silent "$spec" >/dev/null)
    local tgz
    tgz=$(ls "$work"/*.tgz)
    rm -rf "$out.new"
    mkdir -p "$out.new"
    if [[ "$glob" == iconify ]]; then
        tar -xzf "$tgz" -C "$work" package/icons.json
        iconify_to_svg "$work/package/icons.json" "$out.new"
    else
        tar -xzf "$tgz" -C "$work" --wildcards "$glob"
        local dir=${glob%/*}
        find "$work/$dir" -maxdepth 1 -name '*.svg' -exec cp -t "$out.new" {} +
    fi
    # Never keep a hold-out file that slipped into a set.
    find "$out.new" -iname '*noto*' -delete
    echo "$spec" >"$out.new/.version"
    rm -rf "$out"
    mv "$out.new" "$out"
}

# An iconify JSON holds one SVG body per icon; wrap each into a standalone SVG file.
iconify_to_svg() {
    node - "$1" "$2" <<'EOF'
const fs = require("fs");
const path = require("path");
const [src, out] = process.argv.slice(2);
const set = JSON.parse(fs.readFileSync(src, "utf8"));
const dw = set.width || 16, dh = set.height || 16;
let n = 0;
for (const [name, icon] of Object.entries(set.icons)) {
  if (!/^[a-z0-9_-]+$/i.test(name) || /noto/i.test(name)) continue;
  const w = icon.width || dw, h = icon.height || dh;
  const l = icon.left || 0, t = icon.top || 0;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" ` +
    `width="${w}" height="${h}" viewBox="${l} ${t} ${w} ${h}">${icon.body}</svg>\n`;
  fs.writeFileSync(path.join(out, name + ".svg"), svg);
  n++;
}
console.error(`wrote ${n} icons`);
EOF
}

# Copies a picture into photos/, downscaled so its longer side is at most MAX_SIDE.
add_photo() {
    local src=$1 dst=$2
    if command -v ffmpeg >/dev/null; then
        ffmpeg -nostdin -loglevel error -y -i "$src" -frames:v 1 \
            -vf "scale='min($MAX_SIDE,iw)':'min($MAX_SIDE,ih)':force_original_aspect_ratio=decrease:flags=area,format=yuvj444p" \
            -q:v 3 "$dst.jpg" || log "skipping unreadable picture $src"
    else
        cp "$src" "$dst.${src##*.}"
    fi
}

fetch_photos() {
    local pkg=$1 ver
    not_noto "$pkg" || return 0
    ver=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [[ -z "$ver" || "$ver" == "(none)" ]]; then
        log "$pkg: not in apt-cache policy, skipped (run apt-get update?)"
        return 0
    fi
    local marker="$DEST/photos/.$pkg.version"
    if [[ -f "$marker" && "$(cat "$marker")" == "$ver" ]]; then
        log "$pkg: $ver already present"
        return 0
    fi
    log "$pkg: fetching $ver"
    local work="$TMP/$pkg"
    mkdir -p "$work/x"
    (cd "$work" && apt-get download -q "$pkg=$ver" >/dev/null 2>&1) || {
        log "$pkg: apt-get download failed, skipped"
        return 0
    }
    dpkg -x "$work"/*.deb "$work/x"
    rm -f "$DEST/photos/$pkg--"*
    if [[ -d "$work/x/usr/share/wallpapers" ]]; then
        # Plasma: one folder per wallpaper holding several resolutions (and maybe a dark
        # variant); keep the largest file of each images folder.
        local d
        while IFS= read -r d; do
            local best
            best=$(find "$d" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) \
                -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
            [[ -n "$best" ]] || continue
            local wall=${d#"$work"/x/usr/share/wallpapers/}
            wall=${wall%%/*}${d##*/contents/images}
            add_photo "$best" "$DEST/photos/$pkg--${wall//\//-}"
        done < <(find "$work/x/usr/share/wallpapers" -type d \( -name images -o -name images_dark \) | sort)
    fi
    local f
    while IFS= read -r f; do
        local rel=${f#"$work"/x/usr/share/}
        rel=${rel%.*}
        add_photo "$f" "$DEST/photos/$pkg--${rel//\//-}"
    done < <(find "$work/x/usr/share" -path '*/wallpapers/*' -prune -o -type f \
        \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.webp' \) \
        -size +20k -print | sort)
    mkdir -p "$DEST/licences"
    if [[ -f "$work/x/usr/share/doc/$pkg/copyright" ]]; then
        cp "$work/x/usr/share/doc/$pkg/copyright" "$DEST/licences/$pkg.copyright"
    fi
    echo "$ver" >"$marker"
}

for set in "${ART_SETS[@]}"; do
    IFS='|' read -r name spec _licence glob <<<"$set"
    fetch_art "$name" "$spec" "$glob"
done
for pkg in "${PHOTO_PKGS[@]}"; do
    fetch_photos "$pkg"
done

{
    echo "# Training data sources"
    echo
    echo "Fetched by packaging/fetch-training-data.sh. Noto Color Emoji is held out for evaluation"
    echo "and never fetched. Attribution is required by CC-BY/CC-BY-SA sets."
    echo
    echo "| set | folder | version | licence | files |"
    echo "| --- | --- | --- | --- | --- |"
    for set in "${ART_SETS[@]}"; do
        IFS='|' read -r name spec licence _glob <<<"$set"
        [[ -d "$DEST/art/$name" ]] || continue
        n=$(find "$DEST/art/$name" -maxdepth 1 -name '*.svg' | wc -l)
        echo "| $name (npm) | art/$name | $(cat "$DEST/art/$name/.version") | $licence | $n |"
    done
    for pkg in "${PHOTO_PKGS[@]}"; do
        [[ -f "$DEST/photos/.$pkg.version" ]] || continue
        n=$(find "$DEST/photos" -maxdepth 1 -type f -name "$pkg--*" | wc -l)
        lic="see licences/$pkg.copyright"
        if [[ -f "$DEST/licences/$pkg.copyright" ]]; then
            ids=$(awk '/^License:/ {print $2}' "$DEST/licences/$pkg.copyright" | sort -u | paste -sd, -)
            lic="${ids:-per image, see} licences/$pkg.copyright"
        fi
        echo "| $pkg (Debian) | photos/$pkg--* | $(cat "$DEST/photos/.$pkg.version") | $lic | $n |"
    done
} >"$DEST/SOURCES.md"
log "done: $DEST/SOURCES.md"
cat "$DEST/SOURCES.md"
