//! SD-1.5 + AnimateDiff + LayerDiffuse-attention UNet against diffusers.
//!
//! - One AnimateDiff motion module against the shared reference golden (C=320, 16 frames).
//! - A tiny random-weight `UNetMotionModel` (and the same with LayerDiffuse units) against the
//!   outputs of `tests/golden/make_sd_goldens.py` (diffusers 0.42.1; weights rebuilt here with
//!   the fill rule, so no weight file is stored).
//! - The loaders against the official layouts (`tests/reference/manifests/`), and the errors
//!   that name a missing, mis-shaped or extra tensor and the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use ildiff::model::diffusion::Denoiser;
use ildiff::model::sd::{MotionModule, MotionModuleConfig, MotionUNet, MotionUNetConfig};
use ildiff::model::weights::{golden_fill, golden_input, golden_var_builder};
use ildiff::model::{Checkpoint, Manifest};

fn root(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(rel)
}

fn manifest(name: &str) -> Manifest {
    let text = std::fs::read_to_string(root(&format!("reference/manifests/{name}.json")))
        .expect("manifest readable");
    Manifest::from_json(&text).expect("manifest parses")
}

fn read(path: &Path) -> Checkpoint {
    Checkpoint::read(path, DType::F32, &Device::Cpu).expect("golden file loads")
}

fn tensor(ck: &Checkpoint, name: &str) -> Tensor {
    ck.get(name).expect("golden tensor present").clone()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1())
        .expect("f32 values")
}

/// (max abs error, max abs error / max |reference|).
fn errors(got: &Tensor, want: &Tensor) -> (f32, f32) {
    assert_eq!(got.dims(), want.dims());
    let (g, w) = (values(got), values(want));
    let abs = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = w.iter().map(|v| v.abs()).fold(0f32, f32::max);
    (abs, abs / scale)
}

#[test]
fn motion_module_matches_reference_golden() {
    let g = read(&root(
        "reference/golden/animatediff_motion_module_c320_f16.safetensors",
    ));
    let x = tensor(&g, "hidden_states");
    assert_eq!(
        values(&x),
        golden_input("motion.hidden", x.elem_count(), -2.0, 2.0)
    );
    let cfg = MotionModuleConfig::animatediff(320);
    let m = MotionModule::new(cfg, golden_var_builder(DType::F32, &Device::Cpu)).expect("module");
    let out = m.forward(&x, 16).expect("forward");
    let (abs, rel) = errors(&out, &tensor(&g, "output"));
    eprintln!("motion module golden: max abs err {abs:.3e}, rel {rel:.3e}");
    assert!(rel < 1e-4, "max abs error {abs}, relative {rel}");

    // The same through the checked loader and the module's manifest (the stored `pos_embed.pe`
    // is checked for shape and ignored: filling it with the rule changes nothing).
    let man = manifest("animatediff_motion_module_c320");
    let ck = Checkpoint::from_tensors(
        man.golden_tensors(DType::F32, &Device::Cpu).expect("fill"),
        "c320.safetensors",
    );
    let m = ck
        .build("motion module", DType::F32, &Device::Cpu, |vb| {
            MotionModule::new(cfg, vb)
        })
        .expect("every manifest tensor used");
    let out2 = m.forward(&x, 16).expect("forward");
    assert_eq!(values(&out), values(&out2));
}

/// The tiny UNet's weights: the fill rule by name for the UNet and the motion modules;
/// LayerDiffuse units from their layout, with `temporal_n.weight` filled as a norm weight.
fn layer_tensors(cfg: &MotionUNetConfig, rank: usize) -> HashMap<String, Tensor> {
    cfg.layer_attn_manifest(rank)
        .tensors
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let v = if name.ends_with("temporal_n.weight") {
                golden_input(name, n, 0.9, 1.1)
            } else {
                golden_fill(name, shape)
            };
            let t = Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).expect("tensor");
            (name.clone(), t)
        })
        .collect()
}

fn tiny_golden(file: &str) -> (Checkpoint, Tensor, Tensor, f64, Tensor) {
    let g = read(&root(&format!("golden/{file}")));
    let latents = tensor(&g, "latents");
    let context = tensor(&g, "context");
    let t = values(&tensor(&g, "timestep"))[0] as f64;
    let out = tensor(&g, "output");
    assert_eq!(
        values(&latents),
        golden_input("unet.latents", latents.elem_count(), -2.0, 2.0)
    );
    (g, latents, context, t, out)
}

