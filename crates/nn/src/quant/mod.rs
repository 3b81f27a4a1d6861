//! Precision-format emulation on f32 (spec §6): reduced IEEE-like floats T(w,t) by bit
//! manipulation, and integer affine / symmetric quantization with calibration observers.
//! Pure functions over slices; the quantize stage applies them to weights and activations.

pub mod float;
pub mod format;
pub mod int;

pub use format::Format;
