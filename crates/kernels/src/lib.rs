//! whittle-kernels: fast, deterministic CPU training kernels for the reference tiny-ML models,
//! exposed as differentiable candle custom ops (f32, CPU).
//!
//! Call [`init_threads`] once at start-up, before any candle or kernel work: it fixes the rayon
//! pool size and sets `RAYON_NUM_THREADS`, without which candle 0.11.1 re-reads
//! `/proc/cpuinfo` on every matrix multiply.
//!
//! All kernels split the batch (or channels) into a partition that depends on the shapes only
//! and reduce partial sums in a fixed order, so outputs and gradients are bit-identical run to
//! run and for any thread count.

mod bn;
mod conv;
mod conv_gemm;
mod depthwise;
mod geom;
mod im2col;
mod relu;
mod simd;
mod threads;
mod util;

pub use bn::{batch_norm_relu_train, batch_norm_train};
pub use conv::{Conv1dCfg, Conv2dCfg, conv1d, conv2d};
pub use relu::{global_avg_pool, relu};
pub use threads::init_threads;

/// Internals exposed for the benchmark's calibration only (not a stable API).
#[doc(hidden)]
pub mod bench_support {
    pub use crate::util::matmul;
}
