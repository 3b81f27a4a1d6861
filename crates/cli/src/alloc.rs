//! The allocator of the `whittle` binary (also included by `whittle-nn`'s model benchmark, so
//! it measures what users run): mimalloc, keeping freed memory committed.
//!
//! mimalloc keeps freed tensor buffers for reuse: with the system allocator every large tensor
//! is a fresh mmap whose pages fault in and get zeroed (measured: 20-25 % of a training step in
//! kernel time; DS-CNN inference 2.0k → 3.6k samples/s with mimalloc).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's C API (linked through the `mimalloc` crate's libmimalloc-sys, v3).
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}
/// `mi_option_purge_delay` in libmimalloc-sys 0.1.49's v3 `mi_option_t` (its `extended.rs`).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Keeps freed memory committed instead of returning it to the OS after mimalloc's default
/// 10 ms purge delay (`MIMALLOC_PURGE_DELAY=-1`). The activations of a training step are tens of
/// MB each, freed and re-allocated every step; purged, every re-allocation page-faults and
/// the kernel zeroes the pages again (`clear_page_erms` was ~20 % of MobileNetV2's training
/// profile, 60 k page faults per 10 steps; 750 with this). An `MIMALLOC_PURGE_DELAY` set in the
/// environment wins.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain C call setting an option; mimalloc reads it on every purge decision.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}
