//! End-to-end tests of prompt-to-sticker generation with user weights: a tiny diffusers-layout
//! folder of random-weight files written by the test (tiny CLIP, tiny SD VAE, tiny ILDiff
//! decoder; the tokenizer from tests/golden/clip_tiny), the `ildiff generate` binary run as a
//! user would, and — through the library, with a small analytic denoiser standing in for the
//! UNet in this test only — the sticker written as an animated WebP and read back.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{ildiff, stderr};
use ildiff::media::presets::{self, FitOptions};
use ildiff::media::{Limits, decode};
use ildiff::model::clip::{self, ClipTextEncoder};
use ildiff::model::diffusion::Denoiser;
use ildiff::model::weights::{save_checkpoint, save_ildiff, varmap_tensors};
use ildiff::model::{IldiffConfig, IldiffDecoder, SdVae};
use ildiff::pipeline::generate::{GenerateRequest, generate};
use ildiff::pipeline::sd_models::SdFiles;

const VAE_CONFIG: &str = r#"{"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1,
    "latent_channels": 4, "norm_num_groups": 32}"#;
const CLIP_CONFIG: &str = r#"{"vocab_size": 540, "hidden_size": 16, "intermediate_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 2, "hidden_act": "quick_gelu"}"#;

fn fresh() -> (VarMap, VarBuilder<'static>) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    (vm, vb)
}

/// A file holding one zero tensor: enough for the header checks of parts whose model code is
/// not in this build.
fn one_tensor(path: &Path, name: &str, shape: &[usize]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    let t = Tensor::zeros(shape, DType::F16, &Device::Cpu).expect("zeros");
    save_checkpoint(&HashMap::from([(name.to_string(), t)]), "{}", path).expect("save");
}

fn write_tiny_sd(dir: &Path) {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/clip_tiny");
    std::fs::create_dir_all(dir.join("tokenizer")).expect("dir");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(golden.join(f), dir.join("tokenizer").join(f)).expect("copy");
    }
    std::fs::create_dir_all(dir.join("text_encoder")).expect("dir");
    std::fs::write(dir.join("text_encoder/config.json"), CLIP_CONFIG).expect("config");
    let cfg = clip::config_from_json(CLIP_CONFIG, "test").expect("clip config");
    let (vm, vb) = fresh();
    ClipTextEncoder::new(&cfg, vb).expect("clip");
    save_checkpoint(
        &varmap_tensors(&vm),
        "{}",
        &dir.join("text_encoder/model.safetensors"),
    )
    .expect("save");
    std::fs::create_dir_all(dir.join("vae")).expect("dir");
    std::fs::write(dir.join("vae/config.json"), VAE_CONFIG).expect("config");
    let (vm, vb) = fresh();
    let vae_cfg = candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig {
        block_out_channels: vec![32, 32, 32, 32],
        layers_per_block: 1,
        latent_channels: 4,
        norm_num_groups: 32,
        use_quant_conv: true,
        use_post_quant_conv: true,
    };
    SdVae::with_config(vb, vae_cfg).expect("vae");
    save_checkpoint(
        &varmap_tensors(&vm),
        "{}",
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
    )
    .expect("save");
    let (vm, vb) = fresh();
    let dcfg = IldiffConfig {
        codec: None,
        ..IldiffConfig::tiny()
    };
    IldiffDecoder::new(&dcfg, vb).expect("decoder");
    save_ildiff(&vm, &dcfg, &dir.join("ildiff.safetensors")).expect("save");
    one_tensor(
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
        "conv_in.weight",
        &[320, 4, 3, 3],
    );
    one_tensor(
        &dir.join("motion_adapter/diffusion_pytorch_model.safetensors"),
        "down_blocks.0.motion_modules.0.proj_in.weight",
        &[320, 320],
    );
    one_tensor(
        &dir.join("layer_sd15_transparent_attn.safetensors"),
        "hookers.layers.0.to_q_lora.0.down.weight",
        &[256, 320],
    );
}

