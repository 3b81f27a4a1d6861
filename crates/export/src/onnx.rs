//! ONNX writers (opset 13): float graphs, and int8 graphs as QuantizeLinear/DequantizeLinear
//! pairs (weights per output channel symmetric, biases int32, activations per tensor affine).
//! Every layer of an int8 graph reads dequantized inputs and its float output goes through
//! QuantizeLinear → DequantizeLinear, the usual QDQ form that runtimes fuse into integer
//! kernels where they have one. Layer mapping: ReLU6 is Clip(0, 6); hard sigmoid is
//! HardSigmoid(α = 1/6, β = 1/2); hard swish is x · HardSigmoid(x) (ONNX HardSwish needs
//! opset 14); channel multiply is Mul with the scales reshaped to (1, C, 1, …); narrow is
//! Slice on axis 1; channel shuffle is Reshape → Transpose → Reshape; max / average pooling
//! are MaxPool / AveragePool (count_include_pad = 1).

use crate::network::{Activation, Layer, Network, PoolKind, require_folded};
use crate::onnx_proto::*;
use crate::quant::{Int8Params, quantize_bias, quantize_weights};
use anyhow::{Context, Result};
use prost::Message;
use std::collections::BTreeMap;
use std::path::Path;

/// Opset of the default ONNX domain the files use.
pub const OPSET: i64 = 13;
const IR_VERSION: i64 = 8;

/// The batch axis of the exported input and output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Batch {
    /// A symbolic dimension `batch`: the file runs at any batch size (the default).
    #[default]
    Dynamic,
    /// Fixed at 1, for toolchains that need static shapes.
    One,
}

/// Writes the float network as an ONNX model with a dynamic batch axis.
pub fn write_onnx(net: &Network, path: &Path) -> Result<()> {
    write_onnx_with(net, None, Batch::Dynamic, path)
}

/// Writes the network as an int8 QDQ ONNX model with a dynamic batch axis. Batch norm must be
/// folded first ([`crate::fold_batchnorm`]); `params` needs the input and every layer output.
pub fn write_onnx_qdq(net: &Network, params: &Int8Params, path: &Path) -> Result<()> {
    write_onnx_with(net, Some(params), Batch::Dynamic, path)
}

/// Writes the float (`q = None`) or int8 QDQ network with the given batch axis.
pub fn write_onnx_with(
    net: &Network,
    q: Option<&Int8Params>,
    batch: Batch,
    path: &Path,
) -> Result<()> {
    let bytes = onnx_bytes_with(net, q, batch)?;
    write(path, &bytes)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing ONNX file {}", path.display()))
}

/// The serialized ModelProto (dynamic batch).
pub fn onnx_bytes(net: &Network, q: Option<&Int8Params>) -> Result<Vec<u8>> {
    onnx_bytes_with(net, q, Batch::Dynamic)
}

