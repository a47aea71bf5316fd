use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use ildiff::model::codec::LatentCodec;
use ildiff::model::{IldiffConfig, IldiffDecoder};
use ildiff::pipeline::matte::{MatteOptions, matte_clip};
use std::time::Instant;
fn main() {
    let size: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(512);
    let mut cfg = IldiffConfig::cpu_default();
    if let Ok(j) = std::env::var("DEC") {
        cfg.decoder = serde_json::from_str(&j).unwrap();
    }
    if std::env::var("NOADAPT").is_ok() {
        cfg.adapter = None;
    }
    if let (Some(a), Ok(n)) = (cfg.adapter.as_mut(), std::env::var("DEPTH")) {
        a.temporal_blocks = n.parse().unwrap();
    }
    if let Some(a) = cfg.adapter.as_mut() {
        a.inject_channels = cfg.decoder.inject_channels();
    }
    let vm = VarMap::new();
    let m =
        IldiffDecoder::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let t = 16;
    let px = Tensor::rand(0f32, 1.0, (t, 3, size, size), &Device::Cpu).unwrap();
    let lat = m.codec().unwrap().encode_any_size(&px).unwrap();
    for _ in 0..2 {
        let t0 = Instant::now();
        let c0 = cpu();
        matte_clip(
            &m,
            &px,
            &lat,
            &MatteOptions::default(),
            &mut ildiff::NoProgress,
        )
        .unwrap();
        let c1 = cpu();
        println!(
            "{:.2} fps wall, cpu {:.3} s/frame",
            t as f64 / t0.elapsed().as_secs_f64(),
            (c1 - c0) / t as f64
        );
    }
}
fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