#[test]
fn without_weights_it_says_no_default_generator_is_installed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("heart.webm");
    let o = ildiff(&[
        "generate",
        "a red heart pulsing",
        "-o",
        out.to_str().expect("utf8"),
        "--preset",
        "telegram",
    ]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("no default generator is installed"), "{err}");
    assert!(err.contains("--model-dir"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists());
}

#[test]
fn user_weights_are_checked_and_bad_tensors_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("sd");
    write_tiny_sd(&model);
    let out = dir.path().join("out.webp");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "generate",
            "a red heart",
            "-o",
            out.to_str().expect("utf8"),
            "--model-dir",
            model.to_str().expect("utf8"),
            "--size",
            "64",
            "--frames",
            "2",
            "--steps",
            "2",
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        ildiff(&refs)
    };
    let o = run(args(&["--check"]));
    assert!(o.status.success(), "{}", stderr(&o));
    // The single-file option replaces the folder's part: a VAE file missing a tensor.
    std::fs::create_dir_all(dir.path().join("bad_vae")).expect("dir");
    std::fs::write(dir.path().join("bad_vae/config.json"), VAE_CONFIG).expect("config");
    let bad_vae = dir
        .path()
        .join("bad_vae/diffusion_pytorch_model.safetensors");
    let good = candle_core::safetensors::load(
        model.join("vae/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .expect("vae");
    let mut bad = good.clone();
    bad.remove("decoder.conv_out.weight");
    save_checkpoint(&bad, "{}", &bad_vae).expect("save");
    let o = run(args(&["--vae", bad_vae.to_str().expect("utf8")]));
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("decoder.conv_out.weight") && err.contains("bad_vae/diffusion_pytorch_model"),
        "{err}"
    );
    // A missing part is named with its option.
    std::fs::remove_dir_all(model.join("motion_adapter")).expect("rm");
    let o = run(args(&[]));
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("--motion"), "{err}");
    assert!(!out.exists());
}

/// eps = 0.1 x: a deterministic stand-in for the UNet (this test only).
struct Shrink;

impl Denoiser for Shrink {
    fn predict_noise(
        &self,
        latents: &Tensor,
        _: f64,
        context: &Tensor,
        frames: usize,
    ) -> candle_core::Result<Tensor> {
        assert_eq!(context.dim(0)?, latents.dim(0)?);
        assert_eq!(latents.dim(0)? % frames, 0);
        latents * 0.1
    }

    fn latent_channels(&self) -> usize {
        4
    }
}

#[test]
fn tiny_user_weights_make_a_sticker_with_alpha() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("sd");
    write_tiny_sd(&model);
    let files = SdFiles::from_dir(&model);
    files.check().expect("complete");
    let generator = files.load(Arc::new(Shrink), &Device::Cpu).expect("load");
    let request = GenerateRequest {
        prompt: "a red heart pulsing".into(),
        negative: "blurry".into(),
        seed: 3,
        steps: 2,
        frames: 4,
        size: Some((64, 64)),
        ..GenerateRequest::default()
    };
    let mut previews = 0;
    let out = generate(
        &generator,
        &request,
        &mut ildiff::NoProgress,
        &mut |_, f| previews += f.len(),
    )
    .expect("generate");
    assert_eq!(previews, 4);
    assert_eq!(out.animation.len(), 4);
    // A plain animated WebP keeps the requested size (the presets' own tests cover fitting).
    let path = dir.path().join("heart.webp");
    let report = presets::export_plain(
        &out.animation,
        &path,
        &FitOptions::default(),
        None,
        &mut ildiff::NoProgress,
    )
    .expect("export");
    assert!(report.passed, "{report}");
    let back = decode::open(&path, &Limits::default()).expect("read back");
    assert_eq!(back.len(), 4);
    assert_eq!((back.width, back.height), (64, 64));
    assert!(back.has_alpha(), "the sticker has transparency");
}
