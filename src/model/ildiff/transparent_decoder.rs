//! LayerDiffuse's transparent VAE decoder ("UNet1024"): RGB decoded by the SD VAE plus the SD
//! latent in, `[alpha, R, G, B]` out (straight colour). It is the base of the ILDiff decoder,
//! which adds a layout adapter's feature at the latent injection point
//! ([`TransparentDecoder::forward_with_extra`]).
//!
//! A diffusers-style UNet without timestep: GroupNorm + SiLU resnets, stride-2 conv downsampling,
//! nearest x2 + conv upsampling, single-head-dim self-attention at the deepest levels. Weight
//! names follow the official checkpoints (`layer_sd15_vae_transparent_decoder.safetensors`,
//! `vae_transparent_decoder.safetensors`); see `reference/manifests/`.
//!
//! Attention and normalisation are written with plain tensor ops (no fused softmax or norm) so
//! the decoder can be fine-tuned.

use crate::model::fastconv::{Activation, FastConv2d, FusedGroupNorm, fast_conv2d, group_norm};
use candle_core::{D, DType, Module, Result, Tensor, bail};
use candle_nn::{Conv2dConfig, Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::augment::{Dihedral, crop, lower_median, mirror_pad};
use super::local_ramp::LocalRamp;

/// Largest attention score matrix computed at once, in elements; bigger ones are split over
/// heads so a 1024-px decode does not need gigabytes for one softmax.
const ATTENTION_CHUNK_ELEMENTS: usize = 1 << 25;

/// The decoder's pixel (un)shuffle, from the CPU kernels (one copy each there).
pub use crate::model::fastconv::{depth_to_space, space_to_depth};

/// Shape of a transparent decoder. `official()` matches the published weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransparentDecoderConfig {
    /// Channels of the pixel input (RGB).
    pub in_channels: usize,
    /// Channels of the output (`alpha, R, G, B`).
    pub out_channels: usize,
    /// Channels of the SD latent.
    pub latent_channels: usize,
    /// Output channels of each level, finest first; one down block and one up block per level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block; up blocks have one more.
    pub layers_per_block: usize,
    /// GroupNorm groups everywhere.
    pub norm_groups: usize,
    /// GroupNorm epsilon.
    pub norm_eps: f64,
    /// Channels per attention head.
    pub attention_head_dim: usize,
    /// Levels (0 = finest) whose down and up blocks have self-attention after each resnet.
    pub attn_levels: Vec<usize>,
    /// Whether the mid block has self-attention between its two resnets.
    pub mid_attention: bool,
    /// The latent is added (through a zero-initialised 1x1 conv) just before this down block,
    /// so its resolution is `1 / 2^latent_inject_level` of the first level.
    pub latent_inject_level: usize,
    /// Space-to-depth factor before `conv_in` (and depth-to-space after `conv_out`); 1 for the
    /// official decoder. Ours for the CPU default: with 2 the finest level runs at half
    /// resolution on 4x the channels, which costs the same multiply-adds but a quarter of the
    /// memory traffic, while the output keeps every pixel (the last conv predicts all four
    /// sub-pixels).
    #[serde(default = "one")]
    pub pixel_unshuffle: usize,
    /// Ours, for the CPU default (`None` in the official decoder): a colour-key estimate of
    /// alpha (see [`KeyPrior`]) is fed to `conv_in` as a fourth input channel, and the output is
    /// a residual on top of it (alpha += key, RGB += pixel). A small net trained for hours on two
    /// cores cannot rediscover "differs from the border colour" from scratch; with the key as
    /// its starting point it learns where the key is wrong (similar colours, photos, soft edges).
    #[serde(default)]
    pub key_prior: Option<KeyPrior>,
}

/// A colour-key matte computed inside the model: the key is the per-channel median of each
/// frame's border pixels, and alpha ramps from 0 to 1 as a pixel's RGB distance from it goes
/// from `lo` to `hi` — the validation's colour-keying baseline, optionally with both ends set
/// per frame (see [`AdaptiveRamp`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KeyPrior {
    pub lo: f32,
    pub hi: f32,
    /// Set the ramp per frame from the border's noise and the foreground's contrast; `None`
    /// (and in files written before it existed) keeps the fixed `lo..hi` ramp.
    #[serde(default)]
    pub adaptive: Option<AdaptiveRamp>,
    /// How far the learned part may move the gate's logit either way (see
    /// [`KeyPrior::residual`]). Stored in the model's config because it changes what the
    /// weights mean; checkpoints written before it existed used 2.
    #[serde(default = "KeyPrior::legacy_gate_learned")]
    pub gate_learned: f32,
    /// Key against a per-pixel background plate (`crate::pipeline::plate`) instead of one
    /// border colour: the decoder then takes the plate RGB and its confidence as well, and the
    /// gate follows the confidence per pixel. Without a plate (a single image, or a caller
    /// that has none) the border colour serves as a constant plate, so this is a strict
    /// generalisation of the colour key.
    #[serde(default)]
    pub plate: bool,
    /// With a plate: each pixel's ramp ends where its neighbours in its own colour direction
    /// reach ([`LocalRamp`]), so parts close to the background's colour key opaque. `None`
    /// (and in files written before it existed) keeps the frame's ramp.
    #[serde(default)]
    pub local: Option<LocalRamp>,
}

/// A per-frame ramp, the way a chroma keyer's tolerance and softness are set by hand:
/// - `lo = clamp(noise × the border distances' noise_quantile, lo, lo_max)`: a compressed or
///   re-encoded flat background (H.264 blocks, GIF dither, a codec's reconstruction) is not
///   one colour, and a fixed `lo` turns its noise into a haze of partial alpha;
/// - `hi = clamp(share × median distance of the pixels beyond lo, hi, hi_max)`: a fixed ramp
///   saturates faint soft parts (a 10 % shadow on white is 80 % opaque at 0.06–0.2) where the
///   foreground stands far from the background, and stays narrow where it is close (similar
///   colours).
///
/// The gate keeps the learned correction small on flat backgrounds, so there the key itself
/// must be right. The constants were chosen on training-split composites, never on the
/// validation clips (`tests/bench/key_ramp_study.py` prints the comparison). `hi_max` was 0.6
/// until 2026-12-06's fifth session: on 32 training-split artwork clips (`ildiff train
/// validate --tuning --seed 11`, plate + ramp) 0.6 / 0.4 / 0.3 / 0.25 / 0.2 gave 10.95 /
/// 11.03 / 11.08 / 11.06 / 11.04 dB overall and 24.8 / 28.7 / 30.0 / 30.3 / 30.5 dB on plain
/// backgrounds: opaque sticker parts far from the background were keyed partly transparent.
/// The price: a black shadow on white stays partial only up to about 17 % (distance 0.3), where
/// the 0.6 end kept it partial up to about 35 %.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveRamp {
    pub share: f32,
    pub hi_max: f32,
    pub noise_quantile: f32,
    pub noise: f32,
    pub lo_max: f32,
}

impl Default for KeyPrior {
    /// The fixed ramp of the colour-keying baseline (and of models trained before the
    /// adaptive ramp).
    fn default() -> Self {
        Self {
            lo: 0.06,
            hi: 0.2,
            adaptive: None,
            gate_learned: Self::legacy_gate_learned(),
            plate: false,
            local: None,
        }
    }
}

impl KeyPrior {
    /// Input channels the prior adds to `conv_in`: keyed alpha, raw key distance, and the
    /// border's agreement with the key.
    pub const CHANNELS: usize = 3;

