//! LayerDiffuse models against the PyTorch golden vectors in `tests/reference/` (copied from the
//! shared reference folder so the test runs in a clean clone), and the checked weight loader
//! against the official layouts.
//!
//! Run the timing of the official decoder with
//! `cargo test --release --test golden_layerdiffuse -- --ignored --nocapture`.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use ildiff::Error;
use ildiff::model::weights::{golden_input, golden_var_builder};
use ildiff::model::{
    Checkpoint, Manifest, OffsetEncoder, OffsetEncoderConfig, TransparentDecoder,
    TransparentDecoderConfig,
};

fn reference(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(rel)
}

fn manifest(name: &str) -> Manifest {
    let path = reference(&format!("manifests/{name}.json"));
    let text = std::fs::read_to_string(&path).expect("manifest readable");
    Manifest::from_json(&text).expect("manifest parses")
}

fn golden(name: &str) -> Checkpoint {
    let path = reference(&format!("golden/{name}.safetensors"));
    Checkpoint::read(&path, DType::F32, &Device::Cpu).expect("golden file loads")
}

fn tensor(ck: &Checkpoint, name: &str) -> Tensor {
    ck.get(name).expect("golden tensor present").clone()
}

/// (max abs error, max abs error / max |reference|).
fn errors(got: &Tensor, want: &Tensor) -> (f32, f32) {
    assert_eq!(got.dims(), want.dims());
    let abs = (got - want)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff");
    let scale = want
        .abs()
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("scale");
    (abs, abs / scale)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1())
        .expect("f32 values")
}

#[test]
fn golden_inputs_follow_the_fill_rule() {
    // Checks our u_j against the producer's: the stored inputs are the rule mapped to a range.
    let dec = golden("layerdiffuse_transparent_decoder");
    let pixel = values(&tensor(&dec, "pixel"));
    assert_eq!(pixel, golden_input("decoder.pixel", pixel.len(), 0.0, 1.0));
    let latent = values(&tensor(&dec, "latent"));
    assert_eq!(
        latent,
        golden_input("decoder.latent", latent.len(), -3.0, 3.0)
    );
    let enc = golden("layerdiffuse_offset_encoder");
    let input = values(&tensor(&enc, "input"));
    assert_eq!(input, golden_input("encoder.input", input.len(), 0.0, 1.0));
}

#[test]
fn transparent_decoder_matches_golden() {
    let dev = Device::Cpu;
    let g = golden("layerdiffuse_transparent_decoder");
    let t0 = Instant::now();
    let cfg = TransparentDecoderConfig::official();
    let model =
        TransparentDecoder::new(&cfg, golden_var_builder(DType::F32, &dev)).expect("decoder");
    let built = t0.elapsed();
    let t1 = Instant::now();
    let out = model
        .forward(&tensor(&g, "pixel"), &tensor(&g, "latent"))
        .expect("forward");
    let ran = t1.elapsed();
    let (abs, rel) = errors(&out, &tensor(&g, "output"));
    eprintln!(
        "transparent decoder golden: max abs err {abs:.3e}, rel {rel:.3e}; fill {built:.2?}, forward 128x128 {ran:.2?}"
    );
    assert!(rel < 1e-4, "max abs error {abs}, relative {rel}");
}

#[test]
fn offset_encoder_matches_golden() {
    let dev = Device::Cpu;
    let g = golden("layerdiffuse_offset_encoder");
    let model = OffsetEncoder::new(
        &OffsetEncoderConfig::official(),
        golden_var_builder(DType::F32, &dev),
    )
    .expect("encoder");
    let out = model.forward(&tensor(&g, "input")).expect("forward");
    let (abs, rel) = errors(&out, &tensor(&g, "output"));
    eprintln!("offset encoder golden: max abs err {abs:.3e}, rel {rel:.3e}");
    assert!(rel < 1e-4, "max abs error {abs}, relative {rel}");
}

#[test]
fn offset_encoder_loads_from_a_safetensors_file() {
    // Real file path: fill-rule weights written to disk (f32, and f16 as the official files
    // are), read back as f32 through the checked loader.
    let dev = Device::Cpu;
    let m = manifest("layerdiffuse_offset_encoder");
    let g = golden("layerdiffuse_offset_encoder");
    let dir = tempfile::tempdir().expect("tempdir");
    for (dtype, tolerance) in [(DType::F32, 1e-4), (DType::F16, 2e-2)] {
        let tensors = m.golden_tensors(dtype, &dev).expect("fill");
        let path = dir.path().join(format!("encoder_{dtype:?}.safetensors"));
        candle_core::safetensors::save(&tensors, &path).expect("save");
        let ck = Checkpoint::read(&path, DType::F32, &dev).expect("read");
        let model = ck
            .build("offset encoder", DType::F32, &dev, |vb| {
                OffsetEncoder::new(&OffsetEncoderConfig::official(), vb)
            })
            .expect("build");
        let out = model.forward(&tensor(&g, "input")).expect("forward");
        let (_, rel) = errors(&out, &tensor(&g, "output"));
        assert!(rel < tolerance, "{dtype:?}: relative error {rel}");
    }
}

fn build_decoder(ck: &Checkpoint) -> ildiff::Result<TransparentDecoder> {
    ck.build("transparent decoder", DType::F32, &Device::Cpu, |vb| {
        TransparentDecoder::new(&TransparentDecoderConfig::official(), vb)
    })
}

