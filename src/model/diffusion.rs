//! The seam between samplers and denoisers, so one generation pipeline drives both the user's
//! SD-1.5 + AnimateDiff UNet and the small embedded default without knowing which it has.

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

/// What a denoiser's output means. Samplers and training must agree on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The added noise ε (SD-1.5's choice).
    #[default]
    Epsilon,
    /// The velocity `v = √ᾱ ε − √(1−ᾱ) x0` (Salimans & Ho 2022). Why: at zero terminal SNR the
    /// input is pure noise, so ε = x_t says nothing, while v = −x0 asks for the whole picture.
    #[serde(rename = "v_prediction")]
    V,
}

impl Prediction {
    /// How much the clean estimate x0 moves per unit of model output at cumulative alpha `a`
    /// (`√((1−ᾱ)/ᾱ)` for ε, `√(1−ᾱ)` for v): turns a change of output into a change of picture.
    pub fn x0_per_output(self, a: f64) -> f64 {
        match self {
            Prediction::Epsilon => ((1.0 - a) / a).sqrt(),
            Prediction::V => (1.0 - a).sqrt(),
        }
    }
}

/// Lin et al. 2023's rescaling ("Common Diffusion Noise Schedules and Sample Steps are
/// Flawed"): shifts and scales √ᾱ so the last step is pure noise (ᾱ = 0) and the first is
/// unchanged. Why: SD-1.5's schedule ends at ᾱ = 0.0047, so its "pure noise" still carries
/// 7 % of the picture; a model can learn to read the coarse layout from that leak, and then at
/// sampling time the seed's noise, not the prompt, decides the layout.
pub fn rescale_zero_terminal_snr(alphas_cumprod: &[f64]) -> Vec<f64> {
    let (Some(&first), Some(&last)) = (alphas_cumprod.first(), alphas_cumprod.last()) else {
        return Vec::new();
    };
    let (s0, st) = (first.sqrt(), last.sqrt());
    if s0 <= st {
        return alphas_cumprod.to_vec();
    }
    alphas_cumprod
        .iter()
        .map(|a| ((a.sqrt() - st) * s0 / (s0 - st)).max(0.0).powi(2))
        .collect()
}

/// A noise-prediction network over a batch of video clips in latent space.
///
/// Frames of a clip are stacked in the batch dimension (`[clips * frames, C, h, w]`), which is
/// how AnimateDiff's motion modules and the image UNet both see them.
pub trait Denoiser: Send + Sync {
    /// Predicts the noise (epsilon) in `latents` at diffusion `timestep` (0..=999 scale).
    ///
    /// `context` is the conditioning the model was built for: CLIP hidden states
    /// `[clips * frames, tokens, dim]` for SD-1.5, a word-embedding tensor for the default.
    /// `frames` is the clip length, so temporal layers can regroup the batch.
    fn predict_noise(
        &self,
        latents: &Tensor,
        timestep: f64,
        context: &Tensor,
        frames: usize,
    ) -> Result<Tensor>;

    /// Channels of the latent this model denoises (4 for SD-1.5).
    fn latent_channels(&self) -> usize;

    /// Pixel size / latent size of the codec whose latents this model works in (8 for SD-1.5).
    fn latent_factor(&self) -> usize {
        8
    }
}

/// The sinusoidal timestep features of diffusers' `Timesteps(dim, flip_sin_to_cos=True, 0)` for
/// one timestep per row, `[timesteps.len(), dim]`, computed in f32 in PyTorch's order (cos half
/// first). Every denoiser here embeds its timestep this way.
pub fn timestep_features(timesteps: &[f32], dim: usize, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let log = -(10000f64.ln()) as f32;
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f32> = (0..half)
            .map(|i| t * ((log * i as f32) / half as f32).exp())
            .collect();
        out.extend(args.iter().map(|a| a.cos()));
        out.extend(args.iter().map(|a| a.sin()));
        out.resize(out.len() + dim - 2 * half, 0.0);
    }
    Tensor::from_vec(out, (timesteps.len(), dim), device)
}

/// Mixed noise (PYoCo): `√share · common + √(1 - share) · own`, `common` broadcast over the
/// frames of its clip (e.g. own `[frames, C, h, w]` with common `[1, C, h, w]`). Unit variance
/// when both are. One definition for training and sampling, which must draw alike.
pub fn mix_frame_noise(own: &Tensor, common: &Tensor, share: f64) -> Result<Tensor> {
    (own * (1.0 - share).sqrt())?.broadcast_add(&(common * share.sqrt())?)
}

/// ᾱ_t, the cumulative products of `1 − β_t` for t = 0..`train_steps`, with betas spaced
/// linearly from `beta_start` to `beta_end`, or linearly in their square roots when
/// `scaled_linear` (SD's schedule), then rescaled to end at 0 when `zero_terminal_snr`
/// ([`rescale_zero_terminal_snr`]). One definition for the samplers and for training, so a
/// model is sampled on exactly the schedule it was trained on.
pub fn alphas_cumprod(
    train_steps: usize,
    beta_start: f64,
    beta_end: f64,
    scaled_linear: bool,
    zero_terminal_snr: bool,
) -> Vec<f64> {
    let n = train_steps;
    let mut acc = 1.0;
    let ac: Vec<f64> = (0..n)
        .map(|i| {
            let f = if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.0
            };
            let beta = if scaled_linear {
                let (a, b) = (beta_start.sqrt(), beta_end.sqrt());
                (a + (b - a) * f).powi(2)
            } else {
                beta_start + (beta_end - beta_start) * f
            };
            acc *= 1.0 - beta;
            acc
        })
        .collect();
    if zero_terminal_snr {
        rescale_zero_terminal_snr(&ac)
    } else {
        ac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_terminal_snr_rescaling_ends_at_pure_noise() {
        let ac = alphas_cumprod(1000, 0.00085, 0.012, true, false);
        let z = alphas_cumprod(1000, 0.00085, 0.012, true, true);
        assert_eq!(z, rescale_zero_terminal_snr(&ac));
        assert_eq!(z.len(), 1000);
        assert!((z[0] - ac[0]).abs() < 1e-12, "first step kept");
        assert_eq!(z[999], 0.0);
        assert!(z.windows(2).all(|w| w[1] < w[0]), "still decreasing");
        // The rescaling removes the leak at the end and leaves the start almost as it was.
        assert!(ac[999] > 0.004 && z[998] < 1e-4, "{} {}", ac[999], z[998]);
        assert!((z[100] / ac[100] - 1.0).abs() < 0.05);
    }

    #[test]
    fn x0_moves_with_the_output_as_the_prediction_says() {
        // eps: x0 = (x_t - sqrt(1 - a) eps) / sqrt(a); v: x0 = sqrt(a) x_t - sqrt(1 - a) v.
        assert!((Prediction::Epsilon.x0_per_output(0.5) - 1.0).abs() < 1e-12);
        assert!((Prediction::Epsilon.x0_per_output(0.2) - 2.0).abs() < 1e-12);
        assert!((Prediction::V.x0_per_output(0.75) - 0.5).abs() < 1e-12);
        assert!((Prediction::V.x0_per_output(0.0) - 1.0).abs() < 1e-12);
    }
}
