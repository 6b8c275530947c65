//! Faster CPU paths for the operations that dominated training-step profiles on burn's flex
//! backend (`docs/BENCHMARKS.md` has the profiles and the measured effect of each):
//!
//! - [`conv2d`]: burn computes a convolution's weight gradient as a convolution with batch
//!   and channels swapped (on flex an im2col of the whole batch and a GEMM with a 9-column
//!   output), and its forward and input gradient through whole-batch columns and layout
//!   copies. Here all three run image by image on columns that stay in cache, one GEMM per
//!   image, images in parallel (`cpu/conv.rs`).
//! - [`dropout`]: burn draws a Bernoulli mask element by element from one locked ChaCha
//!   generator and keeps it for the backward pass; here each element's draw is a counter-based
//!   hash of a seed from the device's generator (so runs stay reproducible under
//!   `device.seed`), computed in parallel, vectorized, and again in the backward pass.
//! - [`gelu`], [`softmax`], [`layer_norm`], [`cross_entropy`]: one parallel pass forward and
//!   one backward, where burn records softmax, log-softmax and LayerNorm as chains of small
//!   operations and computes `exp` and GELU's erf with scalar libm calls.
//! - [`linear`] / [`affine`], [`attention`]: matrix products written once into fresh memory
//!   by the `gemm` crate (`cpu/gemm.rs`), where flex zero-fills each product's output and
//!   copies it again into an aligned buffer on the calling thread. Attention is one operation
//!   on q, k and v packed side by side (one projection product instead of three, and one
//!   input gradient): scores, softmax, dropout and the weighted sum per head, each head read
//!   and written in place instead of copied out and back. [`residual_linear`] and
//!   [`linear_add`] apply a transformer block's dropout and residual (or the ViT's position
//!   embeddings) as the product is written, where burn runs both on the calling thread.
//! - [`adamw_step`]: AdamW's update as one parallel pass per parameter, where burn's `AdamW`
//!   makes about a dozen passes on the calling thread (`cpu/adamw.rs`).
//!
//! Sums of partial sums made by parallel tasks are added in task order (`add_in_order`),
//! so that results do not depend on rayon's scheduling or the thread count.
//!
//! The elementwise and row-wise loops run through `vectorized`, built for AVX-512, AVX2 or
//! the x86-64 baseline and chosen at run time; the crate itself is compiled for the baseline.
//!
//! On other devices (ndarray, wgpu) all of them fall back to burn's own operations. The results are
//! the same functions: tests compare them with burn's on the same inputs.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::attention::MhaInput;
use burn::nn::transformer::{PositionWiseFeedForward, TransformerEncoder, TransformerEncoderLayer};
use burn::nn::activation::Activation;
use burn::nn::{BatchNorm, Dropout, LayerNorm, Linear, PaddingConfig2d};
use burn::nn::conv::Conv2d;
use burn::optim::{AdamWConfig, AdamWState, AdaptiveMomentumState, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use multiversion::multiversion;
use rayon::prelude::*;

mod adamw;
mod attention;
mod conv;
mod cross_entropy;
mod gemm;
mod linear;

pub use adamw::AdamWStep;
pub use linear::WeightLayout;

/// True when `device` runs on burn's flex CPU backend (with or without autodiff).
pub fn is_flex(device: &Device) -> bool {
    device.clone().without_autodiff() == Device::flex()
}

/// Convolution of `conv` on `x`, as [`Conv2d::forward`], with the forward and both gradients
/// computed image by image on flex.
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
    let y = Tensor::from_dispatch(<Dispatch as FastConv>::conv2d_fast(x.into_dispatch(), conv.weight.val().into_dispatch(), options));
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
    fn conv2d_fast(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self>;
}

impl FastConv for Flex {
    fn conv2d_fast(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        conv::forward(&x, &weight, &options).unwrap_or_else(|| Flex::conv2d(x, weight, None, options))
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
        let [dx, dw] = match conv::backward(&x, &weight, &grad, &options, [node_x.is_some(), node_w.is_some()]) {
            Some(grads) => grads,
            None => [
                node_x.is_some().then(|| Flex::conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), options.clone())),
                node_w.is_some().then(|| Flex::conv2d_weight_backward(x, weight, grad, options)),
            ],
        };
        for (node, grad) in [(node_x, dx), (node_w, dw)] {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> FastConv for Autodiff<Flex, C> {
    fn conv2d_fast(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        match ConvBackward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.primitive().clone(), weight.primitive().clone());
                let out = Flex::conv2d_fast(x.clone(), weight.clone(), options.clone());
                prep.finish((x, weight, options), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::conv2d_fast(x.into_primitive(), weight.into_primitive(), options)),
        }
    }
}

/// `layer` applied to `x`, as [`Dropout::forward`] (identity outside training); on flex one
/// operation whose mask is a function of a seed and the element's index (`kept`), so it is
/// drawn in parallel, vectorized, and drawn again in the backward pass instead of stored.
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    match DropoutMask::draw(layer, &x.device()) {
        Some(mask) => Tensor::from_dispatch(<Dispatch as FastOps>::dropout_seeded(x.into_dispatch(), mask)),
        None => layer.forward(x),
    }
}

/// A dropout mask as a seed and a keep probability.
#[derive(Clone, Copy, Debug)]
pub struct DropoutMask {
    seed: u64,
    /// An element is kept when the top 32 bits of its draw are below this (`keep · 2³²`).
    threshold: u64,
    /// `1 / keep`, the scale of kept elements.
    scale: f32,
}

impl DropoutMask {
    /// The mask `layer` applies on `device` where that is flex in training (on an autodiff
    /// device, with a nonzero rate), else `None`. Two uniform draws from the device generator
    /// seed it (as burn's dropout draws its mask from that generator), so `device.seed` still
    /// fixes every mask.
    fn draw(layer: &Dropout, device: &Device) -> Option<Self> {
        if !layer.training.is_enabled() || !device.is_autodiff() || layer.prob == 0.0 || !is_flex(device) {
            return None;
        }
        let draws = Tensor::<1>::random([2], Distribution::Default, device).into_data().try_to_vec::<f32>().unwrap_or_default();
        let seed = draws.iter().fold(0u64, |s, d| (s << 32) ^ u64::from(d.to_bits()));
        Some(Self::new(seed, 1.0 - layer.prob))
    }

    fn new(seed: u64, keep: f64) -> Self {
        let keep = keep.clamp(0.0, 1.0);
        Self { seed, threshold: (keep * 4_294_967_296.0).round() as u64, scale: if keep > 0.0 { (1.0 / keep) as f32 } else { 0.0 } }
    }

    /// `x` with the mask applied: element `i` (in row-major order) times `scale` where
    /// [`kept`], else 0.
    fn apply(self, x: &FlexTensor) -> FlexTensor {
        let x = x.to_contiguous();
        let xs = slice_of(&x);
        let out = par_new(xs.len(), ELEMENTS_PER_TASK, |c, o| self.apply_into((c * ELEMENTS_PER_TASK) as u64, chunk_of(xs, c, ELEMENTS_PER_TASK, o), o));
        tensor_like(out, &x)
    }

    /// The mask on a piece of a tensor whose first element has index `first`: `out[j] =
    /// x[j] · scale` where element `first + j` is [`kept`], else 0.
    fn apply_into(self, first: u64, x: &[f32], out: &mut [f32]) {
        vectorized(
            #[inline(always)]
            || {
                for ((o, &v), i) in out.iter_mut().zip(x).zip(first..) {
                    *o = self.at(i, v);
                }
            },
        )
    }

    /// [`DropoutMask::apply_into`] in place.
    fn apply_in_place(self, first: u64, x: &mut [f32]) {
        vectorized(#[inline(always)] || x.iter_mut().zip(first..).for_each(|(v, i)| *v = self.at(i, *v)));
    }

    /// Element `i` of a masked tensor whose value before the mask is `v`.
    #[inline(always)]
    fn at(self, i: u64, v: f32) -> f32 {
        if kept(self.seed, i, self.threshold) { v * self.scale } else { 0.0 }
    }
}

/// Whether element `i` is kept: SplitMix64 (Steele, Lea and Flood 2014) at counter `i` from
/// `seed`, its top 32 bits compared with `threshold`. A counter-based draw: any element's
/// draw is computed directly, without a generator's state in between.
#[inline(always)]
fn kept(seed: u64, i: u64, threshold: u64) -> bool {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 32) < threshold
}

