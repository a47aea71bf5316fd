#!/usr/bin/env python3
"""PyTorch twin of tests/bench/unet_step.rs: seconds per UNet step of diffusers' full-size
SD-1.5 + AnimateDiff v2 `UNetMotionModel` (random weights, 77 context tokens, 64^2 latents) on
the CPU with 2 threads, wall and CPU time.

Not part of the build or the tests. To run (torch is large; keep the venv out of the repo):
    python3 -m venv /work/venv-golden && /work/venv-golden/bin/pip install torch diffusers
    /work/venv-golden/bin/python tests/bench/unet_step_torch.py [frames]
"""
import sys
import time

import torch
from diffusers import UNetMotionModel


def main():
    torch.set_num_threads(2)
    frames = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    unet = UNetMotionModel(cross_attention_dim=768, use_motion_mid_block=True).eval()
    x = torch.randn(1, 4, frames, 64, 64)
    ctx = torch.randn(frames, 77, 768)
    with torch.no_grad():
        t0, c0 = time.perf_counter(), time.process_time()
        unet(x, 500, encoder_hidden_states=ctx)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"torch UNetMotionModel step, {frames} frames at 512^2: {wall:.1f} s wall "
        f"({wall / frames:.2f} s per frame), {cpu:.1f} s CPU"
    )


if __name__ == "__main__":
    main()
