//! `ildiff train codec|decoder|generator`: the training commands. Each run lives in one folder (`--out`):
//! `checkpoint.safetensors` (weights + optimiser state, resumable with `--resume`), `log.csv`,
//! `run.json` (the exact arguments), and the inference file (`codec.safetensors` or
//! `ildiff.safetensors`, `generator.safetensors`), rewritten at every checkpoint.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use candle_core::{DType, Device};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::media::atomic::write_atomic;
use crate::model::weights::{Checkpoint, save_checkpoint, save_ildiff, varmap_tensors};
use crate::model::{IldiffConfig, KeyPrior, SmallCodecConfig};
use crate::pipeline::plate::PlateOptions;
use crate::train::dataset::{ClipSource, DataConfig, Loader, MakeFn, Procedural, make_sample};
use crate::train::decoder::{LossWeights, decoder_loss, load_into, trainable_names};
use crate::train::run::{Run, Schedule, StepLog};
use crate::train::{
    ArtLibrary, Background, Degradation, Split, codec as codec_train, decoder as decoder_train,
};

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(subcommand)]
    pub command: TrainCommand,
}

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// The small latent codec (f = 8, 4 channels) of the embedded default.
    Codec(CodecArgs),
    /// Layout adapter + temporal layers + transparent decoder, with the codec frozen.
    Decoder(DecoderArgs),
    /// The embedded default text-to-sticker generator (word conditioner + latent video UNet)
    /// in a trained codec's latent space, with the codec frozen.
    #[command(
        mut_arg("frames", |a| a.default_value("16")),
        mut_arg("size", |a| a.default_value("256")),
        mut_arg("lr", |a| a.default_value("5e-4"))
    )]
    Generator(GeneratorArgs),
    /// The layout adapter's student encoder, distilled from a SAM image encoder (MSE on dense
    /// features; the user's SAM / MobileSAM safetensors).
    Distill(DistillArgs),
    /// Score models (and a colour-keying baseline) on the held-out validation composites:
    /// alpha PSNR / SSIM / dtSSD / hole residue per background kind and input format.
    Validate(ValidateArgs),
}

/// SAM image encoders a teacher file can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum TeacherKind {
    VitB,
    VitL,
    VitH,
    Mobile,
}

#[derive(Debug, Args, Serialize)]
pub struct DistillArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// SAM checkpoint (safetensors; the `image_encoder.*` tensors are used).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Which encoder the file holds.
    #[arg(long, value_enum, default_value_t = TeacherKind::VitB)]
    pub teacher_kind: TeacherKind,
    /// Student shape (the adapter of this model configuration).
    #[arg(long, value_enum, default_value_t = Arch::CpuDefault)]
    pub arch: Arch,
}

/// File name of a distillation run's student.
pub const STUDENT_FILE: &str = "student.safetensors";

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Models to score, as PATH or NAME=PATH (ILDiff checkpoints with a codec).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Also score the colour-keying baseline (fixed ramp) and the adaptive key the CPU default
    /// starts from, without its network.
    #[arg(long)]
    pub keying: bool,
    /// Validation clips.
    #[arg(long, default_value_t = 48)]
    pub clips: usize,
    /// Clip side.
    #[arg(long, default_value_t = 256)]
    pub size: u32,
    /// Frames per clip.
    #[arg(long, default_value_t = 8)]
    pub frames: u32,
    /// Seed of the validation draw.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The same sources as training (artwork files of the validation split only).
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Write the full figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Which plates the clips carry (for plate-prior models and the "plate + ramp" row).
    #[arg(long, value_enum, default_value_t = PlateKind::Both)]
    pub plate: PlateKind,
    /// Draw the clips from the training split instead: for choosing a constant without
    /// looking at the validation clips (never for reported figures).
    #[arg(long)]
    pub tuning: bool,
    /// Also print each clip's alpha PSNR per method.
    #[arg(long)]
    pub per_clip: bool,
    /// Write a contact sheet per clip here (input, plate, confidence, truth, then each
    /// method's alpha; first, middle and last frame).
    #[arg(long)]
    pub dump: Option<PathBuf>,
}

