//! The training loop shared by every `ildiff train` command: batches from the [`Loader`], AdamW
//! with a warm-up + cosine schedule, a CSV log, and checkpoints that resume bit-exactly.
//!
//! A checkpoint (`checkpoint.safetensors` in the run folder) holds the model's variables, the
//! optimiser's moments (`adam.m.*`, `adam.v.*`) and, in its metadata, the step reached and the
//! run's configuration. Because sample `i` is a function of the seed alone (see
//! [`super::dataset`]), loading it and carrying on gives the same weights, bit for bit, as a run
//! that never stopped. Resuming refuses a checkpoint made with a different model or data
//! configuration, naming what differs.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::dataset::{Batch, Loader};
use super::optim::{Adam, AdamParams, cosine_lr};
use crate::media::atomic::write_atomic;
use crate::model::weights::Checkpoint;
use crate::{Error, Result};

/// Metadata key of a training checkpoint's state.
pub const TRAIN_STATE_KEY: &str = "ildiff_train";
/// File names inside a run folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const LOG_FILE: &str = "log.csv";

/// Schedule and bookkeeping of one run (the part of the arguments that is not model or data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Total optimisation steps.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: u64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Clips per batch.
    pub batch: usize,
    /// Save a checkpoint every this many steps (and at the end).
    pub checkpoint_every: u64,
}

/// What is saved in the checkpoint's metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    /// `decoder`, `codec`, `distill`.
    pub kind: String,
    /// Steps done.
    pub step: u64,
    /// The model configuration JSON (must match to resume).
    pub model: serde_json::Value,
    /// The data and loss configuration JSON (must match to resume).
    pub data: serde_json::Value,
    pub schedule: Schedule,
    /// Seconds of training so far, over all sessions.
    pub seconds: f64,
}

/// One logged step.
#[derive(Debug, Clone)]
pub struct StepLog {
    pub step: u64,
    pub total: u64,
    pub lr: f64,
    pub loss: f32,
    /// Named loss terms (unweighted).
    pub parts: Vec<(&'static str, f32)>,
    /// Mean seconds per step in this session.
    pub secs_per_step: f64,
    /// Whether a checkpoint was written after this step.
    pub saved: bool,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Summary {
    pub steps: u64,
    pub resumed_from: u64,
    pub last_loss: f32,
    pub seconds: f64,
    pub checkpoint: PathBuf,
}

/// A loss for a batch: the scalar to minimise and its named, unweighted parts.
pub type LossOut = (Tensor, Vec<(&'static str, f32)>);

/// The run: model variables, which of them train, and where it lives.
pub struct Run<'a> {
    pub kind: &'static str,
    pub varmap: &'a VarMap,
    /// Names of the variables to optimise (the others are frozen).
    pub trainable: Vec<String>,
    pub model_json: serde_json::Value,
    pub data_json: serde_json::Value,
    pub schedule: Schedule,
    pub dir: PathBuf,
    /// Names of the loss terms, in the order the loss function returns them (CSV columns).
    pub terms: Vec<&'static str>,
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Model(format!("training failed: {e}"))
}

/// Reads a run's checkpoint state (metadata only needs the whole file today; checkpoints are small).
pub fn read_state(path: &Path) -> Result<(Checkpoint, TrainState)> {
    let ck = Checkpoint::read(path, DType::F32, &Device::Cpu)?;
    let json = ck.metadata(TRAIN_STATE_KEY).ok_or_else(|| {
        Error::Model(format!(
            "not a training checkpoint (no `{TRAIN_STATE_KEY}` metadata): {}",
            path.display()
        ))
    })?;
    let state: TrainState = serde_json::from_str(json)
        .map_err(|e| Error::Model(format!("invalid training state ({e}): {}", path.display())))?;
    Ok((ck, state))
}

impl Run<'_> {
    fn vars(&self) -> Result<Vec<(String, Var)>> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| err("the variable map is poisoned"))?;
        self.trainable
            .iter()
            .map(|n| {
                data.get(n)
                    .map(|v| (n.clone(), v.clone()))
                    .ok_or_else(|| err(format!("no variable `{n}`")))
            })
            .collect()
    }

