//! The layer-level description of a feed-forward network that every writer consumes, with
//! validation and shape inference (batch size 1, NCHW / NCL layouts as in ONNX): convolution,
//! batch norm, linear, ReLU and other activations, residual add, channel multiply
//! (squeeze-and-excitation), concat, narrow, channel shuffle, max/avg/global pooling, flatten.

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A dense row-major f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor32 {
    /// A tensor, checking that `data` has `shape.iter().product()` elements.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        ensure!(
            n == data.len(),
            "tensor of shape {shape:?} needs {n} values, got {}",
            data.len()
        );
        Ok(Self { shape, data })
    }
}

/// A pointwise activation other than ReLU (definitions as in `whittle_kernels`' `Act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `1 / (1 + e^−x)`.
    Sigmoid,
    /// `relu6(x + 3) / 6` (= clamp(x/6 + 1/2, 0, 1), ONNX HardSigmoid with α = 1/6, β = 1/2).
    HardSigmoid,
    /// `x · relu6(x + 3) / 6`.
    HardSwish,
}

impl Activation {
    /// f(x), the definition every writer reproduces.
    pub fn f(self, x: f32) -> f32 {
        match self {
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::HardSigmoid => (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Activation::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        }
    }

    /// Short name (`relu6`, `sigmoid`, `hard_sigmoid`, `hard_swish`).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu6 => "relu6",
            Activation::Sigmoid => "sigmoid",
            Activation::HardSigmoid => "hard_sigmoid",
            Activation::HardSwish => "hard_swish",
        }
    }
}

/// Which pooling of [`Layer::Pool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// Maximum over the window; padded positions never win (as if −∞).
    Max,
    /// Mean over the full window, padded zeros included (`count_include_pad = 1`).
    Avg,
}

/// One node of a feed-forward graph; tensors are referred to by name.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    /// 1-D or 2-D convolution. `weight` is (Cout, Cin/groups, k) or (Cout, Cin/groups, kh, kw);
    /// `stride`, `padding` and `dilation` have one entry per spatial axis. Padding is
    /// `(begin, end)`: zeros before the first and after the last element of the axis
    /// (symmetric `(p, p)`; a causal TCN pads `((k − 1)·dilation, 0)`).
    Conv {
        input: String,
        output: String,
        weight: Tensor32,
        bias: Option<Vec<f32>>,
        stride: Vec<usize>,
        padding: Vec<(usize, usize)>,
        dilation: Vec<usize>,
        groups: usize,
    },
    /// Eval-mode batch norm over axis 1: y = gamma·(x − mean)/sqrt(var + eps) + beta.
    BatchNorm {
        input: String,
        output: String,
        gamma: Vec<f32>,
        beta: Vec<f32>,
        mean: Vec<f32>,
        var: Vec<f32>,
        eps: f32,
    },
    Relu {
        input: String,
        output: String,
    },
    /// Element-wise sum of two tensors of equal shape (residual connections).
    Add {
        a: String,
        b: String,
        output: String,
    },
    /// Mean over all spatial axes; keeps them with size 1, like ONNX GlobalAveragePool.
    GlobalAvgPool {
        input: String,
        output: String,
    },
    /// (1, d1, d2, …) → (1, d1·d2·…).
    Flatten {
        input: String,
        output: String,
    },
    /// y = W x + b with `weight` (out, in) on a (1, in) input.
    Linear {
        input: String,
        output: String,
        weight: Tensor32,
        bias: Option<Vec<f32>>,
    },
    /// Pointwise ReLU6, sigmoid, hard sigmoid or hard swish.
    Activation {
        act: Activation,
        input: String,
        output: String,
    },
    /// y = x · s per channel (squeeze-and-excitation): x (1, C, ...), s (1, C).
    ChannelMul {
        x: String,
        s: String,
        output: String,
    },
    /// The inputs joined along axis 1 (equal other dimensions).
    Concat {
        inputs: Vec<String>,
        output: String,
    },
    /// Channels `start .. start + len` (axis 1) of the input.
    Narrow {
        input: String,
        output: String,
        start: usize,
        len: usize,
    },
    /// ShuffleNet's channel shuffle: channels viewed as (groups, C/groups) and transposed,
    /// so output channel j·groups + g is input channel g·(C/groups) + j.
    ChannelShuffle {
        input: String,
        output: String,
        groups: usize,
    },
    /// 1-D or 2-D max or average pooling; `kernel`, `stride`, `padding` (begin, end) have
    /// one entry per spatial axis (floor output size, like ONNX `ceil_mode = 0`).
    Pool {
        kind: PoolKind,
        input: String,
        output: String,
        kernel: Vec<usize>,
        stride: Vec<usize>,
        padding: Vec<(usize, usize)>,
    },
}

