//! `ildiff bench`: how fast matting runs on this machine, with the machine's own matmul speed
//! measured in the same run so numbers from different computers can be compared.
//!
//! Random weights throughout (speed does not depend on the values). Peak memory is the kernel's
//! VmHWM of this process; before each case it is reset through `/proc/self/clear_refs` where the
//! kernel allows, otherwise it is the peak of the whole run so far (the output says which).

use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::Args;

use crate::NoProgress;
use crate::media::{Animation, Delay, Frame, LoopCount};
use crate::model::weights::{Checkpoint, varmap_tensors};
use crate::model::{IldiffConfig, IldiffDecoder, TransparentDecoder, TransparentDecoderConfig};
use crate::pipeline::matte::{MatteOptions, matte_animation, stage_times};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Square frame sides to measure.
    #[arg(long, num_args = 1.., default_values_t = [256u32, 512])]
    pub size: Vec<u32>,
    /// Frames per clip for the proposed default model.
    #[arg(long, default_value_t = 48)]
    pub frames: usize,
    /// Frames for the official LayerDiffuse decoder (slow: 104 M parameters, 8 passes with TTA).
    #[arg(long, default_value_t = 2)]
    pub official_frames: usize,
    /// Matting window (output frames per decoder batch).
    #[arg(long, default_value_t = MatteOptions::default().window)]
    pub window: usize,
    /// Skip the official decoder.
    #[arg(long)]
    pub skip_official: bool,
}

/// GFLOP/s of a 1024³ f32 matmul (best of 5 after a warm-up).
pub fn matmul_gflops(device: &Device) -> anyhow::Result<f64> {
    let n = 1024;
    let a = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), device)?;
    a.matmul(&b)?;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        c.device().synchronize()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

/// VmHWM of this process in MiB, if the kernel reports it.
fn peak_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU seconds (user + system, all threads) this process has used so far, from
/// `/proc/self/stat` (clock ticks of 1/100 s, the Linux `USER_HZ`). On a shared, overloaded
/// machine wall-clock speed says more about the neighbours than about the model; CPU time does
/// not.
fn cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// "CPU x s/frame" and the frame rate `threads` fully available cores would give, from the CPU
/// time used since `cpu0`.
fn cpu_text(cpu0: Option<f64>, frames: usize, threads: usize) -> String {
    match (cpu0, cpu_secs()) {
        (Some(a), Some(b)) if b > a => {
            let per = (b - a) / frames as f64;
            format!(
                "CPU {per:.2} s/frame (= {:.2} frames/s if {threads} cores were free)",
                threads as f64 / per
            )
        }
        _ => "CPU time unavailable".into(),
    }
}

/// Resets VmHWM to the current RSS (`echo 5 > /proc/self/clear_refs`); false where refused.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mem_text(reset: bool) -> String {
    match peak_mib() {
        Some(m) if reset => format!("peak {m:.0} MiB"),
        Some(m) => format!("process peak so far {m:.0} MiB"),
        None => "peak memory unavailable".into(),
    }
}

