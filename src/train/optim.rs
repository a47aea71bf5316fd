//! AdamW whose state can be saved and restored.
//!
//! candle-nn's `AdamW` keeps its moment estimates private, so a run that stops cannot resume
//! where it was; this one exposes them by variable name, which is what makes resuming a
//! checkpoint bit-exact. The update is the decoupled-weight-decay Adam of Loshchilov & Hutter:
//! `θ ← θ(1 − lr·λ) − lr · m̂ / (√v̂ + ε)`.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Result, Tensor, Var, backprop::GradStore, bail};

/// Adam hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamParams {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

struct Slot {
    var: Var,
    m: Var,
    v: Var,
}

/// AdamW over named variables, in a fixed (sorted) order so every run updates identically.
pub struct Adam {
    params: AdamParams,
    slots: BTreeMap<String, Slot>,
    step: u64,
}

impl Adam {
    /// Optimises `vars` (name → variable) with zeroed moments.
    pub fn new(vars: impl IntoIterator<Item = (String, Var)>, params: AdamParams) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let m = Var::zeros(var.shape(), var.dtype(), var.device())?;
                let v = Var::zeros(var.shape(), var.dtype(), var.device())?;
                Ok((name, Slot { var, m, v }))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(Self {
            params,
            slots,
            step: 0,
        })
    }

    /// Updates taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Changes the learning rate (schedules call this before each step).
    pub fn set_lr(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.params.lr
    }

    /// Number of optimised variables.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no variable is optimised.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Names of the optimised variables that `grads` holds no gradient for (a training test
    /// asserts this is empty: a silently detached variable never learns).
    pub fn missing_grads(&self, grads: &GradStore) -> Vec<String> {
        self.slots
            .iter()
            .filter(|(_, s)| grads.get(s.var.as_tensor()).is_none())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// One update from `grads`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let p = self.params;
        let t = self.step as i32;
        let c1 = 1.0 / (1.0 - p.beta1.powi(t));
        let c2 = 1.0 / (1.0 - p.beta2.powi(t));
        for slot in self.slots.values() {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let m = ((slot.m.as_tensor() * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            let v = ((slot.v.as_tensor() * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let upd = ((&m * c1)? / ((&v * c2)?.sqrt()? + p.eps)?)?;
            let theta = slot.var.as_tensor();
            let decayed = if p.weight_decay > 0.0 {
                (theta * (1.0 - p.lr * p.weight_decay))?
            } else {
                theta.clone()
            };
            slot.var.set(&(decayed - (upd * p.lr)?)?)?;
            slot.m.set(&m)?;
            slot.v.set(&v)?;
        }
        Ok(())
    }

    /// The moments as named tensors (`adam.m.<var>`, `adam.v.<var>`) for a checkpoint.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::with_capacity(2 * self.slots.len());
        for (name, s) in &self.slots {
            out.insert(format!("adam.m.{name}"), s.m.as_tensor().clone());
            out.insert(format!("adam.v.{name}"), s.v.as_tensor().clone());
        }
        out
    }

    /// Restores moments saved by [`Adam::state_tensors`] and the step count; every variable's
    /// moments must be present with the variable's shape (the error names the tensor).
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for (name, s) in &self.slots {
            for (kind, dst) in [("m", &s.m), ("v", &s.v)] {
                let key = format!("adam.{kind}.{name}");
                let Some(t) = tensors.get(&key) else {
                    bail!("optimizer state: the checkpoint has no `{key}`");
                };
                if t.dims() != dst.dims() {
                    bail!(
                        "optimizer state: `{key}` is {:?}, the variable is {:?}",
                        t.dims(),
                        dst.dims()
                    );
                }
                dst.set(&t.to_dtype(dst.dtype())?.to_device(dst.device())?)?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Learning rate at `step` of `total`: linear warm-up over `warmup` steps, then cosine decay
/// to 10 % of `lr` (small nets trained briefly gain most from a high, then decaying rate).
pub fn cosine_lr(lr: f64, step: u64, total: u64, warmup: u64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let x = ((step - warmup) as f64 / span).min(1.0);
    lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * x).cos()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn adam_minimises_a_quadratic_and_restores_state() {
        let dev = Device::Cpu;
        let x = Var::from_slice(&[3f32, -2.0], 2, &dev).expect("var");
        let mut opt = Adam::new(
            [("x".to_string(), x.clone())],
            AdamParams {
                lr: 0.1,
                ..Default::default()
            },
        )
        .expect("adam");
        for _ in 0..200 {
            let loss = x.as_tensor().sqr().expect("sqr").sum_all().expect("sum");
            let g = loss.backward().expect("backward");
            assert!(opt.missing_grads(&g).is_empty());
            opt.step(&g).expect("step");
        }
        let v: Vec<f32> = x.as_tensor().to_vec1().expect("vec");
        assert!(v.iter().all(|a| a.abs() < 0.05), "{v:?}");

        // Saving and restoring moments continues identically.
        let state = opt.state_tensors();
        let y = Var::from_slice(&v, 2, &dev).expect("var");
        let mut opt2 = Adam::new([("x".to_string(), y.clone())], opt.params).expect("adam");
        opt2.load_state(&state, opt.step_count()).expect("load");
        for (o, var) in [(&mut opt, &x), (&mut opt2, &y)] {
            let loss = var.as_tensor().sqr().expect("sqr").sum_all().expect("sum");
            o.step(&loss.backward().expect("bwd")).expect("step");
        }
        let a: Vec<f32> = x.as_tensor().to_vec1().expect("vec");
        let b: Vec<f32> = y.as_tensor().to_vec1().expect("vec");
        assert_eq!(a, b);

        let mut bad = state.clone();
        bad.insert(
            "adam.v.x".into(),
            Tensor::zeros(3, DType::F32, &dev).expect("zeros"),
        );
        let e = opt2.load_state(&bad, 1).expect_err("shape");
        assert!(e.to_string().contains("adam.v.x"), "{e}");
        bad.remove("adam.v.x");
        let e = opt2.load_state(&bad, 1).expect_err("missing");
        assert!(e.to_string().contains("adam.v.x"), "{e}");
    }

    #[test]
    fn cosine_schedule_warms_up_then_decays() {
        assert!(cosine_lr(1.0, 0, 100, 10) < 0.2);
        assert!((cosine_lr(1.0, 10, 100, 10) - 1.0).abs() < 1e-9);
        assert!((cosine_lr(1.0, 100, 100, 10) - 0.1).abs() < 1e-9);
        assert!(cosine_lr(1.0, 50, 100, 10) < 1.0);
    }
}
