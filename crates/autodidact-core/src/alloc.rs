//! Allocator tuning for training processes.
//!
//! A training step allocates and frees the same large tensor buffers (activations,
//! gradients, GEMM packing) over and over. glibc's malloc serves blocks above a dynamic
//! threshold with `mmap` and gives freed memory back to the kernel when the top of the heap
//! is free, so every step page-faults its buffers in again: on the MAE benchmark a fifth of
//! the time went to the kernel (`docs/BENCHMARKS.md`). Keeping freed memory in the process
//! removes that; peak RSS is what the step needs anyway.

/// Blocks at least this large would be mapped separately (and returned on free); glibc
/// caps the threshold at 32 MiB, so `M_MMAP_MAX = 0` below keeps larger blocks in the heap too.
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of the heap is returned to the kernel only above this.
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Makes glibc malloc keep freed memory for reuse instead of returning it to the kernel
/// after every step. Call once at the start of `main`, before threads start. A no-op on other
/// C libraries and platforms (their allocators behave differently; none was measured).
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` only sets allocator tunables; the values are in range, and it is
    // called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
