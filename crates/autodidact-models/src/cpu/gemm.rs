//! Matrix products on `f32` slices through the `gemm` crate (the kernels burn's flex runs),
//! for the kernels of this module: operands are strided views of slices, and a new product
//! is written straight into fresh memory. burn's flex instead zero-fills every product's
//! output and then copies it once more into a 16-byte aligned buffer, on the calling thread.

use rayon::prelude::*;

use super::vectorized;

/// A matrix in a slice: element `(r, c)` at `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub(super) struct Matrix<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> Matrix<'a> {
    /// Row-major with `cols` columns.
    pub(super) fn rows(data: &'a [f32], cols: usize) -> Self {
        Self { data, rs: cols, cs: 1 }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub(super) fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self { data, rs: 1, cs: cols }
    }

    /// The matrix without its first `rows` rows.
    fn skip_rows(self, rows: usize) -> Self {
        Self { data: &self.data[(rows * self.rs).min(self.data.len())..], ..self }
    }

    /// The matrix without its first `cols` columns.
    fn skip_cols(self, cols: usize) -> Self {
        Self { data: &self.data[(cols * self.cs).min(self.data.len())..], ..self }
    }

    fn holds(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// The threads one product runs on.
#[derive(Clone, Copy, Debug)]
pub(super) enum Threads {
    /// The calling thread (the caller parallelizes over several products).
    One,
    /// rayon's pool, where the product is large enough to pay for it.
    All,
}

/// Products below this many multiply-adds run on one thread even with [`Threads::All`]
/// (burn's flex uses the same bound).
const PARALLEL_MIN_MACS: usize = 192 * 192 * 192;

/// `dst = a · b` (or `dst += a · b` with `accumulate`), `dst` row-major `m × n`, `a` `m × k`,
/// `b` `k × n`.
pub(super) fn gemm(dst: &mut [f32], dims: (usize, usize, usize), a: Matrix<'_>, b: Matrix<'_>, accumulate: bool, threads: Threads) {
    gemm_scaled(dst, dims.1, dims, a, b, 1.0, accumulate, threads);
}

/// `dst = scale · a · b` (or `dst += scale · a · b` with `accumulate`), `dst` holding `m`
/// rows of `n` elements `dst_stride` apart, `a` `m × k`, `b` `k × n`.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_scaled(dst: &mut [f32], dst_stride: usize, (m, n, k): (usize, usize, usize), a: Matrix<'_>, b: Matrix<'_>, scale: f32, accumulate: bool, threads: Threads) {
    let dst_holds = m == 0 || n == 0 || (dst_stride >= n && (m - 1) * dst_stride + n <= dst.len());
    assert!(dst_holds && a.holds(m, k) && b.holds(k, n), "gemm operands out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(dst_stride).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: the assertion above keeps every element the kernel reads (`a`, `b`) or writes
    // (`dst`, `m` rows of `n` at `dst_stride`, rows not overlapping) inside its slice; `dst` is
    // borrowed mutably, so it does not alias `a` or `b`.
    unsafe {
        kernel(dst.as_mut_ptr(), dst_stride, (m, n, k), a, b, scale, accumulate, threads);
    }
}

/// What is done to a product as its output is written, in this order, each where given: a
/// row added to every row (a bias); a map rewriting each block of output in place (a dropout
/// mask), given the index of the block's first element; a whole `m × n` row-major matrix
/// added (a residual).
#[derive(Clone, Copy, Default)]
pub(super) struct Epilogue<'a> {
    pub(super) row: Option<&'a [f32]>,
    pub(super) map: Option<&'a BlockMap>,
    pub(super) matrix: Option<&'a [f32]>,
}

/// A map rewriting a block of output in place, given the index of its first element.
pub(super) type BlockMap = dyn Fn(usize, &mut [f32]) + Sync;

impl Epilogue<'_> {
    fn any(&self) -> bool {
        self.row.is_some() || self.map.is_some() || self.matrix.is_some()
    }
}