    /// Input channels of the plate prior: keyed alpha, distance, confidence, plate RGB.
    pub const PLATE_CHANNELS: usize = 6;

    /// The plate prior of a model trained with plates: the adaptive ramp with each pixel's end
    /// read from its part ([`LocalRamp`]), and a learned gate range wide enough (σ(±4 ± 6))
    /// that the network can overrule a wrong plate anywhere: a prior must never hold the
    /// network back.
    pub fn plate() -> Self {
        Self {
            plate: true,
            gate_learned: 6.0,
            local: Some(LocalRamp::default()),
            ..Self::adaptive()
        }
    }

    /// Input channels this prior adds to `conv_in`.
    pub fn input_channels(&self) -> usize {
        if self.plate {
            Self::PLATE_CHANNELS
        } else {
            Self::CHANNELS
        }
    }

    /// The gate's fixed logit where the border agrees with the key completely (negated) and
    /// where it does not agree at all.
    pub const GATE_LOGIT: f64 = 4.0;

    fn legacy_gate_learned() -> f32 {
        2.0
    }

    /// The CPU default's prior: the adaptive ramp (see [`AdaptiveRamp`]).
    pub fn adaptive() -> Self {
        Self {
            lo: 0.03,
            hi: 0.2,
            adaptive: Some(AdaptiveRamp {
                share: 0.8,
                hi_max: 0.3,
                noise_quantile: 0.75,
                noise: 1.5,
                lo_max: 0.12,
            }),
            ..Self::default()
        }
    }

    /// One frame's ramp `(lo, hi)` from its border pixels' and all its pixels' distances to
    /// the key (`dist` is only read by the adaptive ramp).
    pub fn frame_ramp(&self, border: &[f32], dist: &[f32]) -> (f32, f32) {
        let Some(a) = self.adaptive else {
            return (self.lo, self.hi);
        };
        let lo = quantile(border.iter().copied(), a.noise_quantile).map_or(self.lo, |v| {
            (a.noise * v).clamp(self.lo, a.lo_max.max(self.lo))
        });
        let floor = self.hi.max(lo + 1e-3);
        let hi = quantile(dist.iter().copied().filter(|&d| d > lo), 0.5)
            .map_or(floor, |m| (a.share * m).clamp(floor, a.hi_max.max(floor)));
        (lo, hi)
    }

    /// The share of a frame's border distances within the ramp's start `lo`: how far the
    /// border agrees with the key (the confidence of a border-colour plate).
    pub fn agreement(border: &[f32], lo: f32) -> f32 {
        border.iter().filter(|&&x| x < lo).count() as f32 / border.len().max(1) as f32
    }

    /// Keyed alpha for one distance under a frame's ramp.
    pub fn ramp(d: f32, (lo, hi): (f32, f32)) -> f32 {
        ((d - lo) / (hi - lo).max(1e-6)).clamp(0.0, 1.0)
    }

    /// The decoder's raw output `y` `[B, 5, H, W]` (alpha correction, RGB correction, gate) on
    /// top of the key: alpha = key + σ(4 − 8·agree + L·tanh g)·tanh(c), RGB = pixel +
    /// correction, with L = `gate_learned`. With L = 2, where the border is flat the gate stays
    /// below σ(−2) ≈ 0.12 and where it is busy (photos: keying is useless) above 0.88: the
    /// learned part only shifts it within that band. An unbounded learned gate opened everywhere
    /// in training (pooled-MSE loss) and the correction then ate into the interior of stickers
    /// on flat backgrounds; but a gate capped at 0.12 cannot fix what keying gets wrong there
    /// either (foreground parts the colour of the background), so L is a config field.
    pub fn residual(
        &self,
        y: &Tensor,
        key: &Tensor,
        agree: &Tensor,
        pixel: &Tensor,
    ) -> Result<Tensor> {
        let learned = (y.narrow(1, 4, 1)?.tanh()? * f64::from(self.gate_learned))?;
        let fixed = ((agree * (-2.0 * Self::GATE_LOGIT))? + Self::GATE_LOGIT)?;
        let gate = ((learned + fixed)?.neg()?.exp()? + 1.0)?.recip()?;
        let alpha = (key + (gate * y.narrow(1, 0, 1)?.tanh()?)?)?;
        let rgb = (pixel + y.narrow(1, 1, 3)?)?;
        Tensor::cat(&[&alpha, &rgb], 1)
    }

    /// `pixel` `[B, 3, H, W]` in [0, 1] -> keyed alpha `[B, 1, H, W]` and the `[B, 3, H, W]`
    /// features the decoder reads (no gradient: they are inputs, and sorting has no backward): the keyed alpha, the
    /// unclamped distance from the key (the clamp hides how *nearly* a pixel matches, which is
    /// what similar-colour backgrounds need), and the share of border pixels within `lo` of
    /// the key, constant over the frame: near 1 on a flat background, where the key can be
    /// trusted, low on photos and gradients, where it cannot — a global fact a small CNN could
    /// not read off the border by itself.
    pub fn features(&self, pixel: &Tensor) -> Result<(Tensor, Tensor)> {
        let (alpha, feats, _) = self.border_key(pixel)?;
        Ok((alpha, feats))
    }

    /// The border key as a constant plate `[B, 4, H, W]` (the key's RGB, and the border's
    /// agreement as the confidence): what a plate-prior model uses when no plate is given.
    pub fn border_plate(&self, pixel: &Tensor) -> Result<Tensor> {
        Ok(self.border_key(pixel)?.2)
    }

    /// The plate prior's inputs for `pixel` `[B, 3, H, W]` against `plate` `[B, 4, H, W]`
    /// (RGB, confidence): keyed alpha `[B, 1, H, W]` and the `[B, 6, H, W]` features (keyed
    /// alpha, distance to the plate, confidence, plate RGB). The ramp is set per frame as in
    /// [`KeyPrior::frame_ramp`], with the border's distances to the plate as its noise.
    pub fn plate_features(&self, pixel: &Tensor, plate: &Tensor) -> Result<(Tensor, Tensor)> {
        let pixel = pixel.detach();
        let plate = plate.detach();
        let (b, _, h, w) = pixel.dims4()?;
        if plate.dims() != [b, 4, h, w] {
            bail!(
                "plate prior: plate is {:?}, expected [{b}, 4, {h}, {w}]",
                plate.dims()
            );
        }
        let rgb = plate.narrow(1, 0, 3)?;
        let conf = plate.narrow(1, 3, 1)?.contiguous()?;
        let diff = (&pixel - &rgb)?;
        let d = diff.sqr()?.sum_keepdim(1)?.sqrt()?;
        let (mut alpha, _, ramps) = self.keyed(&d)?;
        if let Some(local) = self.local {
            let diff = diff
                .to_dtype(DType::F32)?
                .flatten_from(1)?
                .to_vec2::<f32>()?;
            let cv = conf
                .to_dtype(DType::F32)?
                .flatten_from(1)?
                .to_vec2::<f32>()?;
            let n = h * w;
            // Frames are independent: on both cores.
            let v: Vec<f32> = crate::par::par_map(b, 2, |t| {
                let df = &diff[t];
                local.alpha(
                    [&df[..n], &df[n..2 * n], &df[2 * n..]],
                    &cv[t],
                    w,
                    h,
                    ramps[t],
                )
            })
            .concat();
            alpha = Tensor::from_vec(v, (b, 1, h, w), d.device())?.to_dtype(d.dtype())?;
        }
        let feats = Tensor::cat(&[&alpha, &d, &conf, &rgb], 1)?;
        Ok((alpha, feats))
    }

