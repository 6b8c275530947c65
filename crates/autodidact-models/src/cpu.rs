//! Faster CPU paths for the operations that dominated training-step profiles on burn's flex
//! backend (`docs/BENCHMARKS.md` has the profiles and the measured effect of each):
//!
//! - [`conv2d`]: burn computes a convolution's weight gradient as a convolution with batch
//!   and channels swapped, which on flex becomes an im2col of the whole batch and a GEMM with
//!   a 9-column output. Here it is one large GEMM, `dW = dY · colsᵀ`, over im2col columns
//!   built in parallel in image chunks.
//! - [`dropout`]: burn draws a Bernoulli mask element by element from one locked ChaCha
//!   generator; here the mask comes from per-chunk xoshiro generators on all cores, seeded from
//!   the device's generator (so runs stay reproducible under `device.seed`).
//!
//! On other devices (ndarray, wgpu) both fall back to burn's own operations. The results are
//! the same functions: tests compare them with burn's on the same inputs.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ConvOptions, FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::{Dropout, PaddingConfig2d};
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Distribution, Shape, Slice, Tensor, TensorData};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;

/// True when `device` runs on burn's flex CPU backend (with or without autodiff).
pub fn is_flex(device: &Device) -> bool {
    device.clone().without_autodiff() == Device::flex()
}

/// Largest im2col chunk of the weight-gradient kernel, in f32 elements (64 MB).
const MAX_COLUMN_ELEMENTS: usize = 16 << 20;

/// Elements per independently seeded generator in [`dropout`]'s mask.
const DROPOUT_CHUNK: usize = 1 << 14;

/// Convolution of `conv` on `x`, as [`Conv2d::forward`], with a fast weight gradient on flex.
///
/// # Shapes
/// - `x`: `[batch, in_channels, height, width]`, output: `[batch, out_channels, height', width']`
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let (top, left, bottom, right) = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => (top, left, bottom, right),
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Same => return conv.forward(x),
    };
    if conv.groups != 1 || !is_flex(&x.device()) {
        return conv.forward(x);
    }
    let options = ConvOptions::new_with_padding(conv.stride, [(top, bottom), (left, right)], conv.dilation, 1);
    let y = Tensor::from_dispatch(<Dispatch as FastConv>::conv2d_fast_weight_grad(x.into_dispatch(), conv.weight.val().into_dispatch(), options));
    match &conv.bias {
        Some(b) => {
            let c = b.dims()[0];
            y + b.val().reshape([1, c, 1, 1])
        }
        None => y,
    }
}

/// The convolution with the custom backward, per backend.
#[backend_extension(Flex, Autodiff)]
pub trait FastConv: Backend {
    /// `conv2d(x, weight)` without bias.
    fn conv2d_fast_weight_grad(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self>;
}

impl FastConv for Flex {
    fn conv2d_fast_weight_grad(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        Flex::conv2d(x, weight, None, options)
    }
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 2> for ConvBackward {
    type State = (FlexTensor, FlexTensor, ConvOptions<2>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, weight, options) = ops.state;
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, conv2d_weight_grad(&x, &weight, grad.clone(), &options));
        }
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, Flex::conv2d_x_backward(x, weight, grad, options));
        }
    }
}

impl<C: CheckpointStrategy> FastConv for Autodiff<Flex, C> {
    fn conv2d_fast_weight_grad(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        match ConvBackward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.primitive().clone(), weight.primitive().clone());
                let out = Flex::conv2d(x.clone(), weight.clone(), None, options.clone());
                prep.finish((x, weight, options), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::conv2d(x.into_primitive(), weight.into_primitive(), None, options)),
        }
    }
}

