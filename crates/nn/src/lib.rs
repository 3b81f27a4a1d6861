//! Neural-network core of whittle: fast CPU kernels as candle custom ops, the reference
//! models, masked (PIT) layers, the training loop and quantization emulation.
//! It does not know the engine: training takes a small checkpoint-sink trait.

pub mod anomaly;
pub mod arch;
pub mod auc;
pub mod augment;
pub mod config;
pub mod data;
pub mod distill;
pub mod divergence;
pub mod graph;
pub mod interp;
pub mod loss;
pub mod memory;
pub mod model;
pub mod ops;
pub mod optim;
pub mod pit;
pub mod prune;
pub mod quant;
pub mod schedule;
pub mod slice;
pub mod space;
pub mod train;

pub use config::ModelConfig;
pub use data::{DataSet, Split, Targets};
pub use graph::{Graph, LayerInfo, LayerKind};
pub use model::Model;
pub use optim::{Optimizer, OptimizerConfig};
pub use schedule::ScheduleConfig;
pub use train::{CheckpointSink, Hooks, TrainConfig, TrainResult, Trainable, train, train_with};

/// Fix the worker-thread count for candle, rayon and the kernels, once, at start-up (before
/// any tensor work): delegates to [`whittle_kernels::init_threads`], which exports
/// `RAYON_NUM_THREADS` (without it candle 0.11.1 re-reads /proc/cpuinfo on every matmul) and
/// builds the global rayon pool. Returns false if the pool already existed.
pub fn set_threads(n: usize) -> bool {
    whittle_kernels::init_threads(n)
}

#[cfg(test)]
mod tests;
