//! The model graph every architecture lowers to: a list of nodes (convolution, batch norm,
//! activations, residual add, channel multiply/concat/narrow/shuffle, pooling, dropout,
//! flatten, linear) whose inputs are earlier values. Shapes, parameter counts, MAC counts and
//! the per-layer description are all computed here, from the graph alone; the forward pass of
//! every op is in [`crate::interp`].

use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};

/// One operation. Convolutions are 1-d or 2-d (`kernel.len()`), padding is (low, high) per dim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Conv {
        c_in: usize,
        c_out: usize,
        kernel: Vec<usize>,
        stride: Vec<usize>,
        padding: Vec<(usize, usize)>,
        dilation: Vec<usize>,
        groups: usize,
        bias: bool,
    },
    BatchNorm {
        channels: usize,
        eps: f64,
        momentum: f64,
    },
    Relu,
    Add,
    GlobalAvgPool,
    Linear {
        c_in: usize,
        c_out: usize,
        bias: bool,
    },
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `1 / (1 + e^−x)`.
    Sigmoid,
    /// `relu6(x + 3) / 6`.
    HardSigmoid,
    /// `x · relu6(x + 3) / 6`.
    HardSwish,
    /// `x · s` with x (N, C, ...) and s (N, C) broadcast over the trailing dims
    /// (squeeze-and-excitation); inputs `[x, s]`.
    ChannelMul,
    /// The inputs joined along the channel axis (equal trailing dims).
    Concat,
    /// Channels `start .. start + len` of the input.
    Narrow {
        start: usize,
        len: usize,
    },
    /// ShuffleNet's channel shuffle: channels viewed as (groups, C/groups), transposed.
    ChannelShuffle {
        groups: usize,
    },
    /// Max pooling, 1-d or 2-d (`kernel.len()`); padded positions never win.
    MaxPool {
        kernel: Vec<usize>,
        stride: Vec<usize>,
        padding: Vec<(usize, usize)>,
    },
    /// Average pooling, 1-d or 2-d; divides by the full window (padding counts as zeros).
    AvgPool {
        kernel: Vec<usize>,
        stride: Vec<usize>,
        padding: Vec<(usize, usize)>,
    },
    /// In training, zeroes each element with probability `p` and scales the rest by
    /// 1/(1 − p) (seeded, see [`crate::interp`]); the identity in eval mode.
    Dropout {
        p: f64,
    },
    /// (C, ...) → (C·...).
    Flatten,
}

impl Op {
    /// Short name of the op kind, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "conv",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Relu => "relu",
            Op::Add => "add",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Linear { .. } => "linear",
            Op::Relu6 => "relu6",
            Op::Sigmoid => "sigmoid",
            Op::HardSigmoid => "hard_sigmoid",
            Op::HardSwish => "hard_swish",
            Op::ChannelMul => "channel_mul",
            Op::Concat => "concat",
            Op::Narrow { .. } => "narrow",
            Op::ChannelShuffle { .. } => "channel_shuffle",
            Op::MaxPool { .. } => "max_pool",
            Op::AvgPool { .. } => "avg_pool",
            Op::Dropout { .. } => "dropout",
            Op::Flatten => "flatten",
        }
    }

    /// True for ops applied to each element on its own (shape-preserving, one input).
    pub fn is_pointwise(&self) -> bool {
        matches!(
            self,
            Op::Relu
                | Op::Relu6
                | Op::Sigmoid
                | Op::HardSigmoid
                | Op::HardSwish
                | Op::Dropout { .. }
        )
    }
}

/// A node: its name (the prefix of its parameter names), operation, input value ids and
/// per-sample output shape. Value 0 is the network input; node i produces value i + 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<usize>,
    pub out_shape: Vec<usize>,
}

/// A whole network: per-sample input shape and nodes in execution order; the last node's
/// value is the output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub input_shape: Vec<usize>,
    pub nodes: Vec<Node>,
}

/// Kind of a described layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    Conv1d,
    Conv2d,
    DepthwiseConv2d,
    DepthwiseConv1d,
    Linear,
    BatchNorm,
}

