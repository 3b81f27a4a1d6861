//! Export of a masked network to a physically smaller one: kept channels per layer, kernel
//! size and dilation from the time masks, weights sliced from the seed. Shared by PIT and the
//! pruning methods: both describe the result as [`Keep`] (kept channel indices per channel
//! group, kept taps per Conv1d) over the seed graph's [`Plan`], whose channel layouts say
//! which channels every value keeps (through residual sums, squeeze-and-excitation, concat,
//! channel split, shuffle and flatten; see [`super::plan`] for the coupling rules and what is
//! frozen). The exported network computes the masked network's eval function, except where a
//! channel had to be kept back (`LayerChange::adjusted`).
//!
//! Two forms: the six original presets (TCN, DS-CNN, MobileNetV1, ResNet, auto-encoder)
//! re-parameterise their configuration, so their outputs and cache entries are unchanged;
//! every other network (MobileNetV2, MnasNet/MCUNet, ShuffleNets, WRN, SE variants, the thesis
//! DS-CNN, node lists) is written as an explicit node list (`arch = "graph"`) with the seed's
//! node names, so the same tensor names carry the sliced weights.

use super::masks::kept_taps;
use super::plan::Plan;
use crate::arch::node_list::{Count, NodeConfig, NodeListConfig, OpKind, Padding};
use crate::config::ModelConfig;
use crate::graph::{Graph, Op};
use crate::model::Model;
use anyhow::{Context, Result, bail, ensure};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What survives: per group the kept channel indices (ascending), per node the kept taps.
#[derive(Clone, Debug)]
pub struct Keep {
    pub channels: Vec<Vec<usize>>,
    /// (new kernel, dilation factor, kept tap indices) for time-pruned Conv1d nodes.
    pub taps: Vec<Option<(usize, usize, Vec<usize>)>>,
}

/// One layer before and after export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerChange {
    pub name: String,
    pub c_out_before: usize,
    pub c_out: usize,
    pub kernel_before: Vec<usize>,
    pub kernel: Vec<usize>,
    pub dilation_before: Vec<usize>,
    pub dilation: Vec<usize>,
    /// True when a masked channel had to be kept so the architecture's builder reproduces
    /// the seed's graph structure (e.g. a residual projection that would become an identity,
    /// or a channel slice that would keep no channel).
    pub adjusted: bool,
    /// Why the layer's output channels were kept whole, when a rule of [`super::plan`]
    /// froze them (a grouped conv, a gate used as more than a scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen: Option<String>,
}

impl Keep {
    /// Build from binary masks: channels with mask 1, taps from binary time masks.
    pub fn from_masks(masks: &[Vec<f32>], time: &[Option<Vec<f32>>]) -> Result<Self> {
        let channels = masks
            .iter()
            .map(|m| (0..m.len()).filter(|&i| m[i] > 0.5).collect())
            .collect();
        let taps = time
            .iter()
            .map(|t| t.as_ref().map(|m| kept_taps(m)).transpose())
            .collect::<Result<_>>()?;
        Ok(Self { channels, taps })
    }
}

/// Kept count for a node name under `keep`, and new (kernel, dilation) for TCN layers.
struct View<'a> {
    plan: &'a Plan,
    keep: &'a Keep,
    index: HashMap<&'a str, usize>,
    seed: &'a Model,
}

impl View<'_> {
    fn node(&self, name: &str) -> Result<usize> {
        self.index
            .get(name)
            .copied()
            .with_context(|| format!("export: seed graph has no node {name}"))
    }
    fn kept(&self, name: &str) -> Result<usize> {
        Ok(self.keep.channels[self.plan.value_group[self.node(name)? + 1]].len())
    }
    fn time(&self, name: &str, kernel: usize, dilation: usize) -> Result<(usize, usize)> {
        Ok(match &self.keep.taps[self.node(name)?] {
            Some((k, _, _)) if *k == 1 => (1, 1),
            Some((k, f, _)) => (*k, dilation * f),
            None => (kernel, dilation),
        })
    }
}

