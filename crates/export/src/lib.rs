//! whittle-export: writers that turn a trained network, described layer by layer
//! ([`Network`]), into deployable files — ONNX (float and int8 QDQ), a C header + source
//! with int8 weights and a reference int8 inference function, and safetensors + JSON
//! architecture — plus the naive reference evaluator that defines the semantics, and the
//! ONNX importer that reads trained networks back ([`onnx_import`]).

mod c_common;
mod c_export;
pub mod c_ladder;
pub mod c_packed;
pub mod network;
pub mod onnx;
pub mod onnx_import;
mod onnx_proto;
pub mod quant;
pub mod reference;
mod safetensors_io;

pub use c_export::write_c;
pub use c_packed::{Decode, WeightCodes, write_c_packed};
pub use network::{Activation, Layer, Network, PoolKind, Tensor32, fold_batchnorm};
pub use onnx::{Batch, write_onnx, write_onnx_qdq, write_onnx_with};
pub use onnx_import::{ImportOptions, Imported, import_onnx, import_onnx_file};
pub use quant::{ActQuant, Int8Params};
pub use safetensors_io::{read_safetensors, write_safetensors};
