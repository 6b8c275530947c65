//! Cross-entropy of rows of logits against integer labels, with label smoothing, forward
//! and backward in one parallel pass each.
//!
//! burn records `log_softmax` and the gather as a chain of operations (max, subtract, `exp`
//! through libm element by element, sum, log, subtract, gather) and differentiates each; on
//! MLM's vocabulary projection (hundreds of rows × 8192 classes) that chain took a seventh of
//! the step. Here, with `ε` the smoothing, `V` the classes and `lseᵢ = log Σⱼ exp xᵢⱼ`:
//!
//! - forward: `ℓᵢ = lseᵢ − (1 − ε)·xᵢ,yᵢ − ε·meanⱼ xᵢⱼ` (the cross-entropy against
//!   `(1 − ε)·one_hot(yᵢ) + ε/V`)
//! - backward: `∂ℓᵢ/∂xᵢⱼ = exp(xᵢⱼ − lseᵢ) − ε/V − (1 − ε)·[j = yᵢ]`
//!
//! A label outside `0..V` makes its row's loss NaN (the trainer stops on a non-finite loss).

use burn::backend::flex::FlexTensor;
use burn::backend::TensorMetadata;
use burn::tensor::TensorData;
use rayon::prelude::*;

use super::{ELEMENTS_PER_TASK, chunk_of, exp, par_new, row_max, row_sums, slice_of, tensor_like, vectorized};

/// Rows per parallel task for rows of `cols` classes.
fn rows_per_task(cols: usize) -> usize {
    (ELEMENTS_PER_TASK / cols.max(1)).max(1)
}

/// Per-row losses `[rows]` and each row's log-sum-exp (kept for the backward pass).
pub(super) fn forward(x: &FlexTensor, labels: &[usize], smoothing: f32) -> (FlexTensor, Vec<f32>) {
    let x = x.to_contiguous();
    let [rows, cols] = x.shape().dims::<2>();
    let cols = cols.max(1);
    let xs = slice_of(&x);
    let per_task = rows_per_task(cols);
    let (mut loss, mut lse) = (vec![0.0f32; rows], vec![0.0f32; rows]);
    loss.par_chunks_mut(per_task).zip(lse.par_chunks_mut(per_task)).zip(xs.par_chunks(per_task * cols)).zip(labels.par_chunks(per_task)).for_each(|(((loss, lse), x), labels)| {
        vectorized(
            #[inline(always)]
            || {
                for (((loss, lse), x), &label) in loss.iter_mut().zip(lse.iter_mut()).zip(x.chunks(cols)).zip(labels) {
                    let max = row_max(x);
                    let [sum] = row_sums([x], |[v]| [exp(v - max)]);
                    *lse = max + sum.ln();
                    let [total] = if smoothing > 0.0 { row_sums([x], |[v]| [v]) } else { [0.0] };
                    let target = x.get(label).copied().unwrap_or(f32::NAN);
                    *loss = *lse - (1.0 - smoothing) * target - smoothing * total / cols as f32;
                }
            },
        )
    });
    (FlexTensor::from_data(TensorData::new(loss, [rows])), lse)
}

/// The gradient with respect to the logits, given the gradient `grad: [rows]` of the
/// per-row losses.
pub(super) fn backward(x: &FlexTensor, labels: &[usize], lse: &[f32], smoothing: f32, grad: &FlexTensor) -> FlexTensor {
    let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
    let cols = x.shape().dims::<2>()[1].max(1);
    let (xs, gs) = (slice_of(&x), slice_of(&grad));
    let per_task = rows_per_task(cols);
    let uniform = smoothing / cols as f32;
    let dx = par_new(xs.len(), per_task * cols, |i, dx| {
        let x = chunk_of(xs, i, per_task * cols, dx);
        let rows = i * per_task..i * per_task + dx.len() / cols;
        let (g, lse, labels) = (&gs[rows.clone()], &lse[rows.clone()], &labels[rows]);
        vectorized(
            #[inline(always)]
            || {
                for ((((dx, x), &g), &lse), &label) in dx.chunks_mut(cols).zip(x.chunks(cols)).zip(g).zip(lse).zip(labels) {
                    for (d, &v) in dx.iter_mut().zip(x) {
                        *d = g * (exp(v - lse) - uniform);
                    }
                    if let Some(d) = dx.get_mut(label) {
                        *d -= g * (1.0 - smoothing);
                    }
                }
            },
        )
    });
    tensor_like(dx, &x)
}