/// `dW[o, c, ky, kx] = Σ_{n, oy, ox} dY[n, o, oy, ox] · x[n, c, oy·s + ky·d − p, ox·s + kx·d − p]`
/// as `dY` laid out `[out, batch·pixels]` times the im2col columns `[batch·pixels, in·k·k]`,
/// the columns built for a chunk of images at a time (parallel over their rows).
fn conv2d_weight_grad(x: &FlexTensor, weight: &FlexTensor, grad: FlexTensor, options: &ConvOptions<2>) -> FlexTensor {
    let [n, ci, h, w] = x.shape().dims::<4>();
    let [co, _, kh, kw] = weight.shape().dims::<4>();
    let [_, _, ho, wo] = grad.shape().dims::<4>();
    let x = x.to_contiguous();
    let Some(xs) = x.as_slice::<f32>() else {
        return Flex::conv2d_weight_backward(x.clone(), weight.clone(), grad, options.clone());
    };
    let pixels = ho * wo;
    let kdim = ci * kh * kw;
    // dY as [out, batch·pixels]: the rows of one output channel, image after image.
    let grad = Flex::float_reshape(Flex::float_permute(grad, &[1, 0, 2, 3]), Shape::new([co, n * pixels]));
    let images_per_chunk = (MAX_COLUMN_ELEMENTS / (pixels * kdim).max(1)).clamp(1, n);
    let geometry = Im2col { ci, h, w, kh, kw, ho, wo, stride: options.stride, dilation: options.dilation, pad: [options.padding[0].0, options.padding[1].0] };
    let mut total: Option<FlexTensor> = None;
    for first in (0..n).step_by(images_per_chunk) {
        let last = (first + images_per_chunk).min(n);
        let mut cols = vec![0.0f32; (last - first) * pixels * kdim];
        cols.par_chunks_mut(pixels * kdim).enumerate().for_each(|(i, image_cols)| {
            let image = &xs[(first + i) * ci * h * w..(first + i + 1) * ci * h * w];
            geometry.fill(image, image_cols);
        });
        let cols = FlexTensor::from_data(TensorData::new(cols, [(last - first) * pixels, kdim]));
        let rows = Flex::float_slice(grad.clone(), &[Slice::from(0..co), Slice::from(first * pixels..last * pixels)]);
        let part = Flex::float_matmul(rows, cols);
        total = Some(match total {
            Some(t) => Flex::float_add(t, part),
            None => part,
        });
    }
    match total {
        Some(total) => Flex::float_reshape(total, Shape::new([co, ci, kh, kw])),
        None => Flex::conv2d_weight_backward(x, weight.clone(), Flex::float_reshape(grad, Shape::new([n, co, ho, wo])), options.clone()),
    }
}

/// Geometry of the im2col columns of one image.
struct Im2col {
    ci: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 2],
}

impl Im2col {
    /// Writes row `oy·wo + ox`, column `(c·kh + ky)·kw + kx` of `out` (zero-initialized) with
    /// the input pixel under that kernel tap, leaving padding positions at zero.
    fn fill(&self, image: &[f32], out: &mut [f32]) {
        let kdim = self.ci * self.kh * self.kw;
        for oy in 0..self.ho {
            for ox in 0..self.wo {
                let row = &mut out[(oy * self.wo + ox) * kdim..][..kdim];
                for ky in 0..self.kh {
                    let Some(iy) = (oy * self.stride[0] + ky * self.dilation[0]).checked_sub(self.pad[0]).filter(|&y| y < self.h) else {
                        continue;
                    };
                    for kx in 0..self.kw {
                        let Some(ix) = (ox * self.stride[1] + kx * self.dilation[1]).checked_sub(self.pad[1]).filter(|&x| x < self.w) else {
                            continue;
                        };
                        for c in 0..self.ci {
                            row[(c * self.kh + ky) * self.kw + kx] = image[(c * self.h + iy) * self.w + ix];
                        }
                    }
                }
            }
        }
    }
}

/// `layer` applied to `x`, as [`Dropout::forward`] (identity outside training), with the mask
/// drawn in parallel on flex.
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !layer.training.is_enabled() || !device.is_autodiff() || layer.prob == 0.0 || !is_flex(&device) {
        return layer.forward(x);
    }
    let keep = 1.0 - layer.prob;
    let scale = (1.0 / keep) as f32;
    // Two uniform draws from the device generator seed this mask (as burn's dropout draws
    // its mask from that generator), so `device.seed` still fixes every mask.
    let draws = Tensor::<1>::random([2], Distribution::Default, &device).into_data().try_to_vec::<f32>().unwrap_or_default();
    let seed = draws.iter().fold(0u64, |s, d| (s << 32) ^ u64::from(d.to_bits()));
    let shape = x.shape();
    let mut mask = vec![0.0f32; shape.num_elements()];
    mask.par_chunks_mut(DROPOUT_CHUNK).enumerate().for_each(|(i, chunk)| {
        let mut rng = SmallRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for m in chunk {
            if rng.random::<f64>() < keep {
                *m = scale;
            }
        }
    });
    x * Tensor::from_data(TensorData::new(mask, shape), &device)
}
