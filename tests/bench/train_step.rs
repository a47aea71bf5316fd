//! Speed benchmark (not a test) of fastconv's ops against candle's own conv2d/GroupNorm:
//! - ms per training step (forward, L1 loss, backward, AdamW update) of the narrow transparent
//!   decoder (`fastconv::bench_decoder_config`) at 128² and 256², batch 8;
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
//! half.

use ildiff::model::fastconv::{bench_decoder_config, forward_bench, train_step_bench};
use ildiff::model::ildiff::IldiffConfig;

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
    println!("candle threads: {}", candle_core::utils::get_num_threads());
    let cfg = bench_decoder_config();
    let batch = 8;
    let sizes: &[usize] = if part == "forward" { &[] } else { &[128, 256] };
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