    /// Keyed alpha `[B, 1, H, W]` from the distances `d` `[B, 1, H, W]` to the key (or plate),
    /// each frame's ramp set by [`KeyPrior::frame_ramp`] from its border's distances; also
    /// returns those border distances and each frame's ramp `(lo, hi)`.
    fn keyed(&self, d: &Tensor) -> Result<(Tensor, Vec<Vec<f32>>, Vec<Ramp>)> {
        let b = d.dim(0)?;
        let border_v = border_ring(d)?
            .flatten_from(1)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        let dist_v = match self.adaptive {
            Some(_) => d.flatten_from(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?,
            None => vec![Vec::new(); b],
        };
        let ramps: Vec<(f32, f32)> = border_v
            .iter()
            .zip(&dist_v)
            .map(|(bd, dist)| self.frame_ramp(bd, dist))
            .collect();
        let los = ramps.iter().map(|r| r.0).collect();
        let spans = ramps.iter().map(|(lo, hi)| (hi - lo).max(1e-6)).collect();
        let alpha = d
            .broadcast_sub(&per_frame(los, d)?)?
            .broadcast_div(&per_frame(spans, d)?)?
            .clamp(0f32, 1f32)?;
        Ok((alpha, border_v, ramps))
    }

    /// The border key: keyed alpha, the key features, and the key as a constant plate.
    fn border_key(&self, pixel: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let pixel = pixel.detach();
        let (b, c, h, w) = pixel.dims4()?;
        let border = border_ring(&pixel)?;
        let (sorted, _) = border.sort_last_dim(true)?;
        let k = sorted.dim(2)?;
        let key = sorted.narrow(2, k / 2, 1)?;
        let d = pixel
            .broadcast_sub(&key.unsqueeze(3)?)?
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?;
        let (alpha, border_v, ramps) = self.keyed(&d)?;
        // Per frame: the share of border pixels within the ramp's start (agreement).
        let agrees = border_v
            .iter()
            .zip(&ramps)
            .map(|(bd, &(lo, _))| Self::agreement(bd, lo))
            .collect();
        let agree = per_frame(agrees, &d)?
            .broadcast_as((b, 1, h, w))?
            .contiguous()?;
        let feats = Tensor::cat(&[&alpha, &d, &agree], 1)?;
        let plate = Tensor::cat(&[&key.unsqueeze(3)?.broadcast_as((b, c, h, w))?, &agree], 1)?
            .contiguous()?;
        Ok((alpha, feats, plate))
    }
}

/// One frame's ramp `(lo, hi)`.
type Ramp = (f32, f32);

fn one() -> usize {
    1
}

/// The border pixels of `x` `[B, C, H, W]` as `[B, C, 2W + 2H]`: top row, bottom row, left
/// column, right column (corners twice), the samples every key and ramp reads.
fn border_ring(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let side = |dim: usize, at: usize, len: usize| -> Result<Tensor> {
        x.narrow(dim, at, 1)?.reshape((b, c, len))
    };
    Tensor::cat(
        &[
            side(2, 0, w)?,
            side(2, h - 1, w)?,
            side(3, 0, h)?,
            side(3, w - 1, h)?,
        ],
        2,
    )?
    .contiguous()
}

/// One value per frame as `[B, 1, 1, 1]` in `like`'s dtype and device, to broadcast.
fn per_frame(v: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    let b = v.len();
    Tensor::from_vec(v, (b, 1, 1, 1), like.device())?.to_dtype(like.dtype())
}

/// The `q`-quantile (nearest rank, `round((n − 1)·q)`) of the finite values, `None` if there
/// are none.
fn quantile(values: impl Iterator<Item = f32>, q: f32) -> Option<f32> {
    let mut v: Vec<f32> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let at = ((v.len() - 1) as f32 * q.clamp(0.0, 1.0)).round() as usize;
    Some(*v.select_nth_unstable_by(at, f32::total_cmp).1)
}

impl TransparentDecoderConfig {
    /// The published LayerDiffuse decoder (104.1 M parameters).
    pub fn official() -> Self {
        Self {
            in_channels: 3,
            out_channels: 4,
            latent_channels: 4,
            block_out_channels: vec![32, 32, 64, 128, 256, 512, 512],
            layers_per_block: 2,
            norm_groups: 4,
            norm_eps: 1e-5,
            attention_head_dim: 8,
            attn_levels: vec![4, 5, 6],
            mid_attention: true,
            latent_inject_level: 3,
            pixel_unshuffle: 1,
            key_prior: None,
        }
    }

    /// Number of levels (down blocks).
    pub fn levels(&self) -> usize {
        self.block_out_channels.len()
    }

    /// Pixel height and width must be multiples of this for [`TransparentDecoder::forward`].
    pub fn size_multiple(&self) -> usize {
        (1 << self.levels().saturating_sub(1)) * self.pixel_unshuffle.max(1)
    }

    /// Pixel size / latent size.
    pub fn latent_factor(&self) -> usize {
        (1 << self.latent_inject_level) * self.pixel_unshuffle.max(1)
    }

    /// Channels of the hidden state at the latent injection point (what an extra feature added
    /// there must have).
    pub fn inject_channels(&self) -> usize {
        self.block_out_channels[self.latent_inject_level.max(1) - 1]
    }

    fn has_attention(&self, level: usize) -> bool {
        self.attn_levels.contains(&level)
    }

    /// Checks that the numbers fit together, so a bad config fails with a sentence rather than a
    /// shape error deep inside a forward pass.
    pub fn validate(&self) -> Result<()> {
        let n = self.levels();
        if n == 0 {
            bail!("transparent decoder config: block_out_channels is empty");
        }
        if self.layers_per_block == 0 {
            bail!("transparent decoder config: layers_per_block must be at least 1");
        }
        if !matches!(self.pixel_unshuffle, 1 | 2 | 4) {
            bail!(
                "transparent decoder config: pixel_unshuffle must be 1, 2 or 4, not {}",
                self.pixel_unshuffle
            );
        }
        if self.latent_inject_level >= n {
            bail!(
                "transparent decoder config: latent_inject_level {} must be below the number of levels {n}",
                self.latent_inject_level
            );
        }
        if self.norm_groups == 0 || self.attention_head_dim == 0 {
            bail!(
                "transparent decoder config: norm_groups and attention_head_dim must be positive"
            );
        }
        if let Some(&l) = self.attn_levels.iter().find(|&&l| l >= n) {
            bail!("transparent decoder config: attention level {l} does not exist ({n} levels)");
        }
        for (name, c) in self.norm_channels() {
            if c == 0 || c % self.norm_groups != 0 {
                bail!(
                    "transparent decoder config: {name} has {c} channels, not a multiple of norm_groups {}",
                    self.norm_groups
                );
            }
        }
        let attn_channels = self
            .attn_levels
            .iter()
            .map(|&l| self.block_out_channels[l])
            .chain(self.mid_attention.then(|| self.block_out_channels[n - 1]));
        for c in attn_channels {
            if c % self.attention_head_dim != 0 {
                bail!(
                    "transparent decoder config: {c} attention channels are not a multiple of attention_head_dim {}",
                    self.attention_head_dim
                );
            }
        }
        if let Some(k) = &self.key_prior
            && !(k.lo >= 0.0
                && k.lo < k.hi
                && k.gate_learned.is_finite()
                && k.gate_learned >= 0.0
                && k.adaptive.is_none_or(|a| {
                    a.share > 0.0
                        && a.hi_max >= k.hi
                        && a.lo_max >= k.lo
                        && a.noise >= 0.0
                        && (0.0..=1.0).contains(&a.noise_quantile)
                }))
        {
            bail!(
                "transparent decoder config: key prior needs 0 <= lo < hi and a finite gate_learned >= 0, not {k:?}"
            );
        }
        if let Some(l) = self.key_prior.and_then(|k| k.local)
            && !l.is_valid()
        {
            bail!(
                "transparent decoder config: local ramp needs radius 1..=8, conf_lo < conf_hi and finite shares >= 0, not {l:?}"
            );
        }
        Ok(())
    }

