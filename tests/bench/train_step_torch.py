#!/usr/bin/env python3
"""PyTorch twin of tests/bench/train_step.rs: ms per training step (forward, L1 loss, backward,
AdamW update) of the same narrow transparent decoder (levels of 16/32/64/128 channels, one resnet
per down block, GroupNorm(8) + SiLU, no attention, zero-initialised latent 1x1 conv injected at
1/8 resolution) at 128^2 and 256^2, batch 8, on the CPU with 2 threads.

Not part of the build or the tests. To run (torch is large; keep the venv out of the repo):
    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch
    /tmp/tv/bin/python tests/bench/train_step_torch.py [steps]
(only PyPI is reachable here, so the CPU-only wheel index cannot be used; the PyPI wheel runs on
the CPU just the same.) Prints the min over the timed steps, after one warm-up step.
"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BOC = [16, 32, 64, 128]
LAYERS = 1
GROUPS = 8
INJECT_LEVEL = 3


class Resnet(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, c_in, eps=1e-5)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(GROUPS, c_out, eps=1e-5)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.shortcut(x) if self.shortcut is not None else x) + h


def up_resnet_channels(i):
    """Mirrors TransparentDecoderConfig::up_resnet_channels."""
    n = len(BOC)
    out_c = BOC[n - 1 - i]
    prev_c = BOC[n - 1] if i == 0 else BOC[n - i]
    skip_last = BOC[n - 1 - min(i + 1, n - 1)]
    res = []
    for j in range(LAYERS + 1):
        res_in = prev_c if j == 0 else out_c
        skip = skip_last if j == LAYERS else out_c
        res.append((res_in + skip, out_c))
    return res


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        n = len(BOC)
        self.conv_in = nn.Conv2d(3, BOC[0], 3, padding=1)
        self.latent_conv_in = nn.Conv2d(4, BOC[INJECT_LEVEL - 1], 1)
        nn.init.zeros_(self.latent_conv_in.weight)
        nn.init.zeros_(self.latent_conv_in.bias)
        self.down = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        for i in range(n):
            c_in = BOC[0] if i == 0 else BOC[i - 1]
            rs = nn.ModuleList()
            for _ in range(LAYERS):
                rs.append(Resnet(c_in, BOC[i]))
                c_in = BOC[i]
            self.down.append(rs)
            self.downsamplers.append(
                nn.Conv2d(BOC[i], BOC[i], 3, stride=2, padding=1) if i + 1 < n else nn.Identity()
            )
        self.mid = nn.ModuleList([Resnet(BOC[-1], BOC[-1]), Resnet(BOC[-1], BOC[-1])])
        self.up = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for i in range(n):
            level = n - 1 - i
            self.up.append(nn.ModuleList([Resnet(a, b) for a, b in up_resnet_channels(i)]))
            self.upsamplers.append(
                nn.Conv2d(BOC[level], BOC[level], 3, padding=1) if i + 1 < n else nn.Identity()
            )
        self.norm_out = nn.GroupNorm(GROUPS, BOC[0], eps=1e-5)
        self.conv_out = nn.Conv2d(BOC[0], 4, 3, padding=1)

    def forward(self, pixel, latent):
        n = len(BOC)
        injected = self.latent_conv_in(latent)
        x = self.conv_in(pixel)
        skips = [x]
        for i in range(n):
            if i == INJECT_LEVEL:
                x = x + injected
            for r in self.down[i]:
                x = r(x)
                skips.append(x)
            if i + 1 < n:
                x = self.downsamplers[i](x)
                skips.append(x)
        for r in self.mid:
            x = r(x)
        for i in range(n):
            for r in self.up[i]:
                x = r(torch.cat([x, skips.pop()], 1))
            if i + 1 < n:
                x = self.upsamplers[i](F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(x)))


def bench(size, batch, steps):
    torch.manual_seed(0)
    model = Decoder()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    f = 1 << INJECT_LEVEL
    pixel = torch.rand(batch, 3, size, size)
    latent = torch.randn(batch, 4, size // f, size // f)
    target = torch.rand(batch, 4, size, size)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        out = model(pixel, latent)
        loss = (out - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i > 0:
            times.append((time.perf_counter() - t) * 1e3)
    return times


def main():
    torch.set_num_threads(2)
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for size in (128, 256):
        t = bench(size, 8, steps)
        print(f"{size}x{size} batch 8 pytorch: {min(t):8.1f} ms/step (min of {steps}: "
              + ", ".join(f"{x:.0f}" for x in t) + ")")


if __name__ == "__main__":
    main()
