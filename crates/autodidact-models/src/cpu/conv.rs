//! 2-D convolution (groups = 1) on NCHW `f32` images, one image at a time.
//!
//! Each image's im2col columns (`[in·kh·kw, pixels]`, a few hundred KB for the small-image
//! ResNet) are built in a buffer that stays in the core's cache and is reused for the next
//! image; one single-threaded GEMM per image then gives that image's output (or gradient)
//! directly in NCHW, with images spread over the cores. burn's flex convolution instead
//! builds the columns of the whole batch, runs one large GEMM and transposes the result
//! between NCHW and NHWC, and its input gradient is a scalar transposed convolution.
//!
//! - forward: `Y[n] = W · cols(X[n])`
//! - weight gradient: `dW = Σₙ dY[n] · cols(X[n])ᵀ`
//! - input gradient: `dX[n] = col2im(Wᵀ · dY[n])`
//!
//! Where feature maps are small (fewer than `MIN_PRODUCT_PIXELS` output pixels), several
//! images' columns sit side by side in one product instead, so the weight is packed (and
//! the weight gradient read and written) once per product rather than once per image.
//!
//! In a stride-1 convolution whose output rows are as wide as its input rows, a kernel tap's
//! columns are the channel's plane shifted by a constant: im2col and col2im then move one
//! block per tap instead of one short row at a time.

use burn::backend::flex::FlexTensor;
use burn::backend::ops::ConvOptions;
use burn::backend::TensorMetadata;
use burn::tensor::TensorData;
use rayon::prelude::*;

use super::gemm::{Matrix, Threads, gemm};
use super::{par_new_with, slice_of};

/// Images are split into this many groups for the weight gradient, each summed on one thread.
const WEIGHT_GRADIENT_GROUPS: usize = 16;
/// Where feature maps are small, several images share one matrix product (their columns
/// side by side) until it spans this many output pixels: the operand that does not depend on
/// the image (the weight, or the weight gradient accumulator) is then packed or read and
/// written once per product instead of once per image.
const MIN_PRODUCT_PIXELS: usize = 256;
/// Forward and input-gradient products hold at most `batch / MIN_PRODUCTS_PER_BATCH`
/// images, so that every core gets several products.
const MIN_PRODUCTS_PER_BATCH: usize = 8;

/// Shape of one convolution: input `[batch, ci, h, w]`, weight `[co, ci, kh, kw]`, output
/// `[batch, co, ho, wo]`.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    ci: usize,
    h: usize,
    w: usize,
    co: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    stride: [usize; 2],
    dilation: [usize; 2],
    /// Padding before the first row and column (the padding after only sets `ho`, `wo`).
    pad: [usize; 2],
}

impl Geometry {
    /// `None` for grouped convolutions, mismatched channels, empty images or kernels, or an
    /// empty output (burn's own convolution handles or reports those).
    fn new(x: [usize; 4], weight: [usize; 4], options: &ConvOptions<2>) -> Option<Self> {
        let [batch, ci, h, w] = x;
        let [co, weight_ci, kh, kw] = weight;
        if options.groups != 1 || weight_ci != ci || [ci, h, w, co, kh, kw].contains(&0) {
            return None;
        }
        let out = |size: usize, k: usize, axis: usize| {
            let (stride, dilation) = (options.stride[axis], options.dilation[axis]);
            let padded = size + options.padding[axis].0 + options.padding[axis].1;
            let span = dilation * (k - 1) + 1;
            (stride > 0 && padded >= span).then(|| (padded - span) / stride + 1)
        };
        let (ho, wo) = (out(h, kh, 0)?, out(w, kw, 1)?);
        Some(Self { batch, ci, h, w, co, kh, kw, ho, wo, stride: options.stride, dilation: options.dilation, pad: [options.padding[0].0, options.padding[1].0] })
    }

    fn kdim(&self) -> usize {
        self.ci * self.kh * self.kw
    }

    fn pixels(&self) -> usize {
        self.ho * self.wo
    }

    fn image_len(&self) -> usize {
        self.ci * self.h * self.w
    }

    /// Images per matrix product: enough that a product spans at least
    /// `MIN_PRODUCT_PIXELS` output pixels, at most `limit`.
    fn images_per_product(&self, limit: usize) -> usize {
        (MIN_PRODUCT_PIXELS / self.pixels()).clamp(1, limit.max(1))
    }

    /// Per-thread buffers for products over up to `per` images: their columns, and their
    /// output (or output-gradient) rows side by side (empty when `per` is 1).
    fn product_buffers(&self, per: usize) -> (Vec<f32>, Vec<f32>) {
        (vec![0.0f32; self.kdim() * self.pixels() * per], vec![0.0f32; if per > 1 { self.co * self.pixels() * per } else { 0 }])
    }