/// The preset configuration with shrunk widths, for the architectures whose PIT/pruned
/// networks have always been written this way (their cache entries keep their form); `None`
/// for the others, which export as a node list ([`node_list`]).
fn shrink_config(v: &View) -> Result<Option<ModelConfig>> {
    let mut cfg = v.seed.config().clone();
    match &mut cfg {
        ModelConfig::Tcn(c) => {
            for (i, l) in c.layers.iter_mut().enumerate() {
                let name = format!("convs.{i}");
                l.channels = v.kept(&name)?;
                (l.kernel, l.dilation) = v.time(&name, l.kernel, l.dilation)?;
            }
        }
        ModelConfig::DsCnn(c) if c.pointwise_extra => return Ok(None),
        ModelConfig::DsCnn(c) => {
            c.stem.channels = v.kept("conv0")?;
            for (i, b) in c.blocks.iter_mut().enumerate() {
                b.channels = v.kept(&format!("blocks.{i}.pw"))?;
            }
        }
        ModelConfig::MobileNetV1(c) if c.se > 0 => return Ok(None),
        ModelConfig::MobileNetV1(c) => {
            c.stem.channels = v.kept("conv0")?;
            for (i, b) in c.blocks.iter_mut().enumerate() {
                b.channels = v.kept(&format!("blocks.{i}.pw"))?;
            }
        }
        ModelConfig::ResNet(c) => {
            c.stem_channels = v.kept("conv0")?;
            for (i, s) in c.stacks.iter_mut().enumerate() {
                s.mid_channels = v.kept(&format!("stacks.{i}.c1"))?;
                s.channels = v.kept(&format!("stacks.{i}.c2"))?;
            }
        }
        ModelConfig::MobileNetV2(_)
        | ModelConfig::Graph(_)
        | ModelConfig::Wrn(_)
        | ModelConfig::ShuffleNetV1(_)
        | ModelConfig::ShuffleNetV2(_)
        | ModelConfig::Mcunet(_) => return Ok(None),
        ModelConfig::AutoEncoder(c) => {
            for (i, h) in c.hidden.iter_mut().enumerate() {
                *h = v.kept(&format!("fcs.{i}"))?;
            }
        }
    }
    Ok(Some(cfg))
}

fn index(ix: &[usize]) -> Result<Tensor> {
    let v: Vec<u32> = ix.iter().map(|&i| i as u32).collect();
    Ok(Tensor::from_vec(v, ix.len(), &Device::Cpu)?)
}

