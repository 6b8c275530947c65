//! The two batched products of multi-head attention, per (batch item, head), on the
//! `[batch, seq, hidden]` layout the projections produce: head `h` is the column block
//! `h·d .. (h+1)·d` of each row, read and written in place with a row stride of `hidden`.
//!
//! burn splits the heads out with `swap_dims` (a copy of q, k and v, and of the context
//! back), and runs each batched product through flex's matmul, which zero-fills its output
//! and copies it again into an aligned buffer on the calling thread; the backward pass does
//! the same for four more products over transposed views. Here, with `S = scale · Q·Kᵀ (+
//! key bias)` and `O = P·V` per head:
//!
//! - scores backward: `dQ = scale · dS·K`, `dK = scale · dSᵀ·Q`
//! - context backward: `dP = dO·Vᵀ`, `dV = Pᵀ·dO`

use burn::backend::flex::FlexTensor;
use burn::backend::TensorMetadata;
use burn::tensor::TensorData;

use super::gemm::{Matrix, Threads, gemm_scaled};
use super::{par_new, slice_of};

/// Batch, sequence length, hidden size, heads and head size of a `[batch, seq, hidden]`
/// tensor split into `heads`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Heads {
    batch: usize,
    seq: usize,
    hidden: usize,
    heads: usize,
    dim: usize,
}

impl Heads {
    pub(super) fn of(x: &FlexTensor, heads: usize) -> Self {
        let [batch, seq, hidden] = x.shape().dims::<3>();
        let heads = heads.max(1);
        Self { batch, seq, hidden, heads, dim: hidden / heads }
    }

    /// Head `h` of batch item `b`'s rows (`seq × hidden`) as a `seq × dim` matrix.
    fn rows<'a>(&self, item: &'a [f32], h: usize) -> Matrix<'a> {
        Matrix::rows(&item[h * self.dim..], self.hidden)
    }

    /// The transpose of [`Heads::rows`], `dim × seq`.
    fn transposed<'a>(&self, item: &'a [f32], h: usize) -> Matrix<'a> {
        Matrix::transposed(&item[h * self.dim..], self.hidden)
    }

    fn item_len(&self) -> usize {
        self.seq * self.hidden
    }

    fn scores_len(&self) -> usize {
        self.seq * self.seq
    }

    /// For each batch item in parallel, `write(b, item)` into that item's `seq × hidden` block
    /// of a new `[batch, seq, hidden]` tensor.
    fn per_item(&self, write: impl Fn(usize, &mut [f32]) + Sync) -> FlexTensor {
        let out = par_new(self.batch * self.item_len(), self.item_len(), write);
        FlexTensor::from_data(TensorData::new(out, [self.batch, self.seq, self.hidden]))
    }

    /// For each (batch item, head) in parallel, `write(b, h, block)` into its `seq × seq`
    /// block of a new `[batch, heads, seq, seq]` tensor.
    fn per_head(&self, write: impl Fn(usize, usize, &mut [f32]) + Sync) -> FlexTensor {
        let out = par_new(self.batch * self.heads * self.scores_len(), self.scores_len(), |i, block| write(i / self.heads, i % self.heads, block));
        FlexTensor::from_data(TensorData::new(out, [self.batch, self.heads, self.seq, self.seq]))
    }
}

/// `scale · Q·Kᵀ` per head, plus `key_bias[b, j]` on every query row of batch item `b` where
/// given; `q`, `k`: `[batch, seq, hidden]`, output `[batch, heads, seq, seq]`.
pub(super) fn scores(q: &FlexTensor, k: &FlexTensor, heads: usize, scale: f32, key_bias: Option<&[f32]>) -> FlexTensor {
    let (q, k) = (q.to_contiguous(), k.to_contiguous());
    let shape = Heads::of(&q, heads);
    let (qs, ks) = (slice_of(&q), slice_of(&k));
    let (t, len) = (shape.seq, shape.item_len());
    shape.per_head(|b, h, block| {
        let bias = key_bias.map(|bias| &bias[b * t..(b + 1) * t]);
        if let Some(bias) = bias {
            block.chunks_mut(t).for_each(|row| row.copy_from_slice(bias));
        }
        let (qb, kb) = (&qs[b * len..(b + 1) * len], &ks[b * len..(b + 1) * len]);
        gemm_scaled(block, t, (t, t, shape.dim), shape.rows(qb, h), shape.transposed(kb, h), scale, bias.is_some(), Threads::One);
    })
}

