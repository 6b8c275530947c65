//! Masked autoencoder (He et al. 2021): a ViT encoder that sees only the visible patches and a
//! light transformer decoder that predicts the pixels of the masked ones.

use burn::module::{Module, Param};
use burn::nn::transformer::TransformerEncoder;
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::cpu::gather_rows;
use crate::vit::{LAYER_NORM_EPS, Vit, VitConfig, blocks, sincos_2d, xavier_linear};

/// MAE decoder hyper-parameters (the encoder is a [`VitConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaeDecoderConfig {
    /// Decoder token width.
    pub dim: usize,
    /// Decoder blocks.
    pub depth: usize,
    /// Decoder attention heads.
    pub heads: usize,
}

impl MaeDecoderConfig {
    /// Checks the hyper-parameters; the error names the field.
    ///
    /// # Errors
    /// Zero sizes or heads that do not divide `dim`.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.dim == 0 || self.depth == 0 || self.heads == 0 || !self.dim.is_multiple_of(self.heads) || !self.dim.is_multiple_of(4) {
            return Err(ModelError::Config { field: "decoder", message: format!("dim {} must be a positive multiple of 4 divisible by heads {}, depth ≥ 1", self.dim, self.heads) });
        }
        Ok(())
    }
}

/// Which patches a masked forward pass keeps.
///
/// # Shapes
/// - `keep`: `[batch, visible]`, indices of the visible patches
/// - `restore`: `[batch, patches]`, the inverse permutation (MAE's `ids_restore`)
/// - `mask`: `[batch, patches]`, 1 for a masked (hidden) patch, 0 for a visible one
#[derive(Debug, Clone)]
pub struct PatchMask {
    /// Visible patch indices.
    pub keep: Tensor<2, Int>,
    /// Inverse of the shuffle.
    pub restore: Tensor<2, Int>,
    /// 1 where the patch is hidden.
    pub mask: Tensor<2>,
}

impl PatchMask {
    /// Per-sample random masking by argsort of uniform noise (MAE's `random_masking`), drawn
    /// from the device's generator (seeded per step by the trainer). Keeps
    /// `round(patches · (1 − ratio))` patches, at least one.
    pub fn random(batch: usize, patches: usize, ratio: f64, device: &Device) -> Self {
        let visible = ((patches as f64 * (1.0 - ratio)).round() as usize).clamp(1, patches);
        let noise = Tensor::<2>::random([batch, patches], Distribution::Uniform(0.0, 1.0), device);
        let shuffle = noise.argsort(1);
        let restore = shuffle.clone().argsort(1);
        let keep = shuffle.slice([0..batch, 0..visible]);
        let mut ordered = vec![0.0f32; patches];
        ordered[visible..].fill(1.0);
        let ordered = Tensor::<1>::from_data(TensorData::new(ordered, [patches]), device).reshape([1, patches]).expand([batch, patches]);
        let mask = ordered.gather(1, restore.clone());
        Self { keep, restore, mask }
    }
}

/// Encoder and decoder.
#[derive(Module, Debug)]
pub struct Mae {
    /// The ViT encoder (what is kept after pretraining).
    pub encoder: Vit,
    /// Encoder width → decoder width.
    pub decoder_embed: Linear,
    /// Learned token standing in for every masked patch.
    pub mask_token: Param<Tensor<3>>,
    /// Decoder blocks.
    pub decoder_blocks: TransformerEncoder,
    /// Decoder LayerNorm.
    pub decoder_norm: LayerNorm,
    /// Decoder width → pixels of one patch.
    pub decoder_pred: Linear,
    #[module(skip)]
    decoder_pos: Vec<f32>,
    #[module(skip)]
    decoder_dim: usize,
}

impl Mae {
    /// A randomly initialized MAE.
    ///
    /// # Errors
    /// Invalid encoder or decoder hyper-parameters.
    pub fn init(encoder: &VitConfig, decoder: &MaeDecoderConfig, device: &Device) -> Result<Self, ModelError> {
        encoder.validate()?;
        decoder.validate()?;
        Ok(Self {
            encoder: encoder.init(device),
            decoder_embed: xavier_linear(encoder.dim, decoder.dim, device),
            mask_token: Initializer::Normal { mean: 0.0, std: 0.02 }.init([1, 1, decoder.dim], device),
            decoder_blocks: blocks(decoder.dim, decoder.depth, decoder.heads, encoder.mlp_ratio, device),
            decoder_norm: LayerNormConfig::new(decoder.dim).with_epsilon(LAYER_NORM_EPS).init(device),
            decoder_pred: xavier_linear(decoder.dim, encoder.patch_dim(), device),
            decoder_pos: sincos_2d(decoder.dim, encoder.grid()),
            decoder_dim: decoder.dim,
        })
    }

    /// Predicted pixels for every patch (the loss reads only the masked ones).
    ///
    /// # Shapes
    /// - `images`: `[batch, channels, size, size]`
    /// - output: `[batch, patches, patch_dim]`
    pub fn forward(&self, images: Tensor<4>, mask: &PatchMask) -> Tensor<3> {
        let device = images.device();
        let [b, l] = mask.restore.dims();
        let latent = self.encoder.encode_tokens(self.encoder.embed_patches(images, Some(mask.keep.clone()))); // (B, 1 + visible, D)
        let x = crate::cpu::linear(&self.decoder_embed, latent);
        let [_, n, d] = x.dims();
        let cls = x.clone().slice([0..b, 0..1]);
        let visible = x.slice([0..b, 1..n]);
        let masked = self.mask_token.val().expand([b, l + 1 - n, d]);
        let unshuffled = gather_rows(Tensor::cat(vec![visible, masked], 1), mask.restore.clone()); // (B, L, d)
        let pos = Tensor::<3>::from_data(TensorData::new(self.decoder_pos.clone(), [1, l + 1, self.decoder_dim]), &device);
        let x = Tensor::cat(vec![cls, unshuffled], 1) + pos;
        let x = crate::cpu::layer_norm(&self.decoder_norm, LAYER_NORM_EPS, crate::cpu::transformer_encoder(&self.decoder_blocks, LAYER_NORM_EPS, x));
        crate::cpu::linear(&self.decoder_pred, x.slice([0..b, 1..l + 1]))
    }
}
