//! A small ResNet (He et al. 2016) for 28–64 px images: the ResNet-18 layout (four stages of
//! two basic blocks, widths `w, 2w, 4w, 8w`, strides `1, 2, 2, 2`) with the CIFAR stem SimCLR
//! uses for small images (Chen et al. 2020, appendix B.9: a 3×3 stride-1 first convolution
//! and no max-pooling). `width = 64, blocks = [2, 2, 2, 2]` is ResNet-18 itself.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// ResNet hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    /// Input channels (1 grayscale, 3 RGB); 0 = set from the data by the caller.
    #[serde(default)]
    pub in_channels: usize,
    /// Width of the first stage; stage `s` has `width · 2^s` channels.
    pub width: usize,
    /// Basic blocks per stage (ResNet-18: `[2, 2, 2, 2]`).
    pub blocks: Vec<usize>,
}

impl ResNetConfig {
    /// Checks the hyper-parameters; the error names the field.
    ///
    /// # Errors
    /// Zero channels or width, no stage, or an empty stage.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |field: &'static str, why: &str| Err(ModelError::Config { field, message: why.into() });
        if self.in_channels == 0 {
            return bad("in_channels", "must be at least 1");
        }
        if self.width == 0 {
            return bad("width", "must be at least 1");
        }
        if self.blocks.is_empty() || self.blocks.contains(&0) {
            return bad("blocks", "needs at least one stage and at least one block per stage");
        }
        Ok(())
    }

    /// Width of the pooled feature vector.
    pub fn feature_dim(&self) -> usize {
        self.width << (self.blocks.len() - 1)
    }

    /// A randomly initialized network (Kaiming-normal fan-out convolutions, unit BatchNorm).
    pub fn init(&self, device: &Device) -> ResNet {
        let stem = conv_bn(self.in_channels, self.width, 3, 1, device);
        let mut stages = Vec::new();
        let mut channels = self.width;
        for (s, &n) in self.blocks.iter().enumerate() {
            let out = self.width << s;
            let stride = if s == 0 { 1 } else { 2 };
            let mut stage = Vec::new();
            for b in 0..n {
                stage.push(BasicBlock::new(channels, out, if b == 0 { stride } else { 1 }, device));
                channels = out;
            }
            stages.push(stage);
        }
        ResNet { stem, stages }
    }
}

/// A convolution (no bias) followed by BatchNorm.
#[derive(Module, Debug)]
pub struct ConvBn {
    /// The convolution.
    pub conv: Conv2d,
    /// Its BatchNorm.
    pub bn: BatchNorm,
}

impl ConvBn {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        crate::cpu::batch_norm(&self.bn, crate::cpu::conv2d(&self.conv, x))
    }

    /// `relu(self.forward(x))`, the ReLU fused into the BatchNorm.
    fn forward_relu(&self, x: Tensor<4>) -> Tensor<4> {
        crate::cpu::batch_norm_relu(&self.bn, crate::cpu::conv2d(&self.conv, x))
    }
}

fn conv_bn(input: usize, output: usize, kernel: usize, stride: usize, device: &Device) -> ConvBn {
    let pad = kernel / 2;
    let conv = Conv2dConfig::new([input, output], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal { gain: std::f64::consts::SQRT_2, fan_out_only: true })
        .init(device);
    ConvBn { conv, bn: BatchNormConfig::new(output).init(device) }
}

/// `relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`, the shortcut a strided 1×1 convolution
/// when the shape changes (He et al. 2016, option B).
#[derive(Module, Debug)]
pub struct BasicBlock {
    /// First 3×3 convolution (carries the stride).
    pub conv1: ConvBn,
    /// Second 3×3 convolution.
    pub conv2: ConvBn,
    /// Projection shortcut, when channels or resolution change.
    pub downsample: Option<ConvBn>,
}

impl BasicBlock {
    fn new(input: usize, output: usize, stride: usize, device: &Device) -> Self {
        let downsample = (stride != 1 || input != output).then(|| conv_bn(input, output, 1, stride, device));
        Self { conv1: conv_bn(input, output, 3, stride, device), conv2: conv_bn(output, output, 3, 1, device), downsample }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x.clone()),
            None => x.clone(),
        };
        relu(self.conv2.forward(self.conv1.forward_relu(x)) + shortcut)
    }
}

/// The network up to global average pooling.
#[derive(Module, Debug)]
pub struct ResNet {
    /// 3×3 stride-1 stem.
    pub stem: ConvBn,
    /// Stages of basic blocks.
    pub stages: Vec<Vec<BasicBlock>>,
}

impl ResNet {
    /// Pooled features.
    ///
    /// # Shapes
    /// - `images`: `[batch, channels, height, width]`
    /// - output: `[batch, feature_dim]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem.forward_relu(images);
        for block in self.stages.iter().flatten() {
            x = block.forward(x);
        }
        let [b, c, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([b, c])
    }
}
