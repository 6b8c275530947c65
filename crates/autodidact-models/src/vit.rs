//! A Vision Transformer (Dosovitskiy et al. 2021) in the form MAE uses (He et al. 2021):
//! non-overlapping patches linearly embedded, a class token, fixed 2-D sine-cosine position
//! embeddings, pre-LayerNorm transformer blocks (burn's `TransformerEncoder` with
//! `norm_first`), GELU MLPs, a final LayerNorm.

use burn::module::{Module, Param};
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Epsilon of every LayerNorm in the ViT and the MAE decoder (as the MAE reference code).
pub const LAYER_NORM_EPS: f64 = 1e-6;

/// ViT hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    /// Side of the (square) input images in pixels; 0 = set from the data by the caller.
    #[serde(default)]
    pub image_size: usize,
    /// Side of a patch; must divide `image_size`.
    pub patch_size: usize,
    /// Input channels; 0 = set from the data by the caller.
    #[serde(default)]
    pub in_channels: usize,
    /// Token width.
    pub dim: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads; must divide `dim`.
    pub heads: usize,
    /// MLP width as a multiple of `dim` (4 in ViT and MAE).
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: usize,
    /// The image feature [`Vit::forward`] returns (evaluation, fine-tuning heads).
    #[serde(default)]
    pub pool: VitPool,
}

/// How a ViT turns its output tokens into one image feature (timm's `global_pool`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VitPool {
    /// The class token (ViT; MAE's linear probe).
    #[default]
    Cls,
    /// The mean of the patch tokens after the final norm (timm `global_pool = "avg"`).
    Mean,
}

fn default_mlp_ratio() -> usize {
    4
}

impl VitConfig {
    /// Checks the hyper-parameters; the error names the field.
    ///
    /// # Errors
    /// Zero sizes, a patch that does not divide the image, heads that do not divide `dim`.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |field: &'static str, message: String| Err(ModelError::Config { field, message });
        for (field, v) in [("image_size", self.image_size), ("patch_size", self.patch_size), ("in_channels", self.in_channels), ("dim", self.dim), ("depth", self.depth), ("heads", self.heads), ("mlp_ratio", self.mlp_ratio)] {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return bad("patch_size", format!("{} does not divide the image size {}", self.patch_size, self.image_size));
        }
        if !self.dim.is_multiple_of(self.heads) {
            return bad("heads", format!("{} heads do not divide dim {}", self.heads, self.dim));
        }
        if !self.dim.is_multiple_of(4) {
            return bad("dim", format!("{} must be a multiple of 4 (2-D sine-cosine position embeddings)", self.dim));
        }
        Ok(())
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Patches per image.
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Values per patch (`patch_size² · in_channels`).
    pub fn patch_dim(&self) -> usize {
        self.patch_size * self.patch_size * self.in_channels
    }

    /// A randomly initialized ViT (Xavier-uniform linear layers, class token N(0, 0.02), as
    /// MAE's `initialize_weights`).
    pub fn init(&self, device: &Device) -> Vit {
        Vit {
            patch_embed: xavier_linear(self.patch_dim(), self.dim, device),
            cls_token: Initializer::Normal { mean: 0.0, std: 0.02 }.init([1, 1, self.dim], device),
            blocks: blocks(self.dim, self.depth, self.heads, self.mlp_ratio, device),
            norm: LayerNormConfig::new(self.dim).with_epsilon(LAYER_NORM_EPS).init(device),
            pos_embed: sincos_2d(self.dim, self.grid()),
            config: self.clone(),
        }
    }
}

/// A linear layer with Xavier-uniform weights and zero bias.
pub fn xavier_linear(input: usize, output: usize, device: &Device) -> Linear {
    LinearConfig::new(input, output).with_initializer(Initializer::XavierUniform { gain: 1.0 }).init(device)
}

/// Pre-LN transformer blocks without dropout (ViT/MAE pretraining uses none).
pub fn blocks(dim: usize, depth: usize, heads: usize, mlp_ratio: usize, device: &Device) -> TransformerEncoder {
    TransformerEncoderConfig::new(dim, dim * mlp_ratio, heads, depth)
        .with_dropout(0.0)
        .with_norm_first(true)
        .with_layer_norm_eps(LAYER_NORM_EPS)
        .with_initializer(Initializer::XavierUniform { gain: 1.0 })
        .init(device)
}

/// Fixed 2-D sine-cosine position embeddings with a leading zero row for the class token
/// (MAE's `get_2d_sincos_pos_embed(dim, grid, cls_token=True)`): half the channels encode the
/// row, half the column, each as `[sin(p·ω_k), cos(p·ω_k)]` with `ω_k = 10000^(-k/(dim/4))`.
///
/// # Shapes
/// - output: `[(1 + grid²) * dim]`, row-major `[1 + grid², dim]`
pub fn sincos_2d(dim: usize, grid: usize) -> Vec<f32> {
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter).map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64)).collect();
    let mut out = vec![0.0f32; dim]; // class token
    for row in 0..grid {
        for col in 0..grid {
            // MAE's meshgrid puts the column (w) first, then the row (h).
            for pos in [col, row] {
                out.extend(omega.iter().map(|w| (pos as f64 * w).sin() as f32));
                out.extend(omega.iter().map(|w| (pos as f64 * w).cos() as f32));
            }
        }
    }
    out
}