impl Layer {
    /// Names of the tensors this layer reads.
    pub fn inputs(&self) -> Vec<&str> {
        match self {
            Layer::Add { a, b, .. } => vec![a, b],
            Layer::ChannelMul { x, s, .. } => vec![x, s],
            Layer::Concat { inputs, .. } => inputs.iter().map(String::as_str).collect(),
            Layer::Conv { input, .. }
            | Layer::Activation { input, .. }
            | Layer::Narrow { input, .. }
            | Layer::ChannelShuffle { input, .. }
            | Layer::Pool { input, .. }
            | Layer::BatchNorm { input, .. }
            | Layer::Relu { input, .. }
            | Layer::GlobalAvgPool { input, .. }
            | Layer::Flatten { input, .. }
            | Layer::Linear { input, .. } => vec![input],
        }
    }

    /// Name of the tensor this layer writes.
    pub fn output(&self) -> &str {
        match self {
            Layer::Conv { output, .. }
            | Layer::BatchNorm { output, .. }
            | Layer::Relu { output, .. }
            | Layer::Add { output, .. }
            | Layer::GlobalAvgPool { output, .. }
            | Layer::Flatten { output, .. }
            | Layer::Linear { output, .. }
            | Layer::Activation { output, .. }
            | Layer::ChannelMul { output, .. }
            | Layer::Concat { output, .. }
            | Layer::Narrow { output, .. }
            | Layer::ChannelShuffle { output, .. }
            | Layer::Pool { output, .. } => output,
        }
    }

    /// Short operator name used in messages and the JSON architecture.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Conv { .. } => "conv",
            Layer::BatchNorm { .. } => "batch_norm",
            Layer::Relu { .. } => "relu",
            Layer::Add { .. } => "add",
            Layer::GlobalAvgPool { .. } => "global_avg_pool",
            Layer::Flatten { .. } => "flatten",
            Layer::Linear { .. } => "linear",
            Layer::Activation { act, .. } => act.name(),
            Layer::ChannelMul { .. } => "channel_mul",
            Layer::Concat { .. } => "concat",
            Layer::Narrow { .. } => "narrow",
            Layer::ChannelShuffle { .. } => "channel_shuffle",
            Layer::Pool {
                kind: PoolKind::Max,
                ..
            } => "max_pool",
            Layer::Pool {
                kind: PoolKind::Avg,
                ..
            } => "avg_pool",
        }
    }
}

/// A network: one input (name, shape including batch 1), one output, layers in topological order.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    pub name: String,
    pub input: (String, Vec<usize>),
    pub output: String,
    pub layers: Vec<Layer>,
}

/// Output length of a convolution along one axis with `pad = (begin, end)` zeros.
pub fn conv_out_len(
    len: usize,
    k: usize,
    stride: usize,
    pad: (usize, usize),
    dil: usize,
) -> Option<usize> {
    if k == 0 || stride == 0 || dil == 0 {
        return None;
    }
    let span = dil * (k - 1) + 1;
    let padded = len + pad.0 + pad.1;
    if padded < span {
        return None;
    }
    Some((padded - span) / stride + 1)
}

