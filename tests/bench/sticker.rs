//! Seconds per sticker of the embedded default generator (`models/default/generator.safetensors`
//! with the default matting model) on this CPU, end to end as `ildiff generate` runs it: word
//! conditioning, guided sampling (two UNet passes per step), codec decode, ILDiff matting.
//! Prints each stage's time. Not a test.
//!
//! Run: `CARGO_PROFILE_TEST_OPT_LEVEL=3 cargo bench --bench sticker --profile test`.
//! Environment: `ILDIFF_BENCH_STEPS` (25, the CLI's default), `ILDIFF_BENCH_FRAMES` (16),
//! `ILDIFF_BENCH_SIZE` (the model's own size), `ILDIFF_BENCH_REPS` (3).

use std::time::Instant;

use candle_core::Device;
use ildiff::pipeline::generate::{GenerateRequest, default_generator, generate};

fn env(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    ildiff::model::fastconv::set_enabled(true);
    let t = Instant::now();
    let generator = match default_generator(&Device::Cpu) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!("load: {:.2} s", t.elapsed().as_secs_f64());
    let size = env("ILDIFF_BENCH_SIZE").map(|s| (s as u32, s as u32));
    let request = GenerateRequest {
        prompt: "a red heart pulsing".into(),
        steps: env("ILDIFF_BENCH_STEPS").unwrap_or(GenerateRequest::default().steps),
        frames: env("ILDIFF_BENCH_FRAMES").unwrap_or(16),
        size,
        seed: 1,
        ..GenerateRequest::default()
    };
    let (w, h) = generator.size(&request).expect("size");
    println!(
        "{}: {} frames at {w}x{h}, {} steps, guidance {}",
        generator.name, request.frames, request.steps, request.guidance
    );
    let mut totals = Vec::new();
    for rep in 0..env("ILDIFF_BENCH_REPS").unwrap_or(3) {
        let start = Instant::now();
        let mut stages: Vec<(String, Instant)> = Vec::new();
        let mut progress = |stage: &str, _: u64, _: u64| {
            if stages.last().is_none_or(|(s, _)| s != stage) {
                stages.push((stage.to_string(), Instant::now()));
            }
            true
        };
        generate(&generator, &request, &mut progress, &mut |_, _| {}).expect("generate");
        let end = Instant::now();
        let total = (end - start).as_secs_f64();
        let parts: Vec<String> = stages
            .iter()
            .enumerate()
            .map(|(i, (s, at))| {
                let next = stages.get(i + 1).map_or(end, |(_, t)| *t);
                format!("{s} {:.2} s", (next - *at).as_secs_f64())
            })
            .collect();
        println!("sticker {rep}: {total:.2} s ({})", parts.join(", "));
        totals.push(total);
    }
    totals.sort_by(f64::total_cmp);
    if let Some(m) = totals.get(totals.len() / 2) {
        println!("median: {m:.2} s per sticker");
    }
}
