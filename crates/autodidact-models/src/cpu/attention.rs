//! Multi-head attention as one operation on the packed projections: `qkv` `[batch, seq,
//! 3·hidden]`, each row `[q | k | v]` (one product against the three projection weights side
//! by side), head `h` the column block `h·d .. (h+1)·d` of each part, read and written in
//! place with a row stride of `3·hidden`.
//!
//! burn splits the heads out with `swap_dims` (a copy of q, k and v, and of the context
//! back), runs each batched product through flex's matmul (a zero-filled output, copied again
//! into an aligned buffer on the calling thread) and records scores, softmax, dropout and
//! context as four operations, each with a `[batch, heads, seq, seq]` output. Here the
//! forward pass keeps only the probabilities, and the backward pass runs per batch item on
//! per-thread scratch blocks that stay in cache. With `S = scale · Q·Kᵀ (+ key bias)`, `P =
//! softmax(S)`, `P' = dropout(P)` and `O = P'·V` per head:
//!
//! - `dV = P'ᵀ·dO`, `dP' = dO·Vᵀ`, `dP = dropout(dP')` (the same mask)
//! - `dS = P ⊙ (dP − rowsum(dP ⊙ P))`
//! - `dQ = scale · dS·K`, `dK = scale · dSᵀ·Q`

use burn::backend::flex::FlexTensor;
use burn::backend::TensorMetadata;
use burn::tensor::TensorData;

use super::gemm::{Matrix, Threads, gemm_scaled};
use super::{DropoutMask, par_new_with, slice_of, softmax_grad_rows, softmax_rows};

/// The parts of a packed row, in order.
#[derive(Clone, Copy, Debug)]
enum Part {
    Q = 0,
    K = 1,
    V = 2,
}

/// Batch, sequence length, hidden size (of one part), heads and head size of a packed
/// `[batch, seq, 3·hidden]` tensor.
#[derive(Clone, Copy, Debug)]
struct Packed {
    batch: usize,
    seq: usize,
    hidden: usize,
    heads: usize,
    dim: usize,
}

impl Packed {
    fn of(qkv: &FlexTensor, heads: usize) -> Self {
        let [batch, seq, width] = qkv.shape().dims::<3>();
        let (hidden, heads) = (width / 3, heads.max(1));
        Self { batch, seq, hidden, heads, dim: hidden / heads }
    }

    /// Elements between two rows of the packed tensor.
    fn stride(&self) -> usize {
        3 * self.hidden
    }

    /// Elements per batch item of the packed tensor.
    fn item_len(&self) -> usize {
        self.seq * self.stride()
    }

    /// Elements per batch item of the context (`[seq, hidden]`).
    fn context_len(&self) -> usize {
        self.seq * self.hidden
    }

    /// Elements of one head's `seq × seq` probabilities.
    fn block_len(&self) -> usize {
        self.seq * self.seq
    }

    /// Where head `h` of `part` starts in a packed row.
    fn offset(&self, part: Part, h: usize) -> usize {
        part as usize * self.hidden + h * self.dim
    }

    /// Head `h` of `part` in a packed item (`seq × 3·hidden`) as a `seq × dim` matrix.
    fn rows<'a>(&self, item: &'a [f32], part: Part, h: usize) -> Matrix<'a> {
        Matrix::rows(&item[self.offset(part, h)..], self.stride())
    }

    /// The transpose of [`Packed::rows`], `dim × seq`.
    fn transposed<'a>(&self, item: &'a [f32], part: Part, h: usize) -> Matrix<'a> {
        Matrix::transposed(&item[self.offset(part, h)..], self.stride())
    }

    /// Head `h` of a context item (`seq × hidden`) as a `seq × dim` matrix.
    fn context_rows<'a>(&self, item: &'a [f32], h: usize) -> Matrix<'a> {
        Matrix::rows(&item[h * self.dim..], self.hidden)
    }

    /// The index of the first element of head `h` of item `b` in `[batch, heads, seq, seq]`:
    /// where the dropout mask of that block starts.
    fn block_start(&self, b: usize, h: usize) -> u64 {
        ((b * self.heads + h) * self.block_len()) as u64
    }
}

