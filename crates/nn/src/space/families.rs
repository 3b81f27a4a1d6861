//! The narrow spaces: `plain_cnn`, the three-layer network of `004` Fig. 1 (conv → BN → ReLU
//! → max-pool 2×2 per layer, then flatten → linear; variables: channels and kernel size per
//! layer), and `resnet`, a ResNet-style space around ResNet-8 (stem, then stages of basic
//! blocks; variables: stem channels, and per stage channels, block repeats, kernel size and
//! the expansion ratio of the block's middle conv).
//!
//! A candidate is one value per variable, in [`Space::variables`] order. [`Space::graph`]
//! builds the shape-checked [`Graph`] (no weights); [`Space::model_table`] gives the `model`
//! table of a `train` stage (`arch = "graph"` for the plain CNN, whose input shape and class
//! count then come from the data; `arch = "full"` with a ResNet configuration for `resnet`).

use super::{Domain, Law, Variable};
use crate::arch::node_list::{Count, NodeConfig, Padding};
use crate::config::{ModelConfig, ResNetConfig, ResStackConfig};
use crate::graph::{Graph, GraphBuilder, Op};
use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

fn cifar_input() -> [usize; 3] {
    [3, 32, 32]
}
fn ten() -> usize {
    10
}
fn three() -> usize {
    3
}
fn c128() -> [u32; 2] {
    [1, 128]
}
fn k1357() -> Vec<u32> {
    vec![1, 3, 5, 7]
}
fn stem() -> [u32; 2] {
    [4, 64]
}
fn c4_128() -> [u32; 2] {
    [4, 128]
}
fn repeats() -> [u32; 2] {
    [1, 3]
}
fn k35() -> Vec<u32> {
    vec![3, 5]
}
fn expand() -> [u32; 2] {
    [1, 4]
}

/// A narrow space, as written in an experiment (`space = { family = "plain_cnn", … }`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case", deny_unknown_fields)]
pub enum SpaceConfig {
    PlainCnn(PlainCnnSpace),
    #[serde(rename = "resnet")]
    ResNet(ResNetSpace),
}

/// `004` Fig. 1: `layers` × [conv k×k (same padding, no bias) → BN → ReLU → max-pool 2×2],
/// flatten, linear. Reference: channels 32·2^i (capped at the upper bound), kernels 3.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainCnnSpace {
    #[serde(default = "cifar_input")]
    pub input: [usize; 3],
    #[serde(default = "ten")]
    pub classes: usize,
    #[serde(default = "three")]
    pub layers: usize,
    /// Absolute bounds of every layer's output channels.
    #[serde(default = "c128")]
    pub channels: [u32; 2],
    /// Kernel size options (square kernels).
    #[serde(default = "k1357")]
    pub kernels: Vec<u32>,
}

/// ResNet-style: 3×3 stem conv of `s` channels → BN → ReLU, then `stages` stages; stage j has
/// `n_j` basic blocks of `c_j` output channels (the first at stride 2 except in stage 1):
/// conv k_j×k_j to e_j·c_j channels → BN → ReLU → conv k_j×k_j to c_j → BN, plus the input
/// (or a 1×1 conv when the shape changes), ReLU; then global pooling and a linear layer.
/// Validity: widths never shrink from one stage to the next (c_1 ≤ c_2 ≤ …), as in the
/// reference, and every kernel fits its stage's feature map. Reference: ResNet-8 (s = 16,
/// c = 16, 32, 64, one block each, k = 3, e = 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetSpace {
    #[serde(default = "cifar_input")]
    pub input: [usize; 3],
    #[serde(default = "ten")]
    pub classes: usize,
    #[serde(default = "three")]
    pub stages: usize,
    /// Absolute bounds of the stem's channels.
    #[serde(default = "stem")]
    pub stem: [u32; 2],
    /// Absolute bounds of every stage's channels.
    #[serde(default = "c4_128")]
    pub channels: [u32; 2],
    /// Absolute bounds of the blocks per stage.
    #[serde(default = "repeats")]
    pub repeats: [u32; 2],
    /// Kernel size options of the blocks' convs.
    #[serde(default = "k35")]
    pub kernels: Vec<u32>,
    /// Absolute bounds of the expansion ratio: middle channels = ratio × stage channels.
    #[serde(default = "expand")]
    pub expand: [u32; 2],
}

/// A checked space with its variables.
#[derive(Clone, Debug)]
pub struct Space {
    pub config: SpaceConfig,
    vars: Vec<Variable>,
}

fn range(what: &str, [min, max]: [u32; 2]) -> Result<Domain> {
    ensure!(
        min >= 1 && min <= max,
        "space: `{what}` = [{min}, {max}] must be a range 1 ≤ low ≤ high"
    );
    Ok(Domain::Range { min, max })
}

fn options(what: &str, o: &[u32]) -> Result<Domain> {
    ensure!(
        !o.is_empty() && o.windows(2).all(|w| w[0] < w[1]) && o[0] >= 1,
        "space: `{what}` = {o:?} must be a non-empty ascending list of sizes ≥ 1"
    );
    Ok(Domain::Options(o.to_vec()))
}

