//! Which masks a graph gets (PIT search space): channel groups (one α per group; layers whose
//! outputs are added share a group, a depthwise conv follows its producer's group, the network
//! input and the output layer's group are fixed; a channel multiply couples its scales with
//! its input), where each group's mask multiplies the
//! activations (after the conv's batch norm), and which Conv1d layers get β/γ time masks
//! (kernel > 1, stride 1, causal padding — the only padding under which dropping the oldest
//! taps exports exactly to a smaller causal conv).

use crate::graph::{Graph, Op};
use anyhow::{Result, bail, ensure};

/// One channel group.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub channels: usize,
    /// Not searched (network input, output layer, or coupled with one of them).
    pub fixed: bool,
}

/// Mask layout of a graph.
#[derive(Clone, Debug)]
pub struct Plan {
    pub groups: Vec<Group>,
    /// Group of each value (0 = network input, i+1 = node i).
    pub value_group: Vec<usize>,
    /// For node i: Some(group) when the group mask multiplies node i's output.
    pub mask_at: Vec<Option<usize>>,
    /// For node i: true when it is a conv1d with β/γ time masks.
    pub time_masked: Vec<bool>,
    /// True for depthwise convolutions.
    pub depthwise: Vec<bool>,
}

fn find(parent: &mut [usize], mut g: usize) -> usize {
    while parent[g] != g {
        parent[g] = parent[parent[g]];
        g = parent[g];
    }
    g
}

/// Analyse `graph`. Every batch norm must directly follow a conv/linear that has no other
/// consumer (so masking after the BN is exact).
pub fn plan(graph: &Graph, time_masks: bool) -> Result<Plan> {
    let n = graph.nodes.len();
    let uses = graph.value_uses();
    // Raw groups with union-find.
    let mut sizes = vec![graph.input_shape[0]];
    let mut fixed = vec![true];
    let mut parent = vec![0usize];
    let mut vg = vec![0usize; n + 1];
    let mut depthwise = vec![false; n];
    let last_layer = graph
        .nodes
        .iter()
        .rposition(|nd| matches!(nd.op, Op::Conv { .. } | Op::Linear { .. }));
    for (i, node) in graph.nodes.iter().enumerate() {
        let a = node.inputs[0];
        vg[i + 1] = match &node.op {
            Op::Conv {
                c_in,
                c_out,
                groups,
                ..
            } if *groups > 1 => {
                ensure!(
                    groups == c_in && c_in == c_out,
                    "PIT: conv {} has {groups} groups; only depthwise grouping is supported",
                    node.name
                );
                depthwise[i] = true;
                vg[a]
            }
            Op::Conv { c_out, .. } | Op::Linear { c_out, .. } => {
                sizes.push(*c_out);
                fixed.push(Some(i) == last_layer);
                parent.push(parent.len());
                parent.len() - 1
            }
            // A channel multiply couples its scales with its input, like a residual sum.
            Op::Add | Op::ChannelMul => {
                let (x, y) = (
                    find(&mut parent, vg[a]),
                    find(&mut parent, vg[node.inputs[1]]),
                );
                if x != y {
                    parent[y] = x;
                    fixed[x] = fixed[x] || fixed[y];
                }
                x
            }
            Op::BatchNorm { .. } => {
                ensure!(
                    a > 0
                        && uses[a] == 1
                        && matches!(graph.nodes[a - 1].op, Op::Conv { .. } | Op::Linear { .. }),
                    "PIT: batch norm {} must directly follow a conv or linear layer",
                    node.name
                );
                vg[a]
            }
            // Zero in, zero out per channel: a removed channel stays removed.
            Op::Relu
            | Op::Relu6
            | Op::HardSwish
            | Op::Dropout { .. }
            | Op::GlobalAvgPool
            | Op::MaxPool { .. }
            | Op::AvgPool { .. } => vg[a],
            // A gate of a removed channel is 1/2, not 0: exact only as the scale of channel
            // multiplies (coupled with their input, whose channel is removed with it).
            Op::Sigmoid | Op::HardSigmoid => {
                let gate_only = graph.nodes.iter().all(|m| {
                    !m.inputs.contains(&(i + 1))
                        || (matches!(m.op, Op::ChannelMul) && m.inputs[0] != i + 1)
                });
                ensure!(
                    gate_only,
                    "PIT/pruning: {} node {} must feed only the scale input of channel multiplies",
                    node.op.kind_name(),
                    node.name
                );
                vg[a]
            }
            Op::Concat | Op::Narrow { .. } | Op::ChannelShuffle { .. } | Op::Flatten => bail!(
                "PIT/pruning: node {} is a {} op, which channel masks do not support yet",
                node.name,
                node.op.kind_name()
            ),
        };
    }
    // Compact roots.
    let mut root_id = vec![usize::MAX; parent.len()];
    let mut groups = vec![];
    for g in 0..parent.len() {
        let r = find(&mut parent, g);
        if root_id[r] == usize::MAX {
            root_id[r] = groups.len();
            groups.push(Group {
                channels: sizes[r],
                fixed: fixed[r],
            });
        }
    }
    let value_group: Vec<usize> = vg.iter().map(|&g| root_id[find(&mut parent, g)]).collect();
    let mut mask_at = vec![None; n];
    let mut time_masked = vec![false; n];
    for (i, node) in graph.nodes.iter().enumerate() {
        if !matches!(node.op, Op::Conv { .. } | Op::Linear { .. }) {
            continue;
        }
        let g = value_group[i + 1];
        // Mask after the BN that follows, if any.
        let bn = graph
            .nodes
            .iter()
            .position(|m| matches!(m.op, Op::BatchNorm { .. }) && m.inputs[0] == i + 1);
        if !groups[g].fixed {
            mask_at[bn.unwrap_or(i)] = Some(g);
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
    if groups.is_empty() {
        bail!("PIT: graph has no layers");
    }
    Ok(Plan {
        groups,
        value_group,
        mask_at,
        time_masked,
        depthwise,
    })
}