/// `a · b` as a new row-major `m × n` vector (`a` `m × k`, `b` `k × n`), then the `epilogue`'s
/// operations, `map(a·b + row) + matrix`; the kernel writes the memory, never zero-filled
/// first.
///
/// Large products run on rayon's pool with [`Threads::All`], in one of two ways:
/// - by blocks of rows, each a single-threaded product. The epilogue runs on a block's
///   rows right after the kernel wrote them, while the block is in cache
///   ([`BIAS_BLOCK_ELEMENTS`]), rather than in a pass over the whole output afterwards.
///   (Setting the rows to a bias first and having the kernel accumulate onto them measured
///   2–10% slower on MAE's products with a bias: the kernel then reads its output too);
/// - where the shared dimension is long beside the output (a weight gradient: a sum over
///   every row of a batch), by slices of that dimension, each product into its own
///   partial sum, added in order at the end. Split by rows, every task would repack the
///   whole of the other long operand. The slices depend only on the shape
///   ([`SPLIT_K_SLICE`]), so the sum's bits do not depend on the thread count.
pub(super) fn product((m, n, k): (usize, usize, usize), a: Matrix<'_>, b: Matrix<'_>, epilogue: Epilogue<'_>, threads: Threads) -> Vec<f32> {
    let fits = epilogue.row.is_none_or(|r| r.len() == n) && epilogue.matrix.is_none_or(|x| x.len() == m * n);
    assert!(a.holds(m, k) && b.holds(k, n) && fits, "gemm operands out of bounds");
    let len = m * n;
    if len == 0 {
        return Vec::new();
    }
    let parallel = matches!(threads, Threads::All) && m * n * k >= PARALLEL_MIN_MACS;
    let slices = k / SPLIT_K_SLICE;
    if parallel && !epilogue.any() && slices > 1 && k >= SPLIT_K_RATIO * (m + n) {
        return split_k((m, n, k), a, b, slices.min(MAX_SPLIT_K_SLICES));
    }
    let workers = if parallel { rayon::current_num_threads() } else { 1 };
    let mut rows = m.div_ceil((m / MIN_ROWS_PER_TASK).clamp(1, workers));
    if epilogue.any() {
        rows = rows.min((BIAS_BLOCK_ELEMENTS / n).max(MIN_ROWS_PER_TASK));
    }
    // One block: the kernel may use rayon itself (gemm's own split of a large product).
    let inner = if rows >= m { threads } else { Threads::One };
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(rows * n).enumerate().for_each(|(i, block)| {
        #[allow(unsafe_code)]
        // SAFETY: `block` holds whole rows of `out` (`n` elements each) that no other task
        // touches; the kernel writes every element and reads none (no `read_dst`), or with
        // `k == 0` the fill does. `a` (from this block's first row on) and `b` hold the
        // operands (asserted), and `out` is a fresh allocation, aliasing neither.
        let block = unsafe {
            if k == 0 {
                block.fill(std::mem::MaybeUninit::new(0.0));
            } else {
                kernel(block.as_mut_ptr().cast(), n, (block.len() / n, n, k), a.skip_rows(i * rows), b, 1.0, false, inner);
            }
            // Every element is initialized now, and `MaybeUninit<f32>` has the layout of `f32`.
            &mut *(std::ptr::from_mut(block) as *mut [f32])
        };
        if let Some(row) = epilogue.row {
            vectorized(#[inline(always)] || {
                for r in block.chunks_mut(n) {
                    r.iter_mut().zip(row).for_each(|(o, v)| *o += v);
                }
            });
        }
        if let Some(map) = epilogue.map {
            map(i * rows * n, block);
        }
        if let Some(matrix) = epilogue.matrix {
            let matrix = &matrix[i * rows * n..][..block.len()];
            vectorized(#[inline(always)] || block.iter_mut().zip(matrix).for_each(|(o, v)| *o += v));
        }
    });
    #[allow(unsafe_code)]
    // SAFETY: the blocks cover all `len` elements, and each was written by its task.
    unsafe {
        out.set_len(len);
    }
    out
}

/// [`product`] (without an epilogue) as the sum of the products over `slices` slices of the shared
/// dimension, in parallel; the partial sums are added in slice order.
fn split_k((m, n, k): (usize, usize, usize), a: Matrix<'_>, b: Matrix<'_>, slices: usize) -> Vec<f32> {
    let step = k.div_ceil(slices);
    let mut partials: Vec<Vec<f32>> = (0..k.div_ceil(step))
        .into_par_iter()
        .map(|s| {
            let start = s * step;
            product((m, n, step.min(k - start)), a.skip_cols(start), b.skip_rows(start), Epilogue::default(), Threads::One)
        })
        .collect();
    let rest = partials.split_off(1);
    let mut out = partials.pop().unwrap_or_else(|| vec![0.0; m * n]);
    out.par_chunks_mut(SUM_CHUNK).enumerate().for_each(|(i, o)| {
        for part in &rest {
            o.iter_mut().zip(&part[i * SUM_CHUNK..]).for_each(|(o, p)| *o += p);
        }
    });
    out
}

/// Fewest rows per thread when [`product`] splits a product by rows.
const MIN_ROWS_PER_TASK: usize = 64;
/// Elements of a block of output rows written by the kernel and then given the bias (256 KB):
/// small enough to stay in a core's L2 cache between the two.
const BIAS_BLOCK_ELEMENTS: usize = 1 << 16;
/// Length of the slices of the shared dimension in a split product ...
const SPLIT_K_SLICE: usize = 2048;
/// ... at most this many ...
const MAX_SPLIT_K_SLICES: usize = 16;
/// ... where the shared dimension is at least this many times the output's rows plus
/// columns.
const SPLIT_K_RATIO: usize = 4;
/// Elements per task when the partial sums are added.
const SUM_CHUNK: usize = 1 << 14;

/// `dst = scale · a · b`, or `dst += scale · a · b` with `read_dst`.
///
/// # Safety
/// `dst` must be valid for writes (and, with `read_dst`, reads) of `m` rows of `n` elements
/// `dst_stride` apart (`dst_stride ≥ n`) that alias neither operand; `a` and `b` must hold
/// `m × k` and `k × n`.
#[allow(unsafe_code, clippy::too_many_arguments)]
unsafe fn kernel(dst: *mut f32, dst_stride: usize, (m, n, k): (usize, usize, usize), a: Matrix<'_>, b: Matrix<'_>, scale: f32, read_dst: bool, threads: Threads) {
    let parallelism = match threads {
        Threads::All if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_MACS => gemm::Parallelism::Rayon(0),
        _ => gemm::Parallelism::None,
    };
    let stride = |s: usize| s as isize;
    // SAFETY: as this function's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            stride(dst_stride),
            read_dst,
            a.data.as_ptr(),
            stride(a.cs),
            stride(a.rs),
            b.data.as_ptr(),
            stride(b.cs),
            stride(b.rs),
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}