    /// Restores variables, optimiser and step from the run folder's checkpoint.
    fn resume(&self, opt: &mut Adam) -> Result<(u64, f64)> {
        let path = self.dir.join(CHECKPOINT_FILE);
        let (ck, state) = read_state(&path)?;
        let mismatch = |what: &str| {
            Error::Model(format!(
                "cannot resume: the checkpoint was made with a different {what}: {}",
                path.display()
            ))
        };
        if state.kind != self.kind {
            return Err(mismatch(&format!("kind of run ({})", state.kind)));
        }
        if state.model != self.model_json {
            return Err(mismatch("model configuration"));
        }
        if state.data != self.data_json {
            return Err(mismatch("data or loss configuration"));
        }
        let s = &state.schedule;
        if (s.lr, s.warmup, s.batch)
            != (self.schedule.lr, self.schedule.warmup, self.schedule.batch)
        {
            return Err(mismatch("learning rate, warm-up or batch size"));
        }
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| err("the variable map is poisoned"))?;
        for (name, var) in data.iter() {
            let t = ck.get(name).ok_or_else(|| {
                Error::Model(format!(
                    "cannot resume: the checkpoint has no tensor `{name}`: {}",
                    path.display()
                ))
            })?;
            if t.dims() != var.dims() {
                return Err(Error::Model(format!(
                    "cannot resume: tensor `{name}` is {:?} in the checkpoint but {:?} in the model: {}",
                    t.dims(),
                    var.dims(),
                    path.display()
                )));
            }
            var.set(t).map_err(err)?;
        }
        drop(data);
        let all: HashMap<String, Tensor> = ck
            .names()
            .into_iter()
            .filter(|n| n.starts_with("adam."))
            .filter_map(|n| ck.get(&n).map(|t| (n.clone(), t.clone())))
            .collect();
        opt.load_state(&all, state.step)
            .map_err(|e| Error::Model(format!("cannot resume {}: {e}", path.display())))?;
        Ok((state.step, state.seconds))
    }

    fn save(&self, opt: &Adam, step: u64, seconds: f64) -> Result<()> {
        let mut tensors = crate::model::weights::varmap_tensors(self.varmap);
        tensors.extend(opt.state_tensors());
        let state = TrainState {
            kind: self.kind.to_string(),
            step,
            model: self.model_json.clone(),
            data: self.data_json.clone(),
            schedule: self.schedule.clone(),
            seconds,
        };
        let json = serde_json::to_string(&state).map_err(err)?;
        let host = tensors
            .iter()
            .map(|(n, t)| Ok((n.as_str(), t.to_device(&Device::Cpu)?.contiguous()?)))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(err)?;
        let meta = HashMap::from([(TRAIN_STATE_KEY.to_string(), json)]);
        let bytes = safetensors::serialize(host, Some(meta)).map_err(err)?;
        write_atomic(&self.dir.join(CHECKPOINT_FILE), &bytes)?;
        Ok(())
    }

    /// Runs (or resumes, when `resume` and a checkpoint exists) to `schedule.steps`.
    /// `loss` computes a batch's loss; `export` is called after every checkpoint (to write the
    /// inference file); `on_step` sees every step and stops the run (after a checkpoint) by
    /// returning false.
    pub fn train(
        &self,
        loader: &mut Loader,
        resume: bool,
        loss: &mut dyn FnMut(&Batch) -> Result<LossOut>,
        export: &mut dyn FnMut() -> Result<()>,
        on_step: &mut dyn FnMut(&StepLog) -> bool,
    ) -> Result<Summary> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("creating the run folder", &self.dir, e))?;
        let vars = self.vars()?;
        let mut opt = Adam::new(
            vars,
            AdamParams {
                lr: self.schedule.lr,
                weight_decay: self.schedule.weight_decay,
                ..Default::default()
            },
        )
        .map_err(err)?;
        let ck = self.dir.join(CHECKPOINT_FILE);
        let (start, mut seconds) = if resume && ck.exists() {
            self.resume(&mut opt)?
        } else {
            (0, 0.0)
        };
        let log_path = self.dir.join(LOG_FILE);
        let mut log = open_log(&log_path, start, &self.terms)?;
        // The loader was created at sample index `start * batch` by the caller.
        let session = Instant::now();
        let mut last_loss = f32::NAN;
        let mut step = start;
        while step < self.schedule.steps {
            let t0 = Instant::now();
            let samples = (0..self.schedule.batch)
                .map(|_| loader.next_sample())
                .collect::<Result<Vec<_>>>()?;
            let batch = Batch::stack(&samples)?;
            drop(samples);
            let lr = cosine_lr(
                self.schedule.lr,
                step,
                self.schedule.steps,
                self.schedule.warmup,
            );
            opt.set_lr(lr);
            let (l, parts) = loss(&batch)?;
            let value = l.to_scalar::<f32>().map_err(err)?;
            if !value.is_finite() {
                return Err(err(format!("the loss became {value} at step {}", step + 1)));
            }
            let grads = l.backward().map_err(err)?;
            opt.step(&grads).map_err(err)?;
            step += 1;
            last_loss = value;
            seconds += t0.elapsed().as_secs_f64();
            writeln!(
                log,
                "{step},{lr:.3e},{value:.6},{},{:.3}",
                parts
                    .iter()
                    .map(|(_, v)| format!("{v:.6}"))
                    .collect::<Vec<_>>()
                    .join(","),
                t0.elapsed().as_secs_f64()
            )
            .map_err(|e| Error::io("writing the training log", &log_path, e))?;
            let due = step.is_multiple_of(self.schedule.checkpoint_every.max(1))
                || step == self.schedule.steps;
            let info = StepLog {
                step,
                total: self.schedule.steps,
                lr,
                loss: value,
                parts,
                secs_per_step: session.elapsed().as_secs_f64() / (step - start) as f64,
                saved: due,
            };
            let go_on = on_step(&info);
            if due || !go_on {
                log.flush()
                    .map_err(|e| Error::io("writing the training log", &log_path, e))?;
                self.save(&opt, step, seconds)?;
                export()?;
            }
            if !go_on {
                break;
            }
        }
        Ok(Summary {
            steps: step,
            resumed_from: start,
            last_loss,
            seconds,
            checkpoint: ck,
        })
    }
}