/// What every run shares: output, schedule, data.
#[derive(Debug, Clone, Args, Serialize)]
pub struct CommonArgs {
    /// Run folder (checkpoint, log, inference file).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Optimisation steps in all.
    #[arg(long, default_value_t = 2000)]
    pub steps: u64,
    /// Clips per batch.
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Frames per training clip.
    #[arg(long, default_value_t = 6)]
    pub frames: u32,
    /// Side of the square training crops (a multiple of the model's size multiple).
    #[arg(long, default_value_t = 128)]
    pub size: u32,
    /// Peak learning rate (warm-up, then cosine decay to 10 %).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Seed of the data (and so of the whole run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Carry on from the run folder's checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this step (saving a checkpoint), with the learning-rate schedule still that
    /// of `--steps`: a run stopped early reproducibly, which `--resume` can carry on.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Data loader threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Run on a CUDA GPU (needs a build with `--features cuda`).
    #[arg(long)]
    pub cuda: bool,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Where samples come from (training and validation draw alike).
#[derive(Debug, Clone, Args, Serialize)]
pub struct SourceArgs {
    /// Folder of background pictures for the photo and moving backgrounds.
    #[arg(long)]
    pub photos: Option<PathBuf>,
    /// Folder of artwork (SVG / RGBA PNG, e.g. from packaging/fetch-training-data.sh) animated
    /// as stickers, mixed with the procedural ones.
    #[arg(long)]
    pub art: Option<PathBuf>,
    /// Share of samples drawn from --art (the rest are procedural).
    #[arg(long, default_value_t = 0.5)]
    pub art_share: f32,
    /// Only these background kinds (default: all).
    #[arg(long, value_delimiter = ',')]
    pub backgrounds: Vec<String>,
    /// Only these input degradations (none, gif, blocking, resize; comma-separated; all by
    /// default).
    #[arg(long, value_delimiter = ',')]
    pub degradations: Vec<String>,
}

#[derive(Debug, Args, Serialize)]
pub struct CodecArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Channels of the three stages.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64")]
    pub channels: Vec<usize>,
    /// Train on the generator's data instead: artwork and procedural stickers over this flat
    /// key colour (R,G,B, 0-255), no photos or hard backgrounds. A generator can only paint
    /// what its codec decodes, so its codec is trained on what it paints.
    #[arg(long)]
    pub over_key: Option<String>,
    /// Extra weight of the sticker's pixels in the reconstruction loss (`1 + w · alpha`).
    #[arg(long, default_value_t = 0.0)]
    pub fg_weight: f64,
}

/// Model shapes `train decoder` can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum Arch {
    /// The shipped CPU default (see `IldiffConfig::cpu_default`).
    CpuDefault,
    /// A tiny model for tests and smoke runs.
    Tiny,
}

/// Which background plates to estimate (see `pipeline::plate::PlateOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum PlateKind {
    Both,
    Temporal,
    Spatial,
}

impl PlateKind {
    fn options(self) -> PlateOptions {
        PlateOptions {
            temporal: self != PlateKind::Spatial,
            spatial: self != PlateKind::Temporal,
        }
    }
}

#[derive(Debug, Args, Serialize)]
pub struct DecoderArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Model shape.
    #[arg(long, value_enum, default_value_t = Arch::CpuDefault)]
    pub arch: Arch,
    /// Trained codec: a `train codec` run's codec.safetensors, or an ILDiff model whose codec
    /// is taken (required unless --init has one).
    #[arg(long)]
    pub codec: Option<PathBuf>,
    /// Start from this ILDiff checkpoint's weights (fine-tuning).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Temporal blocks N (0, 3, 5, 8…).
    #[arg(long, default_value_t = 5)]
    pub depth: usize,
    /// No layout adapter at all: the LayerDiffuse-style decoder alone (ablation).
    #[arg(long)]
    pub no_adapter: bool,
    /// No colour-key prior input and residual head (ablation; see `KeyPrior`).
    #[arg(long)]
    pub no_key_prior: bool,
    /// Key against each clip's estimated background plate instead of the border colour
    /// (`KeyPrior::plate`); the training clips then carry plates.
    #[arg(long, conflicts_with = "no_key_prior")]
    pub plate_prior: bool,
    /// Which plates the data estimates for --plate-prior (ablation).
    #[arg(long, value_enum, default_value_t = PlateKind::Both)]
    pub plate: PlateKind,
    /// How far the learned gate may move the key prior's gate logit either way (2: at most
    /// 0.12 of the correction passes where the border is flat; 6: up to 0.88).
    #[arg(long)]
    pub gate_learned: Option<f32>,
    /// A distilled student (`train distill`'s student.safetensors) for the layout adapter.
    #[arg(long)]
    pub student: Option<PathBuf>,
    /// Keep the adapter's student encoder fixed (after distillation).
    #[arg(long)]
    pub freeze_student: bool,
    #[arg(long, default_value_t = LossWeights::default().alpha)]
    pub w_alpha: f32,
    #[arg(long, default_value_t = LossWeights::default().mse)]
    pub w_mse: f32,
    /// Weight of the per-clip alpha error in dB (minus PSNR; see `LossWeights::psnr`).
    #[arg(long, default_value_t = LossWeights::default().psnr)]
    pub w_psnr: f32,
    #[arg(long, default_value_t = LossWeights::default().grad)]
    pub w_grad: f32,
    #[arg(long, default_value_t = LossWeights::default().rgb)]
    pub w_rgb: f32,
    #[arg(long, default_value_t = LossWeights::default().temporal)]
    pub w_temporal: f32,
}

