#!/usr/bin/env python3
"""How `KeyPrior::adaptive`'s constants were chosen: alpha PSNR of colour-key rules on composites
from the *training* split, per background kind (and with Gaussian noise of sigma 0.03 added,
standing in for compression or a codec's reconstruction). Keying rule: key = median of the
border pixels; alpha = clamp((d - lo) / (hi - lo)), d = RGB distance to the key, with
- lo = clamp(noise x the border distances' quantile, 0.03, 0.12) ("fixed": 0.03),
- hi = clamp(share x median d of the pixels beyond lo, 0.2, 0.6) (share None: the fixed 0.2).

Not part of the build or the tests. To run (numpy and Pillow; keep the venv out of the repo):
    ildiff data synth -o /tmp/syn --count 30 --size 128 --frames 2 --composite -q --seed 5
    ildiff data art --art data/art -o /tmp/art --count 30 --size 128 --frames 2 --composite -q --seed 5
    python3 -m venv /tmp/kv && /tmp/kv/bin/pip install numpy pillow
    /tmp/kv/bin/python tests/bench/key_ramp_study.py /tmp/syn /tmp/art
Only `DIR/train/clip_*` are read: the validation split stays out of the choice.
"""
import collections
import glob
import os
import sys

import numpy as np
from PIL import Image

KINDS = ("plain", "similar_colour", "gradient")
# (label, lo rule (quantile, noise) or None for lo = 0.06 / 0.03, share or None)
RULES = [
    ("fixed 0.06-0.2 (colour keying)", None, None, 0.06),
    ("lo 0.03, hi 0.2", None, None, 0.03),
    ("lo 0.03, hi adaptive 0.7", None, 0.7, 0.03),
    ("lo 0.03, hi adaptive 0.8", None, 0.8, 0.03),
    ("lo q50 x2.0, hi adaptive 0.8", (0.50, 2.0), 0.8, 0.03),
    ("lo q75 x1.5, hi adaptive 0.8 (shipped)", (0.75, 1.5), 0.8, 0.03),
    ("lo q75 x2.0, hi adaptive 0.8", (0.75, 2.0), 0.8, 0.03),
    ("lo q90 x1.2, hi adaptive 0.8", (0.90, 1.2), 0.8, 0.03),
]


def key_alpha(px, lo_rule, share, lo_min):
    border = np.concatenate([px[0], px[-1], px[:, 0], px[:, -1]])
    key = np.median(border, 0)
    border_d = np.sqrt(((border - key) ** 2).sum(-1))
    d = np.sqrt(((px - key) ** 2).sum(-1))
    lo = lo_min
    if lo_rule is not None:
        q, noise = lo_rule
        lo = float(np.clip(noise * np.quantile(border_d, q, method="nearest"), lo_min, 0.12))
    hi = 0.2
    if share is not None:
        beyond = d[d > lo]
        if beyond.size:
            hi = float(np.clip(share * np.median(beyond), 0.2, 0.6))
    return np.clip((d - lo) / (hi - lo), 0, 1)


def main(roots):
    rng = np.random.default_rng(0)
    errors = collections.defaultdict(list)
    for root in roots:
        for clip in sorted(glob.glob(os.path.join(root, "train", "clip_*"))):
            for comp in sorted(glob.glob(os.path.join(clip, "composite_*"))):
                kind = os.path.basename(comp)[len("composite_"):].rsplit("_", 1)[0]
                if kind not in KINDS:
                    continue
                frame = sorted(glob.glob(os.path.join(comp, "*.png")))[0]
                name = os.path.basename(frame)
                truth = np.asarray(Image.open(os.path.join(clip, "rgba", name)).convert("RGBA"))
                truth = truth[..., 3] / 255.0
                px = np.asarray(Image.open(frame).convert("RGB"), dtype=np.float64) / 255.0
                noisy = np.clip(px + rng.normal(0, 0.03, px.shape), 0, 1)
                for label, lo_rule, share, lo_min in RULES:
                    for tag, img in (("", px), (" +noise", noisy)):
                        a = key_alpha(img, lo_rule, share, lo_min)
                        errors[(label, kind + tag)].append(((a - truth) ** 2).mean())
    cols = [k + t for k in KINDS for t in ("", " +noise")]
    print("alpha PSNR dB (of the mean MSE) on training-split composites; n =",
          len(errors[(RULES[0][0], cols[0])]), "per column")
    print("| rule | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for label, *_ in RULES:
        cells = [10 * np.log10(1 / max(np.mean(errors[(label, c)]), 1e-10)) for c in cols]
        print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