    /// Channel counts of every GroupNorm, with a label for error messages.
    fn norm_channels(&self) -> Vec<(String, usize)> {
        let boc = &self.block_out_channels;
        let n = boc.len();
        let mut out = Vec::new();
        for i in 0..n {
            let in_c = if i == 0 { boc[0] } else { boc[i - 1] };
            out.push((format!("down block {i}"), in_c));
            out.push((format!("down block {i}"), boc[i]));
        }
        for i in 0..n {
            for (j, (c_in, c_out)) in self.up_resnet_channels(i).into_iter().enumerate() {
                out.push((format!("up block {i} resnet {j}"), c_in));
                out.push((format!("up block {i} resnet {j}"), c_out));
            }
        }
        out
    }

    /// (input, output) channels of each resnet of up block `i` (input includes the skip).
    fn up_resnet_channels(&self, i: usize) -> Vec<(usize, usize)> {
        let boc = &self.block_out_channels;
        let n = boc.len();
        let out_c = boc[n - 1 - i];
        let prev_c = if i == 0 { boc[n - 1] } else { boc[n - i] };
        let skip_last = boc[n - 1 - (i + 1).min(n - 1)];
        (0..=self.layers_per_block)
            .map(|j| {
                let res_in = if j == 0 { prev_c } else { out_c };
                let skip = if j == self.layers_per_block {
                    skip_last
                } else {
                    out_c
                };
                (res_in + skip, out_c)
            })
            .collect()
    }
}

fn conv3x3(c_in: usize, c_out: usize, stride: usize, vb: VarBuilder) -> Result<FastConv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    fast_conv2d(c_in, c_out, 3, cfg, vb)
}

fn conv1x1(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<FastConv2d> {
    fast_conv2d(c_in, c_out, 1, Conv2dConfig::default(), vb)
}

/// A 1x1 conv whose fresh weights are zero, so a new branch starts as "adds nothing".
pub(crate) fn zero_conv1x1(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<FastConv2d> {
    let w = vb.get_with_hints((c_out, c_in, 1, 1), "weight", Init::Const(0.))?;
    let b = vb.get_with_hints(c_out, "bias", Init::Const(0.))?;
    Ok(FastConv2d::new(w, Some(b), Conv2dConfig::default()))
}

/// diffusers `ResnetBlock2D` without time embedding.
#[derive(Debug, Clone)]
struct Resnet {
    norm1: FusedGroupNorm,
    conv1: FastConv2d,
    norm2: FusedGroupNorm,
    conv2: FastConv2d,
    conv_shortcut: Option<FastConv2d>,
}

impl Resnet {
    fn new(
        c_in: usize,
        c_out: usize,
        cfg: &TransparentDecoderConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (g, eps) = (cfg.norm_groups, cfg.norm_eps);
        Ok(Self {
            norm1: group_norm(g, c_in, eps, vb.pp("norm1"))?,
            conv1: conv3x3(c_in, c_out, 1, vb.pp("conv1"))?,
            norm2: group_norm(g, c_out, eps, vb.pp("norm2"))?,
            conv2: conv3x3(c_out, c_out, 1, vb.pp("conv2"))?,
            conv_shortcut: if c_in != c_out {
                Some(conv1x1(c_in, c_out, vb.pp("conv_shortcut"))?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self
            .conv1
            .forward(&self.norm1.forward_act(x, Activation::Silu)?)?;
        let h = self
            .conv2
            .forward(&self.norm2.forward_act(&h, Activation::Silu)?)?;
        match &self.conv_shortcut {
            Some(c) => c.forward(x)? + h,
            None => x + h,
        }
    }
}

/// diffusers `Attention` as used by `AttnDownBlock2D` (GroupNorm in, residual out).
#[derive(Debug, Clone)]
struct SelfAttention {
    group_norm: FusedGroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn new(channels: usize, cfg: &TransparentDecoderConfig, vb: VarBuilder) -> Result<Self> {
        let lin = |name: &str| candle_nn::linear(channels, channels, vb.pp(name));
        Ok(Self {
            group_norm: group_norm(cfg.norm_groups, channels, cfg.norm_eps, vb.pp("group_norm"))?,
            to_q: lin("to_q")?,
            to_k: lin("to_k")?,
            to_v: lin("to_v")?,
            to_out: candle_nn::linear(channels, channels, vb.pp("to_out").pp("0"))?,
            heads: channels / cfg.attention_head_dim,
            head_dim: cfg.attention_head_dim,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let n = h * w;
        let (heads, hd) = (self.heads, self.head_dim);
        let tokens = self
            .group_norm
            .forward(x)?
            .reshape((b, c, n))?
            .transpose(1, 2)?
            .contiguous()?;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, n, heads, hd))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * heads, n, hd))
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let q = (split(self.to_q.forward(&tokens)?)? * scale)?;
        let k = split(self.to_k.forward(&tokens)?)?;
        let v = split(self.to_v.forward(&tokens)?)?;
        let per_chunk = (ATTENTION_CHUNK_ELEMENTS / (n * n).max(1)).max(1);
        let out = if per_chunk >= b * heads {
            attend(&q, &k, &v)?
        } else {
            let mut parts = Vec::new();
            let mut start = 0;
            while start < b * heads {
                let len = per_chunk.min(b * heads - start);
                parts.push(attend(
                    &q.narrow(0, start, len)?,
                    &k.narrow(0, start, len)?,
                    &v.narrow(0, start, len)?,
                )?);
                start += len;
            }
            Tensor::cat(&parts, 0)?
        };
        let out = out
            .reshape((b, heads, n, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, n, c))?;
        let out = self.to_out.forward(&out)?;
        let out = out.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))?;
        out + x
    }
}

/// softmax(q k^T) v with the differentiable softmax.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let scores = q.matmul(&k.t()?)?;
    candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(v)
}

#[derive(Debug, Clone)]
struct DownBlock {
    resnets: Vec<Resnet>,
    attentions: Vec<SelfAttention>,
    downsampler: Option<FastConv2d>,
}

impl DownBlock {
    fn forward(&self, x: &Tensor, skips: &mut Vec<Tensor>) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, r) in self.resnets.iter().enumerate() {
            x = r.forward(&x)?;
            if let Some(a) = self.attentions.get(i) {
                x = a.forward(&x)?;
            }
            skips.push(x.clone());
        }
        if let Some(d) = &self.downsampler {
            x = d.forward(&x)?;
            skips.push(x.clone());
        }
        Ok(x)
    }
}