    /// The columns of consecutive `images` side by side in `cols` (rows `depth` apart);
    /// returns `depth`, their pixels in all.
    fn im2col_images(&self, images: &[f32], cols: &mut [f32]) -> usize {
        let depth = images.len() / self.image_len() * self.pixels();
        for (j, image) in images.chunks_exact(self.image_len()).enumerate() {
            self.im2col(image, &mut cols[j * self.pixels()..], depth);
        }
        depth
    }

    /// Output-gradient rows `[co, pixels]` of consecutive images as one `[co, depth]`
    /// matrix: `dy` itself for one image, else joined in `joined`.
    fn joined_outputs<'a>(&self, dy: &'a [f32], joined: &'a mut [f32]) -> &'a [f32] {
        if dy.len() == self.co * self.pixels() {
            return dy;
        }
        join_rows(dy, self.co, self.pixels(), joined);
        &joined[..dy.len()]
    }

    /// For kernel tap `k` on `axis`: the output positions `lo..hi` whose input position
    /// `o·stride + k·dilation − pad` lies inside the image, and the input position of `lo`.
    fn valid(&self, axis: usize, k: usize) -> (usize, usize, usize) {
        let (size, out) = if axis == 0 { (self.h, self.ho) } else { (self.w, self.wo) };
        let (s, reach, pad) = (self.stride[axis], k * self.dilation[axis], self.pad[axis]);
        let lo = pad.saturating_sub(reach).div_ceil(s);
        let hi = if size + pad > reach { (size + pad - reach).div_ceil(s).min(out) } else { 0 };
        let lo = lo.min(hi);
        (lo, hi, (lo * s + reach).saturating_sub(pad))
    }