/// The serialized ModelProto with the given batch axis. Inside the graph the batch is never
/// written as a number: reshapes copy it from their input (ONNX `Reshape`'s 0).
pub fn onnx_bytes_with(net: &Network, q: Option<&Int8Params>, batch: Batch) -> Result<Vec<u8>> {
    let shapes = net.shapes()?;
    if q.is_some() {
        require_folded(net)?;
    }
    let mut g = Builder::default();
    // ONNX name of the value consumers read for each network tensor.
    let mut read: BTreeMap<String, String> = BTreeMap::new();
    let in_name = &net.input.0;
    if let Some(p) = q {
        let dq = format!("{in_name}/dq");
        g.qdq_act(in_name, &dq, in_name, p)?;
        read.insert(in_name.clone(), dq);
    } else {
        read.insert(in_name.clone(), in_name.clone());
    }
    for (i, layer) in net.layers.iter().enumerate() {
        let out = layer.output().to_string();
        let raw = if q.is_some() {
            format!("{out}/pre")
        } else {
            out.clone()
        };
        let ins: Vec<String> = layer.inputs().iter().map(|n| read[*n].clone()).collect();
        let node_name = format!("{}_{i}", layer.kind());
        match layer {
            Layer::Conv {
                input,
                weight,
                bias,
                stride,
                padding,
                dilation,
                groups,
                ..
            } => {
                let (w, b) = g.weight_bias(&out, &weight.shape, &weight.data, bias, input, q)?;
                let mut inputs = vec![ins[0].clone(), w];
                inputs.extend(b);
                let k: Vec<i64> = weight.shape[2..].iter().map(|&v| v as i64).collect();
                // ONNX order: [x1_begin, x2_begin, …, x1_end, x2_end, …].
                let pads: Vec<i64> = padding
                    .iter()
                    .map(|p| p.0)
                    .chain(padding.iter().map(|p| p.1))
                    .map(|v| v as i64)
                    .collect();
                let attrs = vec![
                    ints("kernel_shape", k),
                    ints("strides", stride.iter().map(|&v| v as i64).collect()),
                    ints("pads", pads),
                    ints("dilations", dilation.iter().map(|&v| v as i64).collect()),
                    int("group", *groups as i64),
                ];
                g.node("Conv", &node_name, inputs, &raw, attrs);
            }
            Layer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                eps,
                ..
            } => {
                let mut inputs = vec![ins[0].clone()];
                for (n, v) in [("scale", gamma), ("B", beta), ("mean", mean), ("var", var)] {
                    let name = format!("{out}/{n}");
                    g.init_f32(&name, &[v.len()], v);
                    inputs.push(name);
                }
                let eps = AttributeProto {
                    name: "epsilon".into(),
                    r#type: ATTR_FLOAT,
                    f: *eps,
                    ..Default::default()
                };
                g.node("BatchNormalization", &node_name, inputs, &raw, vec![eps]);
            }
            Layer::Relu { .. } => g.node("Relu", &node_name, ins, &raw, vec![]),
            Layer::Add { .. } => g.node("Add", &node_name, ins, &raw, vec![]),
            Layer::GlobalAvgPool { .. } => {
                g.node("GlobalAveragePool", &node_name, ins, &raw, vec![])
            }
            Layer::Flatten { .. } => g.node("Flatten", &node_name, ins, &raw, vec![int("axis", 1)]),
            Layer::Linear {
                input,
                weight,
                bias,
                ..
            } => {
                let (w, b) = g.weight_bias(&out, &weight.shape, &weight.data, bias, input, q)?;
                let mut inputs = vec![ins[0].clone(), w];
                inputs.extend(b);
                g.node("Gemm", &node_name, inputs, &raw, vec![int("transB", 1)]);
            }
            Layer::Activation { act, .. } => match act {
                Activation::Relu6 => {
                    let (lo, hi) = (format!("{out}/min"), format!("{out}/max"));
                    g.init_f32(&lo, &[], &[0.0]);
                    g.init_f32(&hi, &[], &[6.0]);
                    let inputs = vec![ins[0].clone(), lo, hi];
                    g.node("Clip", &node_name, inputs, &raw, vec![]);
                }
                Activation::Sigmoid => g.node("Sigmoid", &node_name, ins, &raw, vec![]),
                Activation::HardSigmoid => {
                    g.node("HardSigmoid", &node_name, ins, &raw, hard_sigmoid_attrs())
                }
                Activation::HardSwish => {
                    let hs = format!("{out}/hard_sigmoid");
                    let x = ins[0].clone();
                    g.node("HardSigmoid", &hs, ins, &hs, hard_sigmoid_attrs());
                    g.node("Mul", &node_name, vec![x, hs], &raw, vec![]);
                }
            },
            Layer::ChannelMul { x, s, .. } => {
                // s (N, C) → (N, C, 1, …) to broadcast over the spatial axes of x.
                let mut dims = vec![0i64, shapes[s][1] as i64];
                dims.resize(shapes[x].len(), 1);
                let shape = format!("{out}/scale_shape");
                g.init_i64(&shape, &dims);
                let s4 = format!("{out}/scales");
                g.node(
                    "Reshape",
                    &format!("{node_name}/reshape"),
                    vec![ins[1].clone(), shape],
                    &s4,
                    vec![],
                );
                g.node("Mul", &node_name, vec![ins[0].clone(), s4], &raw, vec![]);
            }
            Layer::Concat { .. } => g.node("Concat", &node_name, ins, &raw, vec![int("axis", 1)]),
            Layer::Narrow { start, len, .. } => {
                let mut inputs = vec![ins[0].clone()];
                for (n, v) in [("starts", *start), ("ends", start + len), ("axes", 1)] {
                    let name = format!("{out}/{n}");
                    g.init_i64(&name, &[v as i64]);
                    inputs.push(name);
                }
                g.node("Slice", &node_name, inputs, &raw, vec![]);
            }
            Layer::ChannelShuffle { input, groups, .. } => {
                // (N, C, rest…) → (N, g, C/g, Π rest) → swap axes 1, 2 → (N, C, rest…).
                let xs = &shapes[input];
                let rest: usize = xs[2..].iter().product();
                let split = [0, *groups, xs[1] / groups, rest].map(|v| v as i64);
                let back: Vec<i64> = std::iter::once(0)
                    .chain(xs[1..].iter().map(|&v| v as i64))
                    .collect();
                let (s1, s2) = (format!("{out}/split_shape"), format!("{out}/shape"));
                g.init_i64(&s1, &split);
                g.init_i64(&s2, &back);
                let (a, b) = (format!("{out}/grouped"), format!("{out}/transposed"));
                g.node(
                    "Reshape",
                    &format!("{node_name}/split"),
                    vec![ins[0].clone(), s1],
                    &a,
                    vec![],
                );
                g.node(
                    "Transpose",
                    &format!("{node_name}/transpose"),
                    vec![a],
                    &b,
                    vec![ints("perm", vec![0, 2, 1, 3])],
                );
                g.node("Reshape", &node_name, vec![b, s2], &raw, vec![]);
            }
            Layer::Pool {
                kind,
                kernel,
                stride,
                padding,
                ..
            } => {
                let pads: Vec<i64> = padding
                    .iter()
                    .map(|p| p.0)
                    .chain(padding.iter().map(|p| p.1))
                    .map(|v| v as i64)
                    .collect();
                let mut attrs = vec![
                    ints("kernel_shape", kernel.iter().map(|&v| v as i64).collect()),
                    ints("strides", stride.iter().map(|&v| v as i64).collect()),
                    ints("pads", pads),
                ];
                let op = match kind {
                    PoolKind::Max => "MaxPool",
                    PoolKind::Avg => {
                        attrs.push(int("count_include_pad", 1));
                        "AveragePool"
                    }
                };
                g.node(op, &node_name, ins, &raw, attrs);
            }
        }
        if let Some(p) = q {
            g.qdq_act(&raw, &out, &out, p)?;
        }
        read.insert(out.clone(), out);
    }
    let graph = GraphProto {
        node: g.nodes,
        name: net.name.clone(),
        initializer: g.inits,
        input: vec![value_info(in_name, &net.input.1, batch)],
        output: vec![value_info(&net.output, &shapes[&net.output], batch)],
    };
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "whittle".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: if q.is_some() {
            "int8 QDQ export".into()
        } else {
            "float export".into()
        },
        graph: Some(graph),
    };
    Ok(model.encode_to_vec())
}

