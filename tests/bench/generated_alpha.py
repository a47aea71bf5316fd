"""Alpha statistics of generated stickers, for the generator's model card (numpy + Pillow).

    python tests/bench/generated_alpha.py stats OUT1.png OUT2.png ...   # exported APNGs
    python tests/bench/generated_alpha.py clips DIR       # `ildiff data art -o DIR` clip folders
    python tests/bench/generated_alpha.py fringe A.png B.png   # one sticker, two colourings

`stats` and `clips` print, per sticker (or averaged over clips): mean alpha, the share of clear
(alpha < 0.05) and opaque (alpha > 0.95) pixels, and the mean |alpha change| to the next frame
(the loop's last frame to its first included). `fringe` prints the mean RGB distance from the
magenta key of the soft-edge pixels (0.05 < alpha < 0.95 in A) of each file, e.g. a sticker
without and with the key unmixed.
"""
import glob
import os
import sys

import numpy as np
from PIL import Image, ImageSequence

KEY = np.array([1.0, 0.0, 1.0])


def load(path):
    frames = ImageSequence.Iterator(Image.open(path))
    return np.stack([np.asarray(f.convert("RGBA"), dtype=np.float64) / 255 for f in frames])


def figures(alpha):
    step = np.abs(alpha - np.roll(alpha, 1, axis=0)).mean()
    return alpha.mean(), np.mean(alpha < 0.05), np.mean(alpha > 0.95), step


def show(name, f):
    print(f"{name}: mean alpha {f[0]:.3f} clear {f[1]:.3f} opaque {f[2]:.3f} |dA| next {f[3]:.4f}")


def main(mode, paths):
    if mode == "stats":
        for p in paths:
            show(p, figures(load(p)[..., 3]))
    elif mode == "clips":
        rows = []
        for d in sorted(glob.glob(os.path.join(paths[0], "*", "clip_*"))):
            files = sorted(glob.glob(os.path.join(d, "rgba", "*.png")))
            a = np.stack([np.asarray(Image.open(f).convert("RGBA"), dtype=np.float64)[..., 3] / 255
                          for f in files])
            rows.append(figures(a))
        show(f"{len(rows)} clips", np.mean(np.array(rows), axis=0))
    elif mode == "fringe":
        soft = load(paths[0])[..., 3]
        soft = (soft > 0.05) & (soft < 0.95)
        for p in paths:
            d = np.linalg.norm(load(p)[..., :3] - KEY, axis=-1)[soft].mean()
            print(f"{p}: {int(soft.sum())} soft-edge pixels, mean distance to the key {d:.3f}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
