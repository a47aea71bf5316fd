//! Speed benchmark (not a test) of fastconv's ops against candle's own conv2d/GroupNorm:
//! - ms per training step (forward, L1 loss, backward, AdamW update) of the narrow transparent
//!   decoder (`bench_decoder_config` below) at 128² and 256², batch 8;
//! - inference frames/s of the `IldiffConfig::cpu_default()` decoder (random weights) at 512²,
//!   batch 4.
//!
//! Compare the training figures with `tests/bench/train_step_torch.py` (the same network in
//! PyTorch). Run: `cargo bench --bench train_step` (release profile), or without building the
//! release dependencies: `cargo bench --bench train_step --profile test`. Prints the min over
//! the timed runs (the machine is shared, so the min is the least disturbed figure); asserts
//! nothing. candle's reference training step is slow (minutes at 256²): it runs at 128² (and
//! for the forward) only, unless `ILDIFF_BENCH_CANDLE=all`; `=forward` runs candle for the
//! forward only, `=none` skips candle altogether. `ILDIFF_BENCH=train` or `=forward` runs one
//! half; `ILDIFF_BENCH_SIZES=128` picks the training sizes.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use ildiff::model::fastconv;
use ildiff::model::ildiff::IldiffConfig;
use ildiff::model::{TransparentDecoder, TransparentDecoderConfig};

/// The narrow decoder the `train_step` benchmark trains: [`TransparentDecoderConfig`] with
/// levels of 16, 32, 64 and 128 channels, one resnet per down block and no attention (so the
/// PyTorch twin in `tests/bench/train_step_torch.py` stays short and convs dominate).
pub fn bench_decoder_config() -> TransparentDecoderConfig {
    TransparentDecoderConfig {
        block_out_channels: vec![16, 32, 64, 128],
        layers_per_block: 1,
        norm_groups: 8,
        attn_levels: vec![],
        mid_attention: false,
        ..TransparentDecoderConfig::official()
    }
}

/// Times `steps` training steps (forward, L1 loss, backward, AdamW update) of a
/// [`TransparentDecoder`] built from `cfg` on random `[batch, 3, size, size]` inputs, after one
/// untimed warm-up step, and returns each step's milliseconds. `fast` picks fastconv's ops or
/// candle's own conv2d and GroupNorm (set for this thread during the call, then restored).
pub fn train_step_bench(
    cfg: &TransparentDecoderConfig,
    batch: usize,
    size: usize,
    steps: usize,
    fast: bool,
) -> Result<Vec<f64>> {
    let prev = fastconv::set_enabled(fast);
    let result = (|| {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let model = TransparentDecoder::new(cfg, vb)?;
        let params = ParamsAdamW {
            lr: 1e-4,
            ..Default::default()
        };
        let mut opt = AdamW::new(varmap.all_vars(), params)?;
        let f = cfg.latent_factor();
        let pixel = Tensor::rand(0f32, 1f32, (batch, cfg.in_channels, size, size), &dev)?;
        let latent_shape = (batch, cfg.latent_channels, size / f, size / f);
        let latent = Tensor::randn(0f32, 1f32, latent_shape, &dev)?;
        let target = Tensor::rand(0f32, 1f32, (batch, cfg.out_channels, size, size), &dev)?;
        let mut times = Vec::with_capacity(steps);
        for i in 0..=steps {
            let t = Instant::now();
            let out = model.forward(&pixel, &latent)?;
            let loss = (out - &target)?.abs()?.mean_all()?;
            opt.backward_step(&loss)?;
            if i > 0 {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(times)
    })();
    fastconv::set_enabled(prev);
    result
}

/// Times `iters` inference forwards (no gradients) of a [`TransparentDecoder`] built from
/// `cfg` with fresh random weights on random `[batch, 3, size, size]` inputs, after one
/// untimed warm-up, and returns each forward's milliseconds. `fast` as in
/// [`train_step_bench`].
pub fn forward_bench(
    cfg: &TransparentDecoderConfig,
    batch: usize,
    size: usize,
    iters: usize,
    fast: bool,
) -> Result<Vec<f64>> {
    let prev = fastconv::set_enabled(fast);
    let result = (|| {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let model = TransparentDecoder::new(cfg, vb)?;
        let f = cfg.latent_factor();
        let pixel = Tensor::rand(0f32, 1f32, (batch, cfg.in_channels, size, size), &dev)?;
        let latent_shape = (batch, cfg.latent_channels, size / f, size / f);
        let latent = Tensor::randn(0f32, 1f32, latent_shape, &dev)?;
        let mut times = Vec::with_capacity(iters);
        for i in 0..=iters {
            let t = Instant::now();
            let out = model.forward(&pixel, &latent)?;
            // Read one value so the work cannot be skipped.
            out.flatten_all()?.get(0)?.to_scalar::<f32>()?;
            if i > 0 {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(times)
    })();
    fastconv::set_enabled(prev);
    result
}

fn min(t: &[f64]) -> f64 {
    t.iter().cloned().fold(f64::INFINITY, f64::min)
}

fn main() -> candle_core::Result<()> {
    let candle = std::env::var("ILDIFF_BENCH_CANDLE").unwrap_or_default();
    let candle_at = |size: usize| match candle.as_str() {
        "none" => false,
        "all" => true,
        "forward" => size == 512,
        _ => size != 256,
    };
    let part = std::env::var("ILDIFF_BENCH").unwrap_or_default();
    // The allocator settings `ildiff train` runs with (freed activations kept for reuse).
    println!(
        "training allocator settings: {}",
        if ildiff::train::keep_freed_memory() {
            "on"
        } else {
            "unavailable"
        }
    );
    println!("candle threads: {}", candle_core::utils::get_num_threads());
    let cfg = bench_decoder_config();
    let batch = 8;
    // `ILDIFF_BENCH_SIZES=128` (comma-separated) times only those training sizes.
    let sizes: Vec<usize> = match std::env::var("ILDIFF_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
        Err(_) => vec![128, 256],
    };
    let sizes: &[usize] = if part == "forward" { &[] } else { &sizes };
    for &size in sizes {
        for (fast, steps) in [(true, 5), (false, 1)] {
            if !fast && !candle_at(size) {
                continue;
            }
            let t = train_step_bench(&cfg, batch, size, steps, fast)?;
            let name = if fast { "fastconv" } else { "candle" };
            println!(
                "train {size}x{size} batch {batch} {name:>8}: {:8.1} ms/step (min of {steps})",
                min(&t)
            );
        }
    }
    let dec = IldiffConfig::cpu_default().decoder;
    let (batch, size) = (4, 512);
    for (fast, iters) in [(true, 3), (false, 1)] {
        if part == "train" || (!fast && !candle_at(size)) {
            continue;
        }
        let t = forward_bench(&dec, batch, size, iters, fast)?;
        let name = if fast { "fastconv" } else { "candle" };
        let ms = min(&t);
        println!(
            "forward cpu_default decoder {size}x{size} batch {batch} {name:>8}: {ms:8.1} ms \
             = {:.2} frames/s (min of {iters})",
            batch as f64 * 1e3 / ms
        );
    }
    Ok(())
}
