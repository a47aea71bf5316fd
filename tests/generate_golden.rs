//! Golden tests of the generation pipeline's numerics against diffusers/transformers runs
//! (files under tests/golden/, made by the scripts beside them; CI only reads them).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use ildiff::pipeline::scheduler::{NoiseSchedule, Sampler, SchedulerKind, Spacing};

fn golden(name: &str) -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    candle_core::safetensors::load(&path, &Device::Cpu).expect("golden file")
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().and_then(|t| t.to_vec1()).expect("values")
}

/// The script's analytic denoiser: eps = 0.1 x + 0.05 sin(0.01 t).
fn eps(x: &Tensor, t: f64) -> Tensor {
    let shift = 0.05 * (0.01 * t as f32).sin();
    (x * 0.1).and_then(|y| y + f64::from(shift)).expect("eps")
}

#[test]
fn schedulers_match_diffusers() {
    let g = golden("schedulers.safetensors");
    let latent0 = &g["latent0"];
    let cases = [
        ("ddim_leading", SchedulerKind::Ddim, Spacing::Leading),
        ("ddim_linspace", SchedulerKind::Ddim, Spacing::Linspace),
        (
            "euler_a_linspace",
            SchedulerKind::EulerAncestral,
            Spacing::Linspace,
        ),
        (
            "euler_a_leading",
            SchedulerKind::EulerAncestral,
            Spacing::Leading,
        ),
    ];
    for (name, kind, spacing) in cases {
        let s = Sampler::new(kind, &NoiseSchedule::sd15(), 10, spacing).expect("sampler");
        let want_t = values(&g[&format!("{name}.timesteps")]);
        let got_t: Vec<f32> = s.timesteps().iter().map(|&t| t as f32).collect();
        assert_eq!(got_t, want_t, "{name} timesteps");
        let want_sigma = values(&g[&format!("{name}.init_noise_sigma")])[0];
        let sigma = s.init_noise_sigma();
        assert!(
            (sigma as f32 - want_sigma).abs() <= 1e-4 * want_sigma.abs(),
            "{name}: init sigma {sigma} vs {want_sigma}"
        );
        let noise = g.get(&format!("{name}.noise"));
        assert_eq!(noise.is_some(), s.needs_noise(), "{name}");
        let mut x = (latent0 * sigma).expect("x");
        for (i, &t) in s.timesteps().iter().enumerate() {
            let input = s.scale_model_input(&x, i).expect("scale");
            let e = eps(&input, t);
            let n = noise.map(|n| n.get(i).expect("noise"));
            x = s.step(i, &x, &e, n.as_ref()).expect("step");
        }
        let want = values(&g[&format!("{name}.out")]);
        let got = values(&x);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let max = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max <= 1e-4 * scale.max(1.0),
            "{name}: max difference {max} (largest value {scale})"
        );
        eprintln!("{name}: max |diff| {max:.2e} over values up to {scale:.2}");
    }
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn clip_tokenizer_matches_transformers() {
    let tok = ildiff::model::weights::read_clip_tokenizer(&golden_dir().join("clip_tiny"))
        .expect("tokenizer");
    let text = std::fs::read_to_string(golden_dir().join("clip_tokens.json")).expect("json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("parse");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 5);
    for case in cases {
        let prompt = case["prompt"].as_str().expect("prompt");
        let want: Vec<u32> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|i| i.as_u64().expect("id") as u32)
            .collect();
        assert_eq!(tok.encode(prompt).ids, want, "prompt {prompt:?}");
    }
}

#[test]
fn clip_text_model_matches_transformers() {
    use candle_core::DType;
    use ildiff::model::clip::{ClipTextEncoder, config_from_json};
    use ildiff::model::weights::golden_var_builder;
    let g = golden("clip_text.safetensors");
    let cfg = config_from_json(
        r#"{"vocab_size": 540, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 2, "hidden_act": "quick_gelu"}"#,
        "tiny",
    )
    .expect("config");
    let enc =
        ClipTextEncoder::new(&cfg, golden_var_builder(DType::F32, &Device::Cpu)).expect("encoder");
    let ids = g["ids"].to_dtype(DType::U32).expect("ids");
    let got = values(&enc.forward(&ids).expect("forward"));
    let want = values(&g["hidden"]);
    assert_eq!(got.len(), want.len());
    let max = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max <= 1e-4, "max difference {max}");
    eprintln!("clip text model: max |diff| {max:.2e}");
}
