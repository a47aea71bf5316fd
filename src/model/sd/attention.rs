//! Attention, GEGLU feed-forward and transformer blocks in diffusers' layout, shared by the
//! spatial transformers of the SD-1.5 UNet and AnimateDiff's motion modules.
//!
//! Written here rather than taken from candle-transformers because we need three things it
//! does not offer: LayerDiffuse's replacement of an attention module (merged LoRA plus extra
//! layers, [`LayerDiffuseExtras`]), a position table added before each attention (motion
//! modules), and memory-bounded attention (a 64² latent has 4096 tokens, so one head's score
//! matrix is 64 MiB and a 16-frame batch of 8 heads would be 8 GiB at once). Also diffusers'
//! GEGLU uses the exact (erf) GELU, where candle-transformers uses the tanh approximation.

use candle_core::{D, DType, Module, Result, Tensor, bail};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use crate::model::fastconv::{FastConv2d, FusedGroupNorm, fast_conv2d, group_norm};

/// Largest attention score block (elements) computed at once: 32 Mi f32 = 128 MiB.
const SCORE_BLOCK: usize = 32 << 20;

/// Softmax attention `softmax(q kᵀ / √d) v` over `[n, lq, d]` × `[n, lk, d]`, in f32, sliced
/// over `n` (and over query rows when one slice alone is too big) so the score matrix never
/// exceeds [`SCORE_BLOCK`] elements.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (n, lq, d) = q.dims3()?;
    let (nk, lk, dk) = k.dims3()?;
    if nk != n || dk != d || v.dims3()?.0 != n || v.dims3()?.1 != lk {
        bail!(
            "attention: q {:?}, k {:?} and v {:?} do not fit",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let in_dtype = q.dtype();
    let scale = 1.0 / (d as f64).sqrt();
    let q = (q.to_dtype(DType::F32)? * scale)?;
    let k = k.to_dtype(DType::F32)?.transpose(1, 2)?.contiguous()?;
    let v = v.to_dtype(DType::F32)?.contiguous()?;
    let per_item = lq * lk;
    let out = if n * per_item <= SCORE_BLOCK {
        attend(&q, &k, &v)?
    } else if per_item <= SCORE_BLOCK {
        let step = (SCORE_BLOCK / per_item).max(1);
        let mut parts = Vec::with_capacity(n.div_ceil(step));
        for start in (0..n).step_by(step) {
            let len = step.min(n - start);
            parts.push(attend(
                &q.narrow(0, start, len)?,
                &k.narrow(0, start, len)?,
                &v.narrow(0, start, len)?,
            )?);
        }
        Tensor::cat(&parts, 0)?
    } else {
        let rows = (SCORE_BLOCK / lk).max(1);
        let mut items = Vec::with_capacity(n);
        for i in 0..n {
            let (ki, vi) = (k.narrow(0, i, 1)?, v.narrow(0, i, 1)?);
            let mut parts = Vec::with_capacity(lq.div_ceil(rows));
            for start in (0..lq).step_by(rows) {
                let len = rows.min(lq - start);
                parts.push(attend(
                    &q.narrow(0, i, 1)?.narrow(1, start, len)?,
                    &ki,
                    &vi,
                )?);
            }
            items.push(Tensor::cat(&parts, 1)?);
        }
        Tensor::cat(&items, 0)?
    };
    out.to_dtype(in_dtype)
}

/// One block of attention; `q` pre-scaled, `kt` transposed to `[n, d, lk]`.
fn attend(q: &Tensor, kt: &Tensor, v: &Tensor) -> Result<Tensor> {
    let scores = q.contiguous()?.matmul(kt)?;
    candle_nn::ops::softmax_last_dim(&scores)?.matmul(v)
}

/// `[n, l, heads*d]` to `[n*heads, l, d]`.
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (n, l, c) = x.dims3()?;
    x.reshape((n, l, heads, c / heads))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((n * heads, l, c / heads))
}

/// `[n*heads, l, d]` to `[n, l, heads*d]`.
fn merge_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (nh, l, d) = x.dims3()?;
    x.reshape((nh / heads, heads, l, d))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((nh / heads, l, heads * d))
}

/// The extra layers of one LayerDiffuse attention unit (`temporal_n`, `temporal_i/q/k/v/o`).
///
/// They attend over the "layer frames" of the batch; LayerDiffuse's transparent SD-1.5 file
/// has one layer frame, where the softmax over a single key is exactly 1, so the unit reduces
/// to `o(v(i(LN(h + attn(h)))))`. `q` and `k` are still loaded (and checked) because they are
/// part of the file; they cannot change the result.
#[derive(Debug, Clone)]
pub struct LayerDiffuseExtras {
    norm: LayerNorm,
    i: Linear,
    v: Linear,
    o: Linear,
}

