//! Precision-format emulation on f32 (spec §6): reduced IEEE-like floats T(w,t) by bit
//! manipulation, and integer affine / symmetric quantization with calibration observers.
//! Pure functions over slices; `eval` applies them to a network's weights and activations.

pub mod eval;
pub mod float;
pub mod format;
pub mod grid;
pub mod int;
pub mod qat;
pub mod tformat;

#[cfg(test)]
mod eval_tests;
#[cfg(test)]
mod grid_timing;
#[cfg(test)]
mod qat_tests;

pub use eval::{ObserverKind, QuantModel, QuantOptions, weight_bytes};
pub use format::Format;
pub use grid::{Candidate, FloatGrid, best_within_budget};
pub use qat::QatModel;
pub use tformat::TFormat;