#[derive(Debug, Args, Serialize)]
pub struct GeneratorArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Trained small codec (`train codec`'s codec.safetensors): frozen, and copied into the
    /// generator file so it is self-contained.
    #[arg(long)]
    pub codec: PathBuf,
    /// Model shape (`tiny` for smoke runs).
    #[arg(long, value_enum, default_value_t = Arch::CpuDefault)]
    pub arch: Arch,
    /// Share of captions dropped whole (the null conditioning of classifier-free guidance).
    #[arg(long, default_value_t = 0.1)]
    pub caption_drop: f32,
    /// Share of the remaining caption words dropped one by one (short prompts).
    #[arg(long, default_value_t = 0.15)]
    pub word_drop: f32,
    /// Most subject words taken from the artwork names of the training split.
    #[arg(long, default_value_t = 300)]
    pub subject_words: usize,
    /// Key colour the stickers are painted over, as R,G,B (0-255).
    #[arg(long, default_value = "255,0,255")]
    pub key: String,
    /// Clips encoded to measure the latent mean and spread before training.
    #[arg(long, default_value_t = 16)]
    pub stats_clips: usize,
    /// Train only on artwork named after these subjects (comma-separated, e.g.
    /// heart,star,cat), each drawn equally often; pictures of people and skin-tone variants are
    /// left out. Without it every artwork file is used.
    #[arg(long, value_delimiter = ',')]
    pub art_subjects: Vec<String>,
    /// Noise schedule: `zero-snr` (SD-1.5's betas rescaled to end in pure noise, v-prediction)
    /// or `sd15` (SD-1.5's own, epsilon prediction: the first shipped generator's, whose
    /// layout came from the seed rather than the prompt).
    #[arg(long, value_enum, default_value_t = GenSchedule::ZeroSnr)]
    pub schedule: GenSchedule,
    /// Write a GPU training kit into the output folder instead of training: the fresh model
    /// with its measured latent statistics (`init.safetensors`) and the artwork as sprites with
    /// their caption words (`kit.json`, `sprites/`), for `packaging/gpu/train_generator.py`.
    #[arg(long)]
    pub export_kit: bool,
}

/// The generator's noise schedules (see `GeneratorArgs::schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum GenSchedule {
    ZeroSnr,
    Sd15,
}

/// File name of a GPU training kit's fresh model (`train generator --export-kit`).
pub const KIT_INIT_FILE: &str = "init.safetensors";

/// File name of a generator run's inference file.
pub const GENERATOR_FILE: &str = "generator.safetensors";

pub fn run(args: &TrainArgs) -> anyhow::Result<bool> {
    // The fast conv and GroupNorm kernels: several times faster training on the CPU.
    crate::model::fastconv::set_enabled(true);
    crate::train::keep_freed_memory();
    match &args.command {
        TrainCommand::Codec(a) => train_codec(a),
        TrainCommand::Decoder(a) => train_decoder(a),
        TrainCommand::Generator(a) => train_generator(a),
        TrainCommand::Distill(a) => train_distill(a),
        TrainCommand::Validate(a) => validate(a),
    }
}

fn device(common: &CommonArgs) -> anyhow::Result<Device> {
    if common.cuda {
        Device::new_cuda(0).context("--cuda: no CUDA device (build with `--features cuda`)")
    } else {
        Ok(Device::Cpu)
    }
}

/// Loads an artwork folder and says what it holds (every trainer prints the same line).
fn load_art(dir: &Path) -> anyhow::Result<ArtLibrary> {
    let lib = ArtLibrary::load(dir)?;
    eprintln!(
        "artwork: {} files ({} train, {} val, {} skipped) in {}",
        lib.len(),
        lib.count(Split::Train),
        lib.count(Split::Val),
        lib.skipped().len(),
        dir.display()
    );
    Ok(lib)
}

/// The items of `all` named by `names`; an unknown name is an error that lists the known ones.
fn by_names<T: Copy>(
    names: &[String],
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
) -> anyhow::Result<Vec<T>> {
    names
        .iter()
        .map(|n| {
            all.iter()
                .copied()
                .find(|&x| name(x) == n)
                .with_context(|| {
                    let known: Vec<&str> = all.iter().map(|&x| name(x)).collect();
                    format!("unknown {what} `{n}` (known: {})", known.join(", "))
                })
        })
        .collect()
}

fn data_config(size: u32, frames: u32, common: &SourceArgs) -> anyhow::Result<DataConfig> {
    let mut data = DataConfig::procedural(size, frames, Split::Train);
    data.photos = common.photos.clone();
    if let Some(p) = &data.photos
        && !p.is_dir()
    {
        bail!("--photos is not a folder: {}", p.display());
    }
    data.backgrounds = by_names(
        &common.backgrounds,
        &Background::ALL,
        Background::name,
        "background",
    )?;
    data.degradations = by_names(
        &common.degradations,
        &Degradation::ALL,
        Degradation::name,
        "degradation",
    )?;
    let mut sources: Vec<(Arc<dyn ClipSource>, f32)> = Vec::new();
    match &common.art {
        Some(dir) => {
            let lib = load_art(dir)?;
            let share = common.art_share.clamp(0.0, 1.0);
            sources.push((Arc::new(lib), share));
            if share < 1.0 {
                sources.push((Arc::new(Procedural), 1.0 - share));
            }
        }
        None => sources.push((Arc::new(Procedural), 1.0)),
    }
    data.sources = sources;
    Ok(data)
}

fn data_json(data: &DataConfig, extra: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "size": data.size,
        "frames": data.frames,
        "sources": data.sources.iter().map(|(s, w)| format!("{}:{w}", s.name())).collect::<Vec<_>>(),
        "photos": data.photos.as_ref().map(|p| p.display().to_string()),
        "backgrounds": data.backgrounds.iter().map(|b| b.name()).collect::<Vec<_>>(),
        "extra": extra,
    })
}