/// Randomly initialised weights as plain tensors. Built straight from a `VarMap` the weights
/// would be trainable `Var`s, and candle would record the autograd graph of every forward pass,
/// keeping each activation alive: inference from a file never does that, so neither may the
/// bench.
fn random_weights<T>(
    device: &Device,
    build: impl Fn(VarBuilder) -> candle_core::Result<T>,
) -> anyhow::Result<T> {
    let varmap = VarMap::new();
    build(VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    let tensors = varmap_tensors(&varmap)
        .into_iter()
        .map(|(k, v)| (k, v.detach()))
        .collect();
    let ck = Checkpoint::from_tensors(tensors, "random weights");
    Ok(ck.build("benchmark model", DType::F32, device, build)?)
}

fn random_model(cfg: &IldiffConfig, device: &Device) -> anyhow::Result<IldiffDecoder> {
    random_weights(device, |vb| IldiffDecoder::new(cfg, vb))
}

fn bench_default(args: &BenchArgs, size: usize, device: &Device) -> anyhow::Result<()> {
    let cfg = IldiffConfig::cpu_default();
    let model = random_model(&cfg, device)?;
    let t = args.frames.max(1);
    let clip = noise_clip(size as u32, t)?;
    let options = MatteOptions::window(args.window.max(1));
    let reset = reset_peak();
    let cpu0 = cpu_secs();
    let start = Instant::now();
    matte_animation(&model, &clip, &options, &mut NoProgress, &mut |_, _| {})?;
    let total = start.elapsed().as_secs_f64();
    println!(
        "default (small codec + narrow decoder + adapter N={}) {size}x{size}, {t} frames, window {}: \
         {:.2} frames/s wall ({:.2} s), {}, {}",
        cfg.temporal_radius(),
        options.window,
        t as f64 / total,
        total,
        cpu_text(cpu0, t, threads()),
        mem_text(reset)
    );
    // The plate-prior form of the default: the clip's plate is estimated inside the matte.
    let mut plate_cfg = cfg.clone();
    plate_cfg.decoder.key_prior = Some(crate::model::KeyPrior::plate());
    let plate_model = random_model(&plate_cfg, device)?;
    let start = Instant::now();
    matte_animation(
        &plate_model,
        &clip,
        &options,
        &mut NoProgress,
        &mut |_, _| {},
    )?;
    let with_plate = start.elapsed().as_secs_f64();
    let start = Instant::now();
    crate::pipeline::matte::plate_of_animation(&clip, &options.plate, device)?;
    let plate_secs = start.elapsed().as_secs_f64();
    println!(
        "  with the plate prior: {:.2} frames/s wall ({with_plate:.2} s; the plate alone {plate_secs:.2} s = {:.0} %)",
        t as f64 / with_plate,
        100.0 * plate_secs / with_plate
    );
    // Where the time goes: the same windows one after another, each stage timed.
    let stages = stage_times(&model, &clip, &options)?;
    let all = stages.total().max(1e-9);
    let share = |s: f64| format!("{:.0} % ({s:.2} s)", 100.0 * s / all);
    println!(
        "  stages, sequential {all:.2} s: decoder {}, adapter {}, codec encode {}, pixels {}, \
         to frames {}",
        share(stages.decoder),
        share(stages.adapter),
        share(stages.codec),
        share(stages.pixels),
        share(stages.frames)
    );
    Ok(())
}

/// An opaque clip of `t` frames of uniform noise (speed does not depend on the content).
fn noise_clip(size: u32, t: usize) -> anyhow::Result<Animation> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let frames = (0..t)
        .map(|_| {
            let img = image::RgbaImage::from_fn(size, size, |_, _| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let [r, g, b, ..] = state.to_le_bytes();
                image::Rgba([r, g, b, 255])
            });
            Frame::new(img, Delay::from_millis(40))
        })
        .collect();
    Ok(Animation::new(size, size, frames, LoopCount::Infinite)?)
}

fn bench_official(args: &BenchArgs, size: usize, device: &Device) -> anyhow::Result<()> {
    let cfg = TransparentDecoderConfig::official();
    let varmap = VarMap::new();
    let decoder =
        TransparentDecoder::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    let t = args.official_frames.max(1);
    let pixel = Tensor::rand(0f32, 1.0, (1, 3, size, size), device)?;
    let lat = size.div_ceil(8);
    let latent = Tensor::randn(0f32, 1.0, (1, 4, lat, lat), device)?;
    for (name, tta) in [("1 pass", false), ("8-pass TTA", true)] {
        let reset = reset_peak();
        let cpu0 = cpu_secs();
        let start = Instant::now();
        // One frame at a time, as a per-frame decoder is run on a clip.
        for _ in 0..t {
            if tta {
                decoder.decode_tta(&pixel, &latent)?;
            } else {
                decoder.decode(&pixel, &latent)?;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "official LayerDiffuse decoder ({name}) {size}x{size}, {t} frames: {:.3} frames/s \
             wall ({:.2} s/frame), {}, {}",
            t as f64 / secs,
            secs / t as f64,
            cpu_text(cpu0, t, threads()),
            mem_text(reset)
        );
    }
    Ok(())
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

pub fn run(args: &BenchArgs) -> anyhow::Result<bool> {
    let device = Device::Cpu;
    let threads = threads();
    println!("CPU threads available: {threads}");
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let one = load.split_whitespace().next().unwrap_or("?");
        println!(
            "load average (1 min): {one}; wall-clock figures suffer when it exceeds {threads}"
        );
    }
    println!(
        "matmul 1024^3 f32: {:.1} GFLOP/s",
        matmul_gflops(&device).context("matmul benchmark")?
    );
    for &s in &args.size {
        let s = s as usize;
        bench_default(args, s, &device).with_context(|| format!("default model at {s}"))?;
    }
    if !args.skip_official {
        for &s in &args.size {
            let s = s as usize;
            bench_official(args, s, &device).with_context(|| format!("official decoder at {s}"))?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn flags_parse() {
        let w = Wrap::try_parse_from(["bench"]).expect("defaults");
        assert_eq!(w.bench.size, [256, 512]);
        assert_eq!(w.bench.frames, 48);
        assert!(!w.bench.skip_official);
        let w =
            Wrap::try_parse_from(["bench", "--size", "128", "--frames", "4", "--skip-official"])
                .expect("flags");
        assert_eq!(w.bench.size, [128]);
        assert_eq!(w.bench.frames, 4);
        assert!(w.bench.skip_official);
        assert!(Wrap::try_parse_from(["bench", "--frames", "x"]).is_err());
    }
}