fn var(name: String, domain: Domain, doc: String) -> Variable {
    Variable { name, domain, doc }
}

/// The option nearest `want` (the smaller one on a tie).
fn nearest(o: &[u32], want: u32) -> u32 {
    *o.iter()
        .min_by_key(|&&v| (v.abs_diff(want), v))
        .expect("options are not empty")
}

impl Space {
    /// Checks the bounds and that the reference model is a valid point of the space.
    pub fn new(config: SpaceConfig) -> Result<Space> {
        let mut vars = vec![];
        match &config {
            SpaceConfig::PlainCnn(c) => {
                ensure!(c.classes > 0, "space: `classes` must be ≥ 1");
                ensure!(
                    (1..=8).contains(&c.layers),
                    "space: plain_cnn `layers` must be 1..=8, got {}",
                    c.layers
                );
                let side = c.input[1].min(c.input[2]);
                ensure!(
                    c.input[0] > 0 && side >> c.layers >= 1,
                    "space: plain_cnn input {:?} is too small for {} layers of 2×2 pooling",
                    c.input,
                    c.layers
                );
                for i in 1..=c.layers {
                    vars.push(var(
                        format!("c{i}"),
                        range("channels", c.channels)?,
                        format!("output channels of conv {i}"),
                    ));
                }
                for i in 1..=c.layers {
                    vars.push(var(
                        format!("k{i}"),
                        options("kernels", &c.kernels)?,
                        format!("kernel size of conv {i}"),
                    ));
                }
            }
            SpaceConfig::ResNet(c) => {
                ensure!(c.classes > 0, "space: `classes` must be ≥ 1");
                ensure!(
                    (1..=6).contains(&c.stages),
                    "space: resnet `stages` must be 1..=6, got {}",
                    c.stages
                );
                let side = c.input[1].min(c.input[2]);
                ensure!(
                    c.input[0] > 0 && side >> (c.stages - 1) >= 1,
                    "space: resnet input {:?} is too small for {} stages (each after the first halves the map)",
                    c.input,
                    c.stages
                );
                vars.push(var(
                    "s".into(),
                    range("stem", c.stem)?,
                    "stem channels".into(),
                ));
                for j in 1..=c.stages {
                    vars.push(var(
                        format!("c{j}"),
                        range("channels", c.channels)?,
                        format!("channels of stage {j}"),
                    ));
                    vars.push(var(
                        format!("n{j}"),
                        range("repeats", c.repeats)?,
                        format!("blocks of stage {j}"),
                    ));
                    vars.push(var(
                        format!("k{j}"),
                        options("kernels", &c.kernels)?,
                        format!("kernel size of stage {j}"),
                    ));
                    vars.push(var(
                        format!("e{j}"),
                        range("expand", c.expand)?,
                        format!("expansion ratio of stage {j} (middle = e × channels)"),
                    ));
                }
            }
        }
        let s = Space { config, vars };
        let r = s.reference();
        for (v, &x) in s.vars.iter().zip(&r) {
            if v.domain.index_range(x, x).is_none() {
                bail!(
                    "space: the reference model has {} = {x} ({}), outside the bounds {:?}; a narrow space must contain its reference",
                    v.name,
                    v.doc,
                    v.domain
                );
            }
        }
        if let Err(e) = s.check(&r) {
            bail!("space: the reference model is not valid: {e}");
        }
        Ok(s)
    }

    pub fn variables(&self) -> &[Variable] {
        &self.vars
    }

    /// The widest law of the space.
    pub fn full_law(&self) -> Law {
        Law::full(&self.vars)
    }

    /// The reference model's values (`004`: the space contains its reference).
    pub fn reference(&self) -> Vec<u32> {
        match &self.config {
            SpaceConfig::PlainCnn(c) => {
                let mut r: Vec<u32> = (0..c.layers)
                    .map(|i| (32u32 << i.min(20)).min(c.channels[1]))
                    .collect();
                r.extend((0..c.layers).map(|_| nearest(&c.kernels, 3)));
                r
            }
            SpaceConfig::ResNet(c) => {
                let mut r = vec![16];
                for j in 0..c.stages {
                    r.extend([16u32 << j.min(20), 1, nearest(&c.kernels, 3), 1]);
                }
                r
            }
        }
    }