#[derive(Default)]
struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

impl Builder {
    fn node(
        &mut self,
        op: &str,
        name: &str,
        input: Vec<String>,
        out: &str,
        a: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input,
            output: vec![out.to_string()],
            name: name.to_string(),
            op_type: op.to_string(),
            attribute: a,
            ..Default::default()
        });
    }

    fn init(&mut self, name: &str, dims: &[usize], data_type: i32, raw_data: Vec<u8>) {
        self.inits.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type,
            name: name.to_string(),
            raw_data,
            ..Default::default()
        });
    }

    fn init_f32(&mut self, name: &str, dims: &[usize], v: &[f32]) {
        let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.init(name, dims, FLOAT, raw);
    }

    fn init_i64(&mut self, name: &str, v: &[i64]) {
        let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.init(name, &[v.len()], INT64, raw);
    }

    /// QuantizeLinear(src) → `{dst}/q` → DequantizeLinear → `dst`, with the parameters of `tensor`.
    fn qdq_act(&mut self, src: &str, dst: &str, tensor: &str, p: &Int8Params) -> Result<()> {
        let a = p.get(tensor)?;
        let (s, z) = (format!("{tensor}/scale"), format!("{tensor}/zp"));
        self.init_f32(&s, &[], &[a.scale]);
        self.init(&z, &[], INT8, vec![a.zero_point as u8]);
        let qn = format!("{dst}/q");
        self.node(
            "QuantizeLinear",
            &format!("{tensor}/quant"),
            vec![src.into(), s.clone(), z.clone()],
            &qn,
            vec![],
        );
        self.node(
            "DequantizeLinear",
            &format!("{tensor}/dequant"),
            vec![qn, s, z],
            dst,
            vec![],
        );
        Ok(())
    }

    /// Adds weight and bias initializers (plus DequantizeLinear nodes for int8) and returns
    /// the names of the float weight and optional bias values.
    fn weight_bias(
        &mut self,
        out: &str,
        shape: &[usize],
        w: &[f32],
        bias: &Option<Vec<f32>>,
        input: &str,
        q: Option<&Int8Params>,
    ) -> Result<(String, Option<String>)> {
        let (wn, bn) = (format!("{out}/weight"), format!("{out}/bias"));
        let Some(p) = q else {
            self.init_f32(&wn, shape, w);
            if let Some(b) = bias {
                self.init_f32(&bn, &[b.len()], b);
            }
            return Ok((wn.clone(), bias.as_ref().map(|_| bn)));
        };
        let cout = shape[0];
        let (wq, ws) = quantize_weights(w, cout);
        let wqn = format!("{wn}/q");
        self.init(&wqn, shape, INT8, wq.iter().map(|&v| v as u8).collect());
        self.init_f32(&format!("{wn}/scale"), &[cout], &ws);
        self.init(&format!("{wn}/zp"), &[cout], INT8, vec![0; cout]);
        self.node(
            "DequantizeLinear",
            &format!("{wn}/dequant"),
            vec![wqn, format!("{wn}/scale"), format!("{wn}/zp")],
            &wn,
            vec![int("axis", 0)],
        );
        let Some(b) = bias else {
            return Ok((wn, None));
        };
        let (bq, bs) = quantize_bias(b, p.get(input)?.scale, &ws);
        let bqn = format!("{bn}/q");
        self.init(
            &bqn,
            &[cout],
            INT32,
            bq.iter().flat_map(|v| v.to_le_bytes()).collect(),
        );
        self.init_f32(&format!("{bn}/scale"), &[cout], &bs);
        self.init(&format!("{bn}/zp"), &[cout], INT32, vec![0; 4 * cout]);
        self.node(
            "DequantizeLinear",
            &format!("{bn}/dequant"),
            vec![bqn, format!("{bn}/scale"), format!("{bn}/zp")],
            &bn,
            vec![int("axis", 0)],
        );
        Ok((wn, Some(bn)))
    }
}

/// HardSigmoid(x) = max(0, min(1, αx + β)) with α = 1/6, β = 1/2, i.e. relu6(x + 3) / 6.
fn hard_sigmoid_attrs() -> Vec<AttributeProto> {
    [("alpha", 1.0f32 / 6.0), ("beta", 0.5)]
        .into_iter()
        .map(|(name, f)| AttributeProto {
            name: name.into(),
            r#type: ATTR_FLOAT,
            f,
            ..Default::default()
        })
        .collect()
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_INT,
        i,
        ..Default::default()
    }
}

fn ints(name: &str, v: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_INTS,
        ints: v,
        ..Default::default()
    }
}

fn value_info(name: &str, shape: &[usize], batch: Batch) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto {
                    dim: shape
                        .iter()
                        .enumerate()
                        .map(|(i, &d)| match (i, batch) {
                            (0, Batch::Dynamic) => Dimension {
                                dim_value: None,
                                dim_param: Some("batch".into()),
                            },
                            _ => Dimension {
                                dim_value: Some(d as i64),
                                dim_param: None,
                            },
                        })
                        .collect(),
                }),
            }),
        }),
    }
}