/// Per-layer description used by pruning, export, latency tables and reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub name: String,
    pub kind: LayerKind,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
    pub dilation: Vec<usize>,
    pub groups: usize,
    /// Per-sample output shape (C, ...).
    pub out_shape: Vec<usize>,
    pub params: u64,
    pub macs: u64,
}

/// A named parameter shape: (name, shape, fan_in for initialisation, is_buffer).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

/// How a tensor starts out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's kaiming_uniform(a=√5) for weights and its
    /// bias rule.
    Uniform {
        fan_in: usize,
    },
    Ones,
    Zeros,
}

impl Op {
    /// Trainable parameter shapes (suffix, shape, init) of this op.
    pub fn params(&self) -> Vec<(&'static str, Vec<usize>, Init)> {
        match self {
            Op::Conv {
                c_in,
                c_out,
                kernel,
                groups,
                bias,
                ..
            } => {
                let cin_g = c_in / groups;
                let fan_in = cin_g * kernel.iter().product::<usize>();
                let mut shape = vec![*c_out, cin_g];
                shape.extend(kernel);
                let mut v = vec![("weight", shape, Init::Uniform { fan_in })];
                if *bias {
                    v.push(("bias", vec![*c_out], Init::Uniform { fan_in }));
                }
                v
            }
            Op::BatchNorm { channels, .. } => vec![
                ("weight", vec![*channels], Init::Ones),
                ("bias", vec![*channels], Init::Zeros),
            ],
            Op::Linear { c_in, c_out, bias } => {
                let mut v = vec![(
                    "weight",
                    vec![*c_out, *c_in],
                    Init::Uniform { fan_in: *c_in },
                )];
                if *bias {
                    v.push(("bias", vec![*c_out], Init::Uniform { fan_in: *c_in }));
                }
                v
            }
            _ => vec![],
        }
    }

    /// Non-trainable state (running statistics).
    pub fn buffers(&self) -> Vec<(&'static str, Vec<usize>, Init)> {
        match self {
            Op::BatchNorm { channels, .. } => vec![
                ("running_mean", vec![*channels], Init::Zeros),
                ("running_var", vec![*channels], Init::Ones),
            ],
            _ => vec![],
        }
    }
}

impl Graph {
    /// How many node inputs read each value (value 0 is the network input, value i + 1 the
    /// output of node i).
    pub fn value_uses(&self) -> Vec<usize> {
        let mut uses = vec![0usize; self.nodes.len() + 1];
        for node in &self.nodes {
            for &v in &node.inputs {
                uses[v] += 1;
            }
        }
        uses
    }

    /// Per-sample shape of value `v`.
    pub fn value_shape(&self, v: usize) -> &[usize] {
        if v == 0 {
            &self.input_shape
        } else {
            &self.nodes[v - 1].out_shape
        }
    }