impl LayerDiffuseExtras {
    /// Loads `temporal_*` under `vb` for hidden size `dim`.
    pub fn new(dim: usize, vb: &VarBuilder) -> Result<Self> {
        let norm = candle_nn::layer_norm(dim, 1e-6, vb.pp("temporal_n"))?;
        let i = candle_nn::linear(dim, dim, vb.pp("temporal_i"))?;
        candle_nn::linear(dim, dim, vb.pp("temporal_q"))?;
        candle_nn::linear(dim, dim, vb.pp("temporal_k"))?;
        let v = candle_nn::linear(dim, dim, vb.pp("temporal_v"))?;
        let o = candle_nn::linear(dim, dim, vb.pp("temporal_o"))?;
        Ok(Self { norm, i, v, o })
    }

    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let x = self.i.forward(&self.norm.forward(h)?)?;
        self.o.forward(&self.v.forward(&x)?)
    }
}

/// Rank of LayerDiffuse's LoRA pairs.
pub const LAYER_LORA_RANK: usize = 256;

/// `W + up·down` for the LoRA pair `{name}_lora.0.{down,up}.weight` under `vb`.
fn merge_lora(base: &Linear, name: &str, rank: usize, vb: &VarBuilder) -> Result<Linear> {
    let w = base.weight();
    let (out, inp) = w.dims2()?;
    let lvb = vb.pp(format!("{name}_lora")).pp("0");
    let down = lvb.pp("down").get((rank, inp), "weight")?;
    let up = lvb.pp("up").get((out, rank), "weight")?;
    let delta = up
        .to_dtype(DType::F32)?
        .contiguous()?
        .matmul(&down.to_dtype(DType::F32)?.contiguous()?)?;
    let merged = (w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?;
    Ok(Linear::new(merged, base.bias().cloned()))
}

/// diffusers' `Attention` (q/k/v without bias, `to_out.0` with bias), optionally replaced by a
/// LayerDiffuse unit (see [`Attention::with_layer_diffuse`]).
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    layer: Option<LayerDiffuseExtras>,
}

impl Attention {
    /// `context_dim` None = self-attention.
    pub fn new(
        dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            bail!("attention: {heads} heads do not divide {dim} channels");
        }
        let cdim = context_dim.unwrap_or(dim);
        Ok(Self {
            to_q: candle_nn::linear_no_bias(dim, dim, vb.pp("to_q"))?,
            to_k: candle_nn::linear_no_bias(cdim, dim, vb.pp("to_k"))?,
            to_v: candle_nn::linear_no_bias(cdim, dim, vb.pp("to_v"))?,
            to_out: candle_nn::linear(dim, dim, vb.pp("to_out.0"))?,
            heads,
            layer: None,
        })
    }

    /// Turns this module into LayerDiffuse's attention unit from the tensors under `vb`
    /// (`to_{q,k,v,out}_lora.0.{down,up}.weight` merged into the weights, no scale, plus the
    /// `temporal_*` layers). The unit's output replaces this module's in the residual.
    pub fn with_layer_diffuse(mut self, rank: usize, vb: &VarBuilder) -> Result<Self> {
        self.to_q = merge_lora(&self.to_q, "to_q", rank, vb)?;
        self.to_k = merge_lora(&self.to_k, "to_k", rank, vb)?;
        self.to_v = merge_lora(&self.to_v, "to_v", rank, vb)?;
        self.to_out = merge_lora(&self.to_out, "to_out", rank, vb)?;
        let dim = self.to_q.weight().dim(0)?;
        self.layer = Some(LayerDiffuseExtras::new(dim, vb)?);
        Ok(self)
    }

    /// Whether a LayerDiffuse unit replaced this module.
    pub fn is_layer_diffuse(&self) -> bool {
        self.layer.is_some()
    }

    /// `x` `[n, l, dim]`, `context` `[n, lc, cdim]` (None = `x`); returns what the transformer
    /// block adds to its residual stream.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let q = split_heads(&self.to_q.forward(x)?, self.heads)?;
        let k = split_heads(&self.to_k.forward(ctx)?, self.heads)?;
        let v = split_heads(&self.to_v.forward(ctx)?, self.heads)?;
        let o = merge_heads(&attention(&q, &k, &v)?, self.heads)?;
        let o = self.to_out.forward(&o)?;
        match &self.layer {
            None => Ok(o),
            // (h + o + t) - h, as LayerDiffuse's unit returns its output minus its input.
            Some(extras) => {
                let t = extras.forward(&(x + &o)?)?;
                o + t
            }
        }
    }
}

/// diffusers' `FeedForward` with GEGLU: `net.0.proj` (dim → 2·4·dim), `a · gelu(g)` with the
/// exact GELU, `net.2` (4·dim → dim).
#[derive(Debug, Clone)]
pub struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    /// Inner width `4 * dim`.
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            proj: candle_nn::linear(dim, 2 * inner, vb.pp("net.0.proj"))?,
            out: candle_nn::linear(inner, dim, vb.pp("net.2"))?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.proj.forward(x)?;
        let inner = h.dim(D::Minus1)? / 2;
        let a = h.narrow(D::Minus1, 0, inner)?;
        let g = h.narrow(D::Minus1, inner, inner)?;
        self.out.forward(&(a * g.gelu_erf()?)?)
    }
}