fn schedule(c: &CommonArgs) -> anyhow::Result<Schedule> {
    if c.batch == 0 || c.frames == 0 || c.steps == 0 {
        bail!("--batch, --frames and --steps must be at least 1");
    }
    Ok(Schedule {
        steps: c.steps,
        lr: c.lr,
        warmup: c.warmup,
        weight_decay: c.weight_decay,
        batch: c.batch,
        checkpoint_every: c.checkpoint_every,
    })
}

fn loader(common: &CommonArgs, data: DataConfig, start_step: u64) -> anyhow::Result<Loader> {
    let seed = common.seed;
    let make: Arc<MakeFn> = Arc::new(move |i| make_sample(&data, seed, i));
    loader_of(common, make, start_step)
}

/// A loader of `make`'s samples from the first sample of step `start_step`.
fn loader_of(common: &CommonArgs, make: Arc<MakeFn>, start_step: u64) -> anyhow::Result<Loader> {
    let prefetch = (2 * common.batch).max(common.workers);
    Ok(Loader::new(
        make,
        start_step * common.batch as u64,
        common.workers.max(1),
        prefetch,
    )?)
}

fn start_step(common: &CommonArgs) -> u64 {
    if !common.resume {
        return 0;
    }
    crate::train::run::read_state(&common.out.join(crate::train::run::CHECKPOINT_FILE))
        .map(|(_, s)| s.step)
        .unwrap_or(0)
}

/// Records the exact command line of the run (the model card quotes it).
fn write_run_json(out: &Path, args: &impl Serialize) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let argv: Vec<String> = std::env::args().collect();
    let json = serde_json::json!({ "argv": argv, "args": args });
    let name = if start_step_exists(out) {
        "run-resumed.json"
    } else {
        "run.json"
    };
    write_atomic(
        &out.join(name),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    Ok(())
}

fn start_step_exists(out: &Path) -> bool {
    out.join(crate::train::run::CHECKPOINT_FILE).exists()
}

/// Progress line: step, loss terms, speed and ETA, on stderr.
fn reporter(c: &CommonArgs) -> impl FnMut(&StepLog) -> bool {
    let start = Instant::now();
    let (quiet, stop_after) = (c.quiet, c.stop_after);
    move |s: &StepLog| {
        if !quiet && (s.step.is_multiple_of(10) || s.saved || s.step == s.total) {
            let eta = s.secs_per_step * (s.total - s.step) as f64;
            let parts: Vec<String> = s.parts.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
            eprintln!(
                "step {}/{} loss {:.4} ({}) lr {:.2e} {:.2} s/step, elapsed {:.0} s, ETA {:.0} s{}",
                s.step,
                s.total,
                s.loss,
                parts.join(", "),
                s.lr,
                s.secs_per_step,
                start.elapsed().as_secs_f64(),
                eta,
                if s.saved { " [saved]" } else { "" }
            );
            let _ = std::io::stderr().flush();
        }
        stop_after.is_none_or(|n| s.step < n)
    }
}

/// File name of a codec run's inference file.
pub const CODEC_FILE: &str = "codec.safetensors";
/// File name of a decoder run's inference file.
pub const MODEL_FILE: &str = "ildiff.safetensors";

fn train_codec(args: &CodecArgs) -> anyhow::Result<bool> {
    let c = &args.common;
    let dev = device(c)?;
    let [a, b, d] = args.channels[..] else {
        bail!("--channels takes three numbers, e.g. 16,32,64");
    };
    let cfg = SmallCodecConfig {
        channels: [a, b, d],
        norm_groups: 8.min(a),
    };
    cfg.validate()?;
    if !(args.fg_weight.is_finite() && args.fg_weight >= 0.0) {
        bail!("--fg-weight must be a number >= 0");
    }
    let extra = serde_json::json!({
        "latent_weight": codec_train::LATENT_WEIGHT,
        "fg_weight": args.fg_weight,
    });
    let (data_json, mut loader) = match &args.over_key {
        None => {
            let data = data_config(c.size, c.frames, &c.sources)?;
            let json = data_json(&data, extra);
            (json, loader(c, data, start_step(c))?)
        }
        Some(key) => {
            let data = key_data(c, parse_key(key)?)?;
            let mut json = data.to_json();
            json["over_key"] = serde_json::Value::Bool(true);
            json["extra"] = extra;
            let seed = c.seed;
            let make: Arc<MakeFn> =
                Arc::new(move |i| crate::train::generator::make_gen_sample(&data, seed, i));
            (json, loader_of(c, make, start_step(c))?)
        }
    };
    let (varmap, codec) = codec_train::build(&cfg, &dev)?;
    let mut names: Vec<String> = varmap_tensors(&varmap).into_keys().collect();
    names.sort();
    let run = Run {
        kind: "codec",
        varmap: &varmap,
        trainable: names,
        model_json: serde_json::to_value(&cfg)?,
        data_json,
        schedule: schedule(c)?,
        dir: c.out.clone(),
        terms: codec_train::TERMS.to_vec(),
    };
    write_run_json(&c.out, args)?;
    let cfg_json = serde_json::to_string(&cfg)?;
    let out_file = c.out.join(CODEC_FILE);
    let summary = run.train(
        &mut loader,
        c.resume,
        &mut |batch| codec_train::codec_loss(&codec, batch, args.fg_weight, &dev),
        &mut || save_checkpoint(&varmap_tensors(&varmap), &cfg_json, &out_file).map(|_| ()),
        &mut reporter(c),
    )?;
    print_summary("codec", &summary, &out_file);
    Ok(true)
}

