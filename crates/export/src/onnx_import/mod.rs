//! ONNX importer: reads a model as `torch.onnx.export`, the dynamo exporter, tf2onnx or
//! `onnx.helper` write it and maps it to a [`Network`] (the layer IR every writer consumes,
//! which the `import` stage turns into a graph network). Constant subgraphs (initializers,
//! `Constant`, the `Shape`/`Gather`/`Unsqueeze`/`Concat`/`Reshape` arithmetic around
//! `Flatten`, `Pad` and `Reshape`) are evaluated ([`fold`]); the remaining ops are mapped one
//! by one ([`map`]). Anything the graph IR cannot express is an error naming the op, the
//! node and the file; no input makes the importer panic (truncated files, bytes that are not
//! ONNX, inconsistent shapes).
//!
//! Batch: the network is imported per sample (batch 1); a dynamic batch dimension is read as
//! 1 wherever shape arithmetic uses it. A `Transpose` applied directly to the input (NHWC →
//! NCHW, (steps, features) → (features, steps)) is absorbed: the imported network reads the
//! transposed layout ([`Imported::input_perm`]). A final Softmax is dropped
//! ([`Imported::final_softmax`]): whittle networks give logits.

pub mod fold;
mod map;
mod proto;

use crate::network::Network;
use anyhow::{Context, Result, bail, ensure};
use prost::Message;
use std::path::Path;

/// The ops the importer maps or folds.
pub const SUPPORTED_OPS: &[&str] = &[
    "Conv",
    "BatchNormalization",
    "Relu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Add",
    "Mul",
    "Concat",
    "GlobalAveragePool",
    "ReduceMean",
    "AveragePool",
    "MaxPool",
    "Pad",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Gemm",
    "MatMul",
    "Transpose",
    "Slice",
    "Split",
    "Dropout",
    "Identity",
    "Cast",
    "Constant",
    "ConstantOfShape",
    "Shape",
    "Gather",
    "Sub",
    "Div",
    "Softmax",
    "LogSoftmax",
];

/// Importer options.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Name of the data input when the graph has several inputs without initializers.
    pub input: Option<String>,
}

/// An imported model.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The network, batch 1; its input is named like the file's data input.
    pub network: Network,
    /// Shape of one sample in the file's layout (without the batch dimension).
    pub file_input_shape: Vec<usize>,
    /// A `Transpose` of the input absorbed into the layout: network input axis `i` is file
    /// axis `input_perm[i]` (per sample, batch excluded).
    pub input_perm: Option<Vec<usize>>,
    /// Opset of the default domain.
    pub opset: i64,
    /// `Softmax` or `LogSoftmax` when the file ends in one: dropped, the network gives the
    /// logits before it (the argmax, hence accuracy, is the same).
    pub final_softmax: Option<String>,
    /// `producer_name producer_version` of the file.
    pub producer: String,
}

impl Imported {
    /// One sample in the file's layout → the network's layout (applies [`Self::input_perm`]).
    pub fn network_input(&self, x: &[f32]) -> Result<Vec<f32>> {
        let n: usize = self.file_input_shape.iter().product();
        ensure!(
            x.len() == n,
            "a sample of shape {:?} has {n} values, got {}",
            self.file_input_shape,
            x.len()
        );
        let Some(perm) = &self.input_perm else {
            return Ok(x.to_vec());
        };
        let c = fold::Const {
            dims: self.file_input_shape.clone(),
            data: fold::Data::F(x.to_vec()),
        };
        Ok(fold::transpose(&c, perm)?.f32s())
    }
}

/// Imports the model file at `path`.
pub fn import_onnx_file(path: &Path, opts: &ImportOptions) -> Result<Imported> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading ONNX file {}", path.display()))?;
    import_onnx(&bytes, &path.display().to_string(), opts)
}

/// Imports a serialized ModelProto; `file` names it in messages.
pub fn import_onnx(bytes: &[u8], file: &str, opts: &ImportOptions) -> Result<Imported> {
    ensure!(
        !bytes.is_empty(),
        "{file}: the file is empty, not an ONNX model"
    );
    let mut model = proto::ModelProto::decode(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{file}: not a valid ONNX model (protobuf decoding failed: {e}); is the file truncated or of another format?"
        )
    })?;
    let Some(graph) = &mut model.graph else {
        bail!("{file}: not an ONNX model: it has no graph (ModelProto.graph is missing)");
    };
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .or(if model.ir_version >= 3 { None } else { Some(1) })
        .with_context(|| {
            format!("{file}: not an ONNX model: no opset of the default domain is imported")
        })?;
    ensure!(
        (1..=1000).contains(&opset) && (1..=100).contains(&model.ir_version),
        "{file}: not an ONNX model: IR version {} and opset {opset} are out of range",
        model.ir_version
    );
    ensure!(
        !graph.node.is_empty(),
        "{file}: the ONNX graph `{}` has no nodes",
        graph.name
    );
    let network = map::Importer::run(graph, opset, file, opts)?;
    let (net, file_input_shape, input_perm, final_softmax) = network;
    Ok(Imported {
        network: net,
        file_input_shape,
        input_perm,
        opset,
        final_softmax,
        producer: format!("{} {}", model.producer_name, model.producer_version)
            .trim()
            .to_string(),
    })
}