/// Rows per parallel task of the row-wise kernels.
const ROWS_PER_TASK: usize = 64;
/// Elements per parallel task of the elementwise kernels.
const ELEMENTS_PER_TASK: usize = 1 << 14;

/// Runs `f` compiled for the widest vector instructions this CPU has: AVX-512, else AVX2 with
/// FMA, else the x86-64 baseline (SSE2), chosen once at run time (`multiversion`). Every
/// parallel task of the kernels here runs its loops through this: they are written to
/// vectorize, and the baseline build runs them 4 lanes wide. Callers mark the closure
/// `#[inline(always)]`: only code inlined into `f`'s body is compiled for the wider
/// instructions (a closure left as its own function stays at the baseline).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// The sum of `partials` (each `len` long), added in their order. Partial sums made by
/// parallel tasks are added this way rather than with rayon's `reduce`, which combines them
/// in a tree shaped by work stealing: float addition is not associative, so that sum's last
/// bits changed from run to run (and with the thread count).
fn add_in_order(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut sum = vec![0.0f32; len];
    for part in &partials {
        vectorized(#[inline(always)] || sum.iter_mut().zip(part).for_each(|(s, v)| *s += v));
    }
    sum
}

fn slice_of(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().unwrap_or(&[])
}

fn tensor_like(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, like.shape()))
}

/// A new vector of `len` elements written in parallel: `fill(state, i, chunk)` computes
/// chunk `i` (elements `i·chunk_len..`, the last chunk shorter), with `state` made by `init`
/// once per worker. Each task zeroes its own chunk just before `fill` writes (or adds to)
/// it, while it is in cache, instead of a zero-fill of the whole vector on the calling
/// thread first (3–5% of the training-step profiles, with the page faults).
fn par_new_with<T>(len: usize, chunk_len: usize, init: impl Fn() -> T + Sync + Send, fill: impl Fn(&mut T, usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(chunk_len.max(1)).enumerate().for_each_init(init, |state, (i, chunk)| {
        chunk.fill(std::mem::MaybeUninit::new(0.0));
        #[allow(unsafe_code)]
        // SAFETY: every element of `chunk` was initialized on the line above, and
        // `MaybeUninit<f32>` has the layout of `f32`.
        let chunk = unsafe { &mut *(std::ptr::from_mut(chunk) as *mut [f32]) };
        fill(state, i, chunk);
    });
    #[allow(unsafe_code)]
    // SAFETY: `par_chunks_mut` hands out every element of the first `len` (within capacity)
    // exactly once, and each was zeroed before `fill` ran.
    unsafe {
        out.set_len(len);
    }
    out
}

/// [`par_new_with`] without per-worker state.
fn par_new(len: usize, chunk_len: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    par_new_with(len, chunk_len, || (), |(), i, chunk| fill(i, chunk))
}

/// Elements `i·chunk_len..` of `values`, as many as `like` holds: the inputs beside chunk
/// `i` of a parallel output ([`par_new`]'s, or uninitialized memory).
fn chunk_of<'a, T>(values: &'a [f32], i: usize, chunk_len: usize, like: &[T]) -> &'a [f32] {
    &values[i * chunk_len..][..like.len()]
}

/// `out[i] = f(a[i], b[i])` in parallel chunks. The loop writes every element itself, so the
/// output needs no zero-fill first (unlike [`par_new`]'s).
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let len = a.len().min(b.len());
    let mut out = Vec::with_capacity(len);
    // Plain loops over chunks, so that the compiler vectorizes `f`.
    out.spare_capacity_mut()[..len].par_chunks_mut(ELEMENTS_PER_TASK).enumerate().for_each(|(i, o)| {
        let (a, b) = (chunk_of(a, i, ELEMENTS_PER_TASK, o), chunk_of(b, i, ELEMENTS_PER_TASK, o));
        vectorized(#[inline(always)] || {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                o.write(f(a, b));
            }
        })
    });
    #[allow(unsafe_code)]
    // SAFETY: the chunks cover the first `len` elements, and each chunk's loop wrote every one
    // of its elements (`a` and `b` hold exactly as many, or the slicing panicked first).
    unsafe {
        out.set_len(len);
    }
    out
}

/// `eˣ` to about 2 ulp, branch-free so that loops over it vectorize (libm's `expf` is a call
/// per element): `2ᵏ · e^r` with `k = round(x·log₂e)`, `|r| ≤ ln2/2`, a degree-6 Taylor
/// polynomial for `e^r`. Inputs are clamped to [−87.3, 88.3] (below, the result is 1.2e-38
/// instead of a subnormal or zero). `2ᵏ` is built with integer operations on the bits of the
/// rounded value: Rust's saturating `as i32` does not vectorize without AVX-512.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + ROUND; // 1.5·2²³ + k: k sits in the low mantissa bits
    let k = shifted - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let biased_k = shifted.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127); // k + 127 ∈ [1, 254]
    f32::from_bits(biased_k << 23) * p
}

/// `(Φ(x), φ(x))`, the standard normal CDF and density, with erf to within 1.5e-7
/// (Abramowitz & Stegun 7.1.26), sharing its one `exp` with the density.
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
    let z = x.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let gauss = exp(-z * z); // exp(-x²/2)
    let erf = 1.0 - t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4])))) * gauss;
    let erf = if x >= 0.0 { erf } else { -erf };
    (0.5 * (1.0 + erf), FRAC_1_SQRT_2PI * gauss)
}

/// GELU with the exact (erf) form, `x · Φ(x)`, as burn's and BERT's.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !is_flex(&x.device()) {
        return burn::tensor::activation::gelu(x);
    }
    Tensor::from_dispatch(<Dispatch as FastOps>::gelu_exact(x.into_dispatch()))
}

/// The values of an index tensor on the host; a negative value becomes `usize::MAX`, out of
/// range for the kernels that read it.
fn host_indices<const D: usize>(index: Tensor<D, Int>) -> Vec<usize> {
    index.into_data().iter::<i64>().map(|i| usize::try_from(i).unwrap_or(usize::MAX)).collect()
}

/// Per-row cross-entropy of `logits` against integer `labels`, with label smoothing `ε`
/// (Szegedy et al. 2016, §7): `−Σⱼ qⱼ·log softmax(logits)ⱼ` with `q = (1 − ε)·one_hot +
/// ε/classes`. On flex one operation forward and backward (`cpu/cross_entropy.rs`), where a
/// label out of range gives its row a NaN loss.
///
/// # Shapes
/// - `logits`: `[rows, classes]`, `labels`: `[rows]`, output: `[rows]`
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>, smoothing: f64) -> Tensor<1> {
    let [rows, _] = logits.dims();
    if is_flex(&logits.device()) {
        let labels = host_indices(labels);
        return Tensor::from_dispatch(<Dispatch as FastOps>::cross_entropy_rows(logits.into_dispatch(), labels, smoothing as f32));
    }
    let log_probs = log_softmax(logits, 1); // (N, V)
    let nll = log_probs.clone().gather(1, labels.reshape([rows, 1])).reshape([rows]).neg();
    if smoothing == 0.0 {
        return nll;
    }
    let uniform = log_probs.mean_dim(1).reshape([rows]).neg(); // mean over classes of −log p
    nll * (1.0 - smoothing) + uniform * smoothing
}

/// Softmax over the last dimension.
pub fn softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !is_flex(&x.device()) {
        return burn::tensor::activation::softmax(x, D - 1);
    }
    Tensor::from_dispatch(<Dispatch as FastOps>::softmax_last(x.into_dispatch()))
}

