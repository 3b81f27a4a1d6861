//! An imported [`Network`] → a graph network (`arch = "graph"` node list) and its tensors:
//! one node per layer, named after the layer's output (the network input is `input`);
//! global average pooling + Flatten is one `global_avg_pool` node (the graph IR's pool gives
//! the (C) vector), named after the Flatten so a network exported by whittle and imported
//! again keeps its names; a Flatten of a vector is dropped. Padding is written as numbers when
//! symmetric and as `[begin, end]` pairs otherwise (TensorFlow 'SAME' at stride 2, causal
//! convolutions); the last layer must give the data's class count.

use anyhow::{Context, Result, bail, ensure};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use whittle_export::{Activation, Layer, Network, PoolKind, Tensor32};
use whittle_nn::arch::node_list::{Count, NodeConfig, NodeListConfig, OpKind, Padding};
use whittle_nn::{Model, ModelConfig};

/// A node of `op` named `name` reading `inputs`, every key unset.
fn node(name: &str, op: OpKind, inputs: Vec<String>) -> NodeConfig {
    NodeConfig::new(name, op, inputs)
}

/// Padding as the node list writes it: one number per axis when symmetric, else pairs.
fn pads(padding: &[(usize, usize)]) -> Padding {
    if padding.iter().all(|p| p.0 == p.1) {
        Padding::Each(padding.iter().map(|p| p.0).collect())
    } else {
        Padding::Pairs(padding.iter().map(|p| [p.0, p.1]).collect())
    }
}

fn tensor(t: &Tensor32) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        t.data.clone(),
        t.shape.as_slice(),
        &Device::Cpu,
    )?)
}

fn vector(v: &[f32]) -> Result<Tensor> {
    Ok(Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu)?)
}