/// The generator's samples (artwork share from `--art-share`, procedural otherwise) over a
/// flat `key`, for `train codec --over-key`.
fn key_data(c: &CommonArgs, key: [u8; 3]) -> anyhow::Result<crate::train::generator::GenData> {
    use crate::model::generator::GenConfig;
    use crate::train::generator::{GenData, build_vocabulary};
    if c.sources.photos.is_some() || !c.sources.backgrounds.is_empty() {
        bail!("--over-key paints stickers over the key: --photos and --backgrounds do not apply");
    }
    let art = c
        .sources
        .art
        .as_deref()
        .map(load_art)
        .transpose()?
        .map(Arc::new);
    let mut cfg = GenConfig::default_shape();
    cfg.frames = c.frames as usize;
    cfg.size = c.size as usize;
    cfg.key_colour = key;
    let vocab = build_vocabulary(art.as_deref(), 0);
    let mut data = GenData::new(&cfg, Arc::new(vocab), art);
    data.art_share = c.sources.art_share.clamp(0.0, 1.0);
    Ok(data)
}

fn decoder_config(args: &DecoderArgs) -> IldiffConfig {
    let mut cfg = match args.arch {
        Arch::CpuDefault => IldiffConfig::cpu_default(),
        Arch::Tiny => IldiffConfig::tiny(),
    };
    if args.no_adapter {
        cfg.adapter = None;
    } else if let Some(a) = cfg.adapter.as_mut() {
        a.temporal_blocks = args.depth;
    }
    if args.no_key_prior {
        cfg.decoder.key_prior = None;
    } else if args.plate_prior {
        cfg.decoder.key_prior = Some(KeyPrior::plate());
    }
    if let (Some(k), Some(g)) = (cfg.decoder.key_prior.as_mut(), args.gate_learned) {
        k.gate_learned = g;
    }
    cfg
}

fn train_decoder(args: &DecoderArgs) -> anyhow::Result<bool> {
    let c = &args.common;
    let dev = device(c)?;
    let cfg = decoder_config(args);
    cfg.validate()?;
    let m = cfg.decoder.size_multiple() as u32;
    if !c.size.is_multiple_of(m) {
        bail!("--size {} is not a multiple of the model's {m}", c.size);
    }
    let mut data = data_config(c.size, c.frames, &c.sources)?;
    if args.plate_prior {
        data.plate = Some(args.plate.options());
    }
    let weights = LossWeights {
        alpha: args.w_alpha,
        mse: args.w_mse,
        psnr: args.w_psnr,
        grad: args.w_grad,
        rgb: args.w_rgb,
        temporal: args.w_temporal,
    };
    let (varmap, model) = decoder_train::build(&cfg, &dev)?;
    let fresh = !(c.resume && start_step_exists(&c.out));
    if fresh {
        if let Some(init) = &args.init {
            let ck = Checkpoint::read(init, DType::F32, &dev)?;
            // A plate-prior model may start from a key-prior one (its extra inputs at zero).
            let n = decoder_train::load_into_widening(&varmap, &ck, "", "adam.", args.plate_prior)?;
            eprintln!("initialised {n} tensors from {}", init.display());
        }
        if let Some(p) = &args.codec {
            let ck = Checkpoint::read(p, DType::F32, &dev)?;
            // A whole model's codec serves too (the ablation arms share the shipped one).
            let ck = ck.part("codec.").unwrap_or(ck);
            let n = load_into(&varmap, &ck, "codec.", "adam.")?;
            eprintln!("codec: {n} tensors from {}", p.display());
        } else if args.init.is_none() && cfg.codec.is_some() {
            bail!("--codec PATH is needed: train one first with `ildiff train codec`");
        }
        if let Some(p) = &args.student {
            if cfg.adapter.is_none() {
                bail!("--student needs a layout adapter (drop --no-adapter)");
            }
            let ck = Checkpoint::read(p, DType::F32, &dev)?;
            let n = load_into(&varmap, &ck, "", "adapter.distill")?;
            eprintln!("student: {n} tensors from {}", p.display());
        }
    }
    let codec = decoder_train::model_codec(&model, &c.out)?;
    let run = Run {
        kind: "decoder",
        varmap: &varmap,
        trainable: trainable_names(&varmap, args.freeze_student),
        model_json: serde_json::to_value(&cfg)?,
        data_json: data_json(&data, serde_json::to_value(weights)?),
        schedule: schedule(c)?,
        dir: c.out.clone(),
        terms: decoder_train::TERMS.to_vec(),
    };
    write_run_json(&c.out, args)?;
    let mut loader = loader(c, data, start_step(c))?;
    let out_file = c.out.join(MODEL_FILE);
    let summary = run.train(
        &mut loader,
        c.resume,
        &mut |batch| decoder_loss(&model, &codec, batch, &weights, &dev),
        &mut || save_ildiff(&varmap, &cfg, &out_file).map(|_| ()),
        &mut reporter(c),
    )?;
    print_summary("decoder", &summary, &out_file);
    Ok(true)
}

