#!/usr/bin/env python3
"""Trains the embedded prompt -> sticker generator on a GPU with PyTorch.

Why this exists: the Rust trainer (`ildiff train generator`) runs on the CPU at about 1.3 s
per step for two 16-frame clips at 128²; a GPU does the issue's 256² at thousands of clips a
minute. This file re-implements the *forward pass* of `src/model/generator` (word embeddings,
the factorised space-time UNet, the codec's encoder) with the same tensor names, and the
artwork clips of `src/train/art.rs` (poses, shadow, glow, trails) as batched warps on the GPU.
Everything that fixes what the model means comes from the Rust side, in a kit written by

    ildiff train generator -o KIT --export-kit --codec CODEC --art ART --art-subjects ... \
        --size 256 --frames 16

`KIT/init.safetensors` is the fresh model with its latent statistics and metadata (config,
vocabulary, schedule); `KIT/kit.json` and `KIT/sprites/` are the artwork rasters with their
caption words and the word ids of motions and modifiers. This script trains and writes a
generator file with the init file's metadata, which `ildiff generate --generator FILE` loads
and checks tensor by tensor.

    python3 train_generator.py KIT OUT_DIR --minutes 7 --batch 24 --lr 1e-3

Parity with the Rust forward pass: `--parity DIR` writes a random input and this port's output
for `ILDIFF_PARITY=DIR cargo test --lib model::generator::tests::torch_parity -- --ignored`.
"""

import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

META_KEY = "ildiff_generator"
LATENT_CHANNELS = 4


# ----------------------------------------------------------------------------------------
# The model (names as in src/model/generator/unet.rs, words.rs and src/model/ildiff/codec.rs)
# ----------------------------------------------------------------------------------------


def attend(q, k, v, heads):
    """[G, S, C] queries over [G, L, C] keys/values with `heads` heads -> [G, S, C]."""
    g, s, c = q.shape
    l = k.shape[1]
    d = c // heads
    q = q.reshape(g, s, heads, d).transpose(1, 2)
    k = k.reshape(g, l, heads, d).transpose(1, 2)
    v = v.reshape(g, l, heads, d).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v)
    return o.transpose(1, 2).reshape(g, s, c)


def to_tokens(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w).transpose(1, 2)


def from_tokens(x, h, w):
    n, _, c = x.shape
    return x.transpose(1, 2).reshape(n, c, h, w)


def conv(c_in, c_out, k, stride=1):
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2)


class ResBlock(nn.Module):
    def __init__(self, c_in, c_out, cfg):
        super().__init__()
        g = cfg["norm_groups"]
        self.norm1 = nn.GroupNorm(g, c_in, eps=1e-5)
        self.conv1 = conv(c_in, c_out, 3)
        self.temb = nn.Linear(4 * cfg["channels"][0], c_out)
        self.norm2 = nn.GroupNorm(g, c_out, eps=1e-5)
        self.conv2 = conv(c_out, c_out, 3)
        self.skip = conv(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.skip(x) if self.skip is not None else x) + h