    /// All trainable parameters, in graph order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        self.specs(|op| op.params())
    }

    /// All buffers (BN running statistics), in graph order.
    pub fn buffer_specs(&self) -> Vec<ParamSpec> {
        self.specs(|op| op.buffers())
    }

    fn specs(&self, f: impl Fn(&Op) -> Vec<(&'static str, Vec<usize>, Init)>) -> Vec<ParamSpec> {
        let mut out = vec![];
        for n in &self.nodes {
            for (suffix, shape, init) in f(&n.op) {
                out.push(ParamSpec {
                    name: format!("{}.{suffix}", n.name),
                    shape,
                    init,
                });
            }
        }
        out
    }

    /// Number of trainable parameters (BN scale and shift included, running stats not).
    pub fn params(&self) -> u64 {
        self.layers().iter().map(|l| l.params).sum()
    }

    /// Multiply-accumulates per sample: conv = output elements × (C_in/groups × kernel area),
    /// linear = in × out (the convention of `torch_ref.py`; BN, ReLU, pooling not counted).
    pub fn macs(&self) -> u64 {
        self.layers().iter().map(|l| l.macs).sum()
    }

    /// Description of every parametrised layer, in graph order.
    pub fn layers(&self) -> Vec<LayerInfo> {
        let mut out = vec![];
        for n in &self.nodes {
            let params: u64 =
                n.op.params()
                    .iter()
                    .map(|(_, s, _)| s.iter().product::<usize>() as u64)
                    .sum();
            let info = match &n.op {
                Op::Conv {
                    c_in,
                    c_out,
                    kernel,
                    stride,
                    dilation,
                    groups,
                    ..
                } => {
                    let out_elems: usize = n.out_shape.iter().product();
                    let per_out = (c_in / groups) * kernel.iter().product::<usize>();
                    let dw = *groups > 1 && groups == c_in;
                    let kind = match (kernel.len(), dw) {
                        (1, false) => LayerKind::Conv1d,
                        (1, true) => LayerKind::DepthwiseConv1d,
                        (_, false) => LayerKind::Conv2d,
                        (_, true) => LayerKind::DepthwiseConv2d,
                    };
                    LayerInfo {
                        name: n.name.clone(),
                        kind,
                        c_in: *c_in,
                        c_out: *c_out,
                        kernel: kernel.clone(),
                        stride: stride.clone(),
                        dilation: dilation.clone(),
                        groups: *groups,
                        out_shape: n.out_shape.clone(),
                        params,
                        macs: (out_elems * per_out) as u64,
                    }
                }
                Op::Linear { c_in, c_out, .. } => LayerInfo {
                    name: n.name.clone(),
                    kind: LayerKind::Linear,
                    c_in: *c_in,
                    c_out: *c_out,
                    kernel: vec![],
                    stride: vec![],
                    dilation: vec![],
                    groups: 1,
                    out_shape: n.out_shape.clone(),
                    params,
                    macs: (c_in * c_out) as u64,
                },
                Op::BatchNorm { channels, .. } => LayerInfo {
                    name: n.name.clone(),
                    kind: LayerKind::BatchNorm,
                    c_in: *channels,
                    c_out: *channels,
                    kernel: vec![],
                    stride: vec![],
                    dilation: vec![],
                    groups: 1,
                    out_shape: n.out_shape.clone(),
                    params,
                    macs: 0,
                },
                _ => continue,
            };
            out.push(info);
        }
        out
    }

    /// Check every node's inputs and recompute/verify its output shape.
    pub fn validate(&self) -> Result<()> {
        let mut b = GraphBuilder::new(self.input_shape.clone());
        for n in &self.nodes {
            ensure!(
                n.inputs.iter().all(|&i| i <= b.nodes.len()),
                "node {}: input refers to a later value",
                n.name
            );
            let v = b.push(&n.name, n.op.clone(), n.inputs.clone())?;
            ensure!(
                b.shape(v) == n.out_shape.as_slice(),
                "node {}: stored output shape {:?} but computed {:?}",
                n.name,
                n.out_shape,
                b.shape(v)
            );
        }
        ensure!(!self.nodes.is_empty(), "graph has no nodes");
        Ok(())
    }
}

/// Builds a graph node by node, inferring and checking shapes.
pub struct GraphBuilder {
    input_shape: Vec<usize>,
    nodes: Vec<Node>,
}

fn conv_out(len: usize, k: usize, s: usize, (lo, hi): (usize, usize), d: usize) -> Option<usize> {
    let span = d * (k.checked_sub(1)?) + 1;
    let padded = len + lo + hi;
    if s == 0 || padded < span {
        None
    } else {
        Some((padded - span) / s + 1)
    }
}

impl GraphBuilder {
    pub fn new(input_shape: Vec<usize>) -> Self {
        Self {
            input_shape,
            nodes: vec![],
        }
    }

    /// Value id of the network input.
    pub fn input(&self) -> usize {
        0
    }

    pub fn shape(&self, v: usize) -> &[usize] {
        if v == 0 {
            &self.input_shape
        } else {
            &self.nodes[v - 1].out_shape
        }
    }

    /// Channels (dim 0 of the per-sample shape) of value `v`.
    pub fn channels(&self, v: usize) -> usize {
        self.shape(v)[0]
    }

