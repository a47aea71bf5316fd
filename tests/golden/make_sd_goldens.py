#!/usr/bin/env python3
"""Golden vectors for src/model/sd from diffusers itself (not run by CI or `cargo test`).

Builds a tiny random-weight `UNetMotionModel` (the same code paths as SD-1.5 + AnimateDiff v2:
cross-attention down/up blocks, a plain down/up block, a mid block with a motion module,
motion modules after every resnet(+attention) pair) with the reference fill rule of
`tests/reference/README.md`, so the Rust tests rebuild the weights from the names alone, and
saves small inputs and outputs in this folder:

- sd_tiny_unet_motion.safetensors: the UNet + motion modules;
- sd_tiny_unet_layer.safetensors: the same with every spatial attention replaced by a
  LayerDiffuse transparent-attention unit (rank-8 LoRA + temporal layers, one layer frame),
  written here from LayerDiffuse's published processor maths.

It first checks its own fill rule against the shared reference golden of one AnimateDiff
motion module (C=320), when that file is present.

Run (CPU is fine, ~1 minute):
    python3 -m venv /work/venv-golden
    /work/venv-golden/bin/pip install torch diffusers safetensors
    /work/venv-golden/bin/python tests/golden/make_sd_goldens.py
Produced with torch 2.15.0 and diffusers 0.42.1.
"""

import math
import os
import sys

import torch
import torch.nn.functional as F
from diffusers import UNetMotionModel
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "..", "reference", "golden", "animatediff_motion_module_c320_f16.safetensors")

FRAMES = 8
SIZE = 32
TOKENS = 7
TIMESTEP = 421
LORA_RANK = 8


def fnv1a32(name: str) -> int:
    h = 0x811C9DC5
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def fill_u(name: str, numel: int) -> torch.Tensor:
    j = torch.arange(numel, dtype=torch.int64)
    v = (j * 2654435761 + fnv1a32(name)) % (2**32)
    return v.to(torch.float64) / 2**32


def fill(name: str, shape, norm: bool | None = None) -> torch.Tensor:
    """The fill rule, with a norm weight recognised by its name as src/model/weights.rs does
    (`norm` in the name, ends with `.weight`, 1-D) unless `norm` says otherwise."""
    numel = math.prod(shape)
    u = fill_u(name, numel)
    if len(shape) >= 2:
        fan_in = numel // shape[0]
        v = (u - 0.5) * 2 * math.sqrt(3.0 / fan_in)
    else:
        if norm is None:
            norm = "norm" in name and name.endswith(".weight")
        v = 1 + (u - 0.5) * 0.2 if norm else (u - 0.5) * 0.2
    return v.to(torch.float32).reshape(shape)


def golden_input(name: str, shape, lo: float, hi: float) -> torch.Tensor:
    u = fill_u(name, math.prod(shape))
    return (lo + (hi - lo) * u).to(torch.float32).reshape(shape)


@torch.no_grad()
def fill_module(module: torch.nn.Module, prefix: str = ""):
    for name, p in module.named_parameters():
        p.copy_(fill(prefix + name, tuple(p.shape)))


@torch.no_grad()
def check_motion_module_reference():
    if not os.path.exists(REFERENCE):
        print("reference motion-module golden not found; skipping the self-check")
        return
    g = load_file(REFERENCE)
    m = AnimateDiffTransformer3D(
        num_attention_heads=8,
        attention_head_dim=40,
        in_channels=320,
        norm_num_groups=32,
        cross_attention_dim=None,
        activation_fn="geglu",
        attention_bias=False,
        positional_embeddings="sinusoidal",
        num_positional_embeddings=32,
    ).eval()
    fill_module(m)
    x = g["hidden_states"]
    assert torch.equal(x, golden_input("motion.hidden", tuple(x.shape), -2.0, 2.0)), "input rule"
    out = m(x, num_frames=16)
    err = (out - g["output"]).abs().max().item() / g["output"].abs().max().item()
    print(f"self-check against the shared motion-module golden: max rel err {err:.2e}")
    assert err < 1e-5, err


class LoRA(torch.nn.Module):
    def __init__(self, inp: int, out: int, rank: int):
        super().__init__()
        self.down = torch.nn.Linear(inp, rank, bias=False)
        self.up = torch.nn.Linear(rank, out, bias=False)

    def merged(self, org: torch.nn.Linear):
        return org.weight + self.up.weight @ self.down.weight


def mha(q, k, v, heads):
    b, lq, c = q.shape
    d = c // heads
    split = lambda t: t.reshape(b, -1, heads, d).transpose(1, 2)
    o = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return o.transpose(1, 2).reshape(b, lq, c)


