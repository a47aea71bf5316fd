//! The `ildiff` command line: argument parsing (clap derive) and one function per subcommand.
//! This is the only module that uses clap; errors become `anyhow` here, at the binary's edge.

mod bench;
mod data;
mod eval;
mod export;
mod generate;
mod info;
pub(crate) mod matte;
mod pack;
mod progress_bar;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::media::Limits;

/// ILDiff Studio: transparent animated stickers with clean, flicker-free alpha.
///
/// Without a subcommand the studio window opens, with FILES loaded.
#[derive(Debug, Parser)]
#[command(name = "ildiff", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub studio: StudioArgs,
}

/// Options of the studio window (no subcommand).
#[derive(Debug, Clone, Args)]
pub struct StudioArgs {
    /// Clips to open in the studio.
    pub files: Vec<PathBuf>,
    /// Save a PNG screenshot of the window once the clips are loaded, then quit.
    #[arg(long, value_name = "PNG")]
    pub screenshot: Option<PathBuf>,
    /// Preview mode to start in: input, alpha, checker, chat, compare, plate.
    #[arg(long, value_parser = parse_view)]
    pub view: Option<crate::app::settings::PreviewMode>,
    /// Start with the flicker heatmap shown.
    #[arg(long)]
    pub heatmap: bool,
    /// Settings folder (default: the platform's config folder, or $ILDIFF_CONFIG_DIR).
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
}

fn parse_view(s: &str) -> Result<crate::app::settings::PreviewMode, String> {
    crate::app::settings::PreviewMode::from_name(s).ok_or_else(|| {
        format!("unknown view `{s}`; use input, alpha, checker, chat, compare or plate")
    })
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show format, size, frames, fps, duration and alpha statistics of clips.
    Info(info::InfoArgs),
    /// Matting metrics (PSNR, SSIM, SAD, MSE, Grad, Conn, dtSSD, hole residue) of predicted
    /// clips against ground truth, per clip and overall.
    Eval(eval::EvalArgs),
    /// Convert clips to sticker files, fitted to a platform preset or in the format the output
    /// extension names. Several inputs: OUT is a folder and every input is tried.
    Export(export::ExportArgs),
    /// Make a transparent animated sticker from a text prompt (the embedded default generator,
    /// or SD-1.5 + AnimateDiff + LayerDiffuse from your own weight files).
    Generate(Box<generate::GenerateArgs>),
    /// Cut an opaque clip out of its background with an ILDiff model: a transparent sticker out.
    Matte(matte::MatteArgs),
    /// Measure matting speed and memory on this machine (random weights; with matmul GFLOP/s).
    Bench(bench::BenchArgs),
    /// Export a sticker pack: one folder per platform with icons and the platform's manifest.
    Pack(pack::PackArgs),
    /// Training and evaluation data (`data synth`: procedural stickers with exact alpha).
    Data(data::DataArgs),
    /// Train the embedded default models (`train codec`, `train decoder`): checkpoints,
    /// resume, CSV log.
    Train(train::TrainArgs),
}

/// Safety caps applied before decoding; raise them for trusted, very large inputs.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest accepted canvas side in pixels.
    #[arg(long, default_value_t = Limits::default().max_side, global = true)]
    pub max_side: u32,
    /// Most frames accepted in one clip.
    #[arg(long, default_value_t = Limits::default().max_frames, global = true)]
    pub max_frames: u32,
    /// Most decoded pixel bytes accepted for one clip.
    #[arg(long, default_value_t = Limits::default().max_bytes, global = true)]
    pub max_bytes: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_side: self.max_side,
            max_frames: self.max_frames,
            max_bytes: self.max_bytes,
        }
    }
}

/// Parses the process arguments and runs the command; the exit code is 0 only when every input
/// succeeded.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => {
            let a = cli.studio;
            crate::app::run(crate::app::StudioOptions {
                config_dir: a.config_dir,
                files: a.files,
                screenshot: a.screenshot,
                view: a.view,
                heatmap: a.heatmap,
            })
            .map(|()| true)
        }
        Some(Command::Info(args)) => info::run(&args),
        Some(Command::Eval(args)) => eval::run(&args),
        Some(Command::Export(args)) => export::run(&args),
        Some(Command::Pack(args)) => pack::run(&args),
        Some(Command::Data(args)) => data::run(&args),
        Some(Command::Train(args)) => train::run(&args),
        Some(Command::Matte(args)) => matte::run(&args),
        Some(Command::Generate(args)) => generate::run(&args),
        Some(Command::Bench(args)) => bench::run(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Collects per-input failures of a batch so every input is tried and all failures are listed
/// at the end.
#[derive(Debug, Default)]
pub struct Batch {
    failures: Vec<(PathBuf, String)>,
    ok: usize,
}

impl Batch {
    pub fn record<T>(&mut self, input: &std::path::Path, r: anyhow::Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.ok += 1;
                Some(v)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                self.failures.push((input.to_path_buf(), format!("{e:#}")));
                None
            }
        }
    }

    /// Prints the summary when there was more than one input; true when all succeeded.
    pub fn finish(self) -> bool {
        let total = self.ok + self.failures.len();
        if total > 1 && !self.failures.is_empty() {
            eprintln!("\n{} of {total} inputs failed:", self.failures.len());
            for (p, e) in &self.failures {
                eprintln!("  {}: {e}", p.display());
            }
        }
        self.failures.is_empty()
    }
}
