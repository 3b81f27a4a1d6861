//! safetensors weights + JSON architecture: `<name>.safetensors` holds every parameter as f32
//! under `layers.<i>.<param>`, `<name>.json` describes the graph and names those tensors
//! (conv and pool padding per axis: `p` when symmetric, `[begin, end]` otherwise).
//! [`read_safetensors`] loads both back into the same [`Network`].

use crate::network::{Activation, Layer, Network, PoolKind, Tensor32};
use anyhow::{Context, Result, ensure};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const FORMAT: &str = "whittle-network";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Arch {
    format: String,
    version: u32,
    name: String,
    input: ArchInput,
    output: String,
    layers: Vec<ArchLayer>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchInput {
    name: String,
    shape: Vec<usize>,
}

/// Padding of one spatial axis in the JSON: a number `p` for symmetric `(p, p)` (the only
/// form files written before asymmetric padding have), `[begin, end]` otherwise.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ArchPad {
    Symmetric(usize),
    BeginEnd([usize; 2]),
}

impl From<(usize, usize)> for ArchPad {
    fn from((b, e): (usize, usize)) -> Self {
        if b == e {
            ArchPad::Symmetric(b)
        } else {
            ArchPad::BeginEnd([b, e])
        }
    }
}

impl From<ArchPad> for (usize, usize) {
    fn from(p: ArchPad) -> Self {
        match p {
            ArchPad::Symmetric(v) => (v, v),
            ArchPad::BeginEnd([b, e]) => (b, e),
        }
    }
}

/// A layer with its tensors replaced by safetensors keys.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum ArchLayer {
    Conv {
        input: String,
        output: String,
        weight: String,
        bias: Option<String>,
        stride: Vec<usize>,
        padding: Vec<ArchPad>,
        dilation: Vec<usize>,
        groups: usize,
    },
    BatchNorm {
        input: String,
        output: String,
        gamma: String,
        beta: String,
        mean: String,
        var: String,
        eps: f32,
    },
    Relu {
        input: String,
        output: String,
    },
    Add {
        a: String,
        b: String,
        output: String,
    },
    GlobalAvgPool {
        input: String,
        output: String,
    },
    Flatten {
        input: String,
        output: String,
    },
    Linear {
        input: String,
        output: String,
        weight: String,
        bias: Option<String>,
    },
    Activation {
        function: Activation,
        input: String,
        output: String,
    },
    ChannelMul {
        x: String,
        s: String,
        output: String,
    },
    Concat {
        inputs: Vec<String>,
        output: String,
    },
    Narrow {
        input: String,
        output: String,
        start: usize,
        len: usize,
    },
    ChannelShuffle {
        input: String,
        output: String,
        groups: usize,
    },
    Pool {
        kind: PoolKind,
        input: String,
        output: String,
        kernel: Vec<usize>,
        stride: Vec<usize>,
        padding: Vec<ArchPad>,
    },
}