fn validate(args: &ValidateArgs) -> anyhow::Result<bool> {
    use crate::train::validate::{
        colour_key, contact_sheet, markdown, model_alpha, per_clip_table, plate_key, report,
        split_samples,
    };
    if args.models.is_empty() && !args.keying {
        bail!("nothing to score: give --model PATH and/or --keying");
    }
    let mut data = data_config(args.size, args.frames, &args.sources)?;
    data.plate = Some(args.plate.options());
    let t0 = Instant::now();
    let split = if args.tuning {
        Split::Train
    } else {
        Split::Val
    };
    let samples = split_samples(&data, split, args.seed, args.clips)?;
    eprintln!(
        "{} {} clips of {} frames at {}² drawn in {:.1} s",
        samples.len(),
        if args.tuning {
            "training-split"
        } else {
            "validation"
        },
        args.frames,
        args.size,
        t0.elapsed().as_secs_f64()
    );
    let mut reports = Vec::new();
    // Every prediction, kept only for the contact sheets of `--dump` (they are large).
    let mut all_preds = Vec::new();
    let dump = args.dump.is_some();
    let mut keep = |p: Vec<Vec<crate::eval::Plane>>| {
        if dump {
            all_preds.push(p);
        }
    };
    if args.keying {
        let key =
            |rule: KeyPrior| -> Vec<_> { samples.iter().map(|s| colour_key(s, &rule)).collect() };
        let keyed = key(KeyPrior::default());
        reports.push(report("colour keying", &samples, &keyed)?);
        keep(keyed);
        // The CPU default's prior alone, so the table shows what the network adds to it.
        let adaptive = key(KeyPrior::adaptive());
        reports.push(report("adaptive key (prior alone)", &samples, &adaptive)?);
        keep(adaptive);
        let plated = samples
            .iter()
            .map(|s| plate_key(s, &KeyPrior::plate()))
            .collect::<crate::Result<Vec<_>>>()?;
        reports.push(report("plate + ramp (no network)", &samples, &plated)?);
        keep(plated);
        // The same without the local ramp end: what the parts rule adds.
        let frame_ramp = KeyPrior {
            local: None,
            ..KeyPrior::plate()
        };
        let plated = samples
            .iter()
            .map(|s| plate_key(s, &frame_ramp))
            .collect::<crate::Result<Vec<_>>>()?;
        reports.push(report(
            "plate + frame ramp (no network)",
            &samples,
            &plated,
        )?);
        keep(plated);
    }
    let dev = Device::Cpu;
    for spec in &args.models {
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) => (n.to_string(), PathBuf::from(p)),
            None => {
                let p = PathBuf::from(spec);
                let n = p
                    .parent()
                    .and_then(|d| d.file_name())
                    .map_or_else(|| spec.clone(), |d| d.to_string_lossy().into_owned());
                (n, p)
            }
        };
        let model = crate::pipeline::models::load_model(&path)?;
        let t0 = Instant::now();
        let preds = samples
            .iter()
            .map(|s| model_alpha(&model, s, &dev))
            .collect::<crate::Result<Vec<_>>>()
            .with_context(|| format!("matting with {}", path.display()))?;
        eprintln!("{name}: {:.1} s", t0.elapsed().as_secs_f64());
        reports.push(report(&name, &samples, &preds)?);
        keep(preds);
    }
    println!("cells: alpha PSNR dB / SSIM / dtSSD / hole residue\n");
    print!("{}", markdown(&reports));
    if args.per_clip {
        println!();
        print!("{}", per_clip_table(&samples, &reports));
    }
    if let Some(dir) = &args.dump {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (i, s) in samples.iter().enumerate() {
            let preds: Vec<&[crate::eval::Plane]> =
                all_preds.iter().map(|p| p[i].as_slice()).collect();
            let path = dir.join(format!("{i:03}-{}.png", s.background.name()));
            let mut png = std::io::Cursor::new(Vec::new());
            contact_sheet(s, &preds).write_to(&mut png, image::ImageFormat::Png)?;
            write_atomic(&path, png.get_ref())?;
            // The clip's input as a lossless APNG, so `ildiff matte --save-plate` can be
            // rerun on exactly what the model saw.
            let input = dir.join(format!("{i:03}-{}-input.png", s.background.name()));
            let apng = crate::media::encode::apng::encode(
                &crate::train::validate::input_animation(s),
                &Default::default(),
            )?;
            write_atomic(&input, &apng)?;
        }
        eprintln!("contact sheets and input clips in {}", dir.display());
    }
    if let Some(p) = &args.json {
        write_atomic(p, serde_json::to_string_pretty(&reports)?.as_bytes())?;
    }
    Ok(true)
}

