//! Neural-network core of whittle: fast CPU kernels as candle custom ops, the reference
//! models, masked (PIT) layers, the training loop and quantization emulation.
//! It does not know the engine: training takes a small checkpoint-sink trait.

pub mod quant;