    /// The columns of one image: row `(c·kh + ky)·kw + kx`, column `oy·wo + ox` holds the
    /// input pixel under that tap (zero in the padding). Row `r` starts at `cols[r·ld]`
    /// (`ld ≥ pixels`); the `pixels` entries of every row are overwritten, nothing else.
    fn im2col(&self, image: &[f32], cols: &mut [f32], ld: usize) {
        let (pixels, wo) = (self.pixels(), self.wo);
        let sx = self.stride[1];
        for c in 0..self.ci {
            let plane = &image[c * self.h * self.w..][..self.h * self.w];
            for ky in 0..self.kh {
                let (y0, y1, iy0) = self.valid(0, ky);
                for kx in 0..self.kw {
                    let (x0, x1, ix0) = self.valid(1, kx);
                    let row = &mut cols[((c * self.kh + ky) * self.kw + kx) * ld..][..pixels];
                    row[..y0 * wo].fill(0.0);
                    row[y1 * wo..].fill(0.0);
                    if let Some(span) = self.flat_span((y0, y1, iy0), (x0, ix0)) {
                        // One block copy; the columns outside x0..x1 received pixels of the
                        // neighbouring rows (or nothing) and are padding.
                        let shift = span.shift;
                        row[span.lo..span.hi].copy_from_slice(&plane[span.lo.wrapping_add_signed(shift)..span.hi.wrapping_add_signed(shift)]);
                        self.zero_outside(&mut row[y0 * wo..y1 * wo], x0, x1);
                        continue;
                    }
                    for (i, out) in row[y0 * wo..y1 * wo].chunks_exact_mut(wo).enumerate() {
                        let src = &plane[(iy0 + i * self.stride[0]) * self.w..][..self.w];
                        out[..x0].fill(0.0);
                        out[x1..].fill(0.0);
                        if x0 == x1 {
                            continue;
                        }
                        if sx == 1 {
                            out[x0..x1].copy_from_slice(&src[ix0..ix0 + (x1 - x0)]);
                        } else {
                            for (o, &v) in out[x0..x1].iter_mut().zip(src[ix0..].iter().step_by(sx)) {
                                *o = v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// For a stride-1 convolution whose output rows are as wide as its input rows, output
    /// pixel `b = oy·wo + ox` of a tap reads input pixel `b + shift` of the channel's plane:
    /// the tap's valid rows `y0..y1` are one block, copied (or added) in one pass. `None` for
    /// other geometries. `lo..hi` is the part of the block whose source lies in the plane;
    /// the rest of the block is in the padding columns.
    fn flat_span(&self, (y0, y1, iy0): (usize, usize, usize), (x0, ix0): (usize, usize)) -> Option<FlatSpan> {
        if self.stride != [1, 1] || self.w != self.wo || y0 == y1 {
            return None;
        }
        let shift = (iy0 * self.w + ix0) as isize - (y0 * self.wo + x0) as isize;
        let plane = (self.h * self.w) as isize;
        let lo = ((y0 * self.wo) as isize).max(-shift);
        let hi = ((y1 * self.wo) as isize).min(plane - shift);
        Some(FlatSpan { lo: lo as usize, hi: (hi.max(lo)) as usize, shift })
    }

    /// Zeroes the columns outside `x0..x1` of each output row in `block`.
    fn zero_outside(&self, block: &mut [f32], x0: usize, x1: usize) {
        if x0 == 0 && x1 == self.wo {
            return;
        }
        // Column by column: the padding is a column or two per row, too short for `fill`'s
        // call into `memset` to pay off.
        for col in (0..x0).chain(x1..self.wo) {
            for v in block.iter_mut().skip(col).step_by(self.wo) {
                *v = 0.0;
            }
        }
    }

    /// The adjoint of [`Self::im2col`] (rows `ld` apart): adds every column entry to the
    /// input pixel it was taken from. Entries in the padding are zeroed in `cols` on the way.
    fn col2im_add(&self, cols: &mut [f32], ld: usize, image: &mut [f32]) {
        let (pixels, wo) = (self.pixels(), self.wo);
        let sx = self.stride[1];
        for c in 0..self.ci {
            let plane = &mut image[c * self.h * self.w..][..self.h * self.w];
            for ky in 0..self.kh {
                let (y0, y1, iy0) = self.valid(0, ky);
                for kx in 0..self.kw {
                    let (x0, x1, ix0) = self.valid(1, kx);
                    let row = &mut cols[((c * self.kh + ky) * self.kw + kx) * ld..][..pixels];
                    if let Some(span) = self.flat_span((y0, y1, iy0), (x0, ix0)) {
                        self.zero_outside(&mut row[y0 * wo..y1 * wo], x0, x1);
                        let shift = span.shift;
                        for (d, &v) in plane[span.lo.wrapping_add_signed(shift)..span.hi.wrapping_add_signed(shift)].iter_mut().zip(&row[span.lo..span.hi]) {
                            *d += v;
                        }
                        continue;
                    }
                    for (i, col) in row[y0 * wo..y1 * wo].chunks_exact(wo).enumerate() {
                        let dst = &mut plane[(iy0 + i * self.stride[0]) * self.w..][..self.w];
                        if x0 == x1 {
                            continue;
                        }
                        if sx == 1 {
                            for (d, &v) in dst[ix0..ix0 + (x1 - x0)].iter_mut().zip(&col[x0..x1]) {
                                *d += v;
                            }
                        } else {
                            for (d, &v) in dst[ix0..].iter_mut().step_by(sx).zip(&col[x0..x1]) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// See [`Geometry::flat_span`].
struct FlatSpan {
    lo: usize,
    hi: usize,
    shift: isize,
}

/// Row-major `[rows, width]` blocks, one per image, side by side as one `[rows, n·width]`
/// matrix in `joined`.
fn join_rows(blocks: &[f32], rows: usize, width: usize, joined: &mut [f32]) {
    let n = blocks.len() / (rows * width);
    for (j, block) in blocks.chunks_exact(rows * width).enumerate() {
        for (r, row) in block.chunks_exact(width).enumerate() {
            joined[(r * n + j) * width..][..width].copy_from_slice(row);
        }
    }
}

/// The inverse of [`join_rows`].
fn split_rows(joined: &[f32], rows: usize, width: usize, blocks: &mut [f32]) {
    let n = blocks.len() / (rows * width);
    for (j, block) in blocks.chunks_exact_mut(rows * width).enumerate() {
        for (r, row) in block.chunks_exact_mut(width).enumerate() {
            row.copy_from_slice(&joined[(r * n + j) * width..][..width]);
        }
    }
}

/// `t` with contiguous storage, or `None` unless it holds `f32` values.
fn contiguous(t: &FlexTensor) -> Option<FlexTensor> {
    let t = t.to_contiguous();
    t.as_slice::<f32>().is_some().then_some(t)
}

/// Geometry and contiguous `f32` operands, or `None` where this path does not apply.
fn prepare(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> Option<(Geometry, FlexTensor, FlexTensor)> {
    let g = Geometry::new(x.shape().dims::<4>(), weight.shape().dims::<4>(), options)?;
    Some((g, contiguous(x)?, contiguous(weight)?))
}

/// `conv2d(x, weight)` without bias, or `None` where this path does not apply (the caller
/// falls back to burn's).
pub(super) fn forward(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> Option<FlexTensor> {
    let (g, x, weight) = prepare(x, weight, options)?;
    let (xs, ws) = (slice_of(&x), slice_of(&weight));
    let (kdim, pixels) = (g.kdim(), g.pixels());
    let per = g.images_per_product(g.batch / MIN_PRODUCTS_PER_BATCH);
    let y = par_new_with(
        g.batch * g.co * pixels,
        per * g.co * pixels,
        || g.product_buffers(per),
        |(cols, joined), i, y| {
            let images = &xs[i * per * g.image_len()..][..y.len() / (g.co * pixels) * g.image_len()];
            let depth = g.im2col_images(images, cols);
            let (w, cols) = (Matrix::rows(ws, kdim), Matrix::rows(&cols[..kdim * depth], depth));
            if depth == pixels {
                gemm(y, (g.co, pixels, kdim), w, cols, false, Threads::One);
            } else {
                gemm(joined, (g.co, depth, kdim), w, cols, false, Threads::One);
                split_rows(&joined[..g.co * depth], g.co, pixels, y);
            }
        },
    );
    Some(FlexTensor::from_data(TensorData::new(y, [g.batch, g.co, g.ho, g.wo])))
}

/// Gradients of `conv2d(x, weight)` with respect to `x` and `weight` (each only if asked
/// for) from the output gradient `dy`; `None` where this path does not apply.
pub(super) fn backward(x: &FlexTensor, weight: &FlexTensor, dy: &FlexTensor, options: &ConvOptions<2>, want: [bool; 2]) -> Option<[Option<FlexTensor>; 2]> {
    let (g, x, weight) = prepare(x, weight, options)?;
    if dy.shape().dims::<4>() != [g.batch, g.co, g.ho, g.wo] {
        return None;
    }
    let dy = contiguous(dy)?;
    let (xs, ws, dys) = (slice_of(&x), slice_of(&weight), slice_of(&dy));
    let (kdim, pixels, image_len) = (g.kdim(), g.pixels(), g.image_len());
    let dx = want[0].then(|| {
        let per = g.images_per_product(g.batch / MIN_PRODUCTS_PER_BATCH);
        let dx = par_new_with(
            g.batch * image_len,
            per * image_len,
            || g.product_buffers(per),
            |(cols, joined), i, dx| {
                let depth = dx.len() / image_len * pixels;
                let dy = &dys[i * per * g.co * pixels..][..g.co * depth];
                let dy = g.joined_outputs(dy, joined);
                gemm(cols, (kdim, depth, g.co), Matrix::transposed(ws, kdim), Matrix::rows(dy, depth), false, Threads::One);
                for (j, dx) in dx.chunks_exact_mut(image_len).enumerate() {
                    g.col2im_add(&mut cols[j * pixels..], depth, dx);
                }
            },
        );
        FlexTensor::from_data(TensorData::new(dx, [g.batch, g.ci, g.h, g.w]))
    });
    let dw = want[1].then(|| {
        // Both factors are pixel-major, so the GEMM kernel (vectors along the output's
        // contiguous dimension) must first repack one of them transposed: the one with
        // fewer rows. With fewer output than input channels × taps (every 3×3 convolution
        // here) that is dY, and the sum is built as dWᵀ `[kdim, co]`, transposed once at the
        // end; repacking the columns instead cost more than the product itself.
        let transposed = g.co < kdim;
        // Fixed groups of images, summed in order: the same bits whatever the thread count.
        let per_group = g.batch.div_ceil(WEIGHT_GRADIENT_GROUPS).max(1);
        let per = g.images_per_product(per_group);
        let parts: Vec<Vec<f32>> = (0..g.batch.div_ceil(per_group))
            .into_par_iter()
            .map(|group| {
                let mut dw = vec![0.0f32; g.co * kdim];
                let (mut cols, mut joined) = g.product_buffers(per);
                let images = group * per_group..((group + 1) * per_group).min(g.batch);
                for first in images.clone().step_by(per) {
                    let product = first..(first + per).min(images.end);
                    let depth = g.im2col_images(&xs[product.start * image_len..product.end * image_len], &mut cols);
                    let dy = g.joined_outputs(&dys[product.start * g.co * pixels..product.end * g.co * pixels], &mut joined);
                    let cols = &cols[..kdim * depth];
                    if transposed {
                        gemm(&mut dw, (kdim, g.co, depth), Matrix::rows(cols, depth), Matrix::transposed(dy, depth), true, Threads::One);
                    } else {
                        gemm(&mut dw, (g.co, kdim, depth), Matrix::rows(dy, depth), Matrix::transposed(cols, depth), true, Threads::One);
                    }
                }
                dw
            })
            .collect();
        let mut parts = parts.into_iter();
        let mut sum = parts.next().unwrap_or_else(|| vec![0.0f32; g.co * kdim]);
        for part in parts {
            sum.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
        }
        let dw = if transposed { (0..g.co).flat_map(|o| sum.iter().skip(o).step_by(g.co).copied()).collect() } else { sum };
        FlexTensor::from_data(TensorData::new(dw, [g.co, g.ci, g.kh, g.kw]))
    });
    Some([dx, dw])
}