/// The ViT encoder.
#[derive(Module, Debug)]
pub struct Vit {
    /// Patch → token projection (a strided convolution written as a linear layer).
    pub patch_embed: Linear,
    /// Learned class token.
    pub cls_token: Param<Tensor<3>>,
    /// Transformer blocks.
    pub blocks: TransformerEncoder,
    /// Final LayerNorm.
    pub norm: LayerNorm,
    #[module(skip)]
    pos_embed: Vec<f32>,
    #[module(skip)]
    config: VitConfig,
}

impl Vit {
    /// The configuration it was built from.
    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// Position embeddings on `device`: `[1, 1 + patches, dim]`.
    pub fn position_embeddings(&self, device: &Device) -> Tensor<3> {
        let rows = self.config.num_patches() + 1;
        Tensor::from_data(TensorData::new(self.pos_embed.clone(), [1, rows, self.config.dim]), device)
    }

    /// Embedded patches with their position embeddings, without the class token: every
    /// patch, or with `keep` only patches `keep[b, j]` of image `b`, in that order (MAE's
    /// visible patches; the others are never embedded).
    ///
    /// # Shapes
    /// - `images`: `[batch, channels, size, size]`, `keep`: `[batch, n]`
    /// - output: `[batch, patches, dim]`, or `[batch, n, dim]` with `keep`
    pub fn embed_patches(&self, images: Tensor<4>, keep: Option<Tensor<2, Int>>) -> Tensor<3> {
        let device = images.device();
        let patches = patchify(images, self.config.patch_size);
        let [b, l, _] = patches.dims();
        let (patches, pos) = match keep {
            None => (patches, self.position_embeddings(&device).slice([0..1, 1..1 + l])),
            Some(keep) => {
                let [_, n] = keep.dims();
                let pos = self.kept_positions(keep.clone().into_data().iter::<i64>());
                (crate::cpu::gather_rows(patches, keep), Tensor::from_data(TensorData::new(pos, [b, n, self.config.dim]), &device))
            }
        };
        let [_, n, _] = patches.dims();
        crate::cpu::linear_add(&self.patch_embed, patches, pos.expand([b, n, self.config.dim]))
    }

    /// The fixed position embeddings of patches `index` (rows of `dim`, one per index; a
    /// row of NaN for an index out of range, as [`crate::cpu::gather_rows`] gives).
    fn kept_positions(&self, index: impl Iterator<Item = i64>) -> Vec<f32> {
        let dim = self.config.dim;
        let row = |i: i64| usize::try_from(i).ok().and_then(|i| self.pos_embed.get((1 + i) * dim..(2 + i) * dim));
        let mut out = Vec::with_capacity(index.size_hint().0 * dim);
        for i in index {
            match row(i) {
                Some(row) => out.extend_from_slice(row),
                None => out.resize(out.len() + dim, f32::NAN),
            }
        }
        out
    }

    /// Prepends the class token (with its zero position embedding), runs the blocks and the
    /// final norm.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, n, dim]`, output: `[batch, 1 + n, dim]`
    pub fn encode_tokens(&self, tokens: Tensor<3>) -> Tensor<3> {
        let [b, _, d] = tokens.dims();
        let cls = self.cls_token.val().expand([b, 1, d]);
        let x = Tensor::cat(vec![cls, tokens], 1);
        crate::cpu::layer_norm(&self.norm, LAYER_NORM_EPS, crate::cpu::transformer_encoder(&self.blocks, LAYER_NORM_EPS, x))
    }

    /// The representation of whole images used for evaluation: the class token or the mean
    /// of the patch tokens, as `config.pool` says.
    ///
    /// # Shapes
    /// - `images`: `[batch, channels, size, size]`, output: `[batch, dim]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.encode_tokens(self.embed_patches(images, None));
        let [b, n, d] = x.dims();
        match self.config.pool {
            VitPool::Cls => x.slice([0..b, 0..1]).reshape([b, d]),
            VitPool::Mean => x.slice([0..b, 1..n]).mean_dim(1).reshape([b, d]),
        }
    }
}

/// Splits images into flattened patches in MAE's order (`nchpwq → nhwpqc`).
///
/// # Shapes
/// - `images`: `[batch, channels, size, size]`, output: `[batch, (size/p)², p·p·channels]`
pub fn patchify(images: Tensor<4>, p: usize) -> Tensor<3> {
    let [b, c, h, w] = images.dims();
    let (gh, gw) = (h / p, w / p);
    images.reshape([b, c, gh, p, gw, p]).permute([0, 2, 4, 3, 5, 1]).reshape([b, gh * gw, p * p * c])
}