/// `layer` (LayerNorm over the last dimension, built with `epsilon`) applied to `x`, as
/// [`LayerNorm::forward`]. burn keeps a LayerNorm's epsilon private, so callers pass the value
/// they configured it with.
pub fn layer_norm<const D: usize>(layer: &LayerNorm, epsilon: f64, x: Tensor<D>) -> Tensor<D> {
    let Some(beta) = layer.beta.as_ref().filter(|_| is_flex(&x.device())) else {
        return layer.forward(x);
    };
    let out = <Dispatch as FastOps>::layer_norm_last(x.into_dispatch(), layer.gamma.val().into_dispatch(), beta.val().into_dispatch(), epsilon);
    Tensor::from_dispatch(out)
}

/// `bn` applied to `x`, as [`BatchNorm::forward`] (training mode on an autodiff device unless
/// the layer is frozen: batch statistics, running statistics updated with its momentum), with
/// one fused pass forward and one backward on flex instead of burn's transposed copies.
///
/// # Shapes
/// - `x`: `[batch, channels, ...]`, output: the same
pub fn batch_norm<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    batch_norm_then(bn, x, false)
}

/// `relu(batch_norm(bn, x))`; on flex in training one operation forward and backward, the
/// ReLU applied as the normalized values are written and its mask recomputed from the input in
/// the backward pass (no separate pass over the activations, and no mask kept).
///
/// # Shapes
/// - `x`: `[batch, channels, ...]`, output: the same
pub fn batch_norm_relu<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    batch_norm_then(bn, x, true)
}

/// [`batch_norm`], followed by a ReLU where `relu`.
fn batch_norm_then<const D: usize>(bn: &BatchNorm, x: Tensor<D>, relu: bool) -> Tensor<D> {
    let device = x.device();
    if !(is_flex(&device) && device.is_autodiff() && bn.training.is_enabled()) {
        let y = bn.forward(x);
        return if relu { burn::tensor::activation::relu(y) } else { y };
    }
    let channels = bn.gamma.dims()[0];
    let moments: Tensor<2> = Tensor::from_dispatch(<Dispatch as FastOps>::channel_moments(x.clone().into_dispatch())).detach();
    let (mean, var) = (moments.clone().slice([0..1, 0..channels]).reshape([channels]), moments.clone().slice([1..2, 0..channels]).reshape([channels]));
    let momentum = bn.momentum;
    let running_mean = bn.running_mean.value_sync().to_device(&device).mul_scalar(1.0 - momentum).add(mean.mul_scalar(momentum));
    let running_var = bn.running_var.value_sync().to_device(&device).mul_scalar(1.0 - momentum).add(var.mul_scalar(momentum));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
    let out = <Dispatch as FastOps>::batch_norm_train(x.into_dispatch(), bn.gamma.val().into_dispatch(), bn.beta.val().into_dispatch(), moments.into_dispatch(), bn.epsilon, relu);
    Tensor::from_dispatch(out)
}

/// Fused row-wise and elementwise operations with their backward passes.
#[backend_extension(Flex, Autodiff)]
pub trait FastOps: Backend {
    /// `x · Φ(x)`.
    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Softmax over the last dimension.
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `(x − mean) / sqrt(var + eps) · gamma + beta` over the last dimension.
    fn layer_norm_last(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self>;
    /// Batch normalization of `[batch, channels, ...]` with the batch's own statistics,
    /// `moments` as computed by [`FastOps::channel_moments`] on `x`, followed by a ReLU where
    /// `relu`; differentiated as one operation (through the statistics' dependence on `x`).
    fn batch_norm_train(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, moments: FloatTensor<Self>, epsilon: f64, relu: bool) -> FloatTensor<Self>;
    /// Per-channel mean (row 0) and biased variance (row 1) of `[batch, channels, ...]`, as
    /// `[2, channels]`; not differentiated.
    fn channel_moments(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x · W + bias` for `x: [rows, in]`, `bias: [out]`, `W` stored as `layout`.
    fn affine_rows(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, layout: WeightLayout) -> FloatTensor<Self>;
    /// `residual + dropout(x · W + bias)` for `x: [rows, in]`, `residual: [rows, out]`, the
    /// dropout `mask` where given.
    fn affine_residual_rows(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, residual: FloatTensor<Self>, layout: WeightLayout, mask: Option<DropoutMask>) -> FloatTensor<Self>;
    /// Per-row cross-entropy of `logits: [rows, classes]` against `labels` (one per row)
    /// with label smoothing, as `[rows]`; differentiated with respect to the logits.
    fn cross_entropy_rows(logits: FloatTensor<Self>, labels: Vec<usize>, smoothing: f32) -> FloatTensor<Self>;
    /// `x` with `mask` applied; its gradient is the incoming gradient with the same mask.
    fn dropout_seeded(x: FloatTensor<Self>, mask: DropoutMask) -> FloatTensor<Self>;
    /// Multi-head attention on packed projections: `qkv` `[batch, seq, 3·hidden]`, each row
    /// `[q | k | v]`; `softmax(scale · Q·Kᵀ + key_bias)` per head (`key_bias` `[batch · seq]`
    /// on every query row), `dropout` on the probabilities, times V; output `[batch, seq,
    /// hidden]`, heads side by side.
    fn attention_packed(qkv: FloatTensor<Self>, heads: usize, scale: f32, key_bias: Option<Vec<f32>>, dropout: Option<DropoutMask>) -> FloatTensor<Self>;
    /// `out[b, j] = x[b, index[b·picks + j]]` for `x: [batch, n, dim]`, output `[batch,
    /// picks, dim]`.
    fn gather_rows(x: FloatTensor<Self>, index: Vec<usize>, picks: usize) -> FloatTensor<Self>;
    /// One AdamW step of a parameter: `(parameter, first moment, second moment)` after it.
    /// The previous moments are read only after the first step (`step.time > 1`); not
    /// differentiated.
    fn adamw_step(param: FloatTensor<Self>, grad: FloatTensor<Self>, moment_1: FloatTensor<Self>, moment_2: FloatTensor<Self>, step: AdamWStep) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π).
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

fn gelu_forward(x: &FlexTensor) -> FlexTensor {
    let x = x.to_contiguous();
    let xs = slice_of(&x);
    tensor_like(zip_map(xs, xs, |v, _| v * normal_cdf_pdf(v).0), &x)
}

fn softmax_forward(x: &FlexTensor) -> FlexTensor {
    let x = x.to_contiguous();
    let shape = x.shape();
    let cols = shape.as_slice().last().copied().unwrap_or(1).max(1);
    let xs = slice_of(&x);
    let out = par_new(xs.len(), cols * ROWS_PER_TASK, |i, o| softmax_rows(chunk_of(xs, i, cols * ROWS_PER_TASK, o), o, cols));
    tensor_like(out, &x)
}

/// Softmax of each row of `cols` elements of `x` into `out`.
fn softmax_rows(x: &[f32], out: &mut [f32], cols: usize) {
    vectorized(#[inline(always)] || {
        for (o, x) in out.chunks_mut(cols.max(1)).zip(x.chunks(cols.max(1))) {
            let max = row_max(x);
            for (o, &v) in o.iter_mut().zip(x) {
                *o = exp(v - max);
            }
            let [sum] = row_sums([o], |[v]| [v]);
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|o| *o *= inv);
        }
    })
}

/// The gradient of a softmax with respect to its input, per row of `cols` elements, given
/// its output `y` and the output's gradient `g`: `dx = y ⊙ (g − Σ g ⊙ y)` into `dx`.
fn softmax_grad_rows(y: &[f32], g: &[f32], dx: &mut [f32], cols: usize) {
    vectorized(#[inline(always)] || {
        for ((d, y), g) in dx.chunks_mut(cols.max(1)).zip(y.chunks(cols.max(1))).zip(g.chunks(cols.max(1))) {
            let [dot] = row_sums([y, g], |[y, g]| [y * g]);
            for ((d, &y), &g) in d.iter_mut().zip(y).zip(g) {
                *d = y * (g - dot);
            }
        }
    })
}