fn train_distill(args: &DistillArgs) -> anyhow::Result<bool> {
    use crate::model::layout::SAM_EMBED_CHANNELS;
    use crate::model::sam::{SamKind, SamTeacher};
    use crate::train::distill;
    let c = &args.common;
    let dev = device(c)?;
    let base = match args.arch {
        Arch::CpuDefault => IldiffConfig::cpu_default(),
        Arch::Tiny => IldiffConfig::tiny(),
    };
    let mut cfg = base
        .adapter
        .context("this architecture has no layout adapter")?;
    cfg.distill_channels = Some(SAM_EMBED_CHANNELS);
    if !(c.size.is_power_of_two() && (64..=1024).contains(&c.size)) {
        bail!("--size must be a power of two from 64 to 1024 (the SAM grid must divide it)");
    }
    let kind = match args.teacher_kind {
        TeacherKind::VitB => SamKind::VitB,
        TeacherKind::VitL => SamKind::VitL,
        TeacherKind::VitH => SamKind::VitH,
        TeacherKind::Mobile => SamKind::Mobile,
    };
    let ck = Checkpoint::read(&args.teacher, DType::F32, &dev)?;
    let teacher = SamTeacher::load(kind, ck.var_builder(DType::F32, &dev).pp("image_encoder"))
        .with_context(|| {
            format!(
                "loading the SAM image encoder from {}",
                args.teacher.display()
            )
        })?;
    drop(ck);
    let data = data_config(c.size, c.frames, &c.sources)?;
    let (varmap, student) = distill::build(&cfg, &dev)?;
    let names = distill::trainable_names(&varmap);
    let run = Run {
        kind: "distill",
        varmap: &varmap,
        trainable: names.clone(),
        model_json: serde_json::to_value(&cfg)?,
        data_json: data_json(
            &data,
            serde_json::json!({ "teacher": args.teacher.display().to_string(), "kind": args.teacher_kind }),
        ),
        schedule: schedule(c)?,
        dir: c.out.clone(),
        terms: distill::TERMS.to_vec(),
    };
    write_run_json(&c.out, args)?;
    let mut loader = loader(c, data, start_step(c))?;
    let out_file = c.out.join(STUDENT_FILE);
    let cfg_json = serde_json::to_string(&cfg)?;
    let summary = run.train(
        &mut loader,
        c.resume,
        &mut |batch| distill::distill_loss(&student, &teacher, batch, &dev),
        &mut || {
            let all = varmap_tensors(&varmap);
            let keep = all.into_iter().filter(|(n, _)| names.contains(n)).collect();
            save_checkpoint(&keep, &cfg_json, &out_file).map(|_| ())
        },
        &mut reporter(c),
    )?;
    println!(
        "distill: {} steps (from {}), last feature MSE {:.4}, {:.0} s of training; {}",
        summary.steps,
        summary.resumed_from,
        summary.last_loss,
        summary.seconds,
        out_file.display()
    );
    Ok(true)
}

fn parse_key(text: &str) -> anyhow::Result<[u8; 3]> {
    let v: Vec<u8> = text
        .split(',')
        .map(|p| p.trim().parse::<u8>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--key `{text}`: expected R,G,B with values 0-255"))?;
    let [r, g, b] = v[..] else {
        bail!("--key `{text}`: expected three numbers R,G,B");
    };
    Ok([r, g, b])
}

/// Narrows `lib` to `subjects` (see [`ArtLibrary::focus`]) and reports the files each has.
fn focus_art(lib: &mut ArtLibrary, subjects: &[String], dir: &Path) -> anyhow::Result<()> {
    use crate::train::generator::{focus_words, stems_of};
    let subjects: Vec<String> = subjects
        .iter()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let mut all = lib.files(Split::Train);
    all.extend(lib.files(Split::Val));
    let stems: HashSet<String> = stems_of(&all).into_iter().collect();
    let counts = lib
        .focus(&subjects, |p| focus_words(p, &stems))
        .with_context(|| format!("--art-subjects over {}", dir.display()))?;
    let listed: Vec<String> = counts
        .iter()
        .map(|(s, t, v)| format!("{s} {t}+{v}"))
        .collect();
    eprintln!(
        "art focus: {} training + {} validation files (train+val per subject: {})",
        lib.count(Split::Train),
        lib.count(Split::Val),
        listed.join(", ")
    );
    let missing: Vec<&str> = counts
        .iter()
        .filter(|c| c.1 == 0)
        .map(|c| c.0.as_str())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "warning: no training artwork for {}: the model will not learn them",
            missing.join(", ")
        );
    }
    Ok(())
}