impl Network {
    /// Checks the graph and returns the shape of every tensor (batch dimension included).
    /// Fails on unknown or redefined tensor names and on inconsistent shapes or attributes.
    pub fn shapes(&self) -> Result<BTreeMap<String, Vec<usize>>> {
        let mut shapes = BTreeMap::new();
        let (in_name, in_shape) = &self.input;
        ensure!(
            in_shape.first() == Some(&1),
            "network `{}`: input shape {in_shape:?} must start with batch 1",
            self.name
        );
        shapes.insert(in_name.clone(), in_shape.clone());
        for (i, layer) in self.layers.iter().enumerate() {
            let ctx = || format!("network `{}`, layer {i} ({})", self.name, layer.kind());
            let mut ins = Vec::new();
            for name in layer.inputs() {
                let s = shapes
                    .get(name)
                    .with_context(|| format!("{}: unknown input tensor `{name}`", ctx()))?;
                ins.push(s.clone());
            }
            let out = layer_shape(layer, &ins).with_context(ctx)?;
            ensure!(
                params_finite(layer),
                "{}: parameters contain NaN or infinity",
                ctx()
            );
            let name = layer.output();
            ensure!(
                !shapes.contains_key(name),
                "{}: tensor `{name}` is defined twice",
                ctx()
            );
            shapes.insert(name.to_string(), out);
        }
        ensure!(
            shapes.contains_key(&self.output),
            "network `{}`: output tensor `{}` is never produced",
            self.name,
            self.output
        );
        Ok(shapes)
    }

    /// Number of parameters (weights, biases, batch-norm affine and statistics).
    pub fn num_params(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match l {
                Layer::Conv { weight, bias, .. } | Layer::Linear { weight, bias, .. } => {
                    weight.data.len() + bias.as_ref().map_or(0, Vec::len)
                }
                Layer::BatchNorm { gamma, .. } => 4 * gamma.len(),
                _ => 0,
            })
            .sum()
    }
}

fn params_finite(layer: &Layer) -> bool {
    let fin = |v: &[f32]| v.iter().all(|x| x.is_finite());
    match layer {
        Layer::Conv { weight, bias, .. } | Layer::Linear { weight, bias, .. } => {
            fin(&weight.data) && bias.as_deref().is_none_or(fin)
        }
        Layer::BatchNorm {
            gamma,
            beta,
            mean,
            var,
            eps,
            ..
        } => fin(gamma) && fin(beta) && fin(mean) && fin(var) && eps.is_finite(),
        _ => true,
    }
}