/// Per-row mean and 1/σ of the LayerNorm input, and its output.
fn layer_norm_forward(x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, epsilon: f64) -> (FlexTensor, Vec<f32>, Vec<f32>) {
    let x = x.to_contiguous();
    let (gamma, beta) = (gamma.to_contiguous(), beta.to_contiguous());
    let (g, b) = (slice_of(&gamma), slice_of(&beta));
    let xs = slice_of(&x);
    let cols = g.len();
    assert!(cols > 0 && b.len() == cols && xs.len().is_multiple_of(cols), "layer_norm: rows of {} elements do not fit gamma and beta of {cols} and {}", xs.len(), b.len());
    let (rows, len) = (xs.len() / cols, xs.len());
    // Written row by row below, never zero-filled first (that fill ran on the calling thread).
    let mut out = Vec::with_capacity(len);
    let mut mean = vec![0.0f32; rows];
    let mut rstd = vec![0.0f32; rows];
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(cols * ROWS_PER_TASK)
        .zip(xs.par_chunks(cols * ROWS_PER_TASK))
        .zip(mean.par_chunks_mut(ROWS_PER_TASK).zip(rstd.par_chunks_mut(ROWS_PER_TASK)))
        .for_each(|((o, x), (mean, rstd))| {
            vectorized(#[inline(always)] || {
                for (((o, x), mean), rstd) in o.chunks_mut(cols).zip(x.chunks(cols)).zip(mean).zip(rstd) {
                    let [sum] = row_sums([x], |[v]| [v]);
                    let m = sum / cols as f32;
                    let [squares] = row_sums([x], |[v]| [(v - m) * (v - m)]);
                    let var = squares / cols as f32;
                    (*mean, *rstd) = (m, 1.0 / (var + epsilon as f32).sqrt());
                    for (((o, &v), &g), &b) in o.iter_mut().zip(x).zip(g).zip(b) {
                        o.write((v - *mean) * *rstd * g + b);
                    }
                }
            })
        });
    #[allow(unsafe_code)]
    // SAFETY: the chunks cover the first `len` elements, whole rows of `cols` (asserted), and
    // the loop above wrote every element of each row (`gamma` and `beta` hold `cols` each).
    unsafe {
        out.set_len(len);
    }
    (tensor_like(out, &x), mean, rstd)
}

/// Channels and elements per (batch item, channel) of a `[batch, channels, ...]` tensor.
fn channel_layout(x: &FlexTensor) -> (usize, usize) {
    let shape = x.shape();
    let dims = shape.as_slice();
    let channels = dims.get(1).copied().unwrap_or(1).max(1);
    (channels, dims[2.min(dims.len())..].iter().product::<usize>().max(1))
}

/// Per-channel mean and biased variance (two passes), in parallel over channels.
fn channel_stats(xs: &[f32], channels: usize, inner: usize) -> (Vec<f32>, Vec<f32>) {
    let count = (xs.len() / channels).max(1) as f64;
    let stats: Vec<(f32, f32)> = (0..channels)
        .into_par_iter()
        .map(|c| {
            vectorized(#[inline(always)] || {
                let planes = || xs.chunks(inner).skip(c).step_by(channels);
                let mean = planes().map(|p| plane_sums([p], |[v]| [v])[0]).sum::<f64>() / count;
                let m = mean as f32;
                let var = planes().map(|p| plane_sums([p], |[v]| [(v - m) * (v - m)])[0]).sum::<f64>() / count;
                (m, var as f32)
            })
        })
        .collect();
    stats.into_iter().unzip()
}

/// Independent accumulators per output of [`lanes`].
const LANES: usize = 16;

/// Folds `f` over the elements of `inputs` (zipped, up to the shortest) with `op`, into
/// [`LANES`] independent accumulators per output, element `i` into lane `i % LANES`; callers
/// combine the lanes. A single running fold stays scalar (the compiler may not reorder float
/// operations); lanes vectorize.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indexed on purpose: see the comment in the body
fn lanes<const K: usize, const N: usize>(inputs: [&[f32]; K], init: f32, f: impl Fn([f32; K]) -> [f32; N], op: impl Fn(f32, f32) -> f32) -> [[f32; LANES]; N] {
    let len = inputs.iter().map(|s| s.len()).min().unwrap_or(0);
    let split = inputs.map(|s| s[..len].as_chunks::<LANES>());
    let mut acc = [[init; LANES]; N];
    // Plain indexed loops over the lanes: with the inputs gathered by `array::map`, or the
    // accumulators updated through a closure that borrows them, the loop stayed scalar for
    // two or more inputs (accumulators spilled to the stack).
    for c in 0..len / LANES {
        let block: [&[f32; LANES]; K] = std::array::from_fn(|i| &split[i].0[c]);
        for l in 0..LANES {
            let values = f(std::array::from_fn(|i| block[i][l]));
            for n in 0..N {
                acc[n][l] = op(acc[n][l], values[n]);
            }
        }
    }
    for l in 0..len % LANES {
        let values = f(std::array::from_fn(|i| split[i].1[l]));
        for n in 0..N {
            acc[n][l] = op(acc[n][l], values[n]);
        }
    }
    acc
}

/// `Σᵢ f(inputs[..][i])` for each output, in `f32` ([`lanes`]).
#[inline(always)]
fn row_sums<const K: usize, const N: usize>(inputs: [&[f32]; K], f: impl Fn([f32; K]) -> [f32; N]) -> [f32; N] {
    lanes(inputs, 0.0, f, |s, v| s + v).map(|lane| lane.iter().sum())
}

/// The largest element of `x` (−∞ for an empty row).
#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let [lane] = lanes([x], f32::NEG_INFINITY, |[v]| [v], f32::max);
    lane.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// [`row_sums`] over one plane of a channel, the lanes added in `f64`. Callers add the
/// planes of a channel in `f64`, so `f32` rounding stays within one plane (a few thousand
/// terms at most here).
#[inline(always)]
fn plane_sums<const K: usize, const N: usize>(inputs: [&[f32]; K], f: impl Fn([f32; K]) -> [f32; N]) -> [f64; N] {
    lanes(inputs, 0.0, f, |s, v| s + v).map(|lane| lane.iter().map(|&v| f64::from(v)).sum())
}

/// BatchNorm output with the batch statistics (`moments`: `[2, channels]`, mean and biased
/// variance), through a ReLU where `relu`; the per-channel mean and 1/σ; and with `relu` each
/// channel's shift `β − mean·γ/σ` (the backward pass recomputes the ReLU's mask from it).
fn batch_norm_forward(x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, moments: &FlexTensor, epsilon: f64, relu: bool) -> (FlexTensor, Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let x = x.to_contiguous();
    let (gamma, beta, moments) = (gamma.to_contiguous(), beta.to_contiguous(), moments.to_contiguous());
    let (g, b) = (slice_of(&gamma), slice_of(&beta));
    let (channels, inner) = channel_layout(&x);
    let xs = slice_of(&x);
    let (mean, var) = slice_of(&moments).split_at(channels);
    let mean = mean.to_vec();
    let rstd: Vec<f32> = var.iter().map(|&v| 1.0 / (v + epsilon as f32).sqrt()).collect();
    let shift: Vec<f32> = (0..channels).map(|c| b[c] - mean[c] * rstd[c] * g[c]).collect();
    let out = par_new(xs.len(), inner, |i, o| {
        let (x, c) = (chunk_of(xs, i, inner, o), i % channels);
        let (scale, shift) = (rstd[c] * g[c], shift[c]);
        vectorized(#[inline(always)] || {
            for (o, &v) in o.iter_mut().zip(x) {
                *o = v * scale + shift;
            }
            if relu {
                o.iter_mut().for_each(|o| *o = o.max(0.0));
            }
        })
    });
    (tensor_like(out, &x), mean, rstd, relu.then_some(shift))
}

fn channel_moments_flex(x: &FlexTensor) -> FlexTensor {
    let x = x.to_contiguous();
    let (channels, inner) = channel_layout(&x);
    let (mut mean, var) = channel_stats(slice_of(&x), channels, inner);
    mean.extend(var);
    FlexTensor::from_data(TensorData::new(mean, [2, channels]))
}