/// Writes `<dir>/<name>.safetensors` and `<dir>/<name>.json`; returns their paths.
pub fn write_safetensors(net: &Network, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    net.shapes()?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut put = |key: String, shape: Vec<usize>, v: &[f32]| -> String {
        tensors.push((
            key.clone(),
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
        key
    };
    let mut layers = Vec::new();
    for (i, l) in net.layers.iter().enumerate() {
        let k = |p: &str| format!("layers.{i}.{p}");
        let mut vec1 = |p: &str, v: &Vec<f32>| put(k(p), vec![v.len()], v);
        layers.push(match l.clone() {
            Layer::Conv {
                input,
                output,
                weight,
                bias,
                stride,
                padding,
                dilation,
                groups,
            } => {
                let bias = bias.map(|b| vec1("bias", &b));
                let weight = put(k("weight"), weight.shape.clone(), &weight.data);
                ArchLayer::Conv {
                    input,
                    output,
                    weight,
                    bias,
                    stride,
                    padding: padding.into_iter().map(ArchPad::from).collect(),
                    dilation,
                    groups,
                }
            }
            Layer::Linear {
                input,
                output,
                weight,
                bias,
            } => {
                let bias = bias.map(|b| vec1("bias", &b));
                let weight = put(k("weight"), weight.shape.clone(), &weight.data);
                ArchLayer::Linear {
                    input,
                    output,
                    weight,
                    bias,
                }
            }
            Layer::BatchNorm {
                input,
                output,
                gamma,
                beta,
                mean,
                var,
                eps,
            } => ArchLayer::BatchNorm {
                input,
                output,
                gamma: vec1("gamma", &gamma),
                beta: vec1("beta", &beta),
                mean: vec1("mean", &mean),
                var: vec1("var", &var),
                eps,
            },
            Layer::Relu { input, output } => ArchLayer::Relu { input, output },
            Layer::Add { a, b, output } => ArchLayer::Add { a, b, output },
            Layer::GlobalAvgPool { input, output } => ArchLayer::GlobalAvgPool { input, output },
            Layer::Flatten { input, output } => ArchLayer::Flatten { input, output },
            Layer::Activation { act, input, output } => ArchLayer::Activation {
                function: act,
                input,
                output,
            },
            Layer::ChannelMul { x, s, output } => ArchLayer::ChannelMul { x, s, output },
            Layer::Concat { inputs, output } => ArchLayer::Concat { inputs, output },
            Layer::Narrow {
                input,
                output,
                start,
                len,
            } => ArchLayer::Narrow {
                input,
                output,
                start,
                len,
            },
            Layer::ChannelShuffle {
                input,
                output,
                groups,
            } => ArchLayer::ChannelShuffle {
                input,
                output,
                groups,
            },
            Layer::Pool {
                kind,
                input,
                output,
                kernel,
                stride,
                padding,
            } => ArchLayer::Pool {
                kind,
                input,
                output,
                kernel,
                stride,
                padding: padding.into_iter().map(ArchPad::from).collect(),
            },
        });
    }
    let arch = Arch {
        format: FORMAT.into(),
        version: VERSION,
        name: net.name.clone(),
        input: ArchInput {
            name: net.input.0.clone(),
            shape: net.input.1.clone(),
        },
        output: net.output.clone(),
        layers,
    };
    let views = tensors
        .iter()
        .map(|(k, s, b)| Ok((k.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::tensor::serialize(views, None).context("serializing safetensors")?;
    let sp = dir.join(format!("{name}.safetensors"));
    let jp = dir.join(format!("{name}.json"));
    std::fs::write(&sp, bytes).with_context(|| format!("writing {}", sp.display()))?;
    std::fs::write(&jp, serde_json::to_string_pretty(&arch)?)
        .with_context(|| format!("writing {}", jp.display()))?;
    Ok((sp, jp))
}

/// Reads back what [`write_safetensors`] wrote, validating the graph.
pub fn read_safetensors(dir: &Path, name: &str) -> Result<Network> {
    let sp = dir.join(format!("{name}.safetensors"));
    let jp = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&jp).with_context(|| format!("reading {}", jp.display()))?;
    let arch: Arch =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", jp.display()))?;
    ensure!(
        arch.format == FORMAT && arch.version == VERSION,
        "{}: format `{}` version {} is not {FORMAT} version {VERSION}",
        jp.display(),
        arch.format,
        arch.version
    );
    let bytes = std::fs::read(&sp).with_context(|| format!("reading {}", sp.display()))?;
    let st =
        SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", sp.display()))?;
    let get = |key: &str| -> Result<Tensor32> {
        let t = st
            .tensor(key)
            .with_context(|| format!("{}: tensor `{key}` missing", sp.display()))?;
        ensure!(
            t.dtype() == Dtype::F32,
            "{}: tensor `{key}` is {:?}, not F32",
            sp.display(),
            t.dtype()
        );
        let data = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Tensor32::new(t.shape().to_vec(), data)
    };
    let vec1 = |key: &str| -> Result<Vec<f32>> {
        let t = get(key)?;
        ensure!(
            t.shape.len() == 1,
            "{}: tensor `{key}` has shape {:?}, expected 1-D",
            sp.display(),
            t.shape
        );
        Ok(t.data)
    };
    let mut layers = Vec::new();
    for l in arch.layers {
        layers.push(match l {
            ArchLayer::Conv {
                input,
                output,
                weight,
                bias,
                stride,
                padding,
                dilation,
                groups,
            } => Layer::Conv {
                input,
                output,
                weight: get(&weight)?,
                bias: bias.map(|b| vec1(&b)).transpose()?,
                stride,
                padding: padding.into_iter().map(<(usize, usize)>::from).collect(),
                dilation,
                groups,
            },
            ArchLayer::Linear {
                input,
                output,
                weight,
                bias,
            } => Layer::Linear {
                input,
                output,
                weight: get(&weight)?,
                bias: bias.map(|b| vec1(&b)).transpose()?,
            },
            ArchLayer::BatchNorm {
                input,
                output,
                gamma,
                beta,
                mean,
                var,
                eps,
            } => Layer::BatchNorm {
                input,
                output,
                gamma: vec1(&gamma)?,
                beta: vec1(&beta)?,
                mean: vec1(&mean)?,
                var: vec1(&var)?,
                eps,
            },
            ArchLayer::Relu { input, output } => Layer::Relu { input, output },
            ArchLayer::Add { a, b, output } => Layer::Add { a, b, output },
            ArchLayer::GlobalAvgPool { input, output } => Layer::GlobalAvgPool { input, output },
            ArchLayer::Flatten { input, output } => Layer::Flatten { input, output },
            ArchLayer::Activation {
                function,
                input,
                output,
            } => Layer::Activation {
                act: function,
                input,
                output,
            },
            ArchLayer::ChannelMul { x, s, output } => Layer::ChannelMul { x, s, output },
            ArchLayer::Concat { inputs, output } => Layer::Concat { inputs, output },
            ArchLayer::Narrow {
                input,
                output,
                start,
                len,
            } => Layer::Narrow {
                input,
                output,
                start,
                len,
            },
            ArchLayer::ChannelShuffle {
                input,
                output,
                groups,
            } => Layer::ChannelShuffle {
                input,
                output,
                groups,
            },
            ArchLayer::Pool {
                kind,
                input,
                output,
                kernel,
                stride,
                padding,
            } => Layer::Pool {
                kind,
                input,
                output,
                kernel,
                stride,
                padding: padding.into_iter().map(<(usize, usize)>::from).collect(),
            },
        });
    }
    let net = Network {
        name: arch.name,
        input: (arch.input.name, arch.input.shape),
        output: arch.output,
        layers,
    };
    net.shapes()
        .with_context(|| format!("architecture in {}", jp.display()))?;
    Ok(net)
}