fn layer_shape(layer: &Layer, ins: &[Vec<usize>]) -> Result<Vec<usize>> {
    let x = ins.first().context("the layer has no input tensors")?;
    Ok(match layer {
        Layer::Conv {
            weight,
            bias,
            stride,
            padding,
            dilation,
            groups,
            ..
        } => {
            let rank = weight.shape.len();
            ensure!(
                rank == 3 || rank == 4,
                "weight shape {:?} must be (Cout, Cin/groups, k) or (Cout, Cin/groups, kh, kw)",
                weight.shape
            );
            let sp = rank - 2;
            ensure!(
                x.len() == rank,
                "input shape {x:?} does not have {sp} spatial axes like weight {:?}",
                weight.shape
            );
            ensure!(
                stride.len() == sp && padding.len() == sp && dilation.len() == sp,
                "stride {stride:?}, padding {padding:?}, dilation {dilation:?} need {sp} entries each"
            );
            let (cout, cin_g) = (weight.shape[0], weight.shape[1]);
            ensure!(
                *groups >= 1 && cout % groups == 0 && x[1] == cin_g * groups,
                "input channels {} do not match weight {:?} with groups {groups} (Cout must be divisible by groups)",
                x[1],
                weight.shape
            );
            ensure!(
                weight.data.len() == weight.shape.iter().product::<usize>(),
                "weight data length {} does not match shape {:?}",
                weight.data.len(),
                weight.shape
            );
            if let Some(b) = bias {
                ensure!(
                    b.len() == cout,
                    "bias has {} values for {cout} channels",
                    b.len()
                );
            }
            let mut out = vec![1, cout];
            for a in 0..sp {
                let o = conv_out_len(x[2 + a], weight.shape[2 + a], stride[a], padding[a], dilation[a])
                    .with_context(|| format!("spatial axis {a}: input {} too short for kernel {}, stride {}, padding {:?} (begin, end), dilation {} (all must be ≥ 1 except padding)", x[2 + a], weight.shape[2 + a], stride[a], padding[a], dilation[a]))?;
                out.push(o);
            }
            out
        }
        Layer::BatchNorm {
            gamma,
            beta,
            mean,
            var,
            eps,
            ..
        } => {
            ensure!(x.len() >= 2, "input shape {x:?} has no channel axis");
            let c = x[1];
            for (n, v) in [
                ("gamma", gamma),
                ("beta", beta),
                ("mean", mean),
                ("var", var),
            ] {
                ensure!(v.len() == c, "{n} has {} values for {c} channels", v.len());
            }
            ensure!(*eps >= 0.0, "eps {eps} must be non-negative");
            x.clone()
        }
        Layer::Relu { .. } => x.clone(),
        Layer::Add { .. } => {
            ensure!(
                ins[0] == ins[1],
                "operand shapes {:?} and {:?} differ",
                ins[0],
                ins[1]
            );
            x.clone()
        }
        Layer::GlobalAvgPool { .. } => {
            ensure!(x.len() >= 3, "input shape {x:?} has no spatial axes");
            let mut o = vec![1, x[1]];
            o.extend(std::iter::repeat_n(1, x.len() - 2));
            o
        }
        Layer::Flatten { .. } => vec![1, x.iter().skip(1).product()],
        Layer::Linear { weight, bias, .. } => {
            ensure!(
                weight.shape.len() == 2,
                "weight shape {:?} must be (out, in)",
                weight.shape
            );
            ensure!(
                weight.data.len() == weight.shape[0] * weight.shape[1],
                "weight data length {} does not match shape {:?}",
                weight.data.len(),
                weight.shape
            );
            ensure!(
                x.len() == 2 && x[1] == weight.shape[1],
                "input shape {x:?} must be (1, {}); flatten first",
                weight.shape[1]
            );
            if let Some(b) = bias {
                ensure!(
                    b.len() == weight.shape[0],
                    "bias has {} values for {} outputs",
                    b.len(),
                    weight.shape[0]
                );
            }
            vec![1, weight.shape[0]]
        }
        Layer::Activation { .. } => x.clone(),
        Layer::ChannelMul { .. } => {
            ensure!(
                x.len() >= 3 && ins[1] == [1, x[1]],
                "scales of shape {:?} do not fit input {x:?} (need (1, C) for (1, C, ...))",
                ins[1]
            );
            x.clone()
        }
        Layer::Concat { .. } => {
            ensure!(x.len() >= 2, "input shape {x:?} has no channel axis");
            let mut out = x.clone();
            out[1] = 0;
            for s in ins {
                ensure!(
                    s.len() == x.len() && s[2..] == x[2..],
                    "input shapes {x:?} and {s:?} differ beyond the channel axis"
                );
                out[1] += s[1];
            }
            out
        }
        Layer::Narrow { start, len, .. } => {
            ensure!(
                x.len() >= 2 && *len >= 1 && start + len <= x[1],
                "channels {start}..{} do not fit input {x:?}",
                start + len
            );
            let mut out = x.clone();
            out[1] = *len;
            out
        }
        Layer::ChannelShuffle { groups, .. } => {
            ensure!(
                x.len() >= 2 && *groups >= 1 && x[1] % groups == 0,
                "input {x:?}: channels not divisible into {groups} groups"
            );
            x.clone()
        }
        Layer::Pool {
            kind,
            kernel,
            stride,
            padding,
            ..
        } => {
            let sp = kernel.len();
            ensure!(
                (sp == 1 || sp == 2) && stride.len() == sp && padding.len() == sp,
                "kernel {kernel:?}, stride {stride:?}, padding {padding:?} need 1 or 2 entries each"
            );
            ensure!(
                x.len() == sp + 2,
                "input shape {x:?} does not have {sp} spatial axes like kernel {kernel:?}"
            );
            let mut out = vec![1, x[1]];
            for a in 0..sp {
                ensure!(
                    *kind == PoolKind::Avg
                        || (padding[a].0 < kernel[a] && padding[a].1 < kernel[a]),
                    "max pooling padding {:?} must be smaller than the kernel {}",
                    padding[a],
                    kernel[a]
                );
                let o = conv_out_len(x[2 + a], kernel[a], stride[a], padding[a], 1).with_context(
                    || {
                        format!(
                            "spatial axis {a}: input {} too short for window {}, stride {}, padding {:?} (all must be ≥ 1 except padding)",
                            x[2 + a], kernel[a], stride[a], padding[a]
                        )
                    },
                )?;
                out.push(o);
            }
            out
        }
    })
}