impl FastOps for Flex {
    fn gelu_exact(x: FlexTensor) -> FlexTensor {
        gelu_forward(&x)
    }

    fn softmax_last(x: FlexTensor) -> FlexTensor {
        softmax_forward(&x)
    }

    fn layer_norm_last(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, epsilon: f64) -> FlexTensor {
        layer_norm_forward(&x, &gamma, &beta, epsilon).0
    }

    fn batch_norm_train(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, moments: FlexTensor, epsilon: f64, relu: bool) -> FlexTensor {
        batch_norm_forward(&x, &gamma, &beta, &moments, epsilon, relu).0
    }

    fn channel_moments(x: FlexTensor) -> FlexTensor {
        channel_moments_flex(&x)
    }

    fn affine_rows(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, layout: WeightLayout) -> FlexTensor {
        linear::forward(&x, &weight, &bias, layout, None)
    }

    fn affine_residual_rows(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, residual: FlexTensor, layout: WeightLayout, mask: Option<DropoutMask>) -> FlexTensor {
        linear::forward(&x, &weight, &bias, layout, Some((&residual, mask)))
    }

    fn cross_entropy_rows(logits: FlexTensor, labels: Vec<usize>, smoothing: f32) -> FlexTensor {
        cross_entropy::forward(&logits, &labels, smoothing).0
    }

    fn dropout_seeded(x: FlexTensor, mask: DropoutMask) -> FlexTensor {
        mask.apply(&x)
    }

    fn attention_packed(qkv: FlexTensor, heads: usize, scale: f32, key_bias: Option<Vec<f32>>, dropout: Option<DropoutMask>) -> FlexTensor {
        attention::forward(&qkv, heads, scale, key_bias.as_deref(), dropout).0
    }

    fn gather_rows(x: FlexTensor, index: Vec<usize>, picks: usize) -> FlexTensor {
        gather_rows_forward(&x, &index, picks)
    }

    fn adamw_step(param: FlexTensor, grad: FlexTensor, moment_1: FlexTensor, moment_2: FlexTensor, step: AdamWStep) -> (FlexTensor, FlexTensor, FlexTensor) {
        adamw_step_flex(&param, &grad, &moment_1, &moment_2, step)
    }
}

fn adamw_step_flex(param: &FlexTensor, grad: &FlexTensor, moment_1: &FlexTensor, moment_2: &FlexTensor, step: AdamWStep) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (param, grad) = (param.to_contiguous(), grad.to_contiguous());
    let previous = (step.time > 1).then(|| (moment_1.to_contiguous(), moment_2.to_contiguous()));
    let moments = previous.as_ref().map(|(m, v)| (slice_of(m), slice_of(v)));
    let [p, m, v] = adamw::step(slice_of(&param), slice_of(&grad), moments, step);
    (tensor_like(p, &param), tensor_like(m, &param), tensor_like(v, &param))
}

/// [`FastOps::gather_rows`] on flex; an index out of range gives a row of NaN.
fn gather_rows_forward(x: &FlexTensor, index: &[usize], picks: usize) -> FlexTensor {
    let x = x.to_contiguous();
    let [batch, n, dim] = x.shape().dims::<3>();
    let xs = slice_of(&x);
    let out = par_new(batch * picks * dim, picks * dim, |b, out| {
        let (item, index) = (&xs[b * n * dim..(b + 1) * n * dim], &index[b * picks..(b + 1) * picks]);
        for (row, &j) in out.chunks_mut(dim.max(1)).zip(index) {
            match item.get(j * dim..(j + 1) * dim) {
                Some(source) => row.copy_from_slice(source),
                None => row.fill(f32::NAN),
            }
        }
    });
    FlexTensor::from_data(TensorData::new(out, [batch, picks, dim]))
}

/// The gradient of [`gather_rows_forward`] for an input of `n` rows per batch item: each
/// output row's gradient added into the row it was read from.
fn gather_rows_backward(grad: &FlexTensor, index: &[usize], n: usize) -> FlexTensor {
    let grad = grad.to_contiguous();
    let [batch, picks, dim] = grad.shape().dims::<3>();
    let gs = slice_of(&grad);
    let dx = par_new(batch * n * dim, n * dim, |b, dx| {
        let (item, index) = (&gs[b * picks * dim..(b + 1) * picks * dim], &index[b * picks..(b + 1) * picks]);
        for (row, &j) in item.chunks(dim.max(1)).zip(index) {
            if let Some(target) = dx.get_mut(j * dim..(j + 1) * dim) {
                target.iter_mut().zip(row).for_each(|(t, g)| *t += g);
            }
        }
    });
    FlexTensor::from_data(TensorData::new(dx, [batch, n, dim]))
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let x = ops.state.to_contiguous();
        if let Some(node) = node {
            // d/dx x·Φ(x) = Φ(x) + x·φ(x)
            let dx = zip_map(slice_of(&x), slice_of(&grad), |v, g| {
                let (cdf, pdf) = normal_cdf_pdf(v);
                g * (cdf + v * pdf)
            });
            grads.register::<Flex>(node.id, tensor_like(dx, &x));
        }
    }
}

#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Flex, 1> for SoftmaxBackward {
    /// The softmax output.
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let y = ops.state.to_contiguous();
        let Some(node) = node else { return };
        let shape = y.shape();
        let cols = shape.as_slice().last().copied().unwrap_or(1).max(1);
        let (ys, gs) = (slice_of(&y), slice_of(&grad));
        let dx = par_new(ys.len(), cols * ROWS_PER_TASK, |i, d| softmax_grad_rows(chunk_of(ys, i, cols * ROWS_PER_TASK, d), chunk_of(gs, i, cols * ROWS_PER_TASK, d), d, cols));
        grads.register::<Flex>(node.id, tensor_like(dx, &y));
    }
}

/// The axis a normalization's statistics run over.
#[derive(Debug, Clone, Copy)]
enum Norm {
    /// LayerNorm: each row of the last dimension.
    Rows,
    /// BatchNorm: each channel (dimension 1) over the batch and the remaining dimensions.
    Channels,
}

#[derive(Debug)]
struct NormBackward(Norm);

impl Backward<Flex, 3> for NormBackward {
    /// Input, gamma, the mean and 1/σ of each normalized group, and for a BatchNorm with a
    /// fused ReLU each channel's shift (the output is `max(0, x·γ/σ + shift)`).
    type State = (FlexTensor, FlexTensor, Vec<f32>, Vec<f32>, Option<Vec<f32>>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x, gamma, mean, rstd, relu_shift) = ops.state;
        let (x, gamma) = (x.to_contiguous(), gamma.to_contiguous());
        let (xs, dys, g) = (slice_of(&x), slice_of(&grad), slice_of(&gamma));
        let want_dx = node_x.is_some();
        let (dx, dgamma, dbeta) = match self.0 {
            Norm::Rows => layer_norm_grads(xs, dys, g, &mean, &rstd, want_dx),
            Norm::Channels => batch_norm_grads(xs, dys, g, (&mean, &rstd, relu_shift.as_deref()), channel_layout(&x), want_dx),
        };
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, tensor_like(dx, &x));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, tensor_like(dgamma, &gamma));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, tensor_like(dbeta, &gamma));
        }
    }
}

