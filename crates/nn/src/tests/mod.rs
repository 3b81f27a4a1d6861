//! Unit tests of the crate, one file per concern.

mod archs;
mod cifar_archs;
mod counts;
mod grads;
mod interp;
mod mlperf_tiny;
mod models;
mod new_ops;
mod node_list;
mod ops;
mod optim;
mod pruned_export;
mod training;

/// Largest absolute elementwise difference of two tensors of one shape.
pub(crate) fn max_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}
