"""Alpha statistics of generated stickers, for the generator's model card (numpy + Pillow).

    python tests/bench/generated_alpha.py stats OUT1.png OUT2.png ...   # exported APNGs
    python tests/bench/generated_alpha.py clips DIR       # `ildiff data art -o DIR` clip folders
    python tests/bench/generated_alpha.py fringe A.png B.png   # one sticker, two colourings
    python tests/bench/generated_alpha.py prompt DIR      # DIR/<prompt>__seed<N>.png

`stats` and `clips` print, per sticker (or averaged over clips): mean alpha, the share of clear
(alpha < 0.05) and opaque (alpha > 0.95) pixels, and the mean |alpha change| to the next frame
(the loop's last frame to its first included). `fringe` prints the mean RGB distance from the
magenta key of the soft-edge pixels (0.05 < alpha < 0.95 in A) of each file, e.g. a sticker
without and with the key unmixed.

`prompt` asks whether the prompt, rather than the seed, decides what a sticker looks like. Each
sticker becomes the clip-mean of its 16x16 alpha and 16x16 premultiplied RGB; for every sticker
the nearest other one (Euclidean) is found, and the share whose nearest neighbour has the same
prompt is printed with its chance level ((seeds - 1) / (stickers - 1)). A generator that ignores
its prompt scores near chance, one whose seeds vary more than its prompts below it.
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


def signature(path):
    clip = load(path)
    prem = clip[..., :3] * clip[..., 3:]
    small = []
    for plane in (clip[..., 3:], prem):
        t, h, w, c = plane.shape
        pooled = plane.reshape(t, 16, h // 16, 16, w // 16, c).mean(axis=(2, 4))
        small.append(pooled.mean(axis=0).ravel())
    return np.concatenate(small)


def prompt_match(folder):
    files = sorted(glob.glob(os.path.join(folder, "*__seed*.png")))
    names = [os.path.basename(f).split("__seed")[0] for f in files]
    sig = np.stack([signature(f) for f in files])
    dist = np.linalg.norm(sig[:, None] - sig[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    nearest = dist.argmin(axis=1)
    hits = [names[i] == names[j] for i, j in enumerate(nearest)]
    seeds = len(files) / len(set(names))
    chance = (seeds - 1) / (len(files) - 1)
    for n in sorted(set(names)):
        own = [h for h, m in zip(hits, names) if m == n]
        print(f"{n}: {sum(own)}/{len(own)} nearest neighbours share the prompt")
    print(f"{len(files)} stickers, {len(set(names))} prompts: same-prompt nearest neighbour "
          f"{np.mean(hits):.3f} (chance {chance:.3f})")


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
    elif mode == "prompt":
        prompt_match(paths[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