#[test]
fn tiny_motion_unet_matches_diffusers() {
    let (_, latents, context, t, want) = tiny_golden("sd_tiny_unet_motion.safetensors");
    let cfg = MotionUNetConfig::tiny();
    let vb = golden_var_builder(DType::F32, &Device::Cpu);
    let unet = MotionUNet::new(&cfg, vb.clone())
        .and_then(|u| u.with_motion(vb))
        .expect("tiny unet");
    let frames = latents.dim(0).expect("frames");
    let out = unet
        .forward(&latents, t, &context, frames)
        .expect("forward");
    let (abs, rel) = errors(&out, &want);
    eprintln!("tiny motion UNet golden: max abs err {abs:.3e}, rel {rel:.3e}");
    assert!(rel < 1e-4, "max abs error {abs}, relative {rel}");
}

#[test]
fn tiny_unet_with_layerdiffuse_attention_matches_torch() {
    let (g, latents, context, t, want) = tiny_golden("sd_tiny_unet_layer.safetensors");
    let cfg = MotionUNetConfig::tiny();
    let rank: usize = g
        .metadata("lora_rank")
        .and_then(|r| r.parse().ok())
        .expect("rank");
    let units: usize = g
        .metadata("units")
        .and_then(|r| r.parse().ok())
        .expect("units");
    assert_eq!(cfg.layer_attn_manifest(rank).tensors.len(), units * 20);
    let layer = Checkpoint::from_tensors(layer_tensors(&cfg, rank), "tiny layer attention");
    let vb = golden_var_builder(DType::F32, &Device::Cpu);
    let unet = MotionUNet::new(&cfg, vb.clone())
        .and_then(|u| u.with_motion(vb))
        .and_then(|u| u.with_layer_attention(rank, layer.var_builder(DType::F32, &Device::Cpu)))
        .expect("tiny unet");
    assert!(unet.has_layer_attention() && unet.has_motion());
    assert!(layer.unused().is_empty(), "{:?}", layer.unused());
    let out = unet
        .forward(&latents, t, &context, latents.dim(0).expect("frames"))
        .expect("forward");
    let (abs, rel) = errors(&out, &want);
    eprintln!("tiny UNet + LayerDiffuse attention golden: max abs err {abs:.3e}, rel {rel:.3e}");
    assert!(rel < 1e-4, "max abs error {abs}, relative {rel}");
}

/// The tiny UNet's three files written to disk, split as the real downloads are.
fn write_tiny_files(dir: &Path, rank: usize) -> [PathBuf; 3] {
    let cfg = MotionUNetConfig::tiny();
    let dev = Device::Cpu;
    let unet = cfg
        .unet_manifest()
        .expect("unet layout")
        .golden_tensors(DType::F32, &dev)
        .expect("fill");
    let motion = cfg
        .motion_manifest()
        .expect("motion layout")
        .golden_tensors(DType::F16, &dev)
        .expect("fill");
    let paths = [
        dir.join("unet.safetensors"),
        dir.join("motion.safetensors"),
        dir.join("layer.safetensors"),
    ];
    candle_core::safetensors::save(&unet, &paths[0]).expect("save");
    candle_core::safetensors::save(&motion, &paths[1]).expect("save");
    candle_core::safetensors::save(&layer_tensors(&cfg, rank), &paths[2]).expect("save");
    paths
}

#[test]
fn tiny_unet_loads_from_files_and_denoises() {
    let (g, latents, context, t, want) = tiny_golden("sd_tiny_unet_layer.safetensors");
    let rank: usize = g
        .metadata("lora_rank")
        .and_then(|r| r.parse().ok())
        .expect("rank");
    let dir = tempfile::tempdir().expect("tempdir");
    let [u, m, l] = write_tiny_files(dir.path(), rank);
    let cfg = MotionUNetConfig::tiny();
    let unet =
        MotionUNet::load(&cfg, &u, Some(&m), Some(&l), DType::F32, &Device::Cpu).expect("load");
    let frames = latents.dim(0).expect("frames");
    // Through the Denoiser seam (8 frames = one window of the tiny config).
    let out = unet
        .predict_noise(&latents, t, &context, frames)
        .expect("predict");
    // The motion modules were stored in f16, as the published adapter is.
    let (_, rel) = errors(&out, &want);
    assert!(rel < 2e-2, "relative error {rel}");
    assert_eq!(unet.latent_channels(), 4);
}