class LayerDiffuseUnit(torch.nn.Module):
    """LayerDiffuse's AttentionSharingUnit with one layer frame and no control convs, as a
    diffusers attention processor."""

    def __init__(self, dim: int, context_dim: int, rank: int):
        super().__init__()
        self.to_q_lora = torch.nn.ModuleList([LoRA(dim, dim, rank)])
        self.to_k_lora = torch.nn.ModuleList([LoRA(context_dim, dim, rank)])
        self.to_v_lora = torch.nn.ModuleList([LoRA(context_dim, dim, rank)])
        self.to_out_lora = torch.nn.ModuleList([LoRA(dim, dim, rank)])
        self.temporal_i = torch.nn.Linear(dim, dim)
        self.temporal_n = torch.nn.LayerNorm(dim, elementwise_affine=True, eps=1e-6)
        self.temporal_q = torch.nn.Linear(dim, dim)
        self.temporal_k = torch.nn.Linear(dim, dim)
        self.temporal_v = torch.nn.Linear(dim, dim)
        self.temporal_o = torch.nn.Linear(dim, dim)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        h = hidden_states
        ctx = h if encoder_hidden_states is None else encoder_hidden_states
        q = F.linear(h, self.to_q_lora[0].merged(attn.to_q), attn.to_q.bias)
        k = F.linear(ctx, self.to_k_lora[0].merged(attn.to_k), attn.to_k.bias)
        v = F.linear(ctx, self.to_v_lora[0].merged(attn.to_v), attn.to_v.bias)
        o = mha(q, k, v, attn.heads)
        o = F.linear(o, self.to_out_lora[0].merged(attn.to_out[0]), attn.to_out[0].bias)
        m = h + o
        x = self.temporal_i(self.temporal_n(m))
        b, d, c = x.shape
        x = x.reshape(b * d, 1, c)  # '(b f) d c -> (b d) f c' with f = 1
        x = mha(self.temporal_q(x), self.temporal_k(x), self.temporal_v(x), attn.heads)
        x = self.temporal_o(x).reshape(b, d, c)
        return (m + x) - h


def tiny_unet() -> UNetMotionModel:
    unet = UNetMotionModel(
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
        up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"),
        block_out_channels=(32, 64),
        layers_per_block=2,
        norm_num_groups=8,
        norm_eps=1e-5,
        cross_attention_dim=32,
        num_attention_heads=2,
        motion_num_attention_heads=2,
        motion_max_seq_length=32,
        use_motion_mid_block=True,
    ).eval()
    fill_module(unet)
    return unet


def spatial_attentions(unet):
    """Spatial transformers in LayerDiffuse's unit order: down, up, mid."""
    out = []
    for blocks in (unet.down_blocks, unet.up_blocks):
        for block in blocks:
            for t in getattr(block, "attentions", None) or []:
                out.append(t)
    out.extend(unet.mid_block.attentions)
    return out


@torch.no_grad()
def install_layer_units(unet, rank: int) -> int:
    index = 0
    for t in spatial_attentions(unet):
        for tb in t.transformer_blocks:
            for attn in (tb.attn1, tb.attn2):
                dim = attn.to_q.in_features
                ctx = attn.to_k.in_features
                unit = LayerDiffuseUnit(dim, ctx, rank)
                prefix = f"hookers.{index}."
                for name, p in unit.named_parameters():
                    full = prefix + name
                    p.copy_(fill(full, tuple(p.shape), norm=name == "temporal_n.weight"))
                attn.set_processor(unit)
                index += 1
    return index


@torch.no_grad()
def run(unet):
    latents = golden_input("unet.latents", (FRAMES, 4, SIZE, SIZE), -2.0, 2.0)
    context = golden_input("unet.context", (FRAMES, TOKENS, 32), -1.0, 1.0)
    sample = latents.reshape(1, FRAMES, 4, SIZE, SIZE).permute(0, 2, 1, 3, 4)
    out = unet(sample, TIMESTEP, encoder_hidden_states=context).sample
    out = out.permute(0, 2, 1, 3, 4).reshape(FRAMES, 4, SIZE, SIZE).contiguous()
    return {
        "latents": latents,
        "context": context,
        "timestep": torch.tensor([float(TIMESTEP)]),
        "output": out,
    }


def main():
    torch.manual_seed(0)
    check_motion_module_reference()
    meta = {"torch": torch.__version__, "frames": str(FRAMES)}
    import diffusers

    meta["diffusers"] = diffusers.__version__
    unet = tiny_unet()
    g = run(unet)
    save_file(g, os.path.join(HERE, "sd_tiny_unet_motion.safetensors"), metadata=meta)
    print("motion UNet output: mean |x|", g["output"].abs().mean().item())
    n = install_layer_units(unet, LORA_RANK)
    g2 = run(unet)
    meta2 = dict(meta, lora_rank=str(LORA_RANK), units=str(n))
    save_file(g2, os.path.join(HERE, "sd_tiny_unet_layer.safetensors"), metadata=meta2)
    diff = (g2["output"] - g["output"]).abs().max().item()
    print(f"LayerDiffuse units: {n}; output changed by up to {diff:.3e}")
    assert diff > 1e-3, "the LayerDiffuse units did not change the output"


if __name__ == "__main__":
    sys.exit(main())