/// Folds every BatchNorm whose input is produced by a Conv or Linear read by nothing else
/// into that layer's weight and bias; other BatchNorms are kept. Outputs are unchanged
/// up to float rounding.
pub fn fold_batchnorm(net: &Network) -> Result<Network> {
    net.shapes()?;
    let mut layers: Vec<Layer> = Vec::with_capacity(net.layers.len());
    for layer in &net.layers {
        if let Layer::BatchNorm {
            input,
            output,
            gamma,
            beta,
            mean,
            var,
            eps,
        } = layer
        {
            let readers = net
                .layers
                .iter()
                .filter(|l| l.inputs().contains(&input.as_str()))
                .count();
            let is_graph_io = *input == net.output || *input == net.input.0;
            let producer = layers.iter_mut().find(|l| l.output() == input);
            if let (Some(prev), 1, false) = (producer, readers, is_graph_io) {
                let folded = match prev {
                    Layer::Conv {
                        weight,
                        bias,
                        output: out,
                        ..
                    }
                    | Layer::Linear {
                        weight,
                        bias,
                        output: out,
                        ..
                    } => {
                        let cout = weight.shape[0];
                        let per = weight.data.len() / cout;
                        let mut b = bias.clone().unwrap_or_else(|| vec![0.0; cout]);
                        for c in 0..cout {
                            let s = gamma[c] / (var[c] + eps).sqrt();
                            for w in &mut weight.data[c * per..(c + 1) * per] {
                                *w *= s;
                            }
                            b[c] = (b[c] - mean[c]) * s + beta[c];
                        }
                        *bias = Some(b);
                        *out = output.clone();
                        true
                    }
                    _ => false,
                };
                if folded {
                    continue;
                }
            }
        }
        layers.push(layer.clone());
    }
    let out = Network {
        name: net.name.clone(),
        input: net.input.clone(),
        output: net.output.clone(),
        layers,
    };
    out.shapes()?;
    Ok(out)
}

