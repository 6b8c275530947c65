//! Affine maps on rows, `y = x · W + b`, forward and backward as direct matrix products.
//!
//! burn records a Linear as a matmul and a broadcast add, and differentiates them as two
//! matmuls (each through a transposed view) and a sum over rows for the bias; on flex each
//! product's output is zero-filled and then copied into an aligned buffer on the calling
//! thread, which made that thread the bottleneck of transformer steps at two threads. Here
//! every output is written once: the forward's bias is added to each block of rows as the
//! product writes it (`gemm::product`), and the gradients are products into fresh memory.
//!
//! - forward: `Y = X · W + b`, or `Y = R + dropout(X · W + b)` with a residual `R`, the
//!   dropout and `R` applied as the product is written (`R`'s gradient is `dY` itself)
//! - input gradient: `dX = dY · Wᵀ`
//! - weight gradient: `dW = Xᵀ · dY` (`[in, out]`) or `dYᵀ · X` (`[out, in]`)
//! - bias gradient: `db = Σ_rows dY`

use burn::backend::flex::FlexTensor;
use burn::backend::TensorMetadata;
use burn::tensor::TensorData;
use rayon::prelude::*;

use super::gemm::{BlockMap, Epilogue, Matrix, Threads, product};
use super::{DropoutMask, ROWS_PER_TASK, add_in_order, slice_of, vectorized};

/// How an affine map's weight is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[in, out]`, as burn's `Linear`.
    InOut,
    /// `[out, in]`, as PyTorch's `nn.Linear` and an embedding table used as an output
    /// projection (BERT's tied MLM decoder).
    OutIn,
}

/// `(in, out)` of a weight stored as `layout`.
fn features(weight: &FlexTensor, layout: WeightLayout) -> (usize, usize) {
    let [a, b] = weight.shape().dims::<2>();
    match layout {
        WeightLayout::InOut => (a, b),
        WeightLayout::OutIn => (b, a),
    }
}

/// `W` as the `[in, out]` right operand of `X · W`.
fn weight_in_out(ws: &[f32], (d_in, d_out): (usize, usize), layout: WeightLayout) -> Matrix<'_> {
    match layout {
        WeightLayout::InOut => Matrix::rows(ws, d_out),
        WeightLayout::OutIn => Matrix::transposed(ws, d_in),
    }
}

/// `Wᵀ` as the `[out, in]` right operand of `dY · Wᵀ`.
fn weight_out_in(ws: &[f32], (d_in, d_out): (usize, usize), layout: WeightLayout) -> Matrix<'_> {
    match layout {
        WeightLayout::InOut => Matrix::transposed(ws, d_out),
        WeightLayout::OutIn => Matrix::rows(ws, d_in),
    }
}

/// `x · W + bias` for `x: [rows, in]`, `bias: [out]`; with `residual` (`[rows, out]`, and
/// a dropout mask), `residual + mask(x · W + bias)`, the mask and the residual applied as each
/// block of the product is written; output `[rows, out]`.
pub(super) fn forward(x: &FlexTensor, weight: &FlexTensor, bias: &FlexTensor, layout: WeightLayout, residual: Option<(&FlexTensor, Option<DropoutMask>)>) -> FlexTensor {
    let (x, weight, bias) = (x.to_contiguous(), weight.to_contiguous(), bias.to_contiguous());
    let (residual, mask) = residual.map_or((None, None), |(r, mask)| (Some(r.to_contiguous()), mask));
    let dims = features(&weight, layout);
    let (d_in, d_out) = dims;
    let xs = slice_of(&x);
    let rows = x.shape().dims::<2>()[0];
    let dropout = mask.map(|mask| move |first: usize, block: &mut [f32]| mask.apply_in_place(first as u64, block));
    let map = dropout.as_ref().map(|f| f as &BlockMap);
    let epilogue = Epilogue { row: Some(slice_of(&bias)), map, matrix: residual.as_ref().map(slice_of) };
    let y = product((rows, d_out, d_in), Matrix::rows(xs, d_in), weight_in_out(slice_of(&weight), dims, layout), epilogue, Threads::All);
    FlexTensor::from_data(TensorData::new(y, [rows, d_out]))
}

/// The gradients of [`forward`] with respect to `x`, the weight (in its stored layout) and
/// the bias, each where `wanted`.
pub(super) fn backward(x: &FlexTensor, weight: &FlexTensor, dy: &FlexTensor, layout: WeightLayout, wanted: [bool; 3]) -> [Option<FlexTensor>; 3] {
    let (x, weight, dy) = (x.to_contiguous(), weight.to_contiguous(), dy.to_contiguous());
    let dims = features(&weight, layout);
    let (d_in, d_out) = dims;
    let (xs, ws, dys) = (slice_of(&x), slice_of(&weight), slice_of(&dy));
    let rows = x.shape().dims::<2>()[0];
    let [want_x, want_w, want_b] = wanted;
    let dx = want_x.then(|| {
        let dx = product((rows, d_in, d_out), Matrix::rows(dys, d_out), weight_out_in(ws, dims, layout), Epilogue::default(), Threads::All);
        FlexTensor::from_data(TensorData::new(dx, [rows, d_in]))
    });
    let dw = want_w.then(|| {
        let dw = match layout {
            WeightLayout::InOut => product((d_in, d_out, rows), Matrix::transposed(xs, d_in), Matrix::rows(dys, d_out), Epilogue::default(), Threads::All),
            WeightLayout::OutIn => product((d_out, d_in, rows), Matrix::transposed(dys, d_out), Matrix::rows(xs, d_in), Epilogue::default(), Threads::All),
        };
        FlexTensor::from_data(TensorData::new(dw, weight.shape()))
    });
    let db = want_b.then(|| FlexTensor::from_data(TensorData::new(column_sums(dys, d_out), [d_out])));
    [dx, dw, db]
}

/// Sums over the rows of a row-major matrix with `cols` columns: partial sums per task of
/// `ROWS_PER_TASK` rows, then added in order.
fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    if cols == 0 {
        return Vec::new();
    }
    let partials: Vec<Vec<f32>> = m
        .par_chunks(cols * ROWS_PER_TASK)
        .map(|rows| {
            let mut sums = vec![0.0f32; cols];
            vectorized(#[inline(always)] || {
                for row in rows.chunks_exact(cols) {
                    sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
            });
            sums
        })
        .collect();
    add_in_order(partials, cols)
}