/// LayerNorm gradients: the input's (when wanted), gamma's and beta's.
fn layer_norm_grads(xs: &[f32], gs: &[f32], g: &[f32], mean: &[f32], rstd: &[f32], want_dx: bool) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let cols = g.len().max(1);
    let chunk = cols * ROWS_PER_TASK;
    // dγ = Σ_rows dy ⊙ x̂, dβ = Σ_rows dy: partial sums per task, then added in order.
    let (dgamma, dbeta): (Vec<_>, Vec<_>) = xs
        .par_chunks(chunk)
        .zip(gs.par_chunks(chunk))
        .zip(mean.par_chunks(ROWS_PER_TASK).zip(rstd.par_chunks(ROWS_PER_TASK)))
        .map(|((x, dy), (mean, rstd))| {
            let (mut dg, mut db) = (vec![0.0f32; cols], vec![0.0f32; cols]);
            vectorized(#[inline(always)] || {
                for (((x, dy), &m), &r) in x.chunks(cols).zip(dy.chunks(cols)).zip(mean).zip(rstd) {
                    for (((dg, db), &v), &d) in dg.iter_mut().zip(db.iter_mut()).zip(x).zip(dy) {
                        *dg += d * (v - m) * r;
                        *db += d;
                    }
                }
            });
            (dg, db)
        })
        .unzip();
    let (dgamma, dbeta) = (add_in_order(dgamma, cols), add_in_order(dbeta, cols));
    let dx = want_dx.then(|| {
        // dx = (1/σ) · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)), ĝ = dy ⊙ γ
        par_new(xs.len(), chunk, |i, dx| {
            let (x, dy) = (chunk_of(xs, i, chunk, dx), chunk_of(gs, i, chunk, dx));
            let rows = i * ROWS_PER_TASK..i * ROWS_PER_TASK + dx.len() / cols;
            let (mean, rstd) = (&mean[rows.clone()], &rstd[rows]);
            vectorized(#[inline(always)] || {
                for ((((dx, x), dy), &m), &r) in dx.chunks_mut(cols).zip(x.chunks(cols)).zip(dy.chunks(cols)).zip(mean).zip(rstd) {
                    let [sum_g, sum_gx] = row_sums([x, dy, g], |[v, d, w]| [d * w, d * w * (v - m) * r]);
                    let (mean_g, mean_gx) = (sum_g / cols as f32, sum_gx / cols as f32);
                    for (((dx, &v), &d), &w) in dx.iter_mut().zip(x).zip(dy).zip(g) {
                        *dx = r * (d * w - mean_g - (v - m) * r * mean_gx);
                    }
                }
            })
        })
    });
    (dx, dgamma, dbeta)
}

/// BatchNorm gradients over `(channels, elements per batch item and channel)`: the input's
/// (when wanted), gamma's and beta's.
fn batch_norm_grads(xs: &[f32], dys: &[f32], g: &[f32], (mean, rstd, relu_shift): (&[f32], &[f32], Option<&[f32]>), (channels, inner): (usize, usize), want_dx: bool) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    // With a fused ReLU, dy is first zeroed where the output was 0: where max(0, x·γ/σ +
    // shift) is 0, computed as in the forward pass (the same bits).
    let gate = |c: usize| {
        let (scale, shift, on) = (rstd[c] * g[c], relu_shift.map_or(0.0, |s| s[c]), relu_shift.is_some());
        #[inline(always)]
        move |v: f32, d: f32| if on && (v * scale + shift).max(0.0) <= 0.0 { 0.0 } else { d }
    };
    // dβ = Σ dy, dγ = Σ dy ⊙ x̂ per channel.
    let sums: Vec<(f32, f32)> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let (m, r, gate) = (mean[c], rstd[c], gate(c));
            let (mut db, mut dg) = (0.0f64, 0.0f64);
            vectorized(#[inline(always)] || {
                for (x, dy) in xs.chunks(inner).zip(dys.chunks(inner)).skip(c).step_by(channels) {
                    let [b, g] = plane_sums([x, dy], |[v, d]| {
                        let d = gate(v, d);
                        [d, d * ((v - m) * r)]
                    });
                    (db, dg) = (db + b, dg + g);
                }
            });
            (db as f32, dg as f32)
        })
        .collect();
    let (dbeta, dgamma): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
    let dx = want_dx.then(|| {
        // dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy ⊙ x̂)), means over the channel's elements
        let count = (xs.len() / channels).max(1) as f32;
        par_new(xs.len(), inner, |i, dx| {
            let (x, dy, c) = (chunk_of(xs, i, inner, dx), chunk_of(dys, i, inner, dx), i % channels);
            let (m, r, k, gate) = (mean[c], rstd[c], g[c] * rstd[c], gate(c));
            let (mean_dy, mean_dyx) = (dbeta[c] / count, dgamma[c] / count);
            vectorized(#[inline(always)] || {
                for ((dx, &v), &d) in dx.iter_mut().zip(x).zip(dy) {
                    *dx = k * (gate(v, d) - mean_dy - (v - m) * r * mean_dyx);
                }
            })
        })
    });
    (dx, dgamma, dbeta)
}

#[derive(Debug)]
struct AffineBackward;

impl Backward<Flex, 3> for AffineBackward {
    /// Input, weight and the weight's layout.
    type State = (FlexTensor, FlexTensor, WeightLayout);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        differentiate(ops, grads, |(x, weight, layout), grad, wanted| linear::backward(&x, &weight, &grad, layout, wanted));
    }
}

/// [`AffineBackward`] behind a dropout mask, plus the residual, whose gradient is the
/// output's.
#[derive(Debug)]
struct AffineResidualBackward;

impl Backward<Flex, 4> for AffineResidualBackward {
    /// Input, weight, the weight's layout and the dropout mask.
    type State = (FlexTensor, FlexTensor, WeightLayout, Option<DropoutMask>);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        differentiate(ops, grads, |(x, weight, layout, mask), grad, [want_x, want_w, want_b, want_residual]| {
            let dropped = mask.map(|mask| mask.apply(&grad));
            let [dx, dw, db] = linear::backward(&x, &weight, dropped.as_ref().unwrap_or(&grad), layout, [want_x, want_w, want_b]);
            [dx, dw, db, want_residual.then_some(grad)]
        });
    }
}