    /// Append a node, returning its value id.
    pub fn push(&mut self, name: &str, op: Op, inputs: Vec<usize>) -> Result<usize> {
        for &i in &inputs {
            ensure!(
                i <= self.nodes.len(),
                "node {name}: unknown input value {i}"
            );
        }
        let first = self
            .shape(
                *inputs
                    .first()
                    .ok_or_else(|| anyhow::anyhow!("node {name}: no inputs"))?,
            )
            .to_vec();
        let out_shape = match &op {
            Op::Conv {
                c_in,
                c_out,
                kernel,
                stride,
                padding,
                dilation,
                groups,
                ..
            } => {
                let nd = kernel.len();
                ensure!(
                    (1..=2).contains(&nd)
                        && stride.len() == nd
                        && padding.len() == nd
                        && dilation.len() == nd,
                    "conv {name}: kernel/stride/padding/dilation must all have 1 or 2 entries"
                );
                ensure!(
                    first.len() == nd + 1,
                    "conv {name}: input shape {first:?} does not fit a {nd}-d convolution"
                );
                ensure!(
                    first[0] == *c_in,
                    "conv {name}: input has {} channels, layer expects {c_in}",
                    first[0]
                );
                ensure!(
                    *groups >= 1 && c_in % groups == 0 && c_out % groups == 0 && *c_out > 0,
                    "conv {name}: {c_in}→{c_out} channels not divisible into {groups} groups"
                );
                let mut out = vec![*c_out];
                for i in 0..nd {
                    let o = conv_out(first[i + 1], kernel[i], stride[i], padding[i], dilation[i])
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "conv {name}: kernel {} (dilation {}) does not fit input length {} with padding {:?}",
                                kernel[i], dilation[i], first[i + 1], padding[i]
                            )
                        })?;
                    ensure!(dilation[i] >= 1, "conv {name}: dilation must be ≥ 1");
                    out.push(o);
                }
                out
            }
            Op::BatchNorm { channels, .. } => {
                ensure!(
                    first[0] == *channels,
                    "batch norm {name}: input has {} channels, expects {channels}",
                    first[0]
                );
                first.clone()
            }
            Op::Relu => first.clone(),
            Op::Add => {
                ensure!(inputs.len() == 2, "add {name}: needs two inputs");
                let second = self.shape(inputs[1]);
                ensure!(
                    first == second,
                    "add {name}: shapes {first:?} and {second:?} differ"
                );
                first.clone()
            }
            Op::GlobalAvgPool => {
                ensure!(
                    first.len() >= 2,
                    "pool {name}: input {first:?} has no spatial dims"
                );
                vec![first[0]]
            }
            Op::Linear { c_in, c_out, .. } => {
                ensure!(
                    first.len() == 1 && first[0] == *c_in,
                    "linear {name}: input {first:?}, expects [{c_in}]"
                );
                vec![*c_out]
            }
            Op::Relu6 | Op::Sigmoid | Op::HardSigmoid | Op::HardSwish => first.clone(),
            Op::Dropout { p } => {
                ensure!(
                    (0.0..1.0).contains(p),
                    "dropout {name}: p must be in [0, 1), got {p}"
                );
                first.clone()
            }
            Op::ChannelMul => {
                ensure!(inputs.len() == 2, "channel_mul {name}: needs two inputs");
                let second = self.shape(inputs[1]);
                ensure!(
                    first.len() >= 2 && second == [first[0]],
                    "channel_mul {name}: scales {second:?} do not fit input {first:?} (need [C] for (C, ...))"
                );
                first.clone()
            }
            Op::Concat => {
                ensure!(!inputs.is_empty(), "concat {name}: needs inputs");
                let mut c = 0;
                for &v in &inputs {
                    let sh = self.shape(v);
                    ensure!(
                        sh.len() == first.len() && sh[1..] == first[1..],
                        "concat {name}: shapes {first:?} and {sh:?} differ beyond the channels"
                    );
                    c += sh[0];
                }
                let mut out = first.clone();
                out[0] = c;
                out
            }
            Op::Narrow { start, len } => {
                ensure!(
                    *len > 0 && start + len <= first[0],
                    "narrow {name}: channels {start}..{} of an input with {} channels",
                    start + len,
                    first[0]
                );
                let mut out = first.clone();
                out[0] = *len;
                out
            }
            Op::ChannelShuffle { groups } => {
                ensure!(
                    *groups >= 1 && first[0].is_multiple_of(*groups),
                    "channel_shuffle {name}: {} channels not divisible into {groups} groups",
                    first[0]
                );
                first.clone()
            }
            Op::MaxPool {
                kernel,
                stride,
                padding,
            }
            | Op::AvgPool {
                kernel,
                stride,
                padding,
            } => {
                let nd = kernel.len();
                ensure!(
                    (1..=2).contains(&nd) && stride.len() == nd && padding.len() == nd,
                    "pool {name}: kernel/stride/padding must all have 1 or 2 entries"
                );
                ensure!(
                    first.len() == nd + 1,
                    "pool {name}: input shape {first:?} does not fit a {nd}-d pooling"
                );
                let mut out = vec![first[0]];
                for i in 0..nd {
                    let (lo, hi) = padding[i];
                    ensure!(
                        !matches!(op, Op::MaxPool { .. }) || (lo < kernel[i] && hi < kernel[i]),
                        "max pool {name}: padding {:?} must be smaller than the kernel {}",
                        padding[i],
                        kernel[i]
                    );
                    let o = conv_out(first[i + 1], kernel[i], stride[i], padding[i], 1)
                        .filter(|_| kernel[i] >= 1)
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "pool {name}: window {} (stride {}) does not fit input length {} with padding {:?}",
                                kernel[i], stride[i], first[i + 1], padding[i]
                            )
                        })?;
                    out.push(o);
                }
                out
            }
            Op::Flatten => vec![first.iter().product()],
        };
        let arity_ok = match op {
            Op::Add | Op::ChannelMul => inputs.len() == 2,
            Op::Concat => !inputs.is_empty(),
            _ => inputs.len() == 1,
        };
        if !arity_ok {
            bail!(
                "node {name}: wrong number of inputs ({}) for a {} op",
                inputs.len(),
                op.kind_name()
            );
        }
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs,
            out_shape,
        });
        Ok(self.nodes.len())
    }

    /// Convolution with 'same'-style symmetric padding given explicitly.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        name: &str,
        x: usize,
        c_out: usize,
        kernel: Vec<usize>,
        stride: Vec<usize>,
        padding: Vec<(usize, usize)>,
        dilation: Vec<usize>,
        groups: usize,
        bias: bool,
    ) -> Result<usize> {
        let c_in = self.channels(x);
        self.push(
            name,
            Op::Conv {
                c_in,
                c_out,
                kernel,
                stride,
                padding,
                dilation,
                groups,
                bias,
            },
            vec![x],
        )
    }

    pub fn bn(&mut self, name: &str, x: usize) -> Result<usize> {
        let channels = self.channels(x);
        self.push(
            name,
            Op::BatchNorm {
                channels,
                eps: 1e-5,
                momentum: 0.1,
            },
            vec![x],
        )
    }

    pub fn relu(&mut self, name: &str, x: usize) -> Result<usize> {
        self.push(name, Op::Relu, vec![x])
    }

    pub fn add(&mut self, name: &str, a: usize, b: usize) -> Result<usize> {
        self.push(name, Op::Add, vec![a, b])
    }

    pub fn pool(&mut self, name: &str, x: usize) -> Result<usize> {
        self.push(name, Op::GlobalAvgPool, vec![x])
    }

    /// A one-input op without parameters (activations, dropout, flatten, pooling, …).
    pub fn op(&mut self, name: &str, op: Op, x: usize) -> Result<usize> {
        self.push(name, op, vec![x])
    }

    pub fn linear(&mut self, name: &str, x: usize, c_out: usize, bias: bool) -> Result<usize> {
        let c_in = self.channels(x);
        self.push(name, Op::Linear { c_in, c_out, bias }, vec![x])
    }

    pub fn finish(self) -> Graph {
        Graph {
            input_shape: self.input_shape,
            nodes: self.nodes,
        }
    }
}