fn placeholder(m: &Manifest) -> std::collections::HashMap<String, Tensor> {
    m.placeholder_tensors(DType::F32, &Device::Cpu)
        .expect("placeholders")
}

#[test]
fn official_layouts_resolve_every_tensor() {
    let m = manifest("layerdiffuse_transparent_decoder");
    assert_eq!(m.num_elements(), 104_104_804);
    assert_eq!(m.num_params, Some(m.num_elements()));
    let ck = Checkpoint::from_tensors(placeholder(&m), "decoder manifest");
    build_decoder(&ck).expect("every manifest tensor resolves, none left over");
    assert!(ck.unused().is_empty());

    let m = manifest("layerdiffuse_offset_encoder");
    let ck = Checkpoint::from_tensors(placeholder(&m), "encoder manifest");
    ck.build("offset encoder", DType::F32, &Device::Cpu, |vb| {
        OffsetEncoder::new(&OffsetEncoderConfig::official(), vb)
    })
    .expect("encoder layout");
}

fn model_message(r: ildiff::Result<TransparentDecoder>) -> String {
    match r {
        Err(e @ Error::Model(_)) => e.to_string(),
        Err(e) => panic!("expected a model error, got {e}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn missing_misshaped_and_extra_tensors_are_named() {
    let m = manifest("layerdiffuse_transparent_decoder");

    let name = "up_blocks.2.attentions.1.to_v.weight";
    let mut tensors = placeholder(&m);
    tensors.remove(name);
    let msg = model_message(build_decoder(&Checkpoint::from_tensors(
        tensors,
        "x.safetensors",
    )));
    assert!(msg.contains(name) && msg.contains("missing"), "{msg}");
    assert!(msg.ends_with("x.safetensors"), "{msg}");

    let name = "down_blocks.3.resnets.0.conv_shortcut.weight";
    let mut tensors = placeholder(&m);
    tensors.insert(
        name.into(),
        Tensor::zeros((128, 64, 3, 3), DType::F32, &Device::Cpu).expect("t"),
    );
    let msg = model_message(build_decoder(&Checkpoint::from_tensors(
        tensors,
        "y.safetensors",
    )));
    assert!(msg.contains(name), "{msg}");
    assert!(
        msg.contains("[128, 64, 3, 3]") && msg.contains("[128, 64, 1, 1]"),
        "{msg}"
    );

    let mut tensors = placeholder(&m);
    tensors.insert(
        "first_stage_model.decoder.conv_in.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).expect("t"),
    );
    let msg = model_message(build_decoder(&Checkpoint::from_tensors(
        tensors,
        "z.safetensors",
    )));
    assert!(
        msg.contains("first_stage_model.decoder.conv_in.weight"),
        "{msg}"
    );
}

#[test]
fn bad_files_give_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = std::fs::read(reference("golden/layerdiffuse_offset_encoder.safetensors"))
        .expect("golden bytes");

    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &good[..good.len() - 100]).expect("write");
    let e = Checkpoint::read(&truncated, DType::F32, &Device::Cpu).expect_err("truncated");
    let msg = e.to_string();
    assert_eq!(e.kind(), "model");
    assert!(
        msg.contains("truncated") && msg.contains("truncated.safetensors"),
        "{msg}"
    );

    let header_cut = dir.path().join("header_cut.safetensors");
    std::fs::write(&header_cut, &good[..40]).expect("write");
    let e = Checkpoint::read(&header_cut, DType::F32, &Device::Cpu).expect_err("cut header");
    assert_eq!(e.kind(), "model", "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "these are not weights, just a text file\n").expect("write");
    let e = Checkpoint::read(&text, DType::F32, &Device::Cpu).expect_err("text");
    let msg = e.to_string();
    assert!(
        msg.contains("not a safetensors file") && msg.contains("notes.txt"),
        "{msg}"
    );

    let tiny = dir.path().join("tiny.safetensors");
    std::fs::write(&tiny, b"abc").expect("write");
    let e = Checkpoint::read(&tiny, DType::F32, &Device::Cpu).expect_err("3 bytes");
    assert!(e.to_string().contains("not a safetensors file"), "{e}");

    let e = Checkpoint::read(
        &dir.path().join("absent.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .expect_err("absent");
    assert_eq!(e.kind(), "io");
}

/// One forward pass of the official decoder at 128^2 and 512^2 (fill-rule weights).
#[test]
#[ignore = "timing; run with --release -- --ignored --nocapture"]
fn time_official_decoder() {
    let dev = Device::Cpu;
    let cfg = TransparentDecoderConfig::official();
    let model =
        TransparentDecoder::new(&cfg, golden_var_builder(DType::F32, &dev)).expect("decoder");
    for size in [128usize, 512] {
        let pixel = Tensor::rand(0f32, 1f32, (1, 3, size, size), &dev).expect("pixel");
        let latent = Tensor::randn(0f32, 1f32, (1, 4, size / 8, size / 8), &dev).expect("latent");
        let t = Instant::now();
        let out = model.forward(&pixel, &latent).expect("forward");
        let dt = t.elapsed();
        assert_eq!(out.dims(), &[1, 4, size, size]);
        eprintln!("official decoder forward {size}x{size}: {dt:.2?} (one pass, CPU)");
    }
}
