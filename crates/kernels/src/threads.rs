//! Thread-pool set-up: one fixed-size global rayon pool, shared with candle.

/// Sets the thread budget for the whole process: exports `RAYON_NUM_THREADS = n` (read by
/// candle's CPU matmul on every call; unset, candle parses `/proc/cpuinfo` each time) and builds
/// the global rayon pool with `n` threads. Call once, early, before other threads are spawned
/// (setting an environment variable is not thread-safe) and before any rayon work.
/// Returns false if the global pool already existed (its size then cannot change).
pub fn init_threads(n: usize) -> bool {
    let n = n.max(1);
    // SAFETY: documented precondition: called at start-up, before other threads exist.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .is_ok()
}
