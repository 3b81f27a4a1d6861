//! Export of a masked network to a physically smaller one: kept channels per layer, kernel
//! size and dilation from the time masks, weights sliced from the seed. Shared by PIT and the
//! pruning methods: both describe the result as [`Keep`] (kept channel indices per channel
//! group, kept taps per Conv1d) over the seed graph's [`Plan`].

use super::masks::kept_taps;
use super::plan::Plan;
use crate::config::ModelConfig;
use crate::graph::Op;
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
    /// the seed's graph structure (e.g. a residual projection that would become an identity).
    pub adjusted: bool,
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

fn shrink_config(v: &View) -> Result<ModelConfig> {
    let mut cfg = v.seed.config().clone();
    match &mut cfg {
        ModelConfig::Tcn(c) => {
            for (i, l) in c.layers.iter_mut().enumerate() {
                let name = format!("convs.{i}");
                l.channels = v.kept(&name)?;
                (l.kernel, l.dilation) = v.time(&name, l.kernel, l.dilation)?;
            }
        }
        ModelConfig::DsCnn(c) => {
            ensure!(
                !c.pointwise_extra,
                "export: PIT/pruned DS-CNNs with `pointwise_extra` are not supported yet"
            );
            c.stem.channels = v.kept("conv0")?;
            for (i, b) in c.blocks.iter_mut().enumerate() {
                b.channels = v.kept(&format!("blocks.{i}.pw"))?;
            }
        }
        ModelConfig::MobileNetV1(c) => {
            ensure!(
                c.se == 0,
                "export: PIT/pruned MobileNetV1s with squeeze-and-excitation are not supported yet"
            );
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
        ModelConfig::MobileNetV2(_) => {
            bail!("export: PIT/pruned networks of arch mobilenet_v2 are not supported yet")
        }
        ModelConfig::Graph(_)
        | ModelConfig::Wrn(_)
        | ModelConfig::ShuffleNetV1(_)
        | ModelConfig::ShuffleNetV2(_)
        | ModelConfig::Mcunet(_) => {
            bail!("export: PIT/pruned networks of this architecture are not supported yet")
        }
        ModelConfig::AutoEncoder(c) => {
            for (i, h) in c.hidden.iter_mut().enumerate() {
                *h = v.kept(&format!("fcs.{i}"))?;
            }
        }
    }
    Ok(cfg)
}

fn index(ix: &[usize]) -> Result<Tensor> {
    let v: Vec<u32> = ix.iter().map(|&i| i as u32).collect();
    Ok(Tensor::from_vec(v, ix.len(), &Device::Cpu)?)
}

/// Build the smaller network from `seed` and what to keep. `scores` ranks channels per group
/// (higher = keep first) for the rare structural adjustment; pass θ or magnitudes.
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
        if plan.groups[g].fixed {
            ensure!(
                k.len() == plan.groups[g].channels,
                "export: fixed channel group {g} was pruned"
            );
        }
    }
    let seed_names: Vec<&str> = graph.nodes.iter().map(|n| n.name.as_str()).collect();
    let index_of: HashMap<&str, usize> = seed_names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i))
        .collect();
    let mut adjusted = vec![false; plan.groups.len()];
    let (cfg, new_graph) = loop {
        let view = View {
            plan,
            keep: &keep,
            index: index_of.clone(),
            seed,
        };
        let cfg = shrink_config(&view)?;
        let g = cfg
            .build()
            .context("export: building the smaller network")?;
        let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
        if names == seed_names {
            break (cfg, g);
        }
        // A seed node vanished (a residual projection became an identity because both sides
        // kept the same width): keep one more channel of that projection's group.
        let missing = seed_names
            .iter()
            .find(|n| !names.contains(n))
            .with_context(|| format!("export: smaller network has unexpected nodes {names:?}"))?;
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
    };
    // Slice every tensor.
    let mut state: HashMap<String, Tensor> = HashMap::new();
    let mut changes = vec![];
    for (i, node) in graph.nodes.iter().enumerate() {
        let out_g = plan.value_group[i + 1];
        let in_g = plan.value_group[node.inputs[0]];
        let rows = index(&keep.channels[out_g])?;
        let t = |s: &str| -> Result<Tensor> {
            Ok(seed.get(&format!("{}.{s}", node.name))?.as_tensor().clone())
        };
        let mut put = |s: &str, v: Tensor| {
            state.insert(format!("{}.{s}", node.name), v);
        };
        match &node.op {
            Op::Conv { bias, .. } | Op::Linear { bias, .. } => {
                let mut w = t("weight")?.index_select(&rows, 0)?;
                if !plan.depthwise[i] {
                    w = w.index_select(&index(&keep.channels[in_g])?, 1)?;
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
                    adjusted: adjusted[out_g],
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