/// Opens the CSV log for appending after keeping only the rows up to `start` (a resumed run
/// rewrites the steps an interrupted session logged after its last checkpoint).
fn open_log(path: &Path, start: u64, terms: &[&str]) -> Result<std::io::BufWriter<std::fs::File>> {
    let header = format!("step,lr,loss,{},seconds", terms.join(","));
    let kept: Vec<String> = if start > 0 {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter(|l| {
                l.split(',')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|s| s <= start)
            })
            .map(str::to_string)
            .collect()
    } else {
        Vec::new()
    };
    let mut text = format!("{header}\n");
    for l in kept {
        text.push_str(&l);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())?;
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| Error::io("opening the training log", path, e))?;
    Ok(std::io::BufWriter::new(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IldiffConfig;
    use crate::train::Split;
    use crate::train::dataset::{DataConfig, MakeFn, make_sample};
    use crate::train::decoder::{LossWeights, build, decoder_loss, trainable_names};
    use std::sync::Arc;

    fn schedule(steps: u64) -> Schedule {
        Schedule {
            steps,
            lr: 3e-3,
            warmup: 2,
            weight_decay: 0.0,
            batch: 1,
            checkpoint_every: 5,
        }
    }

    /// The run every test here builds: the tiny model's decoder training in `dir`.
    fn tiny_run<'a>(varmap: &'a VarMap, cfg: &IldiffConfig, dir: &Path, steps: u64) -> Run<'a> {
        Run {
            kind: "decoder",
            varmap,
            trainable: trainable_names(varmap, false),
            model_json: serde_json::to_value(cfg).expect("json"),
            data_json: serde_json::json!({ "test": 1 }),
            schedule: schedule(steps),
            dir: dir.to_path_buf(),
            terms: crate::train::decoder::TERMS.to_vec(),
        }
    }

    /// Trains the tiny model on `dir` until `stop_at` (or the end), resuming if asked.
    fn session(dir: &Path, steps: u64, stop_at: Option<u64>, resume: bool) -> Summary {
        crate::model::fastconv::set_enabled(true);
        let dev = Device::Cpu;
        let cfg = IldiffConfig::tiny();
        let (varmap, model) = build(&cfg, &dev).expect("build");
        let codec = model.codec().expect("codec").clone();
        let run = tiny_run(&varmap, &cfg, dir, steps);
        let start = if resume {
            read_state(&dir.join(CHECKPOINT_FILE))
                .expect("state")
                .1
                .step
        } else {
            0
        };
        let data = DataConfig::procedural(32, 2, Split::Train);
        let make: Arc<MakeFn> = Arc::new(move |i| make_sample(&data, 4, i));
        let mut loader = Loader::new(make, start, 2, 2).expect("loader");
        let w = LossWeights::default();
        let out = dir.join("model.safetensors");
        run.train(
            &mut loader,
            resume,
            &mut |b| decoder_loss(&model, &codec, b, &w, &dev),
            &mut || crate::model::weights::save_ildiff(&varmap, &cfg, &out).map(|_| ()),
            &mut |s| stop_at != Some(s.step),
        )
        .expect("train")
    }

    fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
        let ck = Checkpoint::read(path, DType::F32, &Device::Cpu).expect("read");
        ck.names()
            .into_iter()
            .map(|n| {
                let v = ck
                    .get(&n)
                    .expect("t")
                    .flatten_all()
                    .expect("f")
                    .to_vec1()
                    .expect("v");
                (n, v)
            })
            .collect()
    }

    #[test]
    fn training_lowers_the_loss_and_resumes_exactly_where_it_stopped() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let whole = session(&a, 20, None, false);
        assert_eq!(whole.steps, 20);
        // The log has one row per step and the loss went down.
        let log = std::fs::read_to_string(a.join(LOG_FILE)).expect("log");
        let losses: Vec<f32> = log
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).expect("loss").parse().expect("f32"))
            .collect();
        assert_eq!(losses.len(), 20);
        let head: f32 = losses[..4].iter().sum::<f32>() / 4.0;
        let tail: f32 = losses[16..].iter().sum::<f32>() / 4.0;
        assert!(tail < head, "loss {head} -> {tail}");

        // Stopped at step 7 (checkpoint written on stop), then resumed to 20.
        let part = session(&b, 20, Some(7), false);
        assert_eq!(part.steps, 7);
        let saved = tensors(&b.join(CHECKPOINT_FILE));
        // Resuming restores every weight and moment bit for bit...
        {
            let cfg = IldiffConfig::tiny();
            let (varmap, _) = build(&cfg, &Device::Cpu).expect("build");
            let run = tiny_run(&varmap, &cfg, &b, 20);
            let mut opt =
                Adam::new(run.vars().expect("vars"), AdamParams::default()).expect("adam");
            assert_eq!(run.resume(&mut opt).expect("resume").0, 7);
            let mut now: Vec<(String, Vec<f32>)> = crate::model::weights::varmap_tensors(&varmap)
                .into_iter()
                .chain(opt.state_tensors())
                .map(|(n, t)| (n, t.flatten_all().expect("f").to_vec1().expect("v")))
                .collect();
            now.sort_by(|x, y| x.0.cmp(&y.0));
            assert_eq!(now, saved);
        }
        // ...and the resumed run follows the uninterrupted one: the same samples in the same
        // order and the same losses up to the CPU kernels' rounding (candle's gemm is not
        // reproducible to the last bit across runs, so neither are two uninterrupted runs).
        let rest = session(&b, 20, None, true);
        assert_eq!((rest.resumed_from, rest.steps), (7, 20));
        let log_b = std::fs::read_to_string(b.join(LOG_FILE)).expect("log");
        assert_eq!(log_b.lines().count(), 21, "one header and 20 rows");
        let row = |l: &str| -> Vec<f64> {
            l.split(',')
                .take(7)
                .map(|v| v.parse().expect("number"))
                .collect()
        };
        for (x, y) in log.lines().skip(1).zip(log_b.lines().skip(1)) {
            let (x, y) = (row(x), row(y));
            assert_eq!(x[0], y[0], "step");
            assert_eq!(x[1], y[1], "learning rate");
            assert!(
                (x[2] - y[2]).abs() <= 0.05 * x[2].abs() + 1e-4,
                "loss {x:?} vs {y:?}"
            );
        }

        // A checkpoint with a mis-shaped tensor is refused, naming the tensor.
        let ck =
            Checkpoint::read(&b.join(CHECKPOINT_FILE), DType::F32, &Device::Cpu).expect("read");
        let mut t: HashMap<String, Tensor> = ck
            .names()
            .into_iter()
            .map(|n| (n.clone(), ck.get(&n).expect("t").clone()))
            .collect();
        t.insert(
            "conv_out.weight".into(),
            Tensor::zeros((1, 2, 3, 3), DType::F32, &Device::Cpu).expect("z"),
        );
        let meta = HashMap::from([(
            TRAIN_STATE_KEY.to_string(),
            ck.metadata(TRAIN_STATE_KEY).expect("meta").to_string(),
        )]);
        let bytes = safetensors::serialize(t, Some(meta)).expect("ser");
        std::fs::write(b.join(CHECKPOINT_FILE), bytes).expect("write");
        let dev = Device::Cpu;
        let cfg = IldiffConfig::tiny();
        let (varmap, _) = build(&cfg, &dev).expect("build");
        let run = tiny_run(&varmap, &cfg, &b, 30);
        let mut opt = Adam::new(run.vars().expect("vars"), AdamParams::default()).expect("adam");
        let e = run.resume(&mut opt).expect_err("bad shape");
        assert!(e.to_string().contains("conv_out.weight"), "{e}");
        // A different data configuration is refused too.
        let other = Run {
            data_json: serde_json::json!({ "test": 2 }),
            ..run
        };
        let e = other.resume(&mut opt).expect_err("other data");
        assert!(e.to_string().contains("data"), "{e}");
        // Garbage is an error, not a panic.
        std::fs::write(b.join(CHECKPOINT_FILE), b"not safetensors").expect("write");
        assert!(read_state(&b.join(CHECKPOINT_FILE)).is_err());
    }
}
