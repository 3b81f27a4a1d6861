//! Maps a `Model`'s graph (BN folded or not) to the layer-level `whittle_export::Network` the
//! writers consume: value 0 is `input`, node outputs keep the node names, global average
//! pooling becomes GlobalAvgPool + Flatten (ONNX keeps the pooled spatial axes). Conv padding
//! keeps its (begin, end) pairs, so causal TCNs export as they run; residual adds become Add.
//! Every other op has its export layer (activations, channel multiply, concat, narrow,
//! channel shuffle, max/avg pooling, flatten); dropout, the identity at inference, is dropped.

use anyhow::{Context, Result};
use whittle_export::{Activation, Layer, Network, PoolKind, Tensor32};
use whittle_nn::Model;
use whittle_nn::graph::Op;

fn tensor(model: &Model, name: &str) -> Result<Tensor32> {
    let t = model.get(name)?.as_tensor();
    let data: Vec<f32> = t.flatten_all()?.to_vec1()?;
    Tensor32::new(t.dims().to_vec(), data)
}

fn vec_of(model: &Model, name: &str) -> Result<Vec<f32>> {
    Ok(tensor(model, name)?.data)
}

/// The export description of `model` under the name `name`.
pub fn to_network(model: &Model, name: &str) -> Result<Network> {
    let g = model.graph();
    // Value names; a dropout (the identity at inference) passes its input's name on.
    let mut names: Vec<String> = vec!["input".to_string()];
    for node in &g.nodes {
        let own = match node.op {
            Op::Dropout { .. } => names[node.inputs[0]].clone(),
            _ => node.name.clone(),
        };
        names.push(own);
    }
    let value = |v: usize| -> String { names[v].clone() };
    let mut layers = Vec::new();
    for node in &g.nodes {
        let input = value(node.inputs[0]);
        let output = node.name.clone();
        let p = |s: &str| format!("{}.{s}", node.name);
        match &node.op {
            Op::Conv {
                stride,
                padding,
                dilation,
                groups,
                bias,
                ..
            } => {
                layers.push(Layer::Conv {
                    input,
                    output,
                    weight: tensor(model, &p("weight"))?,
                    bias: if *bias {
                        Some(vec_of(model, &p("bias"))?)
                    } else {
                        None
                    },
                    stride: stride.clone(),
                    // (begin, end) per axis: causal TCNs pad the left only.
                    padding: padding.clone(),
                    dilation: dilation.clone(),
                    groups: *groups,
                });
            }
            Op::BatchNorm { eps, .. } => layers.push(Layer::BatchNorm {
                input,
                output,
                gamma: vec_of(model, &p("weight"))?,
                beta: vec_of(model, &p("bias"))?,
                mean: vec_of(model, &p("running_mean"))?,
                var: vec_of(model, &p("running_var"))?,
                eps: *eps as f32,
            }),
            Op::Relu => layers.push(Layer::Relu { input, output }),
            Op::Add => layers.push(Layer::Add {
                a: input,
                b: value(node.inputs[1]),
                output,
            }),
            Op::GlobalAvgPool => {
                let pooled = format!("{}_gap", node.name);
                layers.push(Layer::GlobalAvgPool {
                    input,
                    output: pooled.clone(),
                });
                layers.push(Layer::Flatten {
                    input: pooled,
                    output,
                });
            }
            Op::Linear { bias, .. } => layers.push(Layer::Linear {
                input,
                output,
                weight: tensor(model, &p("weight"))?,
                bias: if *bias {
                    Some(vec_of(model, &p("bias"))?)
                } else {
                    None
                },
            }),
            Op::Flatten => layers.push(Layer::Flatten { input, output }),
            Op::Dropout { .. } => {}
            Op::Relu6 => layers.push(Layer::Activation {
                act: Activation::Relu6,
                input,
                output,
            }),
            Op::Sigmoid => layers.push(Layer::Activation {
                act: Activation::Sigmoid,
                input,
                output,
            }),
            Op::HardSigmoid => layers.push(Layer::Activation {
                act: Activation::HardSigmoid,
                input,
                output,
            }),
            Op::HardSwish => layers.push(Layer::Activation {
                act: Activation::HardSwish,
                input,
                output,
            }),
            // The scales are (N, C) in nn as in the export (batch 1).
            Op::ChannelMul => layers.push(Layer::ChannelMul {
                x: input,
                s: value(node.inputs[1]),
                output,
            }),
            Op::Concat => layers.push(Layer::Concat {
                inputs: node.inputs.iter().map(|&v| value(v)).collect(),
                output,
            }),
            Op::Narrow { start, len } => layers.push(Layer::Narrow {
                input,
                output,
                start: *start,
                len: *len,
            }),
            Op::ChannelShuffle { groups } => layers.push(Layer::ChannelShuffle {
                input,
                output,
                groups: *groups,
            }),
            Op::MaxPool {
                kernel,
                stride,
                padding,
            }
            | Op::AvgPool {
                kernel,
                stride,
                padding,
            } => layers.push(Layer::Pool {
                kind: if matches!(node.op, Op::MaxPool { .. }) {
                    PoolKind::Max
                } else {
                    PoolKind::Avg
                },
                input,
                output,
                kernel: kernel.clone(),
                stride: stride.clone(),
                padding: padding.clone(),
            }),
        }
    }
    let mut shape = vec![1];
    shape.extend_from_slice(&g.input_shape);
    let net = Network {
        name: name.to_string(),
        input: ("input".into(), shape),
        output: value(g.nodes.len()),
        layers,
    };
    net.shapes().context("exported network does not validate")?;
    Ok(net)
}