#[derive(Debug, Clone)]
struct UpBlock {
    resnets: Vec<Resnet>,
    attentions: Vec<SelfAttention>,
    upsampler: Option<FastConv2d>,
}

impl UpBlock {
    fn forward(&self, x: &Tensor, skips: &mut Vec<Tensor>) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, r) in self.resnets.iter().enumerate() {
            let Some(skip) = skips.pop() else {
                bail!("transparent decoder: skip connections exhausted");
            };
            x = r.forward(&Tensor::cat(&[&x, &skip], 1)?)?;
            if let Some(a) = self.attentions.get(i) {
                x = a.forward(&x)?;
            }
        }
        if let Some(u) = &self.upsampler {
            x = u.forward(&crate::model::fastconv::upsample_nearest2x(&x)?)?;
        }
        Ok(x)
    }
}

#[derive(Debug, Clone)]
struct MidBlock {
    resnet0: Resnet,
    attention: Option<SelfAttention>,
    resnet1: Resnet,
}

impl MidBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.resnet0.forward(x)?;
        if let Some(a) = &self.attention {
            x = a.forward(&x)?;
        }
        self.resnet1.forward(&x)
    }
}

/// The transparent decoder. Build with [`TransparentDecoder::new`]; weights come from the
/// `VarBuilder` (a checkpoint, a `VarMap` for training, or the golden fill).
#[derive(Debug, Clone)]
pub struct TransparentDecoder {
    cfg: TransparentDecoderConfig,
    conv_in: FastConv2d,
    latent_conv_in: FastConv2d,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: FusedGroupNorm,
    conv_out: FastConv2d,
}

impl TransparentDecoder {
    /// Builds the decoder, asking `vb` for every tensor under the official names.
    pub fn new(cfg: &TransparentDecoderConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        let s2 = cfg.pixel_unshuffle.max(1).pow(2);
        let prior = cfg.key_prior.map_or(0, |k| k.input_channels());
        let conv_in = conv3x3((cfg.in_channels + prior) * s2, boc[0], 1, vb.pp("conv_in"))?;
        let latent_conv_in = zero_conv1x1(
            cfg.latent_channels,
            cfg.inject_channels(),
            vb.pp("latent_conv_in"),
        )?;

        let mut down_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let vb = vb.pp("down_blocks").pp(i);
            let c_out = boc[i];
            let mut c_in = if i == 0 { boc[0] } else { boc[i - 1] };
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..cfg.layers_per_block {
                resnets.push(Resnet::new(c_in, c_out, cfg, vb.pp("resnets").pp(j))?);
                if cfg.has_attention(i) {
                    attentions.push(SelfAttention::new(c_out, cfg, vb.pp("attentions").pp(j))?);
                }
                c_in = c_out;
            }
            let downsampler = if i + 1 < n {
                Some(conv3x3(
                    c_out,
                    c_out,
                    2,
                    vb.pp("downsamplers").pp(0).pp("conv"),
                )?)
            } else {
                None
            };
            down_blocks.push(DownBlock {
                resnets,
                attentions,
                downsampler,
            });
        }

        let c_mid = boc[n - 1];
        let vbm = vb.pp("mid_block");
        let mid_block = MidBlock {
            resnet0: Resnet::new(c_mid, c_mid, cfg, vbm.pp("resnets").pp(0))?,
            attention: if cfg.mid_attention {
                Some(SelfAttention::new(c_mid, cfg, vbm.pp("attentions").pp(0))?)
            } else {
                None
            },
            resnet1: Resnet::new(c_mid, c_mid, cfg, vbm.pp("resnets").pp(1))?,
        };