/// A backward pass: takes the output's gradient, hands `compute` the saved state, that
/// gradient and which parents are tracked, and registers the gradients it returns.
fn differentiate<S, const N: usize>(ops: Ops<S, N>, grads: &mut Gradients, compute: impl FnOnce(S, FlexTensor, [bool; N]) -> [Option<FlexTensor>; N]) {
    let grad = grads.consume::<Flex>(&ops.node);
    let wanted = ops.parents.each_ref().map(Option::is_some);
    for (node, value) in ops.parents.into_iter().zip(compute(ops.state, grad, wanted)) {
        if let (Some(node), Some(value)) = (node, value) {
            grads.register::<Flex>(node.id, value);
        }
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 1> for AttentionBackward {
    /// `qkv`, the probabilities before dropout, heads, scale and the dropout mask.
    type State = (FlexTensor, Vec<f32>, usize, f32, Option<DropoutMask>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        differentiate(ops, grads, |(qkv, probs, heads, scale, dropout), grad, [wanted]| [wanted.then(|| attention::backward(&qkv, &probs, &grad, heads, scale, dropout))]);
    }
}

#[derive(Debug)]
struct GatherRowsBackward;

impl Backward<Flex, 1> for GatherRowsBackward {
    /// The row indices and the input's rows per batch item.
    type State = (Vec<usize>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        differentiate(ops, grads, |(index, n), grad, [wanted]| [wanted.then(|| gather_rows_backward(&grad, &index, n))]);
    }
}

#[derive(Debug)]
struct DropoutBackward;

impl Backward<Flex, 1> for DropoutBackward {
    type State = DropoutMask;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        differentiate(ops, grads, |mask, grad, [wanted]| [wanted.then(|| mask.apply(&grad))]);
    }
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl Backward<Flex, 1> for CrossEntropyBackward {
    /// Logits, labels, each row's log-sum-exp, and the label smoothing.
    type State = (FlexTensor, Vec<usize>, Vec<f32>, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        differentiate(ops, grads, |(x, labels, lse, smoothing), grad, [wanted]| [wanted.then(|| cross_entropy::backward(&x, &labels, &lse, smoothing, &grad))]);
    }
}

/// An operation whose output carries no gradient (statistics read from an activation).
#[derive(Debug)]
struct NoGradient;

impl Backward<Flex, 1> for NoGradient {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        grads.consume::<Flex>(&ops.node);
    }
}

impl<C: CheckpointStrategy> FastOps for Autodiff<Flex, C> {
    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let x = x.primitive().clone();
                let out = gelu_forward(&x);
                prep.finish(x, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(gelu_forward(x.primitive())),
        }
    }

    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match SoftmaxBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = softmax_forward(x.primitive());
                prep.finish(out.clone(), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(softmax_forward(x.primitive())),
        }
    }

    fn layer_norm_last(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        match NormBackward(Norm::Rows).prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, mean, rstd) = layer_norm_forward(x.primitive(), gamma.primitive(), beta.primitive(), epsilon);
                prep.finish((x.primitive().clone(), gamma.primitive().clone(), mean, rstd, None), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(layer_norm_forward(x.primitive(), gamma.primitive(), beta.primitive(), epsilon).0),
        }
    }

    fn batch_norm_train(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, moments: FloatTensor<Self>, epsilon: f64, relu: bool) -> FloatTensor<Self> {
        let (out, mean, rstd, shift) = batch_norm_forward(x.primitive(), gamma.primitive(), beta.primitive(), moments.primitive(), epsilon, relu);
        match NormBackward(Norm::Channels).prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x.primitive().clone(), gamma.primitive().clone(), mean, rstd, shift), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn affine_rows(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, layout: WeightLayout) -> FloatTensor<Self> {
        match AffineBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = linear::forward(x.primitive(), weight.primitive(), bias.primitive(), layout, None);
                prep.finish((x.primitive().clone(), weight.primitive().clone(), layout), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(linear::forward(x.primitive(), weight.primitive(), bias.primitive(), layout, None)),
        }
    }

    fn affine_residual_rows(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, residual: FloatTensor<Self>, layout: WeightLayout, mask: Option<DropoutMask>) -> FloatTensor<Self> {
        let out = || linear::forward(x.primitive(), weight.primitive(), bias.primitive(), layout, Some((residual.primitive(), mask)));
        match AffineResidualBackward.prepare::<C>([x.node(), weight.node(), bias.node(), residual.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = out();
                prep.finish((x.primitive().clone(), weight.primitive().clone(), layout, mask), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out()),
        }
    }

    fn cross_entropy_rows(logits: FloatTensor<Self>, labels: Vec<usize>, smoothing: f32) -> FloatTensor<Self> {
        match CrossEntropyBackward.prepare::<C>([logits.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (loss, lse) = cross_entropy::forward(logits.primitive(), &labels, smoothing);
                prep.finish((logits.primitive().clone(), labels, lse, smoothing), loss)
            }
            OpsKind::UnTracked(prep) => prep.finish(cross_entropy::forward(logits.primitive(), &labels, smoothing).0),
        }
    }

    fn attention_packed(qkv: FloatTensor<Self>, heads: usize, scale: f32, key_bias: Option<Vec<f32>>, dropout: Option<DropoutMask>) -> FloatTensor<Self> {
        let (out, probs) = attention::forward(qkv.primitive(), heads, scale, key_bias.as_deref(), dropout);
        match AttentionBackward.prepare::<C>([qkv.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((qkv.primitive().clone(), probs, heads, scale, dropout), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn gather_rows(x: FloatTensor<Self>, index: Vec<usize>, picks: usize) -> FloatTensor<Self> {
        match GatherRowsBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = gather_rows_forward(x.primitive(), &index, picks);
                let n = x.primitive().shape().dims::<3>()[1];
                prep.finish((index, n), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(gather_rows_forward(x.primitive(), &index, picks)),
        }
    }

    fn dropout_seeded(x: FloatTensor<Self>, mask: DropoutMask) -> FloatTensor<Self> {
        match DropoutBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(mask, mask.apply(x.primitive())),
            OpsKind::UnTracked(prep) => prep.finish(mask.apply(x.primitive())),
        }
    }

    fn channel_moments(x: FloatTensor<Self>) -> FloatTensor<Self> {
        NoGradient.prepare::<C>([x.node()]).compute_bound().stateless(channel_moments_flex(x.primitive()))
    }

    fn adamw_step(param: FloatTensor<Self>, grad: FloatTensor<Self>, moment_1: FloatTensor<Self>, moment_2: FloatTensor<Self>, step: AdamWStep) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (p, m, v) = adamw_step_flex(param.primitive(), grad.primitive(), moment_1.primitive(), moment_2.primitive(), step);
        (Self::from_inner(p), Self::from_inner(m), Self::from_inner(v))
    }
}

/// `layer` applied to the last dimension of `x` as one `[rows, in] × [in, out]` product.
///
/// burn runs a Linear on a 3-D input whose rows per batch item are not a multiple of 32 as a
/// batched product against the broadcast weight; its backward then materializes one weight
/// gradient per batch item (`[batch, in, out]`, 151 MB for an MAE decoder MLP) before summing
/// them. Flattening first makes the weight gradient a single product; on flex the map and
/// its gradients then run as [`affine`].
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    match &layer.bias {
        Some(bias) if is_flex(&x.device()) => affine(x, layer.weight.val(), bias.val(), WeightLayout::InOut),
        _ => on_rows(x, |x| layer.forward(x)),
    }
}

/// `x · W + bias` over the last dimension of `x`, `W` stored as `layout`; on flex one
/// operation forward and backward whose outputs are written once (`cpu/linear.rs`).
///
/// # Shapes
/// - `x`: `[..., in]`, `weight`: `[in, out]` or `[out, in]`, `bias`: `[out]`, output: `[..., out]`
pub fn affine<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Tensor<1>, layout: WeightLayout) -> Tensor<D> {
    on_rows(x, |x| {
        if is_flex(&x.device()) {
            return Tensor::from_dispatch(<Dispatch as FastOps>::affine_rows(x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch(), layout));
        }
        let weight = match layout {
            WeightLayout::InOut => weight,
            WeightLayout::OutIn => weight.transpose(),
        };
        x.matmul(weight) + bias.unsqueeze_dim(0)
    })
}

/// `addend + layer(x)`. On flex one operation: `addend` is added as each block of the
/// product is written, and its gradient is the output's.
///
/// # Shapes
/// - `x`: `[..., in]`, `addend` and output: `[..., out]`
pub fn linear_add<const D: usize>(layer: &Linear, x: Tensor<D>, addend: Tensor<D>) -> Tensor<D> {
    add_dropped_linear(addend, None, layer, x)
}

/// `residual + dropout(layer(x))`, the residual branch of a transformer block. On flex one
/// operation: the dropout mask (the same as [`dropout`]'s, drawn at the same point) and the
/// residual are applied as each block of the product is written.
///
/// # Shapes
/// - `x`: `[..., in]`, `residual` and output: `[..., out]`
pub fn residual_linear<const D: usize>(residual: Tensor<D>, dropout_layer: &Dropout, layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    add_dropped_linear(residual, Some(dropout_layer), layer, x)
}

/// `addend + dropout(layer(x))`, without the dropout where `dropout_layer` is `None`.
fn add_dropped_linear<const D: usize>(addend: Tensor<D>, dropout_layer: Option<&Dropout>, layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    match &layer.bias {
        Some(bias) if is_flex(&device) => {
            let mask = dropout_layer.and_then(|d| DropoutMask::draw(d, &device));
            let [weight, bias, addend] = [layer.weight.val().into_dispatch(), bias.val().into_dispatch(), flat_rows(addend).into_dispatch()];
            on_rows(x, |x| Tensor::from_dispatch(<Dispatch as FastOps>::affine_residual_rows(x.into_dispatch(), weight, bias, addend, WeightLayout::InOut, mask)))
        }
        _ => {
            let y = linear(layer, x);
            addend + match dropout_layer {
                Some(d) => dropout(d, y),
                None => y,
            }
        }
    }
}

/// `f` applied to the rows of `x` flattened to `[rows, last]`, its output reshaped back.
fn on_rows<const D: usize>(x: Tensor<D>, f: impl FnOnce(Tensor<2>) -> Tensor<2>) -> Tensor<D> {
    let mut dims = x.dims();
    let y = f(flat_rows(x));
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}

/// `x` as `[rows, last]`, its leading dimensions flattened.
fn flat_rows<const D: usize>(x: Tensor<D>) -> Tensor<2> {
    let dims = x.dims();
    x.reshape([dims[..D - 1].iter().product::<usize>(), dims[D - 1]])
}

