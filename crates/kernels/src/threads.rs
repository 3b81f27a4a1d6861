//! Thread-pool set-up: one fixed-size global rayon pool, shared with candle.

/// Sets the thread budget for the whole process: exports `RAYON_NUM_THREADS = n` (read by
/// candle's CPU matmul on every call; unset, candle parses `/proc/cpuinfo` each time) and builds
/// the global rayon pool with `n` threads. Call once, early, before other threads are spawned
/// (setting an environment variable is not thread-safe) and before any rayon work.
///
/// Also sets `CANDLE_NUM_THREADS = 1` (unless already set): that variable only sizes candle's
/// spinning "barrier pool" for element-wise ops (mostly the zeros + add of every gradient in
/// candle's backprop). Those ops are memory-bound, and a spinning pool worker competes with the
/// kernels' rayon threads for the cores; run inline, the DS-CNN training step got ~1.5× faster
/// on the shared 2-core machine (448/429/487 against 310/295/252 samples/s, alternating runs).
/// Returns false if the global pool already existed (its size then cannot change).
pub fn init_threads(n: usize) -> bool {
    let n = n.max(1);
    // SAFETY: documented precondition: called at start-up, before other threads exist.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: as above.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .is_ok()
}
