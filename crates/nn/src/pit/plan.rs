//! Which masks a graph gets (PIT search space, and the channel sets every pruning method
//! chooses from): channel groups with one α per group channel, where each mask multiplies the
//! activations, and which Conv1d layers get β/γ time masks (kernel > 1, stride 1, causal
//! padding — the only padding under which dropping the oldest taps exports exactly to a
//! smaller causal conv).
//!
//! # Channel coupling
//!
//! Every conv/linear output channel starts as its own *atom*; atoms that must be removed
//! together are merged (union-find), and each value of the graph records, per channel, which
//! atom it carries (its [`Plan::layout`]). The rules, op by op:
//! - **conv / linear**: new atoms (one per output channel); a **depthwise** conv carries its
//!   input's atoms through;
//! - **residual add**, **channel multiply** (squeeze-and-excitation: the gate's producing
//!   linear couples to the scaled block's channels; the SE's reduced width is its own group):
//!   the two inputs' atoms are merged position by position;
//! - **concat**: the inputs' layouts one after another (offsets); **narrow** (channel split):
//!   a slice of the input's layout;
//! - **channel shuffle** with g groups over C = g·n channels: channel b of every one of the g
//!   segments is merged (`in[a·n + b]` for all a), so the pruned input is again g segments of
//!   equal size keeping the same positions and the exported op is the same shuffle (pruning
//!   in shuffle groups); the output is the permuted layout;
//! - **flatten**: each channel's atom repeated over its spatial positions, so the following
//!   linear's input features go with channel × spatial;
//! - batch norm, activations, pools, dropout: the input's layout.
//!
//! A *group* is a set of atom classes linked through the layers that produce them; its
//! channels are the classes, ordered by their first atom (for residual coupling of equal
//! layers this is the layers' own channel order). A removed channel is zeroed everywhere: the
//! mask multiplies each conv/linear output (after the batch norm that is its only consumer, so
//! the masking is exact), and each batch norm not directly after its conv/linear (a
//! pre-activation BN shifts a zero channel to β − γμ/σ).
//!
//! # Frozen channels (kept whole)
//!
//! The network input and the output layer's channels are fixed. Besides, channels that cannot
//! be removed exactly are frozen and listed in [`Plan::frozen`] (and reported by the export):
//! the input and output channels of a grouped (non-depthwise, or depthwise with a channel
//! multiplier) conv, whose per-group widths would have to shrink in step; and the input of a
//! sigmoid / hard sigmoid that feeds anything but the scale of a channel multiply (the gate of
//! a removed channel is 1/2, not 0). A group with a frozen channel is fixed as a whole.

use crate::graph::{Graph, Op};
use anyhow::{Result, bail};
use candle_core::{DType, Device, Tensor};

/// One channel group.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub channels: usize,
    /// Not searched (network input, output layer, coupled with one of them, or frozen).
    pub fixed: bool,
    /// Why the group is frozen, when a rule of the module doc froze it (not for the network
    /// input or output layer).
    pub frozen: Option<String>,
}

/// Channels a rule froze: the node, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Frozen {
    pub node: String,
    pub reason: String,
}

/// Mask layout of a graph.
#[derive(Clone, Debug)]
pub struct Plan {
    pub groups: Vec<Group>,
    /// Group of each value's first channel (0 = network input, i+1 = node i).
    pub value_group: Vec<usize>,
    /// Per value, per channel (per feature after a flatten): (group, channel in the group).
    pub layout: Vec<Vec<(usize, usize)>>,
    /// Per value: true when its layout is exactly channels 0.. of `value_group[v]`.
    pub whole: Vec<bool>,
    /// For node i: true when the mask of value i+1's layout multiplies node i's output.
    pub mask_at: Vec<bool>,
    /// For node i: true when it is a conv1d with β/γ time masks.
    pub time_masked: Vec<bool>,
    /// True for depthwise convolutions.
    pub depthwise: Vec<bool>,
    /// Channels kept whole by a rule (see the module doc).
    pub frozen: Vec<Frozen>,
}

struct Atoms {
    parent: Vec<usize>,
    fixed: Vec<bool>,
    /// Raw producer (0 = input, then one per conv/linear) of each atom.
    raw: Vec<usize>,
    raws: usize,
}

impl Atoms {
    fn find(&mut self, mut a: usize) -> usize {
        while self.parent[a] != a {
            self.parent[a] = self.parent[self.parent[a]];
            a = self.parent[a];
        }
        a
    }
    /// Merge the classes of a and b; the root stays the smaller atom.
    fn union(&mut self, a: usize, b: usize) {
        let (x, y) = (self.find(a), self.find(b));
        let (lo, hi) = (x.min(y), x.max(y));
        if lo != hi {
            self.parent[hi] = lo;
        }
    }
    fn fresh(&mut self, n: usize, fixed: bool) -> Vec<usize> {
        let start = self.parent.len();
        for a in start..start + n {
            self.parent.push(a);
            self.fixed.push(fixed);
            self.raw.push(self.raws);
        }
        self.raws += 1;
        (start..start + n).collect()
    }
}

