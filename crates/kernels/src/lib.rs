//! whittle-kernels: fast, deterministic CPU training kernels for the reference tiny-ML models,
//! exposed as differentiable candle custom ops (f32, CPU; other dtypes/devices are an error).
//!
//! - [`conv1d`], [`conv2d`]: on AVX-512 CPUs, direct ("implicit GEMM") microkernels over
//!   zero-padded planes shared between rows and samples (`direct`, `depthwise_direct`): every
//!   kernel tap is one offset into the padded input, so there is no im2col matrix and no GEMM
//!   packing; strided inputs are split into polyphase planes; the input gradient is a forward
//!   pass with the flipped kernel (unit stride) or one per polyphase component (strided); the
//!   weight gradient broadcasts inputs against 16 × 16-transposed output gradients. Elsewhere
//!   (or with `WHITTLE_KERNELS_NO_DIRECT=1`), the portable path: im2col + GEMM (`gemm` crate)
//!   for dense and grouped convolutions, direct loops on zero-padded planes for depthwise. Any
//!   stride, per-axis padding and dilation, groups; bias and ReLU / ReLU6 ([`Clamp`]) fused into
//!   the output pass.
//! - [`depthwise_pointwise`]: eval-only (no gradient) fusion of a depthwise convolution and the
//!   1×1 convolution reading its output, per sample through an in-cache scratch buffer;
//!   bit-identical to the two convolutions run one after the other.
//! - [`batch_norm_train`], [`batch_norm_relu_train`]: training-mode batch norm over every dim but
//!   1, returning `(y, batch_mean, batch_biased_var)`; the fused variant applies ReLU in the same
//!   pass and masks the gradient in the same backward pass ([`batch_norm_act_train`]: any
//!   [`Clamp`], e.g. ReLU6). Eval mode is a plain affine.
//! - [`channel_affine`]: per-channel `x·scale + shift` (optionally ReLU'd) in one pass: eval-mode
//!   batch norm.
//! - [`Clamp`]: the ReLU or ReLU6 that convolutions, batch norms and channel affines apply in
//!   their output pass (`*_act` functions; `bool` means ReLU or nothing).
//! - [`channel_mul`]: `x (N, C, ...)` scaled per sample and channel by `s (N, C)` (the
//!   squeeze-and-excitation product), one pass forward and backward.
//! - [`relu`], [`global_avg_pool`]: one-pass forward and backward.
//! - [`activation`]: ReLU6, sigmoid, hard sigmoid, hard swish with a one-pass backward.
//! - [`pool2d`]: max and average pooling with kernel, stride and padding, and their backward.
//!
//! Usage notes for callers:
//! - Call [`init_threads`] once at start-up, before any candle or kernel work: it fixes the rayon
//!   pool size and sets `RAYON_NUM_THREADS`, without which candle 0.11.1 re-reads
//!   `/proc/cpuinfo` on every matrix multiply.
//! - The input gradient is computed only when the input tracks gradients (`Tensor::track_op`),
//!   so pass the network input as a plain tensor (not a `Var`) to skip the first layer's dx.
//! - All kernels split the batch (or the channels) into a partition that depends on the shapes
//!   only and reduce partial sums in a fixed order: outputs and gradients are bit-identical run
//!   to run and for any thread count.

mod act;
mod affine;
mod bn;
mod chanmul;
mod conv;
mod conv_gemm;
mod depthwise;
mod depthwise_direct;
mod depthwise_flat;
mod direct;
mod dwpw;
mod geom;
mod im2col;
mod pool;
mod relu;
mod rowmap;
mod simd;
mod threads;
mod util;

pub use act::{Act, Clamp, activation};
pub use affine::channel_affine;
pub use bn::{batch_norm_act_train, batch_norm_relu_train, batch_norm_train};
pub use chanmul::channel_mul;
pub use conv::{Conv1dCfg, Conv2dCfg, conv1d, conv1d_act, conv2d, conv2d_act};
pub use dwpw::{ConvPart, depthwise_pointwise};
pub use pool::{Pool2dCfg, PoolKind, pool_out, pool2d};
pub use relu::{add_relu, global_avg_pool, relu};
pub use threads::init_threads;

/// Internals exposed for the benchmark's calibration only (not a stable API).
#[doc(hidden)]
pub mod bench_support {
    pub use crate::util::matmul;
}
