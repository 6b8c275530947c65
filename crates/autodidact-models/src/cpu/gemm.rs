//! Matrix products on `f32` slices through the `gemm` crate (the kernels burn's flex runs),
//! for the kernels of this module: operands are strided views of slices, and a new product
//! is written straight into fresh memory. burn's flex instead zero-fills every product's
//! output and then copies it once more into a 16-byte aligned buffer, on the calling thread.

use rayon::prelude::*;

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

/// `a · b` as a new row-major `m × n` vector (`a` `m × k`, `b` `k × n`), plus `row` added to
/// every row where given; the memory is written once (with `row`, or by the kernel), never
/// zero-filled first.
pub(super) fn product((m, n, k): (usize, usize, usize), a: Matrix<'_>, b: Matrix<'_>, row: Option<&[f32]>, threads: Threads) -> Vec<f32> {
    assert!(a.holds(m, k) && b.holds(k, n) && row.is_none_or(|r| r.len() == n), "gemm operands out of bounds");
    let len = m * n;
    if len == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(len);
    if let Some(row) = row {
        out.spare_capacity_mut()[..len].par_chunks_mut(n).for_each(|o| {
            for (o, &v) in o.iter_mut().zip(row) {
                o.write(v);
            }
        });
    } else if k == 0 {
        out.resize(len, 0.0);
        return out;
    }
    #[allow(unsafe_code)]
    // SAFETY: `out` has capacity for the `m × n` elements. With `row` all of them were
    // written above, and the kernel reads and updates them (`read_dst`); without it (then
    // k > 0) the kernel writes every one of them and reads none (`read_dst = false`). So all
    // `len` elements are initialized when the length is set. `a` and `b` are in bounds
    // (asserted), and `out` is a fresh allocation, aliasing neither.
    unsafe {
        let tasks = match threads {
            Threads::All if m * n * k >= PARALLEL_MIN_MACS => (m / MIN_ROWS_PER_TASK).clamp(1, rayon::current_num_threads()),
            _ => 1,
        };
        if k > 0 && tasks > 1 {
            // Row blocks on separate threads, each a single-threaded product: each block
            // writes (and with `row` reads) only its own rows.
            let rows = m.div_ceil(tasks);
            out.spare_capacity_mut()[..len].par_chunks_mut(rows * n).enumerate().for_each(|(i, block)| {
                kernel(block.as_mut_ptr().cast(), n, (block.len() / n, n, k), a.skip_rows(i * rows), b, 1.0, row.is_some(), Threads::One);
            });
        } else if k > 0 {
            kernel(out.as_mut_ptr(), n, (m, n, k), a, b, 1.0, row.is_some(), threads);
        }
        out.set_len(len);
    }
    out
}

/// Fewest rows per thread when [`product`] splits a product by rows.
const MIN_ROWS_PER_TASK: usize = 64;

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
