//! Diffusion samplers (DDIM, Euler-ancestral) with diffusers' exact timestep and sigma tables,
//! and the seeded noise they start from.
//!
//! What is matched: diffusers' `DDIMScheduler` and `EulerAncestralDiscreteScheduler` built from
//! SD-1.5's `scheduler_config.json` (scaled-linear betas 0.00085..0.012 over 1000 steps,
//! `steps_offset` 1, `set_alpha_to_one` false, no sample clipping, epsilon prediction). That
//! config names no spacing, so each scheduler's own default applies there: **DDIM "leading"**
//! (t = 901, 801, ..., 1 for 10 steps) and **Euler-a "linspace"** (t = 999, 888, ..., 0); both
//! are our defaults too, and the other spacings are available. `tests/generate_golden.rs`
//! checks all four against a diffusers run. Tables are computed in f64; diffusers uses f32,
//! which is within the golden's tolerance.
//!
//! Beyond diffusers' SD-1.5 setup, a schedule may predict **v** and be rescaled to **zero
//! terminal SNR** (the embedded generator's, see `crate::model::diffusion::rescale_zero_terminal_snr`):
//! DDIM then steps in closed form from x0 and ε recovered from v (no division by √ᾱ, which is 0
//! at the last step), Euler-ancestral converts v to ε through its scaled input and clamps the
//! infinite last sigma as diffusers does, and a request that names no spacing gets "trailing",
//! whose first step is the last training step.
//!
//! The noise comes from our own seeded generator ([`NoiseRng`]), not candle's (its CPU
//! generator cannot be seeded): a seed gives the same sticker on every machine.

use candle_core::{DType, Device, Shape, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::diffusion::Prediction;
use crate::{Error, Result};

/// Which sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SchedulerKind {
    /// Deterministic DDIM (eta = 0): the same seed gives the same clip at any step count.
    #[default]
    Ddim,
    /// Euler-ancestral: fresh noise every step; often sharper at few steps.
    EulerAncestral,
}

impl SchedulerKind {
    /// The name the CLI and settings use.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::EulerAncestral => "euler-a",
        }
    }

    /// Parses `ddim` or `euler-a` (also `euler_a`, `euler-ancestral`).
    pub fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ddim" => Some(SchedulerKind::Ddim),
            "euler-a" | "euler_a" | "euler-ancestral" | "euler_ancestral" => {
                Some(SchedulerKind::EulerAncestral)
            }
            _ => None,
        }
    }

    /// diffusers' default spacing for this sampler under SD-1.5's config.
    pub fn default_spacing(self) -> Spacing {
        match self {
            SchedulerKind::Ddim => Spacing::Leading,
            SchedulerKind::EulerAncestral => Spacing::Linspace,
        }
    }
}

/// How inference timesteps are picked from the training steps (diffusers' `timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Spacing {
    /// `k * (T / n) + steps_offset`, from the top.
    Leading,
    /// `n` evenly spaced values over `0 ..= T - 1`, from the top.
    Linspace,
    /// `T - k * T / n - 1`, from the top.
    Trailing,
}

/// The training noise schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoiseSchedule {
    pub train_steps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    /// Betas linear in sqrt (SD's "scaled_linear") rather than linear.
    pub scaled_linear: bool,
    /// Added to "leading" timesteps (1 for SD-1.5).
    pub steps_offset: usize,
    /// The alpha past the last step: 1 when true, else the first training step's.
    pub set_alpha_to_one: bool,
    /// What the denoiser's output means (ε for SD-1.5).
    pub prediction: Prediction,
    /// ᾱ rescaled to reach 0 at the last step (see
    /// [`crate::model::diffusion::rescale_zero_terminal_snr`]).
    pub zero_terminal_snr: bool,
}

impl NoiseSchedule {
    /// SD-1.5's `scheduler_config.json`.
    pub fn sd15() -> Self {
        Self {
            train_steps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            scaled_linear: true,
            steps_offset: 1,
            set_alpha_to_one: false,
            prediction: Prediction::Epsilon,
            zero_terminal_snr: false,
        }
    }