#[test]
fn long_clips_run_as_averaged_context_windows() {
    let cfg = MotionUNetConfig::tiny(); // window 8, overlap 2
    let dev = Device::Cpu;
    let vb = golden_var_builder(DType::F32, &dev);
    let unet = MotionUNet::new(&cfg, vb.clone())
        .and_then(|u| u.with_motion(vb))
        .expect("tiny unet");
    let frames = 12;
    let x = Tensor::from_vec(
        golden_input("win.latents", frames * 4 * 8 * 8, -2.0, 2.0),
        (frames, 4, 8, 8),
        &dev,
    )
    .expect("x");
    let ctx = Tensor::from_vec(
        golden_input("win.context", frames * 3 * 32, -1.0, 1.0),
        (frames, 3, 32),
        &dev,
    )
    .expect("ctx");
    let out = unet
        .predict_noise(&x, 500.0, &ctx, frames)
        .expect("windowed");
    // Windows [0, 8) and [4, 12): frames 4..8 are the mean of both.
    let a = unet
        .forward(
            &x.narrow(0, 0, 8).expect("a"),
            500.0,
            &ctx.narrow(0, 0, 8).expect("a"),
            8,
        )
        .expect("a");
    let b = unet
        .forward(
            &x.narrow(0, 4, 8).expect("b"),
            500.0,
            &ctx.narrow(0, 4, 8).expect("b"),
            8,
        )
        .expect("b");
    let mid = ((a.narrow(0, 4, 4).expect("a") + b.narrow(0, 0, 4).expect("b")).expect("sum") * 0.5)
        .expect("mean");
    let want = Tensor::cat(
        &[
            &a.narrow(0, 0, 4).expect("a"),
            &mid,
            &b.narrow(0, 4, 4).expect("b"),
        ],
        0,
    )
    .expect("cat");
    assert!(errors(&out, &want).0 < 1e-5);
    // And they differ from one 12-frame pass (the module sees different neighbours).
    let whole = unet.forward(&x, 500.0, &ctx, frames).expect("whole");
    assert!(errors(&whole, &out).0 > 1e-4);
}

fn placeholders(m: &Manifest) -> HashMap<String, Tensor> {
    m.placeholder_tensors(DType::F32, &Device::Cpu)
        .expect("placeholders")
}

#[test]
fn official_layouts_match_what_the_loaders_ask_for() {
    let cfg = MotionUNetConfig::sd15();
    let unet_m = manifest("sd15_unet");
    let motion_m = manifest("animatediff_motion_adapter_v1-5-2");
    assert_eq!(unet_m.num_elements(), 859_520_964);
    assert_eq!(cfg.unet_manifest().expect("layout").tensors, unet_m.tensors);
    assert_eq!(
        cfg.motion_manifest().expect("layout").tensors,
        motion_m.tensors
    );
    let layer_m = cfg.layer_attn_manifest(256);
    assert_eq!(layer_m.tensors.len(), 640);

    // All three together, through the checked loader: every tensor used, none missing.
    let unet = Checkpoint::from_tensors(placeholders(&unet_m), "unet.safetensors");
    // Without the `pos_embed.pe` buffers too (they are derived, some conversions drop them).
    let mut motion_t = placeholders(&motion_m);
    motion_t.retain(|k, _| !k.ends_with("pos_embed.pe"));
    assert_eq!(motion_t.len(), motion_m.tensors.len() - 21);
    let motion = Checkpoint::from_tensors(motion_t, "motion.safetensors");
    let layer = Checkpoint::from_tensors(placeholders(&layer_m), "layer.safetensors");
    let model = MotionUNet::from_checkpoints(
        &cfg,
        &unet,
        Some(&motion),
        Some(&layer),
        DType::F32,
        &Device::Cpu,
    )
    .expect("official layouts load");
    assert!(model.has_motion() && model.has_layer_attention());
}

