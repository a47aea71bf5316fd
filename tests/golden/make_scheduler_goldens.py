#!/usr/bin/env python3
"""Golden runs of diffusers' DDIM and Euler-ancestral schedulers for tests/generate_golden.rs.

Not run by CI (it needs torch and diffusers: `pip install torch diffusers numpy safetensors`).
Writes tests/golden/schedulers.safetensors. The "denoiser" is analytic so the Rust test can
implement it exactly:  eps(x, t) = 0.1 * x + 0.05 * sin(0.01 * t)  (x = the scaled model input).
Euler-ancestral's per-step noise is drawn here, saved, and injected by the Rust side.

Scheduler settings: SD-1.5's scheduler_config.json (scaled_linear betas 0.00085..0.012, 1000
train steps, steps_offset 1, set_alpha_to_one false, clip_sample false); DDIM with "leading"
spacing (its default for that config) and Euler-a with "linspace" (its default), plus the other
spacing of each.
"""
import os

import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler
import diffusers.schedulers.scheduling_euler_ancestral_discrete as ea_mod
from safetensors.torch import save_file

SD15 = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
    clip_sample=False,
    set_alpha_to_one=False,
)
STEPS = 10
SHAPE = (2, 4, 8, 8)


def eps(x, t):
    return 0.1 * x + 0.05 * torch.sin(torch.tensor(0.01 * float(t), dtype=torch.float32))


def run(scheduler, latent0, name, out):
    scheduler.set_timesteps(STEPS)
    x = latent0 * scheduler.init_noise_sigma
    noises = []
    real_randn = ea_mod.randn_tensor

    def fake_randn(shape, generator=None, device=None, dtype=None, layout=None):
        n = real_randn(shape, generator=generator, device=device, dtype=dtype)
        noises.append(n.clone())
        return n

    ea_mod.randn_tensor = fake_randn
    gen = torch.Generator().manual_seed(7)
    try:
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(x, t)
            e = eps(inp, t)
            kwargs = {"generator": gen} if isinstance(scheduler, EulerAncestralDiscreteScheduler) else {}
            x = scheduler.step(e, t, x, **kwargs).prev_sample
    finally:
        ea_mod.randn_tensor = real_randn
    out[f"{name}.timesteps"] = scheduler.timesteps.to(torch.float32).clone()
    out[f"{name}.init_noise_sigma"] = torch.tensor([float(scheduler.init_noise_sigma)], dtype=torch.float32)
    out[f"{name}.out"] = x.contiguous()
    if noises:
        out[f"{name}.noise"] = torch.stack(noises).contiguous()
    print(name, [round(float(t), 3) for t in scheduler.timesteps], float(x.abs().mean()))


def main():
    latent0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1234))
    out = {"latent0": latent0}
    run(DDIMScheduler(**SD15, timestep_spacing="leading"), latent0, "ddim_leading", out)
    run(DDIMScheduler(**SD15, timestep_spacing="linspace"), latent0, "ddim_linspace", out)
    run(EulerAncestralDiscreteScheduler(**{k: v for k, v in SD15.items() if k not in ("clip_sample", "set_alpha_to_one")}, timestep_spacing="linspace"), latent0, "euler_a_linspace", out)
    run(EulerAncestralDiscreteScheduler(**{k: v for k, v in SD15.items() if k not in ("clip_sample", "set_alpha_to_one")}, timestep_spacing="leading"), latent0, "euler_a_leading", out)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schedulers.safetensors")
    save_file(out, path, metadata={"eps": "0.1 * x + 0.05 * sin(0.01 * t)", "steps": str(STEPS)})
    print("wrote", path)


if __name__ == "__main__":
    main()
