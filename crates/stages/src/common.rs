//! Small helpers shared by stage kinds: where downloads live, running work in a thread pool
//! sized to the node's thread budget.

use std::path::PathBuf;
use whittle_engine::RunContext;

/// Folder for downloaded archives, shared by all nodes of a cache (so a data set is never
/// downloaded twice): `<cache>/downloads`, derived from the node's pending output folder
/// `<cache>/pending/<key>/out`.
pub fn downloads_dir(ctx: &RunContext) -> PathBuf {
    ctx.out_dir
        .ancestors()
        .nth(3)
        .map(|c| c.join("downloads"))
        .unwrap_or_else(|| ctx.experiment_dir.join("downloads"))
}

/// Runs `f` inside a rayon pool with exactly `threads` threads, so a node never uses more
/// cores than the scheduler granted it.
pub fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
    {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}