/// Build the smaller network from `seed` and what to keep. `scores` ranks channels per group
/// (higher = keep first) for the rare structural adjustment; pass θ or magnitudes.
///
/// TCN, DS-CNN (without `pointwise_extra`), MobileNetV1 (without SE), ResNet and auto-encoder
/// networks come out as their preset with shrunk widths (as they always have); every other
/// network comes out as an explicit node list (`arch = "graph"`) with the seed's node names,
/// ops and wiring, and the kept channels' weights.
pub fn export(
    seed: &Model,
    plan: &Plan,
    keep: &Keep,
    scores: &[Vec<f32>],
) -> Result<(Model, Vec<LayerChange>)> {
    let graph = seed.graph();
    let mut keep = keep.clone();
    ensure!(
        keep.channels.len() == plan.groups.len() && keep.taps.len() == graph.nodes.len(),
        "export: keep lists do not match the graph"
    );
    for (g, k) in keep.channels.iter().enumerate() {
        ensure!(!k.is_empty(), "export: channel group {g} keeps no channel");
        ensure!(
            k.windows(2).all(|w| w[0] < w[1]) && k.iter().all(|&c| c < plan.groups[g].channels),
            "export: kept channels of group {g} must be ascending indices below {}, got {k:?}",
            plan.groups[g].channels
        );
        if plan.groups[g].fixed {
            ensure!(
                k.len() == plan.groups[g].channels,
                "export: fixed channel group {g} was pruned"
            );
        }
    }
    for f in &plan.frozen {
        tracing::info!("export: {} kept whole: {}", f.node, f.reason);
    }
    let seed_names: Vec<&str> = graph.nodes.iter().map(|n| n.name.as_str()).collect();
    let index_of: HashMap<&str, usize> = seed_names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i))
        .collect();
    let mut adjusted = vec![false; plan.groups.len()];
    let preset = shrink_config(&View {
        plan,
        keep: &keep,
        index: index_of.clone(),
        seed,
    })?
    .is_some();
    let (cfg, new_graph) = if preset {
        loop {
            let view = View {
                plan,
                keep: &keep,
                index: index_of.clone(),
                seed,
            };
            let cfg = shrink_config(&view)?.context("export: preset vanished")?;
            let g = cfg
                .build()
                .context("export: building the smaller network")?;
            let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
            if names == seed_names {
                break (cfg, g);
            }
            // A seed node vanished (a residual projection became an identity because both
            // sides kept the same width): keep one more channel of that projection's group.
            let missing = seed_names
                .iter()
                .find(|n| !names.contains(n))
                .with_context(|| {
                    format!("export: smaller network has unexpected nodes {names:?}")
                })?;
            let grp = plan.value_group[index_of[missing] + 1];
            let kept = &mut keep.channels[grp];
            let best = (0..plan.groups[grp].channels)
                .filter(|c| !kept.contains(c))
                .max_by(|&a, &b| scores[grp][a].total_cmp(&scores[grp][b]).then(b.cmp(&a)));
            match best {
                Some(c) => {
                    kept.push(c);
                    kept.sort_unstable();
                    adjusted[grp] = true;
                }
                None => bail!("export: cannot reproduce node {missing} in the smaller network"),
            }
        }
    } else {
        generic(seed, plan, &mut keep, scores, &mut adjusted)?
    };
    // Slice every tensor: rows by the node's kept output positions, input columns by its
    // input's.
    let pos = plan.positions(&keep.channels);
    let mut state: HashMap<String, Tensor> = HashMap::new();
    let mut changes = vec![];
    for (i, node) in graph.nodes.iter().enumerate() {
        let rows = index(&pos[i + 1])?;
        let t = |s: &str| -> Result<Tensor> {
            Ok(seed.get(&format!("{}.{s}", node.name))?.as_tensor().clone())
        };
        let mut put = |s: &str, v: Tensor| {
            state.insert(format!("{}.{s}", node.name), v);
        };
        let out_groups = || plan.layout[i + 1].iter().map(|&(g, _)| g);
        match &node.op {
            Op::Conv { bias, .. } | Op::Linear { bias, .. } => {
                let grouped = matches!(node.op, Op::Conv { groups, .. } if groups > 1);
                let mut w = t("weight")?.index_select(&rows, 0)?;
                if !grouped {
                    w = w.index_select(&index(&pos[node.inputs[0]])?, 1)?;
                } else if !plan.depthwise[i] {
                    ensure!(
                        pos[node.inputs[0]].len() == plan.layout[node.inputs[0]].len()
                            && pos[i + 1].len() == plan.layout[i + 1].len(),
                        "export: grouped conv {} lost channels although they are frozen",
                        node.name
                    );
                }
                if let Some((_, _, taps)) = &keep.taps[i] {
                    w = w.index_select(&index(taps)?, 2)?;
                }
                put("weight", w.contiguous()?);
                if *bias {
                    put("bias", t("bias")?.index_select(&rows, 0)?);
                }
                let new = &new_graph.nodes[i];
                let (kb, db, kn, dn) = match (&node.op, &new.op) {
                    (
                        Op::Conv {
                            kernel: kb,
                            dilation: db,
                            ..
                        },
                        Op::Conv {
                            kernel: kn,
                            dilation: dn,
                            ..
                        },
                    ) => (kb.clone(), db.clone(), kn.clone(), dn.clone()),
                    _ => (vec![], vec![], vec![], vec![]),
                };
                changes.push(LayerChange {
                    name: node.name.clone(),
                    c_out_before: node.out_shape[0],
                    c_out: new.out_shape[0],
                    kernel_before: kb,
                    kernel: kn,
                    dilation_before: db,
                    dilation: dn,
                    adjusted: out_groups().any(|g| adjusted[g]),
                    frozen: out_groups().find_map(|g| plan.groups[g].frozen.clone()),
                });
            }
            Op::BatchNorm { .. } => {
                for s in ["weight", "bias", "running_mean", "running_var"] {
                    put(s, t(s)?.index_select(&rows, 0)?);
                }
            }
            _ => {}
        }
    }
    let model = Model::new(cfg, 0)?;
    model
        .load_state(&state)
        .context("export: loading the sliced weights")?;
    Ok((model, changes))
}

/// The generic path: every value keeps at least one channel (a channel slice whose channels
/// were all removed gets back its best-scored one, marked `adjusted`), then the seed graph is
/// written as a node list with the kept widths.
fn generic(
    seed: &Model,
    plan: &Plan,
    keep: &mut Keep,
    scores: &[Vec<f32>],
    adjusted: &mut [bool],
) -> Result<(ModelConfig, Graph)> {
    let graph = seed.graph();
    let pos = loop {
        let pos = plan.positions(&keep.channels);
        let Some(v) = (1..pos.len()).find(|&v| pos[v].is_empty()) else {
            break pos;
        };
        let (g, c) = plan.layout[v]
            .iter()
            .copied()
            .filter(|&(g, c)| !keep.channels[g].contains(&c))
            .max_by(|&(g, a), &(h, b)| {
                scores[g][a]
                    .total_cmp(&scores[h][b])
                    .then(h.cmp(&g))
                    .then(b.cmp(&a))
            })
            .with_context(|| format!("export: node {} has no channel", graph.nodes[v - 1].name))?;
        tracing::info!(
            "export: node {} would keep no channel; channel {c} of group {g} kept",
            graph.nodes[v - 1].name
        );
        keep.channels[g].push(c);
        keep.channels[g].sort_unstable();
        adjusted[g] = true;
    };
    let nodes = node_list(graph, plan, &pos, &keep.taps)?;
    let classes = graph.nodes.last().map_or(0, |n| n.out_shape[0]);
    let cfg = ModelConfig::Graph(NodeListConfig {
        input: graph.input_shape.clone(),
        classes,
        nodes,
    });
    let g = cfg
        .build()
        .context("export: building the smaller network (node list)")?;
    Ok((cfg, g))
}