/// Analyse `graph` (never fails on a well-formed graph with at least one layer: what cannot
/// be pruned is frozen).
pub fn plan(graph: &Graph, time_masks: bool) -> Result<Plan> {
    let n = graph.nodes.len();
    let uses = graph.value_uses();
    let mut at = Atoms {
        parent: vec![],
        fixed: vec![],
        raw: vec![],
        raws: 0,
    };
    let mut lay: Vec<Vec<usize>> = vec![at.fresh(graph.input_shape[0], true)];
    let mut depthwise = vec![false; n];
    let mut frozen: Vec<Frozen> = vec![];
    // Atoms frozen by node index into `frozen`.
    let mut frozen_atoms: Vec<(usize, usize)> = vec![];
    let last_layer = graph
        .nodes
        .iter()
        .rposition(|nd| matches!(nd.op, Op::Conv { .. } | Op::Linear { .. }));
    if last_layer.is_none() {
        bail!("PIT: graph has no layers");
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        let a = node.inputs[0];
        let inp = lay[a].clone();
        let mut freeze = |atoms: &[usize], reason: String, at: &mut Atoms| {
            let k = frozen.len();
            frozen.push(Frozen {
                node: node.name.clone(),
                reason,
            });
            for &x in atoms {
                at.fixed[x] = true;
                frozen_atoms.push((x, k));
            }
        };
        let out = match &node.op {
            Op::Conv {
                c_in,
                c_out,
                groups,
                ..
            } if *groups > 1 => {
                if groups == c_in && c_in == c_out {
                    depthwise[i] = true;
                    inp
                } else {
                    let o = at.fresh(*c_out, true);
                    let mut all = inp.clone();
                    all.extend(&o);
                    freeze(
                        &all,
                        format!(
                            "{groups}-group conv ({c_in} → {c_out} channels): its input and output channels are kept whole"
                        ),
                        &mut at,
                    );
                    o
                }
            }
            Op::Conv { c_out, .. } | Op::Linear { c_out, .. } => {
                at.fresh(*c_out, Some(i) == last_layer)
            }
            Op::Add | Op::ChannelMul => {
                let other = lay[node.inputs[1]].clone();
                for (&x, &y) in inp.iter().zip(&other) {
                    at.union(x, y);
                }
                inp
            }
            Op::Sigmoid | Op::HardSigmoid => {
                let gate_only = graph.nodes.iter().all(|m| {
                    !m.inputs.contains(&(i + 1))
                        || (matches!(m.op, Op::ChannelMul) && m.inputs[0] != i + 1)
                });
                if !gate_only {
                    freeze(
                        &inp,
                        format!(
                            "{} feeds more than the scale of channel multiplies (the gate of a removed channel is 1/2, not 0): its input channels are kept whole",
                            node.op.kind_name()
                        ),
                        &mut at,
                    );
                }
                inp
            }
            Op::Concat => node.inputs.iter().flat_map(|&v| lay[v].clone()).collect(),
            Op::Narrow { start, len } => inp[*start..start + len].to_vec(),
            Op::ChannelShuffle { groups } => {
                let g = *groups;
                let per = inp.len() / g;
                let mut o = vec![0; inp.len()];
                for b in 0..per {
                    for s in 0..g {
                        at.union(inp[s * per + b], inp[b]);
                        o[b * g + s] = inp[s * per + b];
                    }
                }
                o
            }
            Op::Flatten => {
                let shape = graph.value_shape(a);
                let spatial: usize = shape[1..].iter().product();
                inp.iter()
                    .flat_map(|&x| std::iter::repeat_n(x, spatial))
                    .collect()
            }
            Op::BatchNorm { .. }
            | Op::Relu
            | Op::Relu6
            | Op::HardSwish
            | Op::Dropout { .. }
            | Op::GlobalAvgPool
            | Op::MaxPool { .. }
            | Op::AvgPool { .. } => inp,
        };
        lay.push(out);
    }
    // Classes → groups: producers linked by a class form one group.
    let atoms = at.parent.len();
    let mut raw_parent: Vec<usize> = (0..at.raws).collect();
    fn find_raw(p: &mut [usize], mut r: usize) -> usize {
        while p[r] != r {
            p[r] = p[p[r]];
            r = p[r];
        }
        r
    }
    let mut class_fixed = vec![false; atoms];
    for x in 0..atoms {
        let root = at.find(x);
        class_fixed[root] |= at.fixed[x];
        let (p, q) = (
            find_raw(&mut raw_parent, at.raw[x]),
            find_raw(&mut raw_parent, at.raw[root]),
        );
        let (lo, hi) = (p.min(q), p.max(q));
        if lo != hi {
            raw_parent[hi] = lo;
        }
    }
    let mut group_of_raw = vec![usize::MAX; at.raws];
    let mut groups: Vec<Group> = vec![];
    for r in 0..at.raws {
        let root = find_raw(&mut raw_parent, r);
        if group_of_raw[root] == usize::MAX {
            group_of_raw[root] = groups.len();
            groups.push(Group {
                channels: 0,
                fixed: false,
                frozen: None,
            });
        }
    }
    // Channel of each class root, in atom order (= ordered by each class's first atom).
    let mut channel_of = vec![(usize::MAX, usize::MAX); atoms];
    for x in 0..atoms {
        if at.find(x) == x {
            let g = group_of_raw[find_raw(&mut raw_parent, at.raw[x])];
            channel_of[x] = (g, groups[g].channels);
            groups[g].channels += 1;
            groups[g].fixed |= class_fixed[x];
        }
    }
    let mut gc = |x: usize| channel_of[at.find(x)];
    for &(x, k) in &frozen_atoms {
        let g = gc(x).0;
        if groups[g].frozen.is_none() {
            groups[g].frozen = Some(format!("{}: {}", frozen[k].node, frozen[k].reason));
        }
    }
    let layout: Vec<Vec<(usize, usize)>> = lay
        .iter()
        .map(|l| l.iter().map(|&x| gc(x)).collect())
        .collect();
    let value_group: Vec<usize> = layout.iter().map(|l| l[0].0).collect();
    let whole: Vec<bool> = layout
        .iter()
        .zip(&value_group)
        .map(|(l, &g)| {
            l.len() == groups[g].channels && l.iter().enumerate().all(|(c, &x)| x == (g, c))
        })
        .collect();
    let prunable = |v: usize| layout[v].iter().any(|&(g, _)| !groups[g].fixed);
    let mut mask_at = vec![false; n];
    let mut time_masked = vec![false; n];
    for (i, node) in graph.nodes.iter().enumerate() {
        match &node.op {
            Op::Conv { .. } | Op::Linear { .. } => {}
            // A batch norm not directly after its conv/linear (pre-activation) is a mask point.
            Op::BatchNorm { .. } => {
                let a = node.inputs[0];
                let after_layer = a > 0
                    && uses[a] == 1
                    && matches!(graph.nodes[a - 1].op, Op::Conv { .. } | Op::Linear { .. });
                if !after_layer && prunable(i + 1) {
                    mask_at[i] = true;
                }
                continue;
            }
            _ => continue,
        }
        // Mask after the batch norm that is the layer's only consumer, if any.
        let bn = (uses[i + 1] == 1)
            .then(|| {
                graph
                    .nodes
                    .iter()
                    .position(|m| matches!(m.op, Op::BatchNorm { .. }) && m.inputs[0] == i + 1)
            })
            .flatten();
        if prunable(i + 1) {
            mask_at[bn.unwrap_or(i)] = true;
        }
        if let Op::Conv {
            kernel,
            stride,
            padding,
            dilation,
            ..
        } = &node.op
            && time_masks
            && kernel.len() == 1
            && kernel[0] > 1
            && stride[0] == 1
            && padding[0] == (dilation[0] * (kernel[0] - 1), 0)
        {
            time_masked[i] = true;
        }
    }
    Ok(Plan {
        groups,
        value_group,
        layout,
        whole,
        mask_at,
        time_masked,
        depthwise,
        frozen,
    })
}