/// The gradients of [`scores`] with respect to `q` and `k`, given `ds` (`[batch, heads, seq,
/// seq]`), each where `wanted`.
pub(super) fn scores_backward(q: &FlexTensor, k: &FlexTensor, ds: &FlexTensor, heads: usize, scale: f32, wanted: [bool; 2]) -> [Option<FlexTensor>; 2] {
    let (q, k, ds) = (q.to_contiguous(), k.to_contiguous(), ds.to_contiguous());
    let shape = Heads::of(&q, heads);
    let (qs, ks, dss) = (slice_of(&q), slice_of(&k), slice_of(&ds));
    let (t, len, block) = (shape.seq, shape.item_len(), shape.scores_len());
    let ds_of = |b: usize, h: usize| &dss[(b * shape.heads + h) * block..][..block];
    // dQ = scale · dS·K (uses K), dK = scale · dSᵀ·Q (uses Q)
    let grad = |other: &[f32], transpose_ds: bool| {
        shape.per_item(|b, out| {
            let ob = &other[b * len..(b + 1) * len];
            for h in 0..shape.heads {
                let ds = if transpose_ds { Matrix::transposed(ds_of(b, h), t) } else { Matrix::rows(ds_of(b, h), t) };
                gemm_scaled(&mut out[h * shape.dim..], shape.hidden, (t, shape.dim, t), ds, shape.rows(ob, h), scale, false, Threads::One);
            }
        })
    };
    let [want_q, want_k] = wanted;
    [want_q.then(|| grad(ks, false)), want_k.then(|| grad(qs, true))]
}

/// `P·V` per head, heads side by side: `p`: `[batch, heads, seq, seq]`, `v`: `[batch, seq,
/// hidden]`, output `[batch, seq, hidden]`.
pub(super) fn context(p: &FlexTensor, v: &FlexTensor, heads: usize) -> FlexTensor {
    let (p, v) = (p.to_contiguous(), v.to_contiguous());
    let shape = Heads::of(&v, heads);
    let (ps, vs) = (slice_of(&p), slice_of(&v));
    let (t, len, block) = (shape.seq, shape.item_len(), shape.scores_len());
    shape.per_item(|b, out| {
        let vb = &vs[b * len..(b + 1) * len];
        for h in 0..shape.heads {
            let pb = &ps[(b * shape.heads + h) * block..][..block];
            gemm_scaled(&mut out[h * shape.dim..], shape.hidden, (t, shape.dim, t), Matrix::rows(pb, t), shape.rows(vb, h), 1.0, false, Threads::One);
        }
    })
}

/// The gradients of [`context`] with respect to `p` and `v`, given `dout` (`[batch, seq,
/// hidden]`), each where `wanted`.
pub(super) fn context_backward(p: &FlexTensor, v: &FlexTensor, dout: &FlexTensor, heads: usize, wanted: [bool; 2]) -> [Option<FlexTensor>; 2] {
    let (p, v, dout) = (p.to_contiguous(), v.to_contiguous(), dout.to_contiguous());
    let shape = Heads::of(&v, heads);
    let (ps, vs, ds) = (slice_of(&p), slice_of(&v), slice_of(&dout));
    let (t, len, block) = (shape.seq, shape.item_len(), shape.scores_len());
    let [want_p, want_v] = wanted;
    // dP = dO·Vᵀ
    let dp = want_p.then(|| {
        shape.per_head(|b, h, out| {
            let (db, vb) = (&ds[b * len..(b + 1) * len], &vs[b * len..(b + 1) * len]);
            gemm_scaled(out, t, (t, t, shape.dim), shape.rows(db, h), shape.transposed(vb, h), 1.0, false, Threads::One);
        })
    });
    // dV = Pᵀ·dO
    let dv = want_v.then(|| {
        shape.per_item(|b, out| {
            let db = &ds[b * len..(b + 1) * len];
            for h in 0..shape.heads {
                let pb = &ps[(b * shape.heads + h) * block..][..block];
                gemm_scaled(&mut out[h * shape.dim..], shape.hidden, (t, shape.dim, t), Matrix::transposed(pb, t), shape.rows(db, h), 1.0, false, Threads::One);
            }
        })
    });
    [dp, dv]
}