    /// Cumulative products of `1 - beta`, one per training step.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        crate::model::diffusion::alphas_cumprod(
            self.train_steps,
            self.beta_start,
            self.beta_end,
            self.scaled_linear,
            self.zero_terminal_snr,
        )
    }

    /// The spacing a request that names none gets: the sampler's diffusers default, except
    /// "trailing" at zero terminal SNR, whose first step must be the last training step (the
    /// only pure-noise one; Lin et al. 2023).
    pub fn default_spacing(&self, kind: SchedulerKind) -> Spacing {
        if self.zero_terminal_snr {
            Spacing::Trailing
        } else {
            kind.default_spacing()
        }
    }
}

/// The smallest ᾱ Euler's sigma table takes: at zero terminal SNR the last ᾱ is 0 and its sigma
/// infinite, so it is clamped as diffusers does (2⁻²⁴, sigma 4096).
const EULER_MIN_ALPHA: f64 = 1.0 / 16_777_216.0;

/// A sampler prepared for a number of steps.
#[derive(Debug, Clone)]
pub struct Sampler {
    kind: SchedulerKind,
    timesteps: Vec<f64>,
    /// Euler: sigma per step plus a final 0. DDIM: unused.
    sigmas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    final_alpha: f64,
    step_ratio: usize,
    /// Euler's initial sigma depends on the spacing (see [`Sampler::init_noise_sigma`]).
    leading: bool,
    prediction: Prediction,
}

fn err(source: candle_core::Error) -> Error {
    Error::Candle {
        context: "sampling".into(),
        source,
    }
}

/// Linear interpolation of `ys` (at x = 0, 1, 2, ...) at `x`, clamped at the ends (np.interp).
fn interp(x: f64, ys: &[f64]) -> f64 {
    if x <= 0.0 {
        return ys[0];
    }
    let last = ys.len() - 1;
    if x >= last as f64 {
        return ys[last];
    }
    let i = x.floor() as usize;
    let f = x - i as f64;
    ys[i] * (1.0 - f) + ys[i + 1] * f
}

