//! The importer reads the same onnx.proto declarations the writer uses
//! ([`crate::onnx_proto`]).

pub use crate::onnx_proto::*;