fn train_generator(args: &GeneratorArgs) -> anyhow::Result<bool> {
    use crate::model::generator::{GenConfig, NoiseSchedule, save_generator};
    use crate::model::weights::ILDIFF_CONFIG_KEY;
    use crate::train::generator::{
        GenData, TERMS, build, build_vocabulary, generator_loss, latent_stats, make_gen_sample,
        trainable_names,
    };
    use crate::train::synth::mix;
    let c = &args.common;
    if c.sources.photos.is_some() || !c.sources.backgrounds.is_empty() {
        bail!(
            "--photos and --backgrounds are not used by generator training (stickers are painted over --key)"
        );
    }
    let dev = device(c)?;
    let mut cfg = match args.arch {
        Arch::CpuDefault => GenConfig::default_shape(),
        Arch::Tiny => GenConfig::tiny(),
    };
    cfg.frames = c.frames as usize;
    cfg.size = c.size as usize;
    cfg.key_colour = parse_key(&args.key)?;
    cfg.schedule = match args.schedule {
        GenSchedule::ZeroSnr => NoiseSchedule::zero_snr_v(),
        GenSchedule::Sd15 => NoiseSchedule::default(),
    };
    let codec_ck = Checkpoint::read(&args.codec, DType::F32, &dev)?;
    let codec_json = codec_ck.metadata(ILDIFF_CONFIG_KEY).with_context(|| {
        format!(
            "--codec {}: not a `train codec` file (no codec configuration in its metadata)",
            args.codec.display()
        )
    })?;
    cfg.codec = serde_json::from_str(codec_json).with_context(|| {
        format!(
            "--codec {}: not a small-codec configuration",
            args.codec.display()
        )
    })?;
    cfg.codec_source = args.codec.display().to_string();
    if !(0.0..=1.0).contains(&args.caption_drop) || !(0.0..1.0).contains(&args.word_drop) {
        bail!("--caption-drop must be in [0, 1] and --word-drop in [0, 1)");
    }
    let art = match &c.sources.art {
        Some(dir) => {
            let mut lib = load_art(dir)?;
            if !args.art_subjects.is_empty() {
                focus_art(&mut lib, &args.art_subjects, dir)?;
            }
            Some(Arc::new(lib))
        }
        None if !args.art_subjects.is_empty() => bail!("--art-subjects needs --art"),
        None => None,
    };
    let vocab = build_vocabulary(art.as_deref(), args.subject_words);
    let resuming = c.resume && start_step_exists(&c.out);
    if resuming {
        // The latent statistics are part of the model: take them from the checkpoint.
        let (_, state) =
            crate::train::run::read_state(&c.out.join(crate::train::run::CHECKPOINT_FILE))?;
        let prev: GenConfig = serde_json::from_value(state.model)
            .context("the checkpoint's model configuration is not a generator's")?;
        cfg.latent_mean = prev.latent_mean;
        cfg.latent_std = prev.latent_std;
    }
    cfg.validate()?;
    let (varmap, mut model) = build(&cfg, vocab.clone(), &dev)?;
    let n = load_into(&varmap, &codec_ck, "codec.", "adam.")?;
    eprintln!("codec: {n} tensors from {}", args.codec.display());
    let mut data = GenData::new(&cfg, Arc::new(vocab.clone()), art);
    data.art_share = c.sources.art_share.clamp(0.0, 1.0);
    data.caption_drop = args.caption_drop;
    data.word_drop = args.word_drop;
    if !resuming {
        let t0 = Instant::now();
        let (mean, std) = latent_stats(&model.codec, &data, c.seed, args.stats_clips, &dev)?;
        eprintln!(
            "latent mean {mean:.3?}, std {std:.3?} over {} clips ({:.1} s)",
            args.stats_clips,
            t0.elapsed().as_secs_f64()
        );
        cfg.latent_mean = mean;
        cfg.latent_std = std;
        cfg.validate()?;
    }
    model.config = cfg.clone();
    let words: usize = vocab.entries().len();
    eprintln!(
        "vocabulary: {words} words ({} subjects)",
        vocab
            .ids_of(crate::model::generator::WordGroup::Subject)
            .len()
    );
    if args.export_kit {
        std::fs::create_dir_all(&c.out).with_context(|| format!("creating {}", c.out.display()))?;
        let init = c.out.join(KIT_INIT_FILE);
        save_generator(&varmap, &cfg, &vocab, &init)?;
        // Room for the largest pose: fill up to 0.65 of the side, zoom +20 %.
        let side = (c.size as f32 * 0.82).ceil() as u32;
        let (n, failed) = crate::train::generator::export_kit(&data, &c.out, side)?;
        println!(
            "generator kit: {n} sprites ({failed} files left out), {} and {} in {}",
            KIT_INIT_FILE,
            crate::train::generator::KIT_FILE,
            c.out.display()
        );
        return Ok(true);
    }
    let run = Run {
        kind: "generator",
        varmap: &varmap,
        trainable: trainable_names(&varmap),
        model_json: serde_json::to_value(&cfg)?,
        data_json: data.to_json(),
        schedule: schedule(c)?,
        dir: c.out.clone(),
        terms: TERMS.to_vec(),
    };
    write_run_json(&c.out, args)?;
    let start = start_step(c);
    let seed = c.seed;
    let make: Arc<MakeFn> = Arc::new(move |i| make_gen_sample(&data, seed, i));
    let mut loader = loader_of(c, make, start)?;
    let ac = cfg.schedule.alphas_cumprod();
    let out_file = c.out.join(GENERATOR_FILE);
    let mut step = start;
    let summary = run.train(
        &mut loader,
        c.resume,
        &mut |batch| {
            step += 1;
            generator_loss(&model, &ac, batch, mix(seed ^ 0x6E7, step), &dev)
        },
        &mut || save_generator(&varmap, &cfg, &vocab, &out_file).map(|_| ()),
        &mut reporter(c),
    )?;
    print_summary("generator", &summary, &out_file);
    Ok(true)
}

/// The line every training command ends with: steps, where it resumed, last loss, time, file.
fn print_summary(what: &str, summary: &crate::train::run::Summary, out_file: &Path) {
    println!(
        "{what}: {} steps (from {}), last loss {:.4}, {:.0} s of training; {}",
        summary.steps,
        summary.resumed_from,
        summary.last_loss,
        summary.seconds,
        out_file.display()
    );
}