/// `encoder` (burn's transformer encoder, without masks, its LayerNorms built with `epsilon`)
/// applied to `x`, as [`TransformerEncoder::forward`], on the fast operations of this module.
///
/// # Shapes
/// - `x`: `[batch, seq, d_model]`, output: the same
pub fn transformer_encoder(encoder: &TransformerEncoder, epsilon: f64, x: Tensor<3>) -> Tensor<3> {
    encoder.layers.iter().fold(x, |x, layer| encoder_layer(layer, epsilon, x))
}

/// One layer, in burn's order: with `norm_first`, `norm_2` before attention and `norm_1`
/// before the feed-forward block (pre-LN); otherwise `norm_1` and `norm_2` after them (post-LN).
fn encoder_layer(layer: &TransformerEncoderLayer, eps: f64, x: Tensor<3>) -> Tensor<3> {
    let attention_in = if layer.norm_first { layer_norm(&layer.norm_2, eps, x.clone()) } else { x.clone() };
    let mha = &layer.mha;
    let mut x = if mha.quiet_softmax {
        x + dropout(&layer.dropout, mha.forward(MhaInput::self_attn(attention_in)).context)
    } else {
        let context = attention_heads([&mha.query, &mha.key, &mha.value], &mha.dropout, mha.n_heads, attention_in, None);
        residual_linear(x, &layer.dropout, &mha.output, context)
    };
    let ff_in = if layer.norm_first {
        layer_norm(&layer.norm_1, eps, x.clone())
    } else {
        x = layer_norm(&layer.norm_1, eps, x);
        x.clone()
    };
    let x = residual_linear(x, &layer.dropout, &layer.pwff.linear_outer, feed_forward_hidden(&layer.pwff, ff_in));
    if layer.norm_first { x } else { layer_norm(&layer.norm_2, eps, x) }
}

/// Multi-head self-attention before its output projection: `x` projected to q, k and v by
/// one product against the three weights side by side, then [`attention`]. The core shared
/// by BERT's attention and burn's (the ViT's).
///
/// # Shapes
/// - `x`: `[batch, seq, hidden]`, `key_bias`: `[batch, seq]`
/// - output: `[batch, seq, hidden]`, the heads concatenated
pub fn attention_heads(projections: [&Linear; 3], probs_dropout: &Dropout, heads: usize, x: Tensor<3>, key_bias: Option<Tensor<2>>) -> Tensor<3> {
    let device = x.device();
    let weight = Tensor::cat(projections.iter().map(|p| p.weight.val()).collect(), 1);
    let bias = projections.iter().map(|p| p.bias.as_ref().map_or_else(|| Tensor::zeros([p.weight.dims()[1]], &device), |b| b.val()));
    let qkv = affine(x, weight, Tensor::cat(bias.collect(), 0), WeightLayout::InOut);
    attention(qkv, heads, key_bias, probs_dropout)
}

/// Scaled dot-product attention per head (Vaswani et al. 2017, §3.2.1) on packed
/// projections: `softmax(Q_h·K_hᵀ / √d + key_bias[b])` (an additive mask on every query row
/// of batch item `b`), `probs_dropout` on the probabilities, times `V_h`. Each row of `qkv` is
/// `[q | k | v]`; head `h` is the column block `h·d .. (h+1)·d` of each part, `d = hidden /
/// heads`. On flex one operation forward and backward on that layout, without splitting the
/// heads out or keeping the scores (`cpu/attention.rs`).
///
/// # Shapes
/// - `qkv`: `[batch, seq, 3·hidden]`, `key_bias`: `[batch, seq]`
/// - output: `[batch, seq, hidden]`, the heads concatenated
pub fn attention(qkv: Tensor<3>, heads: usize, key_bias: Option<Tensor<2>>, probs_dropout: &Dropout) -> Tensor<3> {
    let [b, t, width] = qkv.dims();
    let h = width / 3;
    let dim = h / heads.max(1);
    let scale = 1.0 / (dim.max(1) as f64).sqrt();
    let device = qkv.device();
    if is_flex(&device) && dim * heads == h && h * 3 == width {
        let key_bias = key_bias.map(|bias| bias.into_data().iter::<f32>().collect());
        let dropout = DropoutMask::draw(probs_dropout, &device);
        return Tensor::from_dispatch(<Dispatch as FastOps>::attention_packed(qkv.into_dispatch(), heads, scale as f32, key_bias, dropout));
    }
    let split = |part: usize| qkv.clone().slice([0..b, 0..t, part * h..(part + 1) * h]).reshape([b, t, heads, dim]).swap_dims(1, 2); // (B, heads, T, d)
    let mut scores = split(0).matmul(split(1).transpose()) * scale;
    if let Some(bias) = key_bias {
        scores = scores + bias.reshape([b, 1, 1, t]);
    }
    let probs = dropout(probs_dropout, softmax(scores));
    probs.matmul(split(2)).swap_dims(1, 2).reshape([b, t, h])
}

/// One AdamW step (Loshchilov & Hutter 2019, Algorithm 2) with the arithmetic of burn's
/// `AdamW`: from a parameter, its gradient and the previous moments (`None` at the first
/// step, `step.time == 1`), the new parameter and first and second moments. On flex one
/// parallel pass writing all three, the same bits as burn's (`cpu/adamw.rs`); elsewhere
/// burn's `AdamW` itself.
///
/// # Shapes
/// - every tensor, in and out: the parameter's
pub fn adamw_step<const D: usize>(param: Tensor<D>, grad: Tensor<D>, moments: Option<(Tensor<D>, Tensor<D>)>, step: AdamWStep) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    if is_flex(&param.device()) {
        let (m, v) = moments.unwrap_or_else(|| (grad.clone(), grad.clone()));
        let (p, m, v) = <Dispatch as FastOps>::adamw_step(param.into_dispatch(), grad.into_dispatch(), m.into_dispatch(), v.into_dispatch(), step);
        return (Tensor::from_dispatch(p), Tensor::from_dispatch(m), Tensor::from_dispatch(v));
    }
    let adamw = AdamWConfig::new().with_beta_1(step.beta_1).with_beta_2(step.beta_2).with_epsilon(step.epsilon).with_weight_decay(step.weight_decay).build();
    let state = moments.map(|(m, v)| AdamWState::new(AdaptiveMomentumState::new(step.time.saturating_sub(1), m, v)));
    let (p, state) = Optimizer::step(&adamw, step.lr, param, grad.clone(), state);
    match state {
        Some(AdamWState { momentum }) => (p, momentum.moment_1, momentum.moment_2),
        None => (p, grad.zeros_like(), grad.zeros_like()),
    }
}

/// Rows of `x` picked per example: `out[b, j] = x[b, index[b, j]]`. On flex one operation
/// whose backward adds each picked row's gradient into its source row (burn's gather and
/// `scatter_add` compute a source index per element, with divisions); there an index out of
/// range gives a row of NaN.
///
/// # Shapes
/// - `x`: `[batch, n, dim]`, `index`: `[batch, k]`, output: `[batch, k, dim]`
pub fn gather_rows(x: Tensor<3>, index: Tensor<2, Int>) -> Tensor<3> {
    let [b, k] = index.dims();
    let [_, _, d] = x.dims();
    if is_flex(&x.device()) {
        let index = host_indices(index);
        return Tensor::from_dispatch(<Dispatch as FastOps>::gather_rows(x.into_dispatch(), index, k));
    }
    x.gather(1, index.reshape([b, k, 1]).expand([b, k, d]))
}

/// The hidden layer of a position-wise feed-forward block: its inner Linear, activation and
/// dropout (the outer Linear is [`residual_linear`]'s).
fn feed_forward_hidden(ff: &PositionWiseFeedForward, x: Tensor<3>) -> Tensor<3> {
    let h = linear(&ff.linear_inner, x);
    let h = match &ff.activation {
        Activation::Gelu(g) if !g.approximate => gelu(h),
        other => other.forward(h),
    };
    dropout(&ff.dropout, h)
}
