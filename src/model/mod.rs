//! Models: tensors in, tensors out. Each model takes a config struct and a `candle_nn::VarBuilder`
//! and knows nothing of files, images, threads or printing; [`weights`] is the one place that
//! reads weight files and checks them against what a model asks for.
//!
//! - [`clip`], [`clip_tokenizer`]: SD-1.5's CLIP text encoder and its BPE tokenizer.
//! - [`codec`]: latent codecs (SD-1.5 VAE, our small autoencoder) behind [`codec::LatentCodec`].
//! - [`transparent_decoder`]: LayerDiffuse's RGBA decoder, the base of the ILDiff decoder.
//! - [`offset_encoder`]: LayerDiffuse's latent-transparency offset encoder and `pad_rgb`.
//! - [`diffusion`]: the [`diffusion::Denoiser`] seam shared by every text-to-video denoiser.
//! - [`conv3d`]: 3x3x3 convolution from conv2d (candle has none), PyTorch weight layout.
//! - [`generator`]: the embedded default text-to-sticker model (words, latent video UNet).
//! - [`fastconv`]: conv2d with an im2col + gemm backward, for training on the CPU.
//! - [`ildiff`]: the ILDiff decoder = layout adapter + transparent decoder; its folder holds
//!   the matting model's parts (the modules below re-exported from it).
//! - [`layout`]: ILDiff's layout adapter (SAM-distilled student CNN + temporal layers +
//!   zero-initialised injection).
//! - [`temporal`]: ILDiff's temporal modeling layers (residual 3-D conv blocks).
//! - [`augment`]: flip x rot90 test-time augmentation, lower median, mirror padding.
//! - [`sam`]: SAM image encoders (ViT-B/L/H, MobileSAM TinyViT) as the distillation teacher.
//! - [`sd`]: SD-1.5's UNet with AnimateDiff motion modules and LayerDiffuse attention.
//! - [`weights`]: checked loading, layout manifests, the reference fill rule.

pub mod clip;
pub mod clip_tokenizer;
pub mod diffusion;
pub mod fastconv;
pub mod generator;
pub mod ildiff;
pub mod sd;
pub mod weights;

pub use ildiff::{
    augment, codec, conv3d, layout, local_ramp, offset_encoder, sam, temporal, transparent_decoder,
};

pub use codec::{LatentCodec, SdVae, SmallCodec, SmallCodecConfig};
pub use ildiff::{IldiffConfig, IldiffDecoder};
pub use layout::{LayoutAdapter, LayoutAdapterConfig};
pub use local_ramp::LocalRamp;
pub use offset_encoder::{OffsetEncoder, OffsetEncoderConfig};
pub use temporal::{TemporalConfig, TemporalStack};
pub use transparent_decoder::{
    AdaptiveRamp, KeyPrior, TransparentDecoder, TransparentDecoderConfig,
};
pub use weights::{Checkpoint, Manifest};