/// Fails unless the network has no BatchNorm (int8 writers need batch norm folded first).
pub fn require_folded(net: &Network) -> Result<()> {
    if let Some(l) = net
        .layers
        .iter()
        .find(|l| matches!(l, Layer::BatchNorm { .. }))
    {
        bail!(
            "network `{}`: batch norm producing `{}` is not folded; call fold_batchnorm first (its input must come from a Conv/Linear read only by it)",
            net.name,
            l.output()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_output_lengths_by_hand() {
        // DS-CNN stem on 49×10: k=(10,4), s=2, p=(5,1).
        assert_eq!(conv_out_len(49, 10, 2, (5, 5), 1), Some(25));
        assert_eq!(conv_out_len(10, 4, 2, (1, 1), 1), Some(5));
        // Dilated k=3, d=4, p=4 keeps length.
        assert_eq!(conv_out_len(20, 3, 1, (4, 4), 4), Some(20));
        // Causal k=3, d=4: 8 zeros on the left only also keeps it.
        assert_eq!(conv_out_len(20, 3, 1, (8, 0), 4), Some(20));
        // 10 + 3 + 0 = 13 padded, span 2·2+1 = 5, stride 2 → (13 − 5)/2 + 1 = 5.
        assert_eq!(conv_out_len(10, 3, 2, (3, 0), 2), Some(5));
        assert_eq!(conv_out_len(2, 3, 1, (0, 0), 1), None);
        assert_eq!(conv_out_len(2, 3, 1, (1, 0), 1), Some(1));
        assert_eq!(conv_out_len(2, 0, 1, (0, 0), 1), None);
    }

    fn conv_bn_net() -> Network {
        Network {
            name: "t".into(),
            input: ("x".into(), vec![1, 1, 3]),
            output: "y".into(),
            layers: vec![
                Layer::Conv {
                    input: "x".into(),
                    output: "c".into(),
                    weight: Tensor32::new(vec![2, 1, 2], vec![1.0, -1.0, 0.5, 2.0]).unwrap(),
                    bias: Some(vec![0.5, 0.0]),
                    stride: vec![1],
                    padding: vec![(0, 0)],
                    dilation: vec![1],
                    groups: 1,
                },
                Layer::BatchNorm {
                    input: "c".into(),
                    output: "y".into(),
                    gamma: vec![2.0, 1.0],
                    beta: vec![1.0, 0.0],
                    mean: vec![0.5, 1.0],
                    var: vec![3.0, 0.0],
                    eps: 1.0,
                },
            ],
        }
    }

    #[test]
    fn reference_conv_bn_by_hand_and_fold_preserves_it() {
        let net = conv_bn_net();
        let x = [1.0, 2.0, 4.0];
        // conv ch0: [1-2+0.5, 2-4+0.5] = [-0.5, -1.5]; ch1: [0.5+4, 1+8] = [4.5, 9]
        // bn ch0: 2(v-0.5)/2+1 = v+0.5 → [0, -1]; ch1: (v-1)/1 → [3.5, 8]
        let y = crate::reference::run(&net, &x, None).unwrap();
        assert_eq!(y, vec![0.0, -1.0, 3.5, 8.0]);
        let f = fold_batchnorm(&net).unwrap();
        assert_eq!(f.layers.len(), 1);
        assert_eq!(f.layers[0].output(), "y");
        let yf = crate::reference::run(&f, &x, None).unwrap();
        for (a, b) in y.iter().zip(&yf) {
            assert!((a - b).abs() < 1e-6, "{y:?} vs {yf:?}");
        }
        assert!(require_folded(&net).is_err());
        assert!(require_folded(&f).is_ok());
    }

    #[test]
    fn shape_errors_name_the_layer() {
        let mut net = conv_bn_net();
        net.input.1 = vec![1, 2, 3];
        let e = format!("{:#}", net.shapes().unwrap_err());
        assert!(
            e.contains("layer 0 (conv)") && e.contains("input channels 2"),
            "{e}"
        );
        let mut net = conv_bn_net();
        net.output = "nope".into();
        assert!(format!("{:#}", net.shapes().unwrap_err()).contains("never produced"));
        let mut net = conv_bn_net();
        if let Layer::Conv { weight, .. } = &mut net.layers[0] {
            weight.data[1] = f32::NAN;
        }
        assert!(format!("{:#}", net.shapes().unwrap_err()).contains("NaN"));
    }
}