class Temporal(nn.Module):
    """x + proj(SiLU(circular 3-tap conv over frames of GN(x)))."""

    def __init__(self, c, g):
        super().__init__()
        self.norm = nn.GroupNorm(g, c, eps=1e-5)
        self.taps = conv(c, 3 * c, 1)
        self.proj = conv(c, c, 1)

    def forward(self, x, frames):
        n, c, h, w = x.shape
        y = self.taps(self.norm(x)).reshape(n // frames, frames, 3, c, h * w)
        mixed = torch.roll(y[:, :, 0], 1, dims=1) + y[:, :, 1] + torch.roll(y[:, :, 2], -1, dims=1)
        return x + self.proj(F.silu(mixed.reshape(n, c, h, w)))


class TemporalAttention(nn.Module):
    def __init__(self, c, cfg):
        super().__init__()
        self.heads = cfg["heads"]
        self.norm = nn.GroupNorm(cfg["norm_groups"], c, eps=1e-5)
        self.qkv = conv(c, 3 * c, 1)
        self.out = conv(c, c, 1)

    def forward(self, x, frames):
        n, c, h, w = x.shape
        if frames == 1:
            return x
        clips = n // frames
        t = (
            self.qkv(self.norm(x))
            .reshape(clips, frames, 3 * c, h * w)
            .permute(0, 3, 1, 2)
            .reshape(clips * h * w, frames, 3 * c)
        )
        a = attend(t[..., :c], t[..., c : 2 * c], t[..., 2 * c :], self.heads)
        a = a.reshape(clips, h * w, frames, c).permute(0, 2, 3, 1).reshape(n, c, h, w)
        return x + self.out(a)


class SelfAttn(nn.Module):
    def __init__(self, c, g):
        super().__init__()
        self.norm = nn.GroupNorm(g, c, eps=1e-5)
        self.qkv = conv(c, 3 * c, 1)
        self.out = conv(c, c, 1)


class Attention(nn.Module):
    def __init__(self, c, cfg, with_self):
        super().__init__()
        g = cfg["norm_groups"]
        self.heads = cfg["heads"]
        if with_self:
            # Rust's name is `self`: a Python keyword-ish attribute, so registered by hand.
            self.add_module("self", SelfAttn(c, g))
        self.with_self = with_self
        self.norm = nn.GroupNorm(g, c, eps=1e-5)
        self.q = conv(c, c, 1)
        self.k = nn.Linear(cfg["context_dim"], c, bias=False)
        self.v = nn.Linear(cfg["context_dim"], c, bias=False)
        self.out = conv(c, c, 1)

    def forward(self, x, ctx, frames):
        n, c, h, w = x.shape
        if self.with_self:
            sa = self._modules["self"]
            t = to_tokens(sa.qkv(sa.norm(x)))
            a = attend(t[..., :c], t[..., c : 2 * c], t[..., 2 * c :], self.heads)
            x = x + sa.out(from_tokens(a, h, w))
        clips = n // frames
        q = to_tokens(self.q(self.norm(x))).reshape(clips, frames * h * w, c)
        a = attend(q, self.k(ctx), self.v(ctx), self.heads).reshape(n, h * w, c)
        return x + self.out(from_tokens(a, h, w))


class Block(nn.Module):
    def __init__(self, c_in, c_out, cfg, level, attn):
        super().__init__()
        self.res = ResBlock(c_in, c_out, cfg)
        self.temporal = Temporal(c_out, cfg["norm_groups"])
        self.temporal_attn = (
            TemporalAttention(c_out, cfg) if level in cfg.get("temporal_attn_levels", []) else None
        )
        self.attn = Attention(c_out, cfg, attn) if attn is not None else None

    def forward(self, x, temb, ctx, frames):
        h = self.temporal(self.res(x, temb), frames)
        if self.temporal_attn is not None:
            h = self.temporal_attn(h, frames)
        return self.attn(h, ctx, frames) if self.attn is not None else h


class Level(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList()


class Time(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        e = 4 * cfg["channels"][0]
        self.linear_1 = nn.Linear(cfg["time_dim"], e)
        self.linear_2 = nn.Linear(e, e)
        self.words = nn.Linear(cfg["context_dim"], e)


class GenUnet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        ch = cfg["channels"]
        levels = len(ch)
        self.time = Time(cfg)
        self.conv_in = conv(LATENT_CHANNELS, ch[0], 3)
        skips = [[ch[0]]]
        self.down = nn.ModuleList()
        c_prev = ch[0]
        for i, c in enumerate(ch):
            lv = Level()
            attn = False if i in cfg["attn_levels"] else None
            for _ in range(cfg["layers"]):
                lv.blocks.append(Block(c_prev, c, cfg, i, attn))
                c_prev = c
                skips[i].append(c)
            if i + 1 < levels:
                lv.downsample = conv(c, c, 3, stride=2)
                skips.append([c])
            else:
                lv.downsample = None
            self.down.append(lv)
        last = levels - 1
        c = ch[last]
        self.mid = nn.ModuleList([Block(c, c, cfg, last, True), Block(c, c, cfg, last, None)])
        up = [None] * levels
        for i in reversed(range(levels)):
            lv = Level()
            attn = False if i in cfg["attn_levels"] else None
            for _ in range(cfg["up_layers"]):
                skip = skips[i].pop() if skips[i] else 0
                lv.blocks.append(Block(c_prev + skip, ch[i], cfg, i, attn))
                c_prev = ch[i]
            up[i] = lv
        self.up = nn.ModuleList(up)
        self.norm_out = nn.GroupNorm(cfg["norm_groups"], ch[0], eps=1e-5)
        self.conv_out = conv(ch[0], LATENT_CHANNELS, 3)

    def time_features(self, t):
        half = self.cfg["time_dim"] // 2
        i = torch.arange(half, device=t.device, dtype=torch.float32)
        freqs = torch.exp(-math.log(10000.0) * i / half)
        args = t.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=1)

    def forward(self, x, t, ctx, frames):
        n = x.shape[0]
        clips = n // frames
        tf = self.time_features(t)
        temb = self.time.linear_2(F.silu(self.time.linear_1(tf))) + self.time.words(ctx.mean(1))
        temb = F.silu(temb)[:, None].expand(clips, frames, temb.shape[1]).reshape(n, -1)
        hs = self.conv_in(x)
        skips = [[hs]]
        for i, lv in enumerate(self.down):
            for b in lv.blocks:
                hs = b(hs, temb, ctx, frames)
                skips[i].append(hs)
            if lv.downsample is not None:
                hs = lv.downsample(hs)
                skips.append([hs])
        for b in self.mid:
            hs = b(hs, temb, ctx, frames)
        for i in reversed(range(len(self.up))):
            for b in self.up[i].blocks:
                hs = b(torch.cat([hs, skips[i].pop()], dim=1), temb, ctx, frames)
            if i > 0:
                hs = F.interpolate(hs, scale_factor=2, mode="nearest")
        return self.conv_out(F.silu(self.norm_out(hs)))


class ConvNorm(nn.Module):
    def __init__(self, c_in, c_out, stride, g):
        super().__init__()
        self.conv = conv(c_in, c_out, 3, stride)
        self.norm = nn.GroupNorm(g, c_out, eps=1e-5)

    def forward(self, x):
        return F.silu(self.norm(self.conv(x)))


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c0, c1, c2 = cfg["channels"]
        g = cfg["norm_groups"]
        self.stages = nn.ModuleList(
            [ConvNorm(a, b, 2, g) for a, b in [(3, c0), (c0, c1), (c1, c2)]]
        )
        self.conv_out = conv(c2, LATENT_CHANNELS, 3)

    def forward(self, rgb):
        x = rgb * 2 - 1
        for s in self.stages:
            x = s(x)
        return self.conv_out(x)


class Words(nn.Module):
    def __init__(self, table, dim):
        super().__init__()
        self.embed = nn.Embedding(table, dim)


class Generator(nn.Module):
    """`words.*`, `unet.*`; the codec's encoder (`codec.encoder.*`) is kept apart, frozen."""

    def __init__(self, config, table):
        super().__init__()
        self.words = Words(table, config["conditioner"]["dim"])
        self.unet = GenUnet(config["unet"])


def read_generator(path):
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if not meta or META_KEY not in meta:
        sys.exit(f"{path}: not an ILDiff generator file (no `{META_KEY}` metadata)")
    return tensors, meta, json.loads(meta[META_KEY])


def build(path, device):
    tensors, meta, info = read_generator(path)
    config = info["config"]
    table = tensors["words.embed.weight"].shape[0]
    gen = Generator(config, table)
    own = {k: v for k, v in tensors.items() if k.startswith(("words.", "unet."))}
    missing, unexpected = gen.load_state_dict(own, strict=False)
    if missing or unexpected:
        sys.exit(f"{path}: tensors do not fit the port: missing {missing}, unexpected {unexpected}")
    enc = Encoder(config["codec"])
    enc_t = {k[len("codec.encoder.") :]: v for k, v in tensors.items() if k.startswith("codec.encoder.")}
    enc.load_state_dict(enc_t, strict=True)
    return gen.to(device), enc.to(device).eval().requires_grad_(False), tensors, meta, config


def save_generator(path, gen, tensors, meta):
    """All tensors of the init file (the codec's untouched) with the trained words and UNet."""
    out = dict(tensors)
    for k, v in gen.state_dict().items():
        out[k] = v.detach().float().cpu().contiguous()
    tmp = path + ".tmp"
    save_file(out, tmp, metadata=meta)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------
# Artwork clips (src/train/art.rs `Animator`), batched on the GPU
# ----------------------------------------------------------------------------------------

MOTIONS = ["bounce", "spin", "squash_stretch", "wave", "walk", "zoom", "float", "turn"]
ON_BASE = {"bounce", "squash_stretch", "wave", "walk"}
TRAVELS = {"bounce", "walk", "float", "spin"}


class Kit:
    def __init__(self, kit_dir, device):
        with open(os.path.join(kit_dir, "kit.json")) as f:
            k = json.load(f)
        self.k = k
        self.size = k["size"]
        self.frames = k["frames"]
        self.key = torch.tensor(k["key"], device=device, dtype=torch.float32)
        self.max_tokens = k["max_tokens"]
        self.pad = k["pad"]
        self.pools = k["pools"]
        self.motion_word = {m["motion"]: m["word"] for m in k["motions"]}
        self.modifier = k["modifiers"]
        sprites = k["sprites"]
        self.words = [s["words"] for s in sprites]
        ims = [np.asarray(Image.open(os.path.join(kit_dir, s["png"])).convert("RGBA"), dtype=np.float32) / 255.0
               for s in sprites]
        side = max(max(im.shape[:2]) for im in ims)
        tex = torch.zeros(len(sprites), 4, side, side, dtype=torch.float16)
        # Sprite sizes stay on the host: poses are planned there, every step.
        self.wh = [(im.shape[1], im.shape[0]) for im in ims]
        for i, im in enumerate(ims):
            h, w = im.shape[:2]
            a = im[..., 3:4]
            pm = np.concatenate([im[..., :3] * a, a], axis=2)  # premultiplied
            tex[i, :, :h, :w] = torch.from_numpy(pm).permute(2, 0, 1)
        self.tex = tex.to(device)
        self.tex_side = side
        self.device = device

    def draw_sprite(self, rng):
        pool = self.pools[rng.randrange(len(self.pools))]
        return pool[rng.randrange(len(pool))]


def pose_params(kit, idx, rng):
    """One clip's choices (ArtLibrary::spec and Animator::new)."""
    motion = MOTIONS[rng.randrange(len(MOTIONS))]
    fill = rng.uniform(0.30, 0.65)
    mirror = rng.random() < 0.3
    shadow = rng.random() < 0.3
    glow = rng.random() < 0.2
    trails = motion in TRAVELS and rng.random() < 0.3
    w = h = float(kit.size)
    side = min(w, h)
    pw, ph = map(float, kit.wh[idx])
    rw, rh = pw - 2.0, ph - 2.0
    long = max(rw, rh, 1.0)
    k = fill * side / long
    cw, ch = rw * k, rh * k
    pivot = (pw / 2.0, ph - 1.0) if motion in ON_BASE else (pw / 2.0, ph / 2.0)
    if motion == "spin":
        grow = math.sqrt(cw * cw + ch * ch) / max(cw, ch, 1.0)
    else:
        grow = {"zoom": 1.2, "wave": 1.1}.get(motion, 1.05)
    ex = ey = max(cw, ch) * grow / 2.0
    margin = 0.03 * side
    slack_x = max(w / 2.0 - ex - margin, 0.0)
    slack_y = max(h / 2.0 - ey - margin, 0.0)
    if motion == "walk":
        ax, ay = slack_x * rng.uniform(0.6, 1.0), 0.1 * min(ch, slack_y)
    elif motion == "bounce":
        ax, ay = 0.0, min(slack_y * 1.6, 0.45 * ch) * rng.uniform(0.6, 1.0)
    elif motion == "float":
        ax, ay = slack_x * rng.uniform(0.3, 0.6), slack_y * rng.uniform(0.2, 0.4)
    else:
        ax, ay = 0.0, 0.0
    free_x = max(slack_x - ax, 0.0)
    cx = w / 2.0 + rng.uniform(-0.5, 0.5) * free_x
    cy = h / 2.0 + rng.uniform(-0.5, 0.5) * max(slack_y - ay / 2.0, 0.0)
    if motion in ON_BASE:
        cy += ch / 2.0
    if motion == "bounce":
        cy += ay / 2.0
    cx, cy = min(max(cx, 0.0), w), min(max(cy, 0.0), h)
    g = rng.randrange(4)
    glow_colour = [(1.0, 0.95, 0.6), (1.0, 1.0, 1.0), (0.6, 0.85, 1.0)][g] if g < 3 else (
        rng.random(), rng.random(), rng.random())
    sign = lambda: 1.0 if rng.random() < 0.5 else -1.0  # noqa: E731
    return dict(
        idx=idx, motion=motion, fill=fill, mirror=mirror, shadow=shadow, glow=glow, trails=trails,
        k=k, pivot=pivot, rest=(cx, cy), amp=(ax, ay), dir=sign(),
        phase=0.0 if rng.random() < 0.5 else 0.5, strength=rng.uniform(0.6, 1.0),
        shadow_off=(rng.uniform(0.02, 0.06) * side * sign(), rng.uniform(0.02, 0.06) * side),
        shadow_opacity=rng.uniform(0.25, 0.5), glow_colour=glow_colour,
        glow_opacity=rng.uniform(0.4, 0.8),
    )


def pose(p, t):
    """Animator::pose: centre, x/y scale and angle at loop phase t."""
    s = p["strength"]
    wv = 2 * math.pi * (t + p["phase"])
    kx = p["k"] * (-1.0 if p["mirror"] else 1.0)
    ky = p["k"]
    angle = 0.0
    x, y = p["rest"]
    m = p["motion"]
    if m == "bounce":
        hop = abs(math.sin(math.pi * t))
        y -= p["amp"][1] * hop
        sq = 0.14 * s * (1.0 - hop) ** 4
        kx *= 1.0 + sq
        ky *= 1.0 - sq
    elif m == "spin":
        angle = p["dir"] * 2 * math.pi * t
    elif m == "squash_stretch":
        q = 0.14 * s * math.sin(wv)
        kx *= 1.0 + q
        ky *= 1.0 - q
    elif m == "wave":
        angle = 0.3 * s * math.sin(wv)
    elif m == "walk":
        x += p["dir"] * p["amp"][0] * math.sin(wv)
        y -= p["amp"][1] * abs(math.sin(2 * wv))
        angle = 0.08 * s * math.sin(2 * wv)
    elif m == "zoom":
        z = 1.0 + 0.18 * s * math.sin(wv)
        kx *= z
        ky *= z
    elif m == "float":
        x += p["dir"] * p["amp"][0] * math.sin(wv)
        y += p["amp"][1] * math.sin(2 * wv)
        angle = 0.1 * s * math.cos(wv)
    elif m == "turn":
        kx *= math.cos(1.25 * s * math.sin(wv))
    return x, y, kx, ky, angle


def box_blur3(a, r):
    """Three box blurs of radius r with zero padding (art.rs `blur`), a [N, 1, H, W]."""
    k = 2 * r + 1
    for _ in range(3):
        a = F.avg_pool2d(a, (1, k), stride=1, padding=(0, r), count_include_pad=True)
        a = F.avg_pool2d(a, (k, 1), stride=1, padding=(r, 0), count_include_pad=True)
    return a


def render_batch(kit, params, ss=2):
    """Premultiplied RGBA clips [B, T, 4, S, S] (2x2 supersampled like Animator::draw)."""
    dev = kit.device
    T, S = kit.frames, kit.size
    n = len(params)
    # Canvas sample positions (pixel centres of the supersampled grid), in canvas pixels.
    coords = (torch.arange(S * ss, device=dev, dtype=torch.float32) + 0.5) / ss
    py, px = torch.meshgrid(coords, coords, indexing="ij")

    def layer(lag, opacity):
        rows = []
        for p in params:
            for f in range(T):
                x, y, kx, ky, ang = pose(p, (f / T - lag) % 1.0)
                rows.append((x, y, kx, ky, ang, p["pivot"][0], p["pivot"][1], p["idx"], opacity))
        r = torch.tensor([row[:7] for row in rows], device=dev, dtype=torch.float32)
        idx = torch.tensor([row[7] for row in rows], device=dev, dtype=torch.long)
        op = torch.tensor([row[8] for row in rows], device=dev, dtype=torch.float32)
        cx, cy, kx, ky, ang, pvx, pvy = [r[:, i, None, None] for i in range(7)]
        dx, dy = px[None] - cx, py[None] - cy
        cos, sin = torch.cos(ang), torch.sin(ang)
        u = (dx * cos + dy * sin) / kx + pvx
        v = (-dx * sin + dy * cos) / ky + pvy
        side = float(kit.tex_side)
        grid = torch.stack([u / side * 2 - 1, v / side * 2 - 1], dim=-1)
        out = []
        for c0 in range(0, len(rows), 256):
            tex = kit.tex[idx[c0 : c0 + 256]].float()
            out.append(F.grid_sample(tex, grid[c0 : c0 + 256], mode="bilinear",
                                     padding_mode="zeros", align_corners=False))
        img = torch.cat(out) * op[:, None, None, None]
        return F.avg_pool2d(img, ss)  # [n*T, 4, S, S]

    body = layer(0.0, 1.0)
    out = torch.zeros_like(body)

    def over(dst, src):
        return src + dst * (1 - src[:, 3:4])

    def flat(a, rgb, opacity):
        s = (a * opacity).clamp(0, 1)
        return torch.cat([rgb * s, s], dim=1)

    sel = lambda key: torch.tensor([p[key] for p in params for _ in range(T)], device=dev)  # noqa: E731
    alpha = body[:, 3:4]
    # Which clips have which extra is decided on the host: reading it back from the GPU would
    # stall every step.
    if any(p["shadow"] for p in params):
        sh = torch.zeros_like(alpha)
        for c, p in enumerate(params):
            if not p["shadow"]:
                continue
            # One whole-pixel offset per clip (art.rs `shift`), clear where it comes from outside.
            ox, oy = round(p["shadow_off"][0]), round(p["shadow_off"][1])
            rows = slice(c * T, (c + 1) * T)
            s = torch.roll(alpha[rows], (oy, ox), dims=(2, 3))
            if oy > 0:
                s[:, :, :oy] = 0
            elif oy < 0:
                s[:, :, oy:] = 0
            if ox > 0:
                s[..., :ox] = 0
            elif ox < 0:
                s[..., ox:] = 0
            sh[rows] = s
        sh = box_blur3(sh, max(1, math.ceil(0.02 * S)))
        op = sel("shadow_opacity").float() * sel("shadow").float()
        out = over(out, flat(sh, torch.zeros(1, 3, 1, 1, device=dev), op[:, None, None, None]))
    if any(p["glow"] for p in params):
        g = (box_blur3(alpha, max(1, math.ceil(0.025 * S))) * 2.5).clamp(max=1.0)
        col = torch.tensor([p["glow_colour"] for p in params for _ in range(T)], device=dev,
                           dtype=torch.float32)[:, :, None, None]
        op = sel("glow_opacity").float() * sel("glow").float()
        out = over(out, flat(g, col, op[:, None, None, None]))
    if any(p["trails"] for p in params):
        trail_on = sel("trails").float()[:, None, None, None]
        for lag, op in [(0.09, 0.15), (0.045, 0.3)]:
            out = over(out, layer(lag, op) * trail_on)
    out = over(out, body)
    return out.reshape(n, T, 4, S, S)


def caption(kit, p, rng, drop=True):
    words = list(kit.words[p["idx"]])
    words.append(kit.motion_word.get(p["motion"]))
    for on, w in [(p["glow"], "glowing"), (p["shadow"], "shadow"), (p["trails"], "trails")]:
        if on:
            words.append(kit.modifier.get(w))
    if p["fill"] < 0.4:
        words.append(kit.modifier.get("small"))
    elif p["fill"] > 0.55:
        words.append(kit.modifier.get("big"))
    out = []
    for w in words:
        if w is not None and w not in out:
            out.append(w)
    if drop:
        if rng.random() < kit.k["caption_drop"]:
            out = []
        else:
            out = [w for w in out if rng.random() >= kit.k["word_drop"]]
    out = out[: kit.max_tokens]
    return out + [kit.pad] * (kit.max_tokens - len(out))


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------


def alphas_cumprod(schedule):
    """SD's scaled-linear betas, rescaled to zero terminal SNR when the schedule says so
    (diffusion::alphas_cumprod)."""
    n = schedule["train_steps"]
    betas = np.linspace(math.sqrt(schedule["beta_start"]), math.sqrt(schedule["beta_end"]), n) ** 2
    ac = np.cumprod(1.0 - betas)
    if schedule.get("zero_terminal_snr"):
        s = np.sqrt(ac)
        s0, st = s[0], s[-1]
        s = (s - st) * s0 / (s0 - st)
        ac = s * s
    return ac


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kit")
    ap.add_argument("out")
    ap.add_argument("--minutes", type=float, default=7.0, help="training time budget")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: time only)")
    ap.add_argument("--batch", type=int, default=24, help="clips per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved weights")
    ap.add_argument("--save-every", type=float, default=90.0, help="seconds between saves")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--est-steps", type=int, default=0,
                    help="steps the cosine decay spans (0: estimated from the first 20 steps and --minutes)")
    ap.add_argument("--resume", metavar="DIR",
                    help="start from DIR/generator-raw.safetensors, its EMA from DIR/generator.safetensors")
    ap.add_argument("--profile", action="store_true",
                    help="time the phases of each step (synchronises the GPU: slower) and print them")
    ap.add_argument("--no-amp", action="store_true", help="train in float32 (no bfloat16 autocast)")
    ap.add_argument("--parity", metavar="DIR", help="write a parity case for the Rust test and exit")
    ap.add_argument("--samples", type=int, default=0, help="write N rendered training clips (PNG strips) and exit")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    gen, enc, tensors, meta, config = build(os.path.join(args.kit, "init.safetensors"), device)
    os.makedirs(args.out, exist_ok=True)

    if args.parity:
        return parity(args.parity, gen, enc, config, tensors, meta)
    kit = Kit(args.kit, device)
    if kit.size != config["size"] or kit.frames != config["frames"]:
        sys.exit(f"kit is {kit.frames} frames at {kit.size}², the model {config['frames']} at {config['size']}²")
    if args.samples:
        return write_samples(kit, args.samples, rng, args.out)

    mean = torch.tensor(config["latent_mean"], device=device).reshape(1, 4, 1, 1)
    std = torch.tensor(config["latent_std"], device=device).reshape(1, 4, 1, 1)
    ac = torch.tensor(alphas_cumprod(config["schedule"]), device=device, dtype=torch.float32)
    share = float(config.get("frame_noise_share", 0.0))
    v_pred = config["schedule"]["prediction"] == "v_prediction"
    T = kit.frames
    amp = device == "cuda" and not args.no_amp
    print(f"device {device}; {len(kit.words)} sprites in {len(kit.pools)} pools; "
          f"{sum(p.numel() for p in gen.parameters())/1e6:.2f} M trainable parameters; "
          f"prediction {'v' if v_pred else 'eps'}, zero SNR {config['schedule'].get('zero_terminal_snr')}",
          flush=True)

    if args.resume:
        raw, _, _ = read_generator(os.path.join(args.resume, "generator-raw.safetensors"))
        gen.load_state_dict({k: v for k, v in raw.items() if k.startswith(("words.", "unet."))})
        print(f"resumed from {args.resume}", flush=True)
    opt = torch.optim.AdamW(gen.parameters(), lr=args.lr, betas=(0.9, 0.999), weight_decay=0.0)
    live = list(gen.state_dict().values())
    ema = {k: v.detach().clone().float() for k, v in gen.state_dict().items()}
    if args.resume:
        avg, _, _ = read_generator(os.path.join(args.resume, "generator.safetensors"))
        for k in ema:
            ema[k].copy_(avg[k])
    ema_list = list(ema.values())
    ema_gen = Generator(config, tensors["words.embed.weight"].shape[0]).to(device)

    def save(tag):
        ema_gen.load_state_dict(ema)
        save_generator(os.path.join(args.out, "generator.safetensors"), ema_gen, tensors, meta)
        save_generator(os.path.join(args.out, "generator-raw.safetensors"), gen, tensors, meta)
        print(f"saved ({tag})", flush=True)

    phases = {}
    log = open(os.path.join(args.out, "log.csv"), "w")
    log.write("step,seconds,loss,lr\n")
    t_start = time.time()
    last_save = t_start
    budget = args.minutes * 60.0
    total = args.est_steps
    step = 0
    window = []
    while True:
        elapsed = time.time() - t_start
        if elapsed > budget or (args.max_steps and step >= args.max_steps):
            break
        if total == 0 and step == 100:
            total = max(200, int(budget / (elapsed / 100)))
            print(f"100 steps in {elapsed:.1f} s: the cosine spans {total} steps", flush=True)
        span = total if total else 10**9
        if step < args.warmup:
            lr = args.lr * (step + 1) / args.warmup
        else:
            prog = min(1.0, (step - args.warmup) / max(1, span - args.warmup))
            lr = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * prog)))
        for g in opt.param_groups:
            g["lr"] = lr
        mark = phase_timer(args.profile, device, phases)
        params = [pose_params(kit, kit.draw_sprite(rng), rng) for _ in range(args.batch)]
        ids = torch.tensor([caption(kit, p, rng) for p in params], device=device, dtype=torch.long)
        with torch.no_grad():
            mark("draw")
            clips = render_batch(kit, params)  # [B, T, 4, S, S] premultiplied
            mark("render")
            rgb = clips[:, :, :3] + kit.key.reshape(1, 1, 3, 1, 1) * (1 - clips[:, :, 3:4])
            rgb = rgb.reshape(-1, 3, kit.size, kit.size).clamp(0, 1)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                z = enc(rgb)
            x0 = (z.float() - mean) / std
            B = args.batch
            t = torch.randint(0, len(ac), (B,), device=device)
            own = torch.randn_like(x0)
            if share > 0:
                shared = torch.randn(B, 1, *x0.shape[1:], device=device)
                eps = (math.sqrt(1 - share) * own.reshape(B, T, *x0.shape[1:]) + math.sqrt(share) * shared)
                eps = eps.reshape(x0.shape)
            else:
                eps = own
            a = ac[t].repeat_interleave(T)[:, None, None, None]
            sa, sb = a.sqrt(), (1 - a).sqrt()
            xt = sa * x0 + sb * eps
            target = sa * eps - sb * x0 if v_pred else eps
        mark("encode+noise")
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            ctx = gen.words.embed(ids)
            pred = gen.unet(xt, t, ctx, T)
        loss = F.mse_loss(pred.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            d = args.ema if args.resume else min(args.ema, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_list, live, 1 - d)
        mark("forward+backward+step+ema")
        window.append(loss.detach())  # no .item() here: it would wait for the GPU every step
        if step % 50 == 0:
            m = torch.stack(window).mean().item()
            window = []
            el = time.time() - t_start
            print(f"step {step} {el:.0f} s loss {m:.4f} lr {lr:.2e}", flush=True)
            if args.profile:
                print("  ms per step: " + ", ".join(f"{k} {v / 50 * 1e3:.1f}" for k, v in phases.items()),
                      flush=True)
                phases.clear()
            log.write(f"{step},{el:.1f},{m:.5f},{lr:.3e}\n")
            log.flush()
        if time.time() - last_save > args.save_every:
            save(f"step {step}")
            last_save = time.time()
    save(f"final, step {step}")
    print(f"done: {step} steps, {args.batch} clips each, {time.time() - t_start:.0f} s", flush=True)


def phase_timer(on, device, phases):
    """A function that adds the time since its last call to `phases[name]` (no-op unless on)."""
    if not on:
        return lambda name: None
    last = [time.time()]

    def mark(name):
        if device == "cuda":
            torch.cuda.synchronize()
        now = time.time()
        phases[name] = phases.get(name, 0.0) + now - last[0]
        last[0] = now

    return mark


def parity(out_dir, gen, enc, config, tensors, meta):
    """A fixed random case through this port, for the Rust parity test."""
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    frames, side = 4, 16
    table = gen.words.embed.weight.shape[0]
    # Perturb the zero-initialised outputs so every branch contributes.
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    x = torch.randn(2 * frames, 4, side, side, generator=g)
    t = torch.tensor([999.0, 321.0])
    ids = torch.randint(0, table, (2, config["conditioner"]["max_tokens"]), generator=g)
    rgb = torch.rand(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        ctx = gen.words.embed(ids)
        out = gen.unet(x, t, ctx, frames)
        z = enc(rgb)
    save_generator(os.path.join(out_dir, "generator.safetensors"), gen, tensors, meta)
    save_file({"x": x, "t": t, "ids": ids.to(torch.int64).float(), "rgb": rgb, "out": out.contiguous(),
               "z": z.contiguous()}, os.path.join(out_dir, "case.safetensors"),
              metadata={"frames": str(frames)})
    print(f"parity case in {out_dir}: out {tuple(out.shape)}, z {tuple(z.shape)}")


def write_samples(kit, n, rng, out_dir):
    """Training clips as PNG strips over the key with their captions, to check the port."""
    params = [pose_params(kit, kit.draw_sprite(rng), rng) for _ in range(n)]
    clips = render_batch(kit, params).cpu()
    inv = {}
    for s, w in kit.modifier.items():
        inv[w] = s
    for i, p in enumerate(params):
        c = clips[i]
        rgb = c[:, :3] + kit.key.cpu().reshape(1, 3, 1, 1) * (1 - c[:, 3:4])
        strip = torch.cat(list(rgb[::2]), dim=2).permute(1, 2, 0).numpy()
        Image.fromarray((strip.clip(0, 1) * 255).astype(np.uint8)).save(
            os.path.join(out_dir, f"sample{i:02}.png"))
        print(i, p["motion"], f"fill {p['fill']:.2f}", "words", caption(kit, p, rng, drop=False))


if __name__ == "__main__":
    main()