/// The context `O = dropout(softmax(S))·V` per head, heads side by side (`[batch, seq,
/// hidden]`), and the probabilities `softmax(S)` before dropout (`[batch, heads, seq, seq]`,
/// row-major), for `qkv` `[batch, seq, 3·hidden]`; `key_bias` `[batch · seq]` is added to
/// every query row of its batch item.
pub(super) fn forward(qkv: &FlexTensor, heads: usize, scale: f32, key_bias: Option<&[f32]>, dropout: Option<DropoutMask>) -> (FlexTensor, Vec<f32>) {
    let qkv = qkv.to_contiguous();
    let shape = Packed::of(&qkv, heads);
    let xs = slice_of(&qkv);
    let (t, len, block) = (shape.seq, shape.item_len(), shape.block_len());
    let probs = par_new_with(shape.batch * shape.heads * block, shape.heads * block, || vec![0.0; block], |scores, b, out| {
        let (item, bias) = (&xs[b * len..][..len], key_bias.map(|bias| &bias[b * t..][..t]));
        for (h, probs) in out.chunks_mut(block.max(1)).enumerate() {
            if let Some(bias) = bias {
                scores.chunks_mut(t).for_each(|row| row.copy_from_slice(bias));
            }
            gemm_scaled(scores, t, (t, t, shape.dim), shape.rows(item, Part::Q, h), shape.transposed(item, Part::K, h), scale, bias.is_some(), Threads::One);
            softmax_rows(scores, probs, t);
        }
    });
    let dropped_len = if dropout.is_some() { block } else { 0 };
    let context = par_new_with(shape.batch * shape.context_len(), shape.context_len(), || vec![0.0; dropped_len], |dropped, b, out| {
        let item = &xs[b * len..][..len];
        for h in 0..shape.heads {
            let p = &probs[(b * shape.heads + h) * block..][..block];
            let p = match dropout {
                Some(mask) => {
                    mask.apply_into(shape.block_start(b, h), p, dropped);
                    dropped.as_slice()
                }
                None => p,
            };
            gemm_scaled(&mut out[h * shape.dim..], shape.hidden, (t, shape.dim, t), Matrix::rows(p, t), shape.rows(item, Part::V, h), 1.0, false, Threads::One);
        }
    });
    (FlexTensor::from_data(TensorData::new(context, [shape.batch, shape.seq, shape.hidden])), probs)
}

/// The gradient of [`forward`]'s context with respect to `qkv`, given `dout` (`[batch, seq,
/// hidden]`) and the probabilities `forward` returned, as `[batch, seq, 3·hidden]`.
pub(super) fn backward(qkv: &FlexTensor, probs: &[f32], dout: &FlexTensor, heads: usize, scale: f32, dropout: Option<DropoutMask>) -> FlexTensor {
    let (qkv, dout) = (qkv.to_contiguous(), dout.to_contiguous());
    let shape = Packed::of(&qkv, heads);
    let (xs, ds) = (slice_of(&qkv), slice_of(&dout));
    let (t, len, block, stride) = (shape.seq, shape.item_len(), shape.block_len(), shape.stride());
    // Per worker: P' (then dP), dP', dS.
    let scratch = || [vec![0.0; block], vec![0.0; block], vec![0.0; block]];
    let grad = par_new_with(shape.batch * len, len, scratch, |[dropped, dp_dropped, ds_block], b, out| {
        let (item, dout) = (&xs[b * len..][..len], &ds[b * shape.context_len()..][..shape.context_len()]);
        for h in 0..shape.heads {
            let p = &probs[(b * shape.heads + h) * block..][..block];
            let first = shape.block_start(b, h);
            let p_used = match dropout {
                Some(mask) => {
                    mask.apply_into(first, p, dropped);
                    dropped.as_slice()
                }
                None => p,
            };
            let d_o = shape.context_rows(dout, h);
            // dV = P'ᵀ·dO
            gemm_scaled(&mut out[shape.offset(Part::V, h)..], stride, (t, shape.dim, t), Matrix::transposed(p_used, t), d_o, 1.0, false, Threads::One);
            // dP' = dO·Vᵀ, then dP through the same mask
            gemm_scaled(dp_dropped, t, (t, t, shape.dim), d_o, shape.transposed(item, Part::V, h), 1.0, false, Threads::One);
            let dp = match dropout {
                Some(mask) => {
                    mask.apply_into(first, dp_dropped, dropped);
                    dropped.as_slice()
                }
                None => dp_dropped.as_slice(),
            };
            softmax_grad_rows(p, dp, ds_block, t);
            // dQ = scale · dS·K, dK = scale · dSᵀ·Q
            gemm_scaled(&mut out[shape.offset(Part::Q, h)..], stride, (t, shape.dim, t), Matrix::rows(ds_block, t), shape.rows(item, Part::K, h), scale, false, Threads::One);
            gemm_scaled(&mut out[shape.offset(Part::K, h)..], stride, (t, shape.dim, t), Matrix::transposed(ds_block, t), shape.rows(item, Part::Q, h), scale, false, Threads::One);
        }
    });
    FlexTensor::from_data(TensorData::new(grad, [shape.batch, shape.seq, stride]))
}