    /// The validity rule (beyond the bounds, which sampling keeps): `Err` says what fails.
    pub fn check(&self, x: &[u32]) -> Result<(), String> {
        if x.len() != self.vars.len() {
            return Err(format!(
                "{} values for {} variables",
                x.len(),
                self.vars.len()
            ));
        }
        match &self.config {
            SpaceConfig::PlainCnn(c) => {
                let mut side = c.input[1].min(c.input[2]);
                for i in 0..c.layers {
                    let k = x[c.layers + i] as usize;
                    if k > side {
                        return Err(format!(
                            "k{} = {k} is larger than its {side}-pixel map",
                            i + 1
                        ));
                    }
                    side /= 2;
                }
            }
            SpaceConfig::ResNet(c) => {
                let mut side = c.input[1].min(c.input[2]);
                for j in 0..c.stages {
                    let at = 1 + 4 * j;
                    if j > 0 {
                        side = side.div_ceil(2);
                        if x[at] < x[at - 4] {
                            return Err(format!(
                                "c{} = {} is narrower than c{} = {}",
                                j + 1,
                                x[at],
                                j,
                                x[at - 4]
                            ));
                        }
                    }
                    if x[at + 2] as usize > side {
                        return Err(format!(
                            "k{} = {} is larger than its {side}-pixel map",
                            j + 1,
                            x[at + 2]
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The shape-checked graph of candidate `x` (no weights are made).
    pub fn graph(&self, x: &[u32]) -> Result<Graph> {
        match &self.config {
            SpaceConfig::PlainCnn(c) => plain_graph(c, x),
            SpaceConfig::ResNet(c) => ModelConfig::ResNet(self.resnet_config(c, x)).build(),
        }
    }

    fn resnet_config(&self, c: &ResNetSpace, x: &[u32]) -> ResNetConfig {
        let mut stacks = vec![];
        for j in 0..c.stages {
            let [ch, n, k, e] = [x[1 + 4 * j], x[2 + 4 * j], x[3 + 4 * j], x[4 + 4 * j]];
            for b in 0..n {
                stacks.push(ResStackConfig {
                    mid_channels: (ch * e) as usize,
                    channels: ch as usize,
                    stride: if j > 0 && b == 0 { 2 } else { 1 },
                    kernel: k as usize,
                });
            }
        }
        ResNetConfig {
            input: c.input,
            classes: c.classes,
            stem_channels: x[0] as usize,
            stacks,
            bias: false,
        }
    }

    /// The `model` table of a `train` stage for candidate `x`.
    pub fn model_table(&self, x: &[u32]) -> Value {
        match &self.config {
            SpaceConfig::PlainCnn(c) => json!({ "arch": "graph", "nodes": plain_nodes(c, x) }),
            SpaceConfig::ResNet(c) => json!({
                "arch": "full",
                "config": ModelConfig::ResNet(self.resnet_config(c, x)),
            }),
        }
    }

    /// `{ name: value }` of candidate `x`.
    pub fn named(&self, x: &[u32]) -> serde_json::Map<String, Value> {
        self.vars
            .iter()
            .zip(x)
            .map(|(v, &x)| (v.name.clone(), json!(x)))
            .collect()
    }
}

fn plain_graph(c: &PlainCnnSpace, x: &[u32]) -> Result<Graph> {
    let mut b = GraphBuilder::new(c.input.to_vec());
    let mut v = 0;
    for i in 0..c.layers {
        let (ch, k) = (x[i] as usize, x[c.layers + i] as usize);
        let p = ((k - 1) / 2, k - 1 - (k - 1) / 2);
        let n = i + 1;
        v = b.conv(
            &format!("conv{n}"),
            v,
            ch,
            vec![k, k],
            vec![1, 1],
            vec![p, p],
            vec![1, 1],
            1,
            false,
        )?;
        v = b.bn(&format!("bn{n}"), v)?;
        v = b.relu(&format!("relu{n}"), v)?;
        v = b.op(
            &format!("pool{n}"),
            Op::MaxPool {
                kernel: vec![2, 2],
                stride: vec![2, 2],
                padding: vec![(0, 0); 2],
            },
            v,
        )?;
    }
    v = b.op("flatten", Op::Flatten, v)?;
    b.linear("fc", v, c.classes, true)?;
    Ok(b.finish())
}

/// The same network as [`plain_graph`] as written nodes (`arch = "graph"`).
fn plain_nodes(c: &PlainCnnSpace, x: &[u32]) -> Vec<Value> {
    let node = |name: String, op| NodeConfig::new(name, op, vec![]);

    use crate::arch::node_list::OpKind as K;
    let mut out = vec![];
    for i in 0..c.layers {
        let n = i + 1;
        out.push(NodeConfig {
            c_out: Some(Count::N(x[i] as usize)),
            kernel: Some(vec![x[c.layers + i] as usize; 2]),
            padding: Some(Padding::Word("same".into())),
            bias: Some(false),
            ..node(format!("conv{n}"), K::Conv)
        });
        out.push(node(format!("bn{n}"), K::BatchNorm));
        out.push(node(format!("relu{n}"), K::Relu));
        out.push(NodeConfig {
            kernel: Some(vec![2, 2]),
            stride: Some(vec![2, 2]),
            ..node(format!("pool{n}"), K::MaxPool)
        });
    }
    out.push(node("flatten".into(), K::Flatten));
    out.push(node("fc".into(), K::Linear));
    out.into_iter()
        .map(|n| serde_json::to_value(n).expect("a node serialises"))
        .collect()
}