        let mut up_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let vb = vb.pp("up_blocks").pp(i);
            let level = n - 1 - i;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for (j, (c_in, c_out)) in cfg.up_resnet_channels(i).into_iter().enumerate() {
                resnets.push(Resnet::new(c_in, c_out, cfg, vb.pp("resnets").pp(j))?);
                if cfg.has_attention(level) {
                    attentions.push(SelfAttention::new(c_out, cfg, vb.pp("attentions").pp(j))?);
                }
            }
            let upsampler = if i + 1 < n {
                Some(conv3x3(
                    boc[level],
                    boc[level],
                    1,
                    vb.pp("upsamplers").pp(0).pp("conv"),
                )?)
            } else {
                None
            };
            up_blocks.push(UpBlock {
                resnets,
                attentions,
                upsampler,
            });
        }

        Ok(Self {
            cfg: cfg.clone(),
            conv_in,
            latent_conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(
                cfg.norm_groups,
                boc[0],
                cfg.norm_eps,
                vb.pp("conv_norm_out"),
            )?,
            conv_out: conv3x3(
                boc[0],
                (cfg.out_channels + usize::from(cfg.key_prior.is_some())) * s2,
                1,
                vb.pp("conv_out"),
            )?,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &TransparentDecoderConfig {
        &self.cfg
    }

    /// One pass: `pixel` `[B, 3, H, W]` in [0, 1], `latent` `[B, 4, H/8, W/8]` unscaled (already
    /// divided by the VAE scaling factor). Returns `[B, 4, H, W]` unclipped, channel 0 = alpha.
    /// H and W must be multiples of [`TransparentDecoderConfig::size_multiple`]; use
    /// [`TransparentDecoder::decode`] for any size.
    pub fn forward(&self, pixel: &Tensor, latent: &Tensor) -> Result<Tensor> {
        self.forward_with_extra(pixel, latent, None)
    }

    /// [`TransparentDecoder::forward`] with an extra feature `[B, inject_channels, H/8, W/8]`
    /// added where the latent is added: the hook for ILDiff's layout adapter.
    pub fn forward_with_extra(
        &self,
        pixel: &Tensor,
        latent: &Tensor,
        extra: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_with_plate(pixel, latent, extra, None)
    }

    /// [`TransparentDecoder::forward_with_extra`] with a background plate `[B, 4, H, W]` (RGB,
    /// confidence) for a plate-prior model; ignored by other models. A plate-prior model
    /// without one keys against the border colour as a constant plate.
    pub fn forward_with_plate(
        &self,
        pixel: &Tensor,
        latent: &Tensor,
        extra: Option<&Tensor>,
        plate: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, c, h, w) = pixel.dims4()?;
        let m = cfg.size_multiple();
        if c != cfg.in_channels || h % m != 0 || w % m != 0 || h == 0 || w == 0 {
            bail!(
                "transparent decoder: pixel input is {:?}; expected [B, {}, H, W] with H and W positive multiples of {m}",
                pixel.dims(),
                cfg.in_channels
            );
        }
        let f = cfg.latent_factor();
        let want_latent = [b, cfg.latent_channels, h / f, w / f];
        if latent.dims() != want_latent {
            bail!(
                "transparent decoder: latent is {:?}, expected {want_latent:?} for pixel {:?}",
                latent.dims(),
                pixel.dims()
            );
        }
        let mut injected = self.latent_conv_in.forward(latent)?;
        if let Some(e) = extra {
            let want = [b, cfg.inject_channels(), h / f, w / f];
            if e.dims() != want {
                bail!(
                    "transparent decoder: extra feature is {:?}, expected {want:?}",
                    e.dims()
                );
            }
            injected = (injected + e)?;
        }

        let r = cfg.pixel_unshuffle.max(1);
        let (key, input) = match &cfg.key_prior {
            Some(k) if k.plate => {
                let fallback;
                let plate = match plate {
                    Some(p) => p,
                    None => {
                        fallback = k.border_plate(pixel)?;
                        &fallback
                    }
                };
                let (alpha, feats) = k.plate_features(pixel, plate)?;
                let conf = feats.narrow(1, 2, 1)?;
                (Some((k, alpha, conf)), Tensor::cat(&[pixel, &feats], 1)?)
            }
            Some(k) => {
                let (alpha, feats) = k.features(pixel)?;
                let agree = feats.narrow(1, 2, 1)?;
                (Some((k, alpha, agree)), Tensor::cat(&[pixel, &feats], 1)?)
            }
            None => (None, pixel.clone()),
        };
        let mut x = self.conv_in.forward(&space_to_depth(&input, r)?)?;
        let mut skips = vec![x.clone()];
        for (i, block) in self.down_blocks.iter().enumerate() {
            if i == cfg.latent_inject_level {
                x = (x + &injected)?;
            }
            x = block.forward(&x, &mut skips)?;
        }
        x = self.mid_block.forward(&x)?;
        for block in &self.up_blocks {
            x = block.forward(&x, &mut skips)?;
        }
        let x = self.conv_norm_out.forward_act(&x, Activation::Silu)?;
        let y = depth_to_space(&self.conv_out.forward(&x)?, r)?;
        match &key {
            Some((prior, k, agree)) => prior.residual(&y, k, agree, pixel),
            None => Ok(y),
        }
    }

    /// One pass for any size: pads `pixel` `[B, 3, H, W]` and `latent`
    /// `[B, 4, ceil(H/8), ceil(W/8)]` by mirroring to the size multiple, decodes, crops back and
    /// clips to [0, 1].
    pub fn decode(&self, pixel: &Tensor, latent: &Tensor) -> Result<Tensor> {
        self.decode_passes(pixel, latent, &[Dihedral::IDENTITY])
    }

    /// The official 8-pass test-time augmentation (flip x rot90, undone on the output, merged
    /// by the per-element lower median) for any size, clipped to [0, 1]. 8x the cost of
    /// [`TransparentDecoder::decode`], but it is what LayerDiffuse's published results use.
    pub fn decode_tta(&self, pixel: &Tensor, latent: &Tensor) -> Result<Tensor> {
        self.decode_passes(pixel, latent, &Dihedral::ALL)
    }

    /// Decodes once per transform (padding, transforming, undoing, cropping, clipping each pass)
    /// and merges the passes by the lower median.
    pub fn decode_passes(
        &self,
        pixel: &Tensor,
        latent: &Tensor,
        transforms: &[Dihedral],
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, _, h, w) = pixel.dims4()?;
        let f = cfg.latent_factor();
        let (lh, lw) = (h.div_ceil(f), w.div_ceil(f));
        let (lb, lc, got_h, got_w) = latent.dims4()?;
        if (lb, lc, got_h, got_w) != (b, cfg.latent_channels, lh, lw) {
            bail!(
                "transparent decoder: latent is {:?}, expected [{b}, {}, {lh}, {lw}] for pixel {:?}",
                latent.dims(),
                cfg.latent_channels,
                pixel.dims()
            );
        }
        let m = cfg.size_multiple();
        let (ph, pw) = (h.div_ceil(m) * m, w.div_ceil(m) * m);
        let pixel = mirror_pad(pixel, ph - h, pw - w)?;
        let latent = mirror_pad(latent, ph / f - lh, pw / f - lw)?;
        let mut passes = Vec::with_capacity(transforms.len());
        for t in transforms {
            let y = self.forward(&t.apply(&pixel)?, &t.apply(&latent)?)?;
            passes.push(crop(&t.undo(&y)?, h, w)?.clamp(0f32, 1f32)?);
        }
        lower_median(&passes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp, Var};
    use candle_nn::VarMap;

    /// 5 levels (size multiple 16), attention on the deepest level and the mid block.
    #[test]
    fn pixel_unshuffle_round_trips_and_keeps_full_resolution() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 8.0 * 12.0, &dev)
            .and_then(|t| t.reshape((2, 3, 8, 12)))
            .expect("x");
        let d = space_to_depth(&x, 2).expect("s2d");
        assert_eq!(d.dims(), &[2, 12, 4, 6]);
        // Channel c*4 + dy*2 + dx holds pixel (2y+dy, 2x+dx) of channel c.
        let got: f32 = d
            .i((0, 4 + 3, 1, 2))
            .and_then(|t| t.to_scalar())
            .expect("v");
        let want: f32 = x.i((0, 1, 3, 5)).and_then(|t| t.to_scalar()).expect("w");
        assert_eq!(got, want);
        let back = depth_to_space(&d, 2).expect("d2s");
        let a: Vec<f32> = back.flatten_all().and_then(|t| t.to_vec1()).expect("a");
        let b: Vec<f32> = x.flatten_all().and_then(|t| t.to_vec1()).expect("b");
        assert_eq!(a, b);
        let cfg = TransparentDecoderConfig {
            pixel_unshuffle: 2,
            latent_inject_level: 2,
            ..tiny()
        };
        assert_eq!(cfg.latent_factor(), 8);
        assert_eq!(cfg.size_multiple(), 32);
        let varmap = VarMap::new();
        let m = TransparentDecoder::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))
            .expect("build");
        let pixel = Tensor::rand(0f32, 1.0, (1, 3, 32, 64), &dev).expect("pixel");
        let latent = Tensor::zeros((1, 4, 4, 8), DType::F32, &dev).expect("latent");
        assert_eq!(
            m.forward(&pixel, &latent).expect("fwd").dims(),
            &[1, 4, 32, 64]
        );
        let bad = TransparentDecoderConfig {
            pixel_unshuffle: 3,
            ..tiny()
        };
        assert!(bad.validate().is_err());
    }

    fn tiny() -> TransparentDecoderConfig {
        TransparentDecoderConfig {
            block_out_channels: vec![8, 8, 16, 16, 16],
            layers_per_block: 1,
            attention_head_dim: 4,
            attn_levels: vec![4],
            ..TransparentDecoderConfig::official()
        }
    }

    fn model(cfg: &TransparentDecoderConfig) -> (VarMap, TransparentDecoder) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let m = TransparentDecoder::new(cfg, vb).expect("tiny decoder");
        (varmap, m)
    }

    /// A fresh model has a zero latent conv; give it weights so the latent matters.
    fn randomise_latent_conv(varmap: &VarMap) {
        let data = varmap.data().lock().expect("varmap lock");
        let w = data.get("latent_conv_in.weight").expect("latent conv");
        w.set(&Tensor::randn(0f32, 0.5, w.shape(), &Device::Cpu).expect("randn"))
            .expect("set");
    }

    fn inputs(h: usize, w: usize) -> (Tensor, Tensor) {
        let dev = Device::Cpu;
        let pixel = Tensor::rand(0f32, 1f32, (1, 3, h, w), &dev).expect("pixel");
        let latent =
            Tensor::randn(0f32, 1f32, (1, 4, h.div_ceil(8), w.div_ceil(8)), &dev).expect("latent");
        (pixel, latent)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff")
    }

    #[test]
    fn official_config_round_trips_and_matches_method() {
        let cfg = TransparentDecoderConfig::official();
        assert_eq!(cfg.size_multiple(), 64);
        assert_eq!(cfg.latent_factor(), 8);
        assert_eq!(cfg.inject_channels(), 64);
        let json = serde_json::to_string(&cfg).expect("serialize");
        let back: TransparentDecoderConfig = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, cfg);
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn bad_configs_are_rejected_with_a_reason() {
        let mut cfg = tiny();
        cfg.norm_groups = 3;
        let e = cfg.validate().expect_err("8 channels / 3 groups");
        assert!(e.to_string().contains("norm_groups"), "{e}");
        let mut cfg = tiny();
        cfg.latent_inject_level = 5;
        assert!(cfg.validate().is_err());
        let mut cfg = tiny();
        cfg.attention_head_dim = 3;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn the_learned_gate_range_is_the_configs_and_old_configs_keep_theirs() {
        // A config written before `gate_learned` existed reads back with the range it was
        // trained with.
        let old: KeyPrior = serde_json::from_str(r#"{"lo":0.06,"hi":0.2}"#).expect("old json");
        assert_eq!(old.gate_learned, 2.0);
        // On a flat border (agree = 1) with the learned gate and the correction saturated, the
        // correction that passes is σ(−4 + L): 0.12 for L = 2, 0.88 for L = 6.
        let dev = Device::Cpu;
        let y = Tensor::new(&[[[[20f32]], [[0.]], [[0.]], [[0.]], [[20.]]]], &dev).expect("y");
        let zero = Tensor::zeros((1, 1, 1, 1), DType::F32, &dev).expect("zero");
        let one = zero.ones_like().expect("one");
        let pixel = Tensor::zeros((1, 3, 1, 1), DType::F32, &dev).expect("pixel");
        let passed = |l: f32| {
            let k = KeyPrior {
                gate_learned: l,
                ..KeyPrior::default()
            };
            let out = k.residual(&y, &zero, &one, &pixel).expect("residual");
            out.flatten_all()
                .expect("flat")
                .to_vec1::<f32>()
                .expect("vec")[0]
        };
        let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
        assert!((passed(2.0) - sig(-2.0)).abs() < 1e-4, "{}", passed(2.0));
        assert!((passed(6.0) - sig(2.0)).abs() < 1e-4, "{}", passed(6.0));
        let mut cfg = tiny();
        cfg.key_prior = Some(KeyPrior {
            gate_learned: f32::NAN,
            ..KeyPrior::default()
        });
        let e = cfg.validate().expect_err("NaN gate range");
        assert!(e.to_string().contains("gate_learned"), "{e}");
    }

    #[test]
    fn the_adaptive_ramp_follows_the_borders_noise_and_the_foregrounds_contrast() {
        let fixed = KeyPrior::default();
        let k = KeyPrior::adaptive();
        let clean = [0.0f32; 32];
        // Background pixels (within lo) do not count; the median of the rest sets hi.
        let frame = |fg: f32| {
            let mut d = vec![0.01f32; 60];
            d.extend(std::iter::repeat_n(fg, 40));
            d
        };
        let hi = |border: &[f32], d: &[f32]| k.frame_ramp(border, d).1;
        assert_eq!(fixed.frame_ramp(&clean, &frame(0.5)), (0.06, 0.2));
        let (lo, hi_mid) = k.frame_ramp(&clean, &frame(0.3));
        assert!(lo == 0.03 && (hi_mid - 0.24).abs() < 1e-6, "{lo} {hi_mid}");
        // Clamped to [hi, hi_max]: a foreground close to the background keeps the narrow ramp.
        assert_eq!(hi(&clean, &frame(0.1)), k.hi);
        assert_eq!(hi(&clean, &frame(1.2)), 0.3);
        assert_eq!(hi(&clean, &[0.0; 16]), k.hi);
        assert!((hi(&clean, &[f32::NAN, 0.3]) - 0.24).abs() < 1e-6);
        // A noisy border raises lo (1.5 × its 75th percentile, at most 0.12): the noise keys
        // out instead of turning into a haze of partial alpha.
        let noisy: Vec<f32> = (0..32).map(|i| 0.002 * i as f32).collect();
        let (lo, _) = k.frame_ramp(&noisy, &frame(0.5));
        assert!((lo - 1.5 * 0.046).abs() < 1e-5, "{lo}");
        assert_eq!(k.frame_ramp(&[0.5; 8], &frame(0.5)).0, 0.12);
        assert!(KeyPrior::ramp(0.06, (lo, 0.4)) == 0.0);
        assert!(KeyPrior::ramp(0.06, k.frame_ramp(&clean, &frame(0.5))) > 0.0);
        // A 10 % black shadow on white (distance 0.1·√3) beside a black character (√3): the
        // fixed ramp calls the shadow nearly opaque, the adaptive one less so.
        let shadow = 0.1 * 3f32.sqrt();
        let mut d = vec![3f32.sqrt(); 50];
        d.extend(std::iter::repeat_n(shadow, 20));
        let f = KeyPrior::ramp(shadow, fixed.frame_ramp(&clean, &d));
        let a = KeyPrior::ramp(shadow, k.frame_ramp(&clean, &d));
        assert!(f > 0.8 && a > 0.25 && a < 0.6, "fixed {f}, adaptive {a}");
        // The tensor path uses the same per-frame ramp.
        let dev = Device::Cpu;
        // A black square on white, with one pixel of 10 % shadow.
        let mut raw = vec![1f32; 3 * 64];
        for c in 0..3 {
            for y in 2..6 {
                for x in 2..6 {
                    raw[c * 64 + y * 8 + x] = 0.0;
                }
            }
            raw[c * 64 + 6 * 8 + 3] = 0.9;
        }
        let pixel = Tensor::from_vec(raw, (1, 3, 8, 8), &dev).expect("pixel");
        let (alpha, feats) = k.features(&pixel).expect("features");
        let alpha = alpha
            .flatten_all()
            .and_then(|a| a.to_vec1::<f32>())
            .expect("alpha");
        assert_eq!(alpha[0], 0.0);
        assert_eq!(alpha[3 * 8 + 3], 1.0);
        let want = KeyPrior::ramp(shadow, (0.03, 0.3));
        assert!(
            (alpha[6 * 8 + 3] - want).abs() < 1e-5,
            "{} vs {want}",
            alpha[6 * 8 + 3]
        );
        // Agreement: the whole border matches the key.
        let agree = feats
            .narrow(1, 2, 1)
            .and_then(|a| a.mean_all())
            .and_then(|a| a.to_scalar::<f32>());
        assert_eq!(agree.expect("agree"), 1.0);
    }

    #[test]
    fn wrong_input_shapes_error_instead_of_panicking() {
        let (_, m) = model(&tiny());
        let (pixel, latent) = inputs(32, 32);
        let e = m.forward(&pixel.narrow(3, 0, 24).expect("narrow"), &latent);
        assert!(
            e.expect_err("24 is not a multiple of 16")
                .to_string()
                .contains("multiples of 16")
        );
        let e = m.forward(&pixel, &latent.narrow(2, 0, 2).expect("narrow"));
        assert!(
            e.expect_err("latent too small")
                .to_string()
                .contains("latent")
        );
        let e = m.decode(&pixel, &latent.narrow(2, 0, 2).expect("narrow"));
        assert!(e.is_err());
    }

    #[test]
    fn any_size_decodes_to_the_same_size() {
        let (varmap, m) = model(&tiny());
        randomise_latent_conv(&varmap);
        let (pixel, latent) = inputs(72, 100);
        let out = m.decode(&pixel, &latent).expect("decode");
        assert_eq!(out.dims(), &[1, 4, 72, 100]);
        // It is the crop of one pass over the mirror-padded input (80 x 112).
        let padded = mirror_pad(&pixel, 8, 12).expect("pad");
        let lat = mirror_pad(&latent, 1, 1).expect("pad");
        let full = m.forward(&padded, &lat).expect("forward");
        let want = crop(&full, 72, 100)
            .and_then(|t| t.clamp(0f32, 1f32))
            .expect("crop");
        assert!(max_diff(&out, &want) < 1e-6);
        let tta = m.decode_tta(&pixel, &latent).expect("tta");
        assert_eq!(tta.dims(), &[1, 4, 72, 100]);
        let (lo, hi) = (
            tta.min_all()
                .and_then(|t| t.to_scalar::<f32>())
                .expect("min"),
            tta.max_all()
                .and_then(|t| t.to_scalar::<f32>())
                .expect("max"),
        );
        assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi));
    }

    #[test]
    fn tta_is_the_lower_median_of_the_undone_passes() {
        let (varmap, m) = model(&tiny());
        randomise_latent_conv(&varmap);
        let (pixel, latent) = inputs(32, 48);
        let tta = m.decode_tta(&pixel, &latent).expect("tta");
        let passes: Vec<Tensor> = Dihedral::ALL
            .iter()
            .map(|t| {
                let y = m
                    .forward(&t.apply(&pixel)?, &t.apply(&latent)?)
                    .and_then(|y| t.undo(&y))?;
                y.clamp(0f32, 1f32)
            })
            .collect::<Result<_>>()
            .expect("passes");
        // The passes differ (the net is not equivariant), so the merge is doing something.
        assert!(max_diff(&passes[0], &passes[5]) > 1e-3);
        assert!(max_diff(&tta, &lower_median(&passes).expect("median")) < 1e-6);
        // Per element the result is one of the pass values with 3 below-or-equal others.
        let all: Vec<Vec<f32>> = passes
            .iter()
            .map(|p| p.flatten_all().and_then(|t| t.to_vec1()).expect("vec"))
            .collect();
        let got: Vec<f32> = tta.flatten_all().and_then(|t| t.to_vec1()).expect("vec");
        for (i, &g) in got.iter().enumerate().step_by(97) {
            let mut v: Vec<f32> = all.iter().map(|p| p[i]).collect();
            v.sort_by(f32::total_cmp);
            assert_eq!(g, v[3]);
        }
    }

    #[test]
    fn extra_feature_hook_is_additive_at_the_injection_point() {
        let (_, m) = model(&tiny());
        let (pixel, latent) = inputs(32, 32);
        let plain = m.forward(&pixel, &latent).expect("plain");
        let zero = Tensor::zeros((1, 16, 4, 4), DType::F32, &Device::Cpu).expect("zeros");
        let same = m
            .forward_with_extra(&pixel, &latent, Some(&zero))
            .expect("zero extra");
        assert!(max_diff(&plain, &same) < 1e-6);
        let extra = Tensor::randn(0f32, 1f32, (1, 16, 4, 4), &Device::Cpu).expect("randn");
        let moved = m
            .forward_with_extra(&pixel, &latent, Some(&extra))
            .expect("extra");
        assert!(max_diff(&plain, &moved) > 1e-3);
        let wrong = Tensor::zeros((1, 8, 4, 4), DType::F32, &Device::Cpu).expect("zeros");
        assert!(m.forward_with_extra(&pixel, &latent, Some(&wrong)).is_err());
    }

    #[test]
    fn every_variable_receives_a_gradient() {
        let (varmap, m) = model(&tiny());
        let (pixel, latent) = inputs(32, 32);
        let out = m.forward(&pixel, &latent).expect("forward");
        let target = Tensor::rand(0f32, 1f32, out.shape(), &Device::Cpu).expect("target");
        let loss = (&out - &target)
            .and_then(|d| d.sqr())
            .and_then(|d| d.mean_all())
            .expect("loss");
        let grads = loss.backward().expect("backward");
        let data = varmap.data().lock().expect("varmap lock");
        assert!(data.len() > 40, "only {} variables", data.len());
        let mut names: Vec<(&String, &Var)> = data.iter().collect();
        names.sort_by_key(|(n, _)| n.as_str());
        for (name, var) in names {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let s = g
                .abs()
                .and_then(|t| t.sum_all())
                .and_then(|t| t.to_scalar::<f32>())
                .expect("sum");
            assert!(s > 0.0, "zero gradient for {name}");
        }
        // The latent conv starts at zero, yet learns: d loss / d w = sum(grad_out * latent).
        let w = data.get("latent_conv_in.weight").expect("latent conv");
        let wsum = w
            .abs()
            .and_then(|t| t.sum_all())
            .and_then(|t| t.to_scalar::<f32>());
        assert_eq!(wsum.expect("sum"), 0.0);
    }

    #[test]
    fn fast_ops_match_candle_in_forward_and_gradients() {
        // fastconv's kernels (the default) and candle's own conv2d/GroupNorm (switched off)
        // must agree, in the output and in every gradient.
        let (varmap, fast) = model(&tiny());
        randomise_latent_conv(&varmap);
        let data = varmap.data().lock().expect("varmap lock");
        let plain: std::collections::HashMap<String, Tensor> = data
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect();
        let vb = VarBuilder::from_tensors(plain.clone(), DType::F32, &Device::Cpu);
        let slow = TransparentDecoder::new(&tiny(), vb).expect("plain decoder");
        let (pixel, latent) = inputs(32, 32);
        let a = fast.forward(&pixel, &latent).expect("fast forward");
        let prev = crate::model::fastconv::set_enabled(false);
        let b = slow.forward(&pixel, &latent).expect("candle forward");
        crate::model::fastconv::set_enabled(prev);
        // Relative to the output's size: the weights are random each run and the two paths
        // sum in different orders (an absolute 1e-5 failed about one run in six at 1.0e-5).
        let size = b
            .abs()
            .and_then(|t| t.max_all())
            .and_then(|t| t.to_scalar::<f32>())
            .expect("output size");
        assert!(
            max_diff(&a, &b) < 1e-5 * size.max(1.0) * 4.0,
            "forward differs by {} (output size {size})",
            max_diff(&a, &b)
        );
        // Gradients wrt the input pixels go through every conv's and norm's backward.
        let px = Var::from_tensor(&pixel).expect("var");
        let target = Tensor::rand(0f32, 1f32, a.shape(), &Device::Cpu).expect("target");
        let grad_of = |m: &TransparentDecoder, fast_path: bool| {
            let prev = crate::model::fastconv::set_enabled(fast_path);
            let out = m.forward(px.as_tensor(), &latent).expect("forward");
            crate::model::fastconv::set_enabled(prev);
            let loss = (out - &target)
                .and_then(|d| d.abs())
                .and_then(|d| d.mean_all());
            let g = loss.expect("loss").backward().expect("backward");
            g.get(px.as_tensor()).expect("pixel grad").clone()
        };
        let (ga, gb) = (grad_of(&fast, true), grad_of(&slow, false));
        let scale = gb
            .abs()
            .and_then(|t| t.max_all())
            .and_then(|t| t.to_scalar::<f32>());
        let scale = scale.expect("scale");
        assert!(scale > 0.0);
        assert!(
            max_diff(&ga, &gb) < 1e-4 * scale,
            "pixel gradient differs by {} (scale {scale})",
            max_diff(&ga, &gb)
        );
    }
}