impl Plan {
    /// The multiplier of value `v`'s channels from one vector per group (`per_group[g]`, its
    /// last dimension the group's channels; `None` = all ones), gathered along the last
    /// dimension; `None` when every group involved has `None`. For a whole-group value this
    /// is `per_group[g]` itself.
    pub fn gather(&self, v: usize, per_group: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let l = &self.layout[v];
        if self.whole[v] {
            return Ok(per_group[self.value_group[v]].clone());
        }
        let mut used: Vec<usize> = l.iter().map(|&(g, _)| g).collect();
        used.sort_unstable();
        used.dedup();
        let Some(lead) = used
            .iter()
            .find_map(|&g| per_group[g].as_ref())
            .map(|t| t.dims()[..t.rank() - 1].to_vec())
        else {
            return Ok(None);
        };
        let mut offset = vec![0usize; self.groups.len()];
        let mut parts = vec![];
        let mut at = 0;
        for &g in &used {
            offset[g] = at;
            at += self.groups[g].channels;
            parts.push(match &per_group[g] {
                Some(t) => t.clone(),
                None => {
                    let mut shape = lead.clone();
                    shape.push(self.groups[g].channels);
                    Tensor::ones(shape, DType::F32, &Device::Cpu)?
                }
            });
        }
        let last = lead.len();
        let all = Tensor::cat(&parts, last)?;
        let ix: Vec<u32> = l.iter().map(|&(g, c)| (offset[g] + c) as u32).collect();
        let ix = Tensor::from_vec(ix, l.len(), &Device::Cpu)?;
        Ok(Some(all.index_select(&ix, last)?))
    }

    /// Kept positions (channels, or features after a flatten) of every value when group g
    /// keeps `keep[g]`.
    pub fn positions(&self, keep: &[Vec<usize>]) -> Vec<Vec<usize>> {
        let sets: Vec<Vec<bool>> = self
            .groups
            .iter()
            .zip(keep)
            .map(|(g, k)| {
                let mut s = vec![false; g.channels];
                for &c in k {
                    s[c] = true;
                }
                s
            })
            .collect();
        self.layout
            .iter()
            .map(|l| (0..l.len()).filter(|&j| sets[l[j].0][l[j].1]).collect())
            .collect()
    }
}