/// The node list of `net` for a data set of `classes` classes, and every tensor by name.
pub fn to_config(net: &Network, classes: usize) -> Result<(ModelConfig, HashMap<String, Tensor>)> {
    let shapes = net.shapes()?;
    let mut consumers: HashMap<&str, Vec<&Layer>> = HashMap::new();
    for l in &net.layers {
        for i in l.inputs() {
            consumers.entry(i).or_default().push(l);
        }
    }
    // Network tensor → node-list name.
    let mut name: HashMap<String, String> = HashMap::from([(net.input.0.clone(), "input".into())]);
    let mut used: std::collections::HashSet<String> = ["input".to_string()].into();
    let mut fresh = |base: &str| -> String {
        let mut n = if base.is_empty() {
            "node".to_string()
        } else {
            base.to_string()
        };
        let mut i = 1;
        while used.contains(&n) {
            n = format!("{base}_{i}");
            i += 1;
        }
        used.insert(n.clone());
        n
    };
    let mut pooled: std::collections::HashSet<String> = Default::default();
    let mut nodes: Vec<NodeConfig> = vec![];
    let mut state: HashMap<String, Tensor> = HashMap::new();
    let rd = |name: &HashMap<String, String>, t: &str| -> Result<String> {
        name.get(t)
            .cloned()
            .with_context(|| format!("tensor `{t}` is read before it is written"))
    };
    for l in &net.layers {
        let out = l.output();
        let ins: Vec<String> = l
            .inputs()
            .iter()
            .map(|t| rd(&name, t))
            .collect::<Result<_>>()?;
        for t in l.inputs() {
            if pooled.contains(t) && !matches!(l, Layer::Flatten { .. }) {
                bail!(
                    "layer `{out}` ({}) reads the pooled (N, C, 1, …) map `{t}`; the graph IR's global average pool gives a vector, read through a Flatten",
                    l.kind()
                );
            }
        }
        let mut n = match l {
            Layer::Flatten { input, .. } => {
                if pooled.contains(input) || shapes[input].len() == 2 {
                    name.insert(out.to_string(), ins[0].clone());
                    continue;
                }
                node(out, OpKind::Flatten, ins)
            }
            Layer::GlobalAvgPool { .. } => {
                // Named after its Flatten when that is its only consumer.
                let c = consumers.get(out).map(Vec::as_slice).unwrap_or(&[]);
                let nn = match c {
                    [Layer::Flatten { output, .. }] => output.as_str(),
                    _ => out,
                };
                pooled.insert(out.to_string());
                node(nn, OpKind::GlobalAvgPool, ins)
            }
            Layer::Conv {
                weight,
                bias,
                stride,
                padding,
                dilation,
                groups,
                ..
            } => {
                let mut n = node(out, OpKind::Conv, ins);
                n.kernel = Some(weight.shape[2..].to_vec());
                n.c_out = Some(Count::N(weight.shape[0]));
                n.stride = Some(stride.clone());
                n.padding = Some(pads(padding));
                n.dilation = Some(dilation.clone());
                n.groups = Some(Count::N(*groups));
                n.bias = Some(bias.is_some());
                n
            }
            Layer::Linear { weight, bias, .. } => {
                let mut n = node(out, OpKind::Linear, ins);
                n.c_out = Some(Count::N(weight.shape[0]));
                n.bias = Some(bias.is_some());
                n
            }
            Layer::BatchNorm { eps, .. } => {
                let mut n = node(out, OpKind::BatchNorm, ins);
                n.eps = Some(*eps as f64);
                n
            }
            Layer::Relu { .. } => node(out, OpKind::Relu, ins),
            Layer::Activation { act, .. } => node(
                out,
                match act {
                    Activation::Relu6 => OpKind::Relu6,
                    Activation::Sigmoid => OpKind::Sigmoid,
                    Activation::HardSigmoid => OpKind::HardSigmoid,
                    Activation::HardSwish => OpKind::HardSwish,
                },
                ins,
            ),
            Layer::Add { .. } => node(out, OpKind::Add, ins),
            Layer::ChannelMul { .. } => node(out, OpKind::ChannelMul, ins),
            Layer::Concat { .. } => node(out, OpKind::Concat, ins),
            Layer::Narrow { start, len, .. } => {
                let mut n = node(out, OpKind::Narrow, ins);
                n.start = Some(*start);
                n.len = Some(*len);
                n
            }
            Layer::ChannelShuffle { groups, .. } => {
                let mut n = node(out, OpKind::ChannelShuffle, ins);
                n.groups = Some(Count::N(*groups));
                n
            }
            Layer::Pool {
                kind,
                kernel,
                stride,
                padding,
                ..
            } => {
                let op = match kind {
                    PoolKind::Max => OpKind::MaxPool,
                    PoolKind::Avg => OpKind::AvgPool,
                };
                let mut n = node(out, op, ins);
                n.kernel = Some(kernel.clone());
                n.stride = Some(stride.clone());
                n.padding = Some(pads(padding));
                n
            }
        };
        n.name = fresh(&n.name);
        let p = |s: &str| format!("{}.{s}", n.name);
        match l {
            Layer::Conv { weight, bias, .. } | Layer::Linear { weight, bias, .. } => {
                state.insert(p("weight"), tensor(weight)?);
                if let Some(b) = bias {
                    state.insert(p("bias"), vector(b)?);
                }
            }
            Layer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                ..
            } => {
                state.insert(p("weight"), vector(gamma)?);
                state.insert(p("bias"), vector(beta)?);
                state.insert(p("running_mean"), vector(mean)?);
                state.insert(p("running_var"), vector(var)?);
            }
            _ => {}
        }
        name.insert(out.to_string(), n.name.clone());
        nodes.push(n);
    }
    let last = nodes.last().context("the network has no layers")?;
    ensure!(
        name.get(&net.output) == Some(&last.name),
        "the network's output `{}` is not its last layer",
        net.output
    );
    let out_shape = &shapes[&net.output];
    let width: usize = out_shape[1..].iter().product();
    ensure!(
        width == classes,
        "the network gives {width} scores per sample (output `{}` of shape {out_shape:?}), the data set has {classes} classes",
        net.output
    );
    let cfg = ModelConfig::Graph(NodeListConfig {
        input: net.input.1[1..].to_vec(),
        classes,
        nodes,
    });
    Ok((cfg, state))
}

/// The model of `cfg` holding `state`.
pub fn model(cfg: ModelConfig, state: &HashMap<String, Tensor>) -> Result<Model> {
    let model = Model::new(cfg, 0).context("building the imported network")?;
    model
        .load_state(state)
        .context("loading the imported weights")?;
    Ok(model)
}