impl Sampler {
    /// Prepares `steps` inference steps of `kind` with `spacing` over `schedule`.
    pub fn new(
        kind: SchedulerKind,
        schedule: &NoiseSchedule,
        steps: usize,
        spacing: Spacing,
    ) -> Result<Self> {
        let t_max = schedule.train_steps;
        if steps == 0 || steps > t_max {
            return Err(Error::Invalid(format!(
                "steps must be 1..={t_max}, got {steps}"
            )));
        }
        let ratio = t_max / steps;
        let mut timesteps: Vec<f64> = match spacing {
            Spacing::Leading => (0..steps)
                .map(|k| (k * ratio + schedule.steps_offset) as f64)
                .collect(),
            Spacing::Linspace => (0..steps)
                .map(|k| {
                    let v = if steps > 1 {
                        k as f64 * (t_max - 1) as f64 / (steps - 1) as f64
                    } else {
                        0.0
                    };
                    // DDIM rounds to integer training steps; Euler keeps the fraction.
                    if kind == SchedulerKind::Ddim {
                        v.round()
                    } else {
                        v
                    }
                })
                .collect(),
            Spacing::Trailing => {
                let r = t_max as f64 / steps as f64;
                (0..steps)
                    .map(|k| (t_max as f64 - k as f64 * r).round() - 1.0)
                    .rev()
                    .collect()
            }
        };
        timesteps.reverse();
        let alphas_cumprod = schedule.alphas_cumprod();
        let sigmas = match kind {
            SchedulerKind::Ddim => Vec::new(),
            SchedulerKind::EulerAncestral => {
                let table: Vec<f64> = alphas_cumprod
                    .iter()
                    .map(|a| {
                        let a = a.max(EULER_MIN_ALPHA);
                        ((1.0 - a) / a).sqrt()
                    })
                    .collect();
                let mut s: Vec<f64> = timesteps.iter().map(|&t| interp(t, &table)).collect();
                s.push(0.0);
                s
            }
        };
        // Past the last step: alpha 1 or the first training step's.
        let final_alpha = if schedule.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            kind,
            timesteps,
            sigmas,
            alphas_cumprod,
            final_alpha,
            step_ratio: ratio,
            leading: spacing == Spacing::Leading,
            prediction: schedule.prediction,
        })
    }

    /// The sampler.
    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// The model timesteps, first to last.
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// Steps to run.
    pub fn len(&self) -> usize {
        self.timesteps.len()
    }

    /// Never true for a built sampler (at least one step).
    pub fn is_empty(&self) -> bool {
        self.timesteps.is_empty()
    }

    /// Whether [`Sampler::step`] needs fresh noise.
    pub fn needs_noise(&self) -> bool {
        self.kind == SchedulerKind::EulerAncestral
    }

    /// The factor the unit-variance starting noise is scaled by (diffusers' `init_noise_sigma`:
    /// Euler's largest sigma for linspace/trailing spacing, sqrt(max^2 + 1) for leading).
    pub fn init_noise_sigma(&self) -> f64 {
        match self.kind {
            SchedulerKind::Ddim => 1.0,
            SchedulerKind::EulerAncestral => {
                let max = self.sigmas.iter().copied().fold(0.0, f64::max);
                if self.leading {
                    (max * max + 1.0).sqrt()
                } else {
                    max
                }
            }
        }
    }

    /// The model input at step `i` (Euler divides by sqrt(sigma^2 + 1); DDIM passes it as is).
    pub fn scale_model_input(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        match self.kind {
            SchedulerKind::Ddim => Ok(x.clone()),
            SchedulerKind::EulerAncestral => {
                let s = self.sigmas[i];
                (x / (s * s + 1.0).sqrt()).map_err(err)
            }
        }
    }

    /// One step from `x` at step `i` given the model's (guided) output `out` (ε or v, as the
    /// schedule says) for the input [`Sampler::scale_model_input`] gave; `noise` (unit normal,
    /// the shape of `x`) is required when [`Sampler::needs_noise`].
    pub fn step(
        &self,
        i: usize,
        x: &Tensor,
        out: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        if i >= self.len() {
            return Err(Error::Invalid(format!(
                "step {i} of a {}-step sampler",
                self.len()
            )));
        }
        match self.kind {
            SchedulerKind::Ddim => {
                let t = self.timesteps[i];
                let a_t = self.alphas_cumprod[t as usize];
                let prev = t as i64 - self.step_ratio as i64;
                let a_prev = if prev >= 0 {
                    self.alphas_cumprod[prev as usize]
                } else {
                    self.final_alpha
                };
                let (c_x, c_out) = match self.prediction {
                    // x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t); x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps
                    Prediction::Epsilon => (
                        (a_prev / a_t).sqrt(),
                        (1.0 - a_prev).sqrt() - (a_prev * (1.0 - a_t) / a_t).sqrt(),
                    ),
                    // x0 = sqrt(a_t) x - sqrt(1 - a_t) v; eps = sqrt(1 - a_t) x + sqrt(a_t) v:
                    // no division, so a_t = 0 (zero terminal SNR) is fine.
                    Prediction::V => {
                        let (sa, sb) = (a_t.sqrt(), (1.0 - a_t).sqrt());
                        let (pa, pb) = (a_prev.sqrt(), (1.0 - a_prev).sqrt());
                        (pa * sa + pb * sb, pb * sa - pa * sb)
                    }
                };
                (x * c_x).and_then(|a| a + (out * c_out)?).map_err(err)
            }
            SchedulerKind::EulerAncestral => {
                let Some(noise) = noise else {
                    return Err(Error::Invalid(
                        "Euler-ancestral needs noise for every step".into(),
                    ));
                };
                let (s, s_to) = (self.sigmas[i], self.sigmas[i + 1]);
                let eps = match self.prediction {
                    Prediction::Epsilon => out.clone(),
                    // The model saw x / sqrt(s^2 + 1) = sqrt(a) x0 + sqrt(1 - a) eps with
                    // a = 1 / (s^2 + 1); eps = sqrt(1 - a) x_in + sqrt(a) v.
                    Prediction::V => {
                        let k = s * s + 1.0;
                        (x * (s / k))
                            .and_then(|a| a + (out / k.sqrt())?)
                            .map_err(err)?
                    }
                };
                let s_up = (s_to * s_to * (s * s - s_to * s_to) / (s * s)).sqrt();
                let s_down = (s_to * s_to - s_up * s_up).max(0.0).sqrt();
                // derivative = (x - x0) / s = eps; x_prev = x + eps (s_down - s) + noise s_up
                let dt = s_down - s;
                (eps * dt)
                    .and_then(|d| x + d)
                    .and_then(|y| y + (noise * s_up)?)
                    .map_err(err)
            }
        }
    }
}

