//! Training-step benchmark (not a test): ms per step (forward, L1 loss, backward, AdamW update)
//! of the narrow transparent decoder (`fastconv::bench_decoder_config`) at 128² and 256², batch
//! 8, with candle's conv2d and with fastconv's im2col + gemm conv. Compare with
//! `tests/bench/train_step_torch.py` (the same network in PyTorch).
//! Run: `cargo bench --bench train_step` (release profile). Prints the min over the timed steps
//! (the machine is shared, so the min is the least disturbed figure); asserts nothing.
//! A cheaper test-profile run: `cargo test --lib model::fastconv::tests::train_step_figures --
//! --ignored --nocapture`.

use ildiff::model::fastconv::{bench_decoder_config, train_step_bench};

fn main() -> candle_core::Result<()> {
    let cfg = bench_decoder_config();
    let batch = 8;
    println!("candle threads: {}", candle_core::utils::get_num_threads());
    for size in [128, 256] {
        for (fast, steps) in [(true, 5), (false, 2)] {
            let t = train_step_bench(&cfg, batch, size, steps, fast)?;
            let min = t.iter().cloned().fold(f64::INFINITY, f64::min);
            let name = if fast { "fastconv" } else { "candle conv2d" };
            println!("{size}x{size} batch {batch} {name:>13}: {min:8.1} ms/step (min of {steps})");
        }
    }
    Ok(())
}
