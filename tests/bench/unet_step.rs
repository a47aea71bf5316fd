//! Seconds per UNet step of the full-size SD-1.5 UNet + AnimateDiff v2 motion modules on this
//! CPU (not a test). Random (fill-rule) weights: speed does not depend on the values.
//!
//! One step = one `predict_noise` call on one clip (classifier-free guidance doubles it).
//! Defaults: 16 frames at 512² (64² latents), 77 context tokens, f32. Environment:
//! `ILDIFF_BENCH_FRAMES` (16), `ILDIFF_BENCH_LATENT` (64), `ILDIFF_BENCH_STEPS` (1),
//! `ILDIFF_BENCH_DTYPE` (`f32`, `bf16`, `f16`), `ILDIFF_BENCH_LAYER=1` adds LayerDiffuse's
//! attention units, `ILDIFF_BENCH_MOTION=0` drops the motion modules.
//!
//! Run: `CARGO_PROFILE_TEST_OPT_LEVEL=3 cargo bench --bench unet_step --profile test`
//! (reuses the dev dependencies; or `cargo bench --bench unet_step` for the release profile).
//! Needs about 6 GiB for the f32 weights plus 2–3 GiB of activations at 16 frames.
//!
//! Measured on the 2-core AVX2 dev machine (shared, load average ~9), f32, 16 frames at 512²:
//! 905 s of CPU time per step (57 CPU-s per frame), 2449 s wall, peak 7.5 GiB; unshared that
//! is about 450–500 s wall with 2 threads. bf16/f16 do not help on this CPU (no bf16/fp16
//! arithmetic; the fast convs are f32-only); they only halve the weights' memory.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use ildiff::model::diffusion::Denoiser;
use ildiff::model::sd::{MotionUNet, MotionUNetConfig};
use ildiff::model::weights::golden_var_builder;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// VmHWM (peak resident memory) of this process in GiB, where the kernel reports it.
fn peak_gib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / (1024.0 * 1024.0))
}

/// CPU seconds (user + system) this process has used, where the kernel reports them: on a
/// shared machine the wall time depends on the neighbours, the CPU time much less.
fn cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() -> anyhow::Result<()> {
    let frames = env("ILDIFF_BENCH_FRAMES", 16);
    let latent = env("ILDIFF_BENCH_LATENT", 64);
    let steps = env("ILDIFF_BENCH_STEPS", 1).max(1);
    let layer = env("ILDIFF_BENCH_LAYER", 0) == 1;
    let motion = env("ILDIFF_BENCH_MOTION", 1) == 1;
    let dtype = match std::env::var("ILDIFF_BENCH_DTYPE").as_deref() {
        Ok("bf16") => DType::BF16,
        Ok("f16") => DType::F16,
        _ => DType::F32,
    };
    let dev = Device::Cpu;
    let cfg = MotionUNetConfig::sd15();
    println!(
        "candle threads: {}; SD-1.5 UNet{}{}, {frames} frames, {latent}² latents ({}² pixels), {dtype:?}",
        candle_core::utils::get_num_threads(),
        if motion { " + motion modules" } else { "" },
        if layer {
            " + LayerDiffuse attention"
        } else {
            ""
        },
        latent * 8
    );
    let t0 = Instant::now();
    let vb = golden_var_builder(dtype, &dev);
    let mut unet = MotionUNet::new(&cfg, vb.clone())?;
    if motion {
        unet = unet.with_motion(vb.clone())?;
    }
    if layer {
        unet = unet.with_layer_attention(256, vb)?;
    }
    println!("built in {:.1} s", t0.elapsed().as_secs_f64());
    let x = Tensor::randn(0f32, 1.0, (frames, 4, latent, latent), &dev)?.to_dtype(dtype)?;
    let ctx = Tensor::randn(0f32, 1.0, (frames, 77, 768), &dev)?.to_dtype(dtype)?;
    let mut best = f64::INFINITY;
    for step in 0..steps {
        let t = Instant::now();
        let c0 = cpu_secs();
        let out = unet.predict_noise(&x, 500.0, &ctx, frames)?;
        let s = t.elapsed().as_secs_f64();
        let cpu = cpu_secs().zip(c0).map(|(a, b)| a - b);
        anyhow::ensure!(out.dims() == x.dims(), "output shape {:?}", out.dims());
        best = best.min(s);
        println!(
            "step {step}: {s:.1} s wall ({:.2} s per frame), {} CPU",
            s / frames as f64,
            cpu.map_or("n/a".into(), |c| format!("{c:.1} s"))
        );
    }
    println!(
        "UNet step, {frames} frames at {}²: {best:.1} s (min of {steps}); peak memory {}",
        latent * 8,
        peak_gib().map_or("n/a".into(), |g| format!("{g:.1} GiB"))
    );
    Ok(())
}