/// A seeded standard-normal generator: SplitMix64 for the bits, Box-Muller for the normals.
/// Portable and stable across versions, so a sticker's seed reproduces it.
#[derive(Debug, Clone)]
pub struct NoiseRng {
    state: u64,
    spare: Option<f32>,
}

impl NoiseRng {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// One standard normal.
    pub fn normal(&mut self) -> f32 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let th = std::f64::consts::TAU * u2;
        self.spare = Some((r * th.sin()) as f32);
        (r * th.cos()) as f32
    }

    /// A tensor of standard normals.
    pub fn tensor(&mut self, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let data: Vec<f32> = (0..shape.elem_count()).map(|_| self.normal()).collect();
        Tensor::from_vec(data, shape, device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(err)
    }

    /// Noise for a clip `[frames, C, h, w]` whose frames share `share` of the variance:
    /// `√share · common + √(1 - share) · own` (unit variance either way). `share` 0 draws
    /// exactly what [`NoiseRng::tensor`] draws, so seeds of independent-noise models keep
    /// their pictures.
    pub fn clip_tensor(
        &mut self,
        shape: (usize, usize, usize, usize),
        share: f64,
        device: &Device,
    ) -> Result<Tensor> {
        let own = self.tensor(shape, device)?;
        if share <= 0.0 {
            return Ok(own);
        }
        let (_, c, h, w) = shape;
        let common = self.tensor((1, c, h, w), device)?;
        crate::model::diffusion::mix_frame_noise(&own, &common, share).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_noise_shares_the_asked_variance_across_frames() {
        let dev = Device::Cpu;
        let shape = (4, 2, 32, 32);
        // Share 0 is exactly the independent draw.
        let a = NoiseRng::new(9).clip_tensor(shape, 0.0, &dev).expect("a");
        let b = NoiseRng::new(9).tensor(shape, &dev).expect("b");
        let diff: f32 = (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar())
            .expect("diff");
        assert_eq!(diff, 0.0);
        for share in [0.3, 0.7] {
            let t = NoiseRng::new(5).clip_tensor(shape, share, &dev).expect("t");
            let v: Vec<Vec<f32>> = (0..4)
                .map(|f| {
                    t.get(f)
                        .and_then(|x| x.flatten_all())
                        .and_then(|x| x.to_vec1())
                        .expect("frame")
                })
                .collect();
            let n = v[0].len() as f64;
            let var = v[1].iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / n;
            let cov = v[0]
                .iter()
                .zip(&v[2])
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum::<f64>()
                / n;
            assert!((var - 1.0).abs() < 0.1, "variance {var}");
            assert!((cov - share).abs() < 0.1, "share {share}: covariance {cov}");
        }
    }

    #[test]
    fn timesteps_follow_diffusers() {
        let sd = NoiseSchedule::sd15();
        let ddim = Sampler::new(SchedulerKind::Ddim, &sd, 10, Spacing::Leading).expect("ddim");
        assert_eq!(
            ddim.timesteps(),
            &[
                901.0, 801.0, 701.0, 601.0, 501.0, 401.0, 301.0, 201.0, 101.0, 1.0
            ]
        );
        let e =
            Sampler::new(SchedulerKind::EulerAncestral, &sd, 4, Spacing::Linspace).expect("euler");
        assert_eq!(e.timesteps(), &[999.0, 666.0, 333.0, 0.0]);
        let t = Sampler::new(SchedulerKind::Ddim, &sd, 4, Spacing::Trailing).expect("trailing");
        assert_eq!(t.timesteps(), &[999.0, 749.0, 499.0, 249.0]);
        // SD-1.5's largest sigma is about 14.6.
        assert!(
            (e.init_noise_sigma() - 14.6146).abs() < 1e-3,
            "{}",
            e.init_noise_sigma()
        );
        assert!(Sampler::new(SchedulerKind::Ddim, &sd, 0, Spacing::Leading).is_err());
        assert!(Sampler::new(SchedulerKind::Ddim, &sd, 1001, Spacing::Leading).is_err());
        let a = sd.alphas_cumprod();
        assert!((a[0] - (1.0 - 0.00085)).abs() < 1e-12);
        assert!((a[999] - 0.00466).abs() < 1e-4, "{}", a[999]);
    }

    #[test]
    fn ddim_is_exact_on_a_clean_prediction() {
        // If eps is the true noise, one DDIM step lands exactly on the noised x0 at prev t.
        let sd = NoiseSchedule::sd15();
        let s = Sampler::new(SchedulerKind::Ddim, &sd, 10, Spacing::Leading).expect("ddim");
        let a = sd.alphas_cumprod();
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[0.5f32, -1.0, 2.0], &dev).expect("x0");
        let n = Tensor::new(&[0.3f32, 0.7, -1.1], &dev).expect("n");
        let noised = |a: f64| (&x0 * a.sqrt()).and_then(|p| p + (&n * (1.0 - a).sqrt())?);
        let x = noised(a[901]).expect("x");
        let y = s.step(0, &x, &n, None).expect("step");
        let want = noised(a[801]).expect("want");
        let d: Vec<f32> = (y - want).and_then(|d| d.to_vec1()).expect("d");
        assert!(d.iter().all(|v| v.abs() < 1e-5), "{d:?}");
    }

    fn zero_snr_v() -> NoiseSchedule {
        NoiseSchedule {
            prediction: Prediction::V,
            zero_terminal_snr: true,
            ..NoiseSchedule::sd15()
        }
    }

    fn vec(t: &Tensor) -> Vec<f32> {
        t.to_vec1().expect("vec")
    }

    #[test]
    fn ddim_v_is_exact_from_pure_noise() {
        // At zero terminal SNR the first trailing step is t = 999 with alpha 0: the input is the
        // noise alone and the exact v is -x0. One DDIM step must land on the noised x0 at the
        // next step (the eps form would divide by sqrt(0)).
        let sch = zero_snr_v();
        let a = sch.alphas_cumprod();
        assert_eq!(a[999], 0.0);
        assert_eq!(
            sch.default_spacing(SchedulerKind::Ddim),
            Spacing::Trailing,
            "zero SNR starts at the last step"
        );
        let s = Sampler::new(SchedulerKind::Ddim, &sch, 4, Spacing::Trailing).expect("ddim");
        assert_eq!(s.timesteps(), &[999.0, 749.0, 499.0, 249.0]);
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[0.5f32, -1.0, 2.0], &dev).expect("x0");
        let n = Tensor::new(&[0.3f32, 0.7, -1.1], &dev).expect("n");
        let noised = |a: f64| (&x0 * a.sqrt()).and_then(|p| p + (&n * (1.0 - a).sqrt())?);
        let v_of = |a: f64| (&n * a.sqrt()).and_then(|p| p - (&x0 * (1.0 - a).sqrt())?);
        let mut x = noised(a[999]).expect("x");
        for (i, (t, next)) in [(999, 749), (749, 499), (499, 249)].into_iter().enumerate() {
            x = s.step(i, &x, &v_of(a[t]).expect("v"), None).expect("step");
            let want = vec(&noised(a[next]).expect("want"));
            let got = vec(&x);
            assert!(
                got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-5),
                "step {i}: {got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn v_and_eps_outputs_of_one_oracle_step_alike() {
        // The same exact model, asked for eps or for v, must move both samplers to the same
        // place: the v conversions (DDIM in closed form, Euler through the scaled input) agree
        // with the eps path diffusers' goldens check.
        let eps_s = NoiseSchedule::sd15();
        let v_s = NoiseSchedule {
            prediction: Prediction::V,
            ..eps_s
        };
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[0.5f32, -1.0, 2.0, 0.1], &dev).expect("x0");
        let n = Tensor::new(&[0.3f32, 0.7, -1.1, 1.9], &dev).expect("n");
        let fresh = Tensor::new(&[-0.4f32, 0.2, 1.3, -0.8], &dev).expect("fresh");
        let ac = eps_s.alphas_cumprod();
        for kind in [SchedulerKind::Ddim, SchedulerKind::EulerAncestral] {
            let spacing = kind.default_spacing();
            let se = Sampler::new(kind, &eps_s, 5, spacing).expect("eps");
            let sv = Sampler::new(kind, &v_s, 5, spacing).expect("v");
            let mut x = (&n * se.init_noise_sigma()).expect("x");
            for i in 0..se.len() {
                // The exact eps and v for this input, given that the data is x0.
                let input = vec(&se.scale_model_input(&x, i).expect("in"));
                let x0v = vec(&x0);
                let t = se.timesteps()[i];
                let a = if kind == SchedulerKind::Ddim {
                    ac[t as usize]
                } else {
                    1.0 / (se.sigmas[i] * se.sigmas[i] + 1.0)
                };
                let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
                let eps: Vec<f32> = input
                    .iter()
                    .zip(&x0v)
                    .map(|(&xi, &x0i)| ((f64::from(xi) - sa * f64::from(x0i)) / sb) as f32)
                    .collect();
                let v: Vec<f32> = eps
                    .iter()
                    .zip(&x0v)
                    .map(|(&e, &x0i)| (sa * f64::from(e) - sb * f64::from(x0i)) as f32)
                    .collect();
                let noise = se.needs_noise().then_some(&fresh);
                let ye = se
                    .step(i, &x, &Tensor::new(eps.as_slice(), &dev).expect("e"), noise)
                    .expect("eps step");
                let yv = sv
                    .step(i, &x, &Tensor::new(v.as_slice(), &dev).expect("v"), noise)
                    .expect("v step");
                let (ge, gv) = (vec(&ye), vec(&yv));
                assert!(
                    ge.iter()
                        .zip(&gv)
                        .all(|(a, b)| (a - b).abs() < 1e-3 * (1.0 + a.abs())),
                    "{kind:?} step {i}: {ge:?} vs {gv:?}"
                );
                x = ye;
            }
            // Both end near the data.
            let end = vec(&x);
            let x0v = vec(&x0);
            assert!(
                end.iter().zip(&x0v).all(|(a, b)| (a - b).abs() < 0.15),
                "{kind:?}: {end:?} vs {x0v:?}"
            );
        }
    }

    #[test]
    fn euler_clamps_the_infinite_sigma_of_zero_snr() {
        let s = Sampler::new(
            SchedulerKind::EulerAncestral,
            &zero_snr_v(),
            10,
            Spacing::Trailing,
        )
        .expect("euler");
        assert!(
            (s.init_noise_sigma() - 4096.0).abs() < 1.0,
            "{}",
            s.init_noise_sigma()
        );
        // From pure noise with the exact v (= -x0 up to the clamp), the first step lands near
        // the data: finite, and no farther from x0 than the next sigma allows.
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[0.5f32, -1.0, 2.0], &dev).expect("x0");
        let n = Tensor::new(&[0.3f32, 0.7, -1.1], &dev).expect("n");
        let x = (&n * s.init_noise_sigma()).expect("x");
        let v = x0.neg().expect("v");
        let zero = n.zeros_like().expect("z");
        let y = vec(&s.step(0, &x, &v, Some(&zero)).expect("step"));
        let sig = s.sigmas[1];
        // Deterministic part of Euler-a from pure noise: x0 + sigma_down * n; with zero fresh
        // noise the result is x0 + s_down n, whose distance from x0 is at most sigma_next |n|.
        let x0v = vec(&x0);
        let nv = vec(&n);
        for k in 0..3 {
            assert!(y[k].is_finite());
            assert!(
                (f64::from(y[k] - x0v[k])).abs() <= sig * f64::from(nv[k].abs()) + 1e-2,
                "{k}: {y:?}"
            );
        }
    }

    #[test]
    fn seeded_noise_is_reproducible_and_normal() {
        let mut a = NoiseRng::new(42);
        let mut b = NoiseRng::new(42);
        let xs: Vec<f32> = (0..20000).map(|_| a.normal()).collect();
        let ys: Vec<f32> = (0..20000).map(|_| b.normal()).collect();
        assert_eq!(xs, ys);
        let mean = xs.iter().map(|&v| f64::from(v)).sum::<f64>() / xs.len() as f64;
        let var = xs
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        assert_ne!(NoiseRng::new(43).normal(), xs[0]);
    }
}
