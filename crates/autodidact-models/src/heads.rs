//! Image encoders behind one type, and the projection head of contrastive methods.

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::resnet::{ResNet, ResNetConfig};
use crate::vit::{Vit, VitConfig};

/// Which image encoder, with its hyper-parameters (`[model] arch = "resnet" | "vit"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum ImageEncoderConfig {
    /// A small ResNet.
    Resnet(ResNetConfig),
    /// A ViT.
    Vit(VitConfig),
}

impl ImageEncoderConfig {
    /// Checks the hyper-parameters.
    ///
    /// # Errors
    /// The offending field.
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            Self::Resnet(c) => c.validate(),
            Self::Vit(c) => c.validate(),
        }
    }

    /// Width of the features the encoder outputs.
    pub fn feature_dim(&self) -> usize {
        match self {
            Self::Resnet(c) => c.feature_dim(),
            Self::Vit(c) => c.dim,
        }
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        match self {
            Self::Resnet(c) => c.in_channels,
            Self::Vit(c) => c.in_channels,
        }
    }

    /// Fills what the data decides (input channels, ViT image size) when left at 0.
    pub fn fit_to_data(&mut self, channels: usize, image_size: usize) {
        match self {
            Self::Resnet(c) if c.in_channels == 0 => c.in_channels = channels,
            Self::Vit(c) => {
                if c.in_channels == 0 {
                    c.in_channels = channels;
                }
                if c.image_size == 0 {
                    c.image_size = image_size;
                }
            }
            Self::Resnet(_) => {}
        }
    }

    /// A randomly initialized encoder.
    ///
    /// # Errors
    /// Invalid hyper-parameters.
    pub fn init(&self, device: &Device) -> Result<ImageEncoder, ModelError> {
        self.validate()?;
        Ok(match self {
            Self::Resnet(c) => ImageEncoder::Resnet(c.init(device)),
            Self::Vit(c) => ImageEncoder::Vit(c.init(device)),
        })
    }
}

/// An image encoder: images in, one feature vector per image out.
#[derive(Module, Debug)]
pub enum ImageEncoder {
    /// A small ResNet (pooled features).
    Resnet(ResNet),
    /// A ViT (class token).
    Vit(Vit),
}

impl ImageEncoder {
    /// Features of each image.
    ///
    /// # Shapes
    /// - `images`: `[batch, channels, height, width]`, output: `[batch, feature_dim]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::Resnet(m) => m.forward(images),
            Self::Vit(m) => m.forward(images),
        }
    }
}

/// SimCLR's projection head g(·) (Chen et al. 2020, §2.1), in the form lightly and
/// solo-learn use: `Linear → BatchNorm → ReLU → Linear`.
#[derive(Module, Debug)]
pub struct ProjectionHead {
    /// Features → hidden.
    pub fc1: Linear,
    /// BatchNorm on the hidden layer.
    pub bn: BatchNorm,
    /// Hidden → output.
    pub fc2: Linear,
}

impl ProjectionHead {
    /// A head `input → hidden → output`.
    pub fn new(input: usize, hidden: usize, output: usize, device: &Device) -> Self {
        Self { fc1: LinearConfig::new(input, hidden).init(device), bn: BatchNormConfig::new(hidden).init(device), fc2: LinearConfig::new(hidden, output).init(device) }
    }

    /// # Shapes
    /// - `x`: `[batch, input]`, output: `[batch, output]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.fc2.forward(crate::cpu::batch_norm_relu(&self.bn, self.fc1.forward(x)))
    }
}