/// Padding as a node list writes it: symmetric numbers, "same" for the (low, high) split of
/// d·(k − 1) the presets use, or (low, high) pairs (an imported TensorFlow 'SAME' padding).
fn padding(kernel: &[usize], dilation: &[usize], pad: &[(usize, usize)]) -> Padding {
    if pad.iter().all(|p| p.0 == p.1) {
        return Padding::Each(pad.iter().map(|p| p.0).collect());
    }
    let same = pad
        .iter()
        .zip(kernel.iter().zip(dilation))
        .all(|(p, (k, d))| {
            let total = d * (k - 1);
            *p == (total / 2, total - total / 2)
        });
    if same {
        Padding::Word("same".into())
    } else {
        Padding::Pairs(pad.iter().map(|p| [p.0, p.1]).collect())
    }
}

/// The seed graph as a node list with the kept widths (`pos`: kept positions per value) and
/// the kept taps of time-pruned Conv1d layers.
fn node_list(
    graph: &Graph,
    plan: &Plan,
    pos: &[Vec<usize>],
    taps: &[Option<(usize, usize, Vec<usize>)>],
) -> Result<Vec<NodeConfig>> {
    let value_name = |v: usize| {
        if v == 0 {
            "input".to_string()
        } else {
            graph.nodes[v - 1].name.clone()
        }
    };
    let mut out = vec![];
    for (i, node) in graph.nodes.iter().enumerate() {
        let kept = pos[i + 1].len();
        let mut nc = NodeConfig::new(
            node.name.clone(),
            OpKind::Relu,
            node.inputs.iter().map(|&v| value_name(v)).collect(),
        );

        nc.op = match &node.op {
            Op::Conv {
                kernel,
                stride,
                padding: pad,
                dilation,
                groups,
                bias,
                ..
            } => {
                let (mut k, mut d, mut p) = (kernel.clone(), dilation.clone(), pad.clone());
                if let Some((nk, f, _)) = &taps[i] {
                    (k[0], d[0]) = if *nk == 1 { (1, 1) } else { (*nk, d[0] * f) };
                    p[0] = (d[0] * (k[0] - 1), 0);
                }
                nc.padding = Some(padding(&k, &d, &p));
                nc.kernel = Some(k);
                nc.stride = Some(stride.clone());
                nc.dilation = Some(d);
                nc.c_out = Some(Count::N(kept));
                nc.groups = Some(Count::N(if plan.depthwise[i] { kept } else { *groups }));
                nc.bias = Some(*bias);
                OpKind::Conv
            }
            Op::Linear { bias, .. } => {
                nc.c_out = Some(Count::N(kept));
                nc.bias = Some(*bias);
                OpKind::Linear
            }
            Op::BatchNorm { eps, momentum, .. } => {
                nc.eps = Some(*eps);
                nc.momentum = Some(*momentum);
                OpKind::BatchNorm
            }
            Op::Relu => OpKind::Relu,
            Op::Relu6 => OpKind::Relu6,
            Op::Sigmoid => OpKind::Sigmoid,
            Op::HardSigmoid => OpKind::HardSigmoid,
            Op::HardSwish => OpKind::HardSwish,
            Op::Add => OpKind::Add,
            Op::ChannelMul => OpKind::ChannelMul,
            Op::Concat => OpKind::Concat,
            Op::Narrow { start, len } => {
                let before = &pos[node.inputs[0]];
                let s = before.iter().filter(|&&j| j < *start).count();
                nc.start = Some(s);
                nc.len = Some(kept);
                debug_assert_eq!(
                    kept,
                    before
                        .iter()
                        .filter(|&&j| j >= *start && j < start + len)
                        .count()
                );
                OpKind::Narrow
            }
            Op::ChannelShuffle { groups } => {
                nc.groups = Some(Count::N(*groups));
                OpKind::ChannelShuffle
            }
            Op::MaxPool {
                kernel,
                stride,
                padding: pad,
            }
            | Op::AvgPool {
                kernel,
                stride,
                padding: pad,
            } => {
                nc.padding = Some(padding(kernel, &vec![1; kernel.len()], pad));
                nc.kernel = Some(kernel.clone());
                nc.stride = Some(stride.clone());
                if matches!(node.op, Op::MaxPool { .. }) {
                    OpKind::MaxPool
                } else {
                    OpKind::AvgPool
                }
            }
            Op::GlobalAvgPool => OpKind::GlobalAvgPool,
            Op::Dropout { p } => {
                nc.p = Some(*p);
                OpKind::Dropout
            }
            Op::Flatten => OpKind::Flatten,
        };
        out.push(nc);
    }
    Ok(out)
}