/// diffusers' `BasicTransformerBlock` (layer norms, self-attention, second attention,
/// GEGLU feed-forward). With `pos` set (motion modules) the position table is added to the
/// normed input of both attentions, and the second attention is a self-attention.
#[derive(Debug, Clone)]
pub struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl TransformerBlock {
    /// `context_dim` None makes `attn2` a self-attention (AnimateDiff's double self-attention).
    pub fn new(
        dim: usize,
        heads: usize,
        context_dim: Option<usize>,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            norm1: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(dim, None, heads, vb.pp("attn1"))?,
            norm2: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(dim, context_dim, heads, vb.pp("attn2"))?,
            norm3: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(dim, vb.pp("ff"))?,
        })
    }

    /// Replaces `attn1` and `attn2` with LayerDiffuse units loaded from `attn1_vb`/`attn2_vb`.
    pub fn with_layer_diffuse(
        mut self,
        rank: usize,
        attn1_vb: &VarBuilder,
        attn2_vb: &VarBuilder,
    ) -> Result<Self> {
        self.attn1 = self.attn1.with_layer_diffuse(rank, attn1_vb)?;
        self.attn2 = self.attn2.with_layer_diffuse(rank, attn2_vb)?;
        Ok(self)
    }

    /// `x` `[n, l, dim]`; `pos` `[1, l, dim]` or None; `context` for `attn2` (None = self).
    pub fn forward(
        &self,
        x: &Tensor,
        pos: Option<&Tensor>,
        context: Option<&Tensor>,
    ) -> Result<Tensor> {
        let with_pos = |h: Tensor| match pos {
            Some(p) => h.broadcast_add(p),
            None => Ok(h),
        };
        let h = with_pos(self.norm1.forward(x)?)?;
        let x = (self.attn1.forward(&h, None)? + x)?;
        let h = with_pos(self.norm2.forward(&x)?)?;
        let x = (self.attn2.forward(&h, context)? + x)?;
        self.ff.forward(&self.norm3.forward(&x)?)? + x
    }
}

/// Image batches above this many elements per chunk go through the spatial transformer a few
/// frames at a time (it works per frame anyway): bounds the feed-forward's 8·C-wide activation.
const SPATIAL_CHUNK_ELEMS: usize = 16 << 20;

/// diffusers' `Transformer2DModel` as SD-1.5 uses it: GroupNorm (eps 1e-6), 1×1 conv `proj_in`,
/// transformer blocks over the H·W tokens with cross-attention to `context`, 1×1 conv
/// `proj_out`, residual.
#[derive(Debug, Clone)]
pub struct SpatialTransformer {
    norm: FusedGroupNorm,
    proj_in: FastConv2d,
    blocks: Vec<TransformerBlock>,
    proj_out: FastConv2d,
}

impl SpatialTransformer {
    /// One block per `depth`.
    pub fn new(
        channels: usize,
        heads: usize,
        groups: usize,
        context_dim: usize,
        depth: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let conv1 = candle_nn::Conv2dConfig::default();
        let blocks = (0..depth)
            .map(|i| {
                TransformerBlock::new(
                    channels,
                    heads,
                    Some(context_dim),
                    vb.pp(format!("transformer_blocks.{i}")),
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            norm: group_norm(groups, channels, 1e-6, vb.pp("norm"))?,
            proj_in: fast_conv2d(channels, channels, 1, conv1, vb.pp("proj_in"))?,
            blocks,
            proj_out: fast_conv2d(channels, channels, 1, conv1, vb.pp("proj_out"))?,
        })
    }

    /// Mutable access for swapping attention processors (LayerDiffuse).
    pub fn blocks_mut(&mut self) -> &mut [TransformerBlock] {
        &mut self.blocks
    }

    /// `x` `[n, C, H, W]`, `context` `[n, tokens, context_dim]`.
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let per_item = 8 * c * h * w;
        let step = (SPATIAL_CHUNK_ELEMS / per_item.max(1)).clamp(1, n.max(1));
        if step >= n {
            return self.forward_chunk(x, context);
        }
        let mut parts = Vec::with_capacity(n.div_ceil(step));
        for start in (0..n).step_by(step) {
            let len = step.min(n - start);
            parts.push(
                self.forward_chunk(&x.narrow(0, start, len)?, &context.narrow(0, start, len)?)?,
            );
        }
        Tensor::cat(&parts, 0)
    }

    fn forward_chunk(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let y = self.proj_in.forward(&self.norm.forward(x)?)?;
        let mut y = y.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        for block in &self.blocks {
            y = block.forward(&y, None, Some(context))?;
        }
        let y = y.transpose(1, 2)?.contiguous()?.reshape((n, c, h, w))?;
        self.proj_out.forward(&y)? + x
    }
}
