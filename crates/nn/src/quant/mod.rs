//! Precision-format emulation on f32 (spec §6): reduced IEEE-like floats T(w,t) by bit
//! manipulation, and integer affine / symmetric quantization with calibration observers.
//! Pure functions over slices; `eval` applies them to a network's weights and activations.

pub mod eval;
pub mod float;
pub mod format;
pub mod int;

#[cfg(test)]
mod eval_tests;

pub use eval::{ObserverKind, QuantModel, QuantOptions, weight_bytes};
pub use format::Format;