fn load_err(
    cfg: &MotionUNetConfig,
    unet: HashMap<String, Tensor>,
    motion: Option<HashMap<String, Tensor>>,
    layer: Option<HashMap<String, Tensor>>,
) -> String {
    let u = Checkpoint::from_tensors(unet, "unet.safetensors");
    let m = motion.map(|t| Checkpoint::from_tensors(t, "motion.safetensors"));
    let l = layer.map(|t| Checkpoint::from_tensors(t, "layer.safetensors"));
    match MotionUNet::from_checkpoints(cfg, &u, m.as_ref(), l.as_ref(), DType::F32, &Device::Cpu) {
        Err(e) => {
            assert_eq!(e.kind(), "model", "{e}");
            e.to_string()
        }
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn missing_misshaped_and_extra_tensors_are_named_with_the_file() {
    let unet_m = manifest("sd15_unet");
    let motion_m = manifest("animatediff_motion_adapter_v1-5-2");
    let sd15 = MotionUNetConfig::sd15();
    // LayerDiffuse's layout is ours (no official manifest), checked at full size in
    // `official_layouts_match_what_the_loaders_ask_for`; the tiny UNet keeps LoRA merges cheap.
    let tiny = MotionUNetConfig::tiny();
    let tiny_unet = tiny.unet_manifest().expect("tiny layout");
    let layer_m = tiny.layer_attn_manifest(4);
    let zero = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu).expect("zeros");

    let name = "up_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k.weight";
    let mut u = placeholders(&unet_m);
    u.remove(name);
    let msg = load_err(&sd15, u, None, None);
    assert!(msg.contains(name) && msg.contains("missing"), "{msg}");
    assert!(msg.ends_with("unet.safetensors"), "{msg}");

    let name = "mid_block.motion_modules.0.proj_in.weight";
    let mut m = placeholders(&motion_m);
    m.insert(name.into(), zero(&[1280, 640]));
    let msg = load_err(&sd15, placeholders(&unet_m), Some(m), None);
    assert!(msg.contains(name) && msg.contains("[1280, 640]"), "{msg}");
    assert!(
        msg.contains("[1280, 1280]") && msg.ends_with("motion.safetensors"),
        "{msg}"
    );

    let name = "down_blocks.1.motion_modules.0.transformer_blocks.0.pos_embed.pe";
    let mut m = placeholders(&motion_m);
    m.insert(name.into(), zero(&[1, 24, 640]));
    let msg = load_err(&sd15, placeholders(&unet_m), Some(m), None);
    assert!(msg.contains(name) && msg.contains("[1, 24, 640]"), "{msg}");

    let mut m = placeholders(&motion_m);
    m.insert(
        "up_blocks.3.motion_modules.3.norm.weight".into(),
        zero(&[320]),
    );
    let msg = load_err(&sd15, placeholders(&unet_m), Some(m), None);
    assert!(
        msg.contains("up_blocks.3.motion_modules.3.norm.weight"),
        "{msg}"
    );
    assert!(msg.contains("not part of it"), "{msg}");

    let name = "hookers.7.temporal_o.bias";
    let mut l = placeholders(&layer_m);
    l.remove(name);
    let msg = load_err(&tiny, placeholders(&tiny_unet), None, Some(l));
    assert!(
        msg.contains(name) && msg.ends_with("layer.safetensors"),
        "{msg}"
    );

    // An original AnimateDiff file in place of the diffusers adapter gets a hint.
    let m = HashMap::from([(
        "down_blocks.0.motion_modules.0.temporal_transformer.norm.weight".to_string(),
        zero(&[320]),
    )]);
    let msg = load_err(&sd15, placeholders(&unet_m), Some(m), None);
    assert!(msg.contains("MotionAdapter"), "{msg}");

    // A diffusers port's `hookers.layers.{i}` naming loads too.
    let l: HashMap<String, Tensor> = placeholders(&layer_m)
        .into_iter()
        .map(|(k, v)| (k.replacen("hookers.", "hookers.layers.", 1), v))
        .collect();
    let u = Checkpoint::from_tensors(placeholders(&tiny_unet), "unet.safetensors");
    let l = Checkpoint::from_tensors(l, "layer.safetensors");
    MotionUNet::from_checkpoints(&tiny, &u, None, Some(&l), DType::F32, &Device::Cpu)
        .expect("hookers.layers naming");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let cfg = MotionUNetConfig::tiny();
    let dev = Device::Cpu;
    let vb = golden_var_builder(DType::F32, &dev);
    let unet = MotionUNet::new(&cfg, vb.clone())
        .and_then(|u| u.with_motion(vb))
        .expect("tiny unet");
    let x = Tensor::zeros((6, 4, 8, 8), DType::F32, &dev).expect("x");
    let ctx = Tensor::zeros((6, 3, 32), DType::F32, &dev).expect("ctx");
    assert!(
        unet.predict_noise(&x, 1.0, &ctx, 4).is_err(),
        "6 frames in clips of 4"
    );
    assert!(
        unet.predict_noise(&x, 1.0, &ctx.narrow(0, 0, 3).expect("c"), 6)
            .is_err()
    );
    let x3 = Tensor::zeros((6, 3, 8, 8), DType::F32, &dev).expect("x3");
    assert!(unet.predict_noise(&x3, 1.0, &ctx, 6).is_err(), "3 channels");
    // 40 frames with a window of 8: runs (windows), no position-table overflow.
    let x = Tensor::zeros((40, 4, 8, 8), DType::F32, &dev).expect("x");
    let ctx = Tensor::zeros((40, 3, 32), DType::F32, &dev).expect("ctx");
    let out = unet.predict_noise(&x, 1.0, &ctx, 40).expect("windows");
    assert_eq!(out.dims(), &[40, 4, 8, 8]);
}
