//! The seam between samplers and denoisers, so one generation pipeline drives both the user's
//! SD-1.5 + AnimateDiff UNet and the small embedded default without knowing which it has.

use candle_core::{Device, Result, Tensor};

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

/// ᾱ_t, the cumulative products of `1 − β_t` for t = 0..`train_steps`, with betas spaced
/// Mixed noise (PYoCo): `√share · common + √(1 - share) · own`, `common` broadcast over the
/// frames of its clip (e.g. own `[frames, C, h, w]` with common `[1, C, h, w]`). Unit variance
/// when both are. One definition for training and sampling, which must draw alike.
pub fn mix_frame_noise(own: &Tensor, common: &Tensor, share: f64) -> Result<Tensor> {
    (own * (1.0 - share).sqrt())?.broadcast_add(&(common * share.sqrt())?)
}

/// linearly from `beta_start` to `beta_end`, or linearly in their square roots when
/// `scaled_linear` (SD's schedule). One definition for the samplers and for training, so a
/// model is sampled on exactly the schedule it was trained on.
pub fn alphas_cumprod(
    train_steps: usize,
    beta_start: f64,
    beta_end: f64,
    scaled_linear: bool,
) -> Vec<f64> {
    let n = train_steps;
    let mut acc = 1.0;
    (0..n)
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
        .collect()
}
