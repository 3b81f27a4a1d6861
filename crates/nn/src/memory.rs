//! Memory estimates of a network from its graph alone (nothing is allocated), so a caller can
//! refuse or delay a run that would not fit. The counts follow how this crate computes:
//!
//! - every value of a forward pass is kept until the pass ends (the `vals` list of
//!   `Model::forward`, and in training the autograd graph), except a ReLU applied in place of
//!   the op before it (a conv, batch norm or residual add that it alone reads);
//! - backward keeps only the gradients of the values it is currently working on: counted as
//!   two of the largest value, plus the largest im2col workspace of a convolution
//!   ((C_in / groups) · kernel area · output positions per sample);
//! - parameter state is weights + buffers, one gradient per trainable parameter, the
//!   optimizer's moment buffers (Adam / AdamW two, SGD with momentum one), and the copies the
//!   training loop makes at an epoch end (best weights, checkpoint snapshot of weights and
//!   optimizer state).
//!
//! All values are f32 (4 bytes).

use crate::graph::{Graph, Op};
use crate::optim::OptimizerConfig;
use serde::Serialize;

/// Bytes of one f32.
pub const F32: u64 = 4;

/// Per-sample element counts of a graph that the estimates are built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GraphCounts {
    /// Trainable parameters.
    pub params: u64,
    /// Buffers (batch-norm running statistics).
    pub buffers: u64,
    /// Elements of every value with its own storage in a forward pass (input included).
    pub values: u64,
    /// Elements of the largest value.
    pub max_value: u64,
    /// Elements of the largest convolution im2col workspace.
    pub workspace: u64,
}

/// Counts of `graph` (see the module doc for what has its own storage).
pub fn counts(graph: &Graph) -> GraphCounts {
    let elems = |v: usize| graph.value_shape(v).iter().product::<usize>() as u64;
    let uses = graph.value_uses();
    let mut values = elems(0);
    let mut max_value = elems(0);
    let mut workspace = 0u64;
    for (i, n) in graph.nodes.iter().enumerate() {
        let out = elems(i + 1);
        max_value = max_value.max(out);
        let in_place = matches!(n.op, Op::Relu)
            && i > 0
            && n.inputs[0] == i
            && uses[i] == 1
            && matches!(
                graph.nodes[i - 1].op,
                Op::Conv { .. } | Op::BatchNorm { .. } | Op::Add
            );
        if !in_place {
            values = values.saturating_add(out);
        }
        if let Op::Conv {
            c_in,
            kernel,
            groups,
            ..
        } = &n.op
        {
            let positions: u64 = n.out_shape[1..].iter().product::<usize>() as u64;
            let per = (c_in / groups.max(&1)) as u64 * kernel.iter().product::<usize>() as u64;
            workspace = workspace.max(per.saturating_mul(positions));
        }
    }
    let params = graph
        .param_specs()
        .iter()
        .map(|s| s.shape.iter().product::<usize>() as u64)
        .sum();
    let buffers = graph
        .buffer_specs()
        .iter()
        .map(|s| s.shape.iter().product::<usize>() as u64)
        .sum();
    GraphCounts {
        params,
        buffers,
        values,
        max_value,
        workspace,
    }
}

/// Moment buffers per trainable parameter of an optimizer.
pub fn optimizer_slots(cfg: &OptimizerConfig) -> u64 {
    match cfg {
        OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => 2,
        OptimizerConfig::Sgd { momentum, .. } => u64::from(*momentum != 0.0),
    }
}

/// Peak bytes of a training run or an evaluation, by part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    /// Weights and buffers.
    pub weights: u64,
    /// Gradients of the trainable parameters.
    pub gradients: u64,
    /// Optimizer moments.
    pub optimizer: u64,
    /// Epoch-end copies (best weights, checkpoint snapshot).
    pub copies: u64,
    /// Activations (forward values, backward gradients and workspace) at the batch size.
    pub activations: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.gradients)
            .saturating_add(self.optimizer)
            .saturating_add(self.copies)
            .saturating_add(self.activations)
    }

    /// Sum of two estimates part by part (e.g. a teacher next to its student).
    pub fn plus(&self, o: &MemoryEstimate) -> MemoryEstimate {
        MemoryEstimate {
            weights: self.weights.saturating_add(o.weights),
            gradients: self.gradients.saturating_add(o.gradients),
            optimizer: self.optimizer.saturating_add(o.optimizer),
            copies: self.copies.saturating_add(o.copies),
            activations: self.activations.saturating_add(o.activations),
        }
    }
}

/// Training of `graph` at `batch` samples per step with `slots` optimizer moments per
/// parameter; `keep_best` adds the best-weights copy.
pub fn training(graph: &Graph, batch: usize, slots: u64, keep_best: bool) -> MemoryEstimate {
    let c = counts(graph);
    let state = c.params.saturating_add(c.buffers);
    let b = batch.max(1) as u64;
    let per_sample = c
        .values
        .saturating_add(c.max_value.saturating_mul(2))
        .saturating_add(c.workspace);
    MemoryEstimate {
        weights: F32.saturating_mul(state),
        gradients: F32.saturating_mul(c.params),
        optimizer: F32.saturating_mul(c.params).saturating_mul(slots),
        // checkpoint snapshot: weights + buffers and the optimizer moments; best: weights + buffers
        copies: F32.saturating_mul(
            state
                .saturating_add(c.params.saturating_mul(slots))
                .saturating_add(if keep_best { state } else { 0 }),
        ),
        activations: F32.saturating_mul(b).saturating_mul(per_sample),
    }
}

/// Evaluation (no gradients) of `graph` at `batch` samples per pass.
pub fn inference(graph: &Graph, batch: usize) -> MemoryEstimate {
    let c = counts(graph);
    MemoryEstimate {
        weights: F32.saturating_mul(c.params.saturating_add(c.buffers)),
        activations: F32
            .saturating_mul(batch.max(1) as u64)
            .saturating_mul(c.values.saturating_add(c.workspace)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::GraphBuilder;

    /// Input 2×5 → conv1d 2→3 k3 pad 1 → BN → ReLU → pool → linear 3→4.
    fn small() -> Graph {
        let mut b = GraphBuilder::new(vec![2, 5]);
        let x = b
            .conv("c", 0, 3, vec![3], vec![1], vec![(1, 1)], vec![1], 1, true)
            .unwrap();
        let x = b.bn("bn", x).unwrap();
        let x = b.relu("r", x).unwrap();
        let x = b.pool("p", x).unwrap();
        b.linear("fc", x, 4, true).unwrap();
        b.finish()
    }

    #[test]
    fn counts_match_a_hand_count() {
        // params: conv 3·2·3 + 3 = 21, BN 3 + 3 = 6, fc 3·4 + 4 = 16 → 43; buffers 3 + 3 = 6.
        // values: input 10, conv 15, BN 15, ReLU in place 0, pool 3, fc 4 → 47; largest 15.
        // im2col of the conv: (2 / 1) · 3 · 5 positions = 30.
        assert_eq!(
            counts(&small()),
            GraphCounts {
                params: 43,
                buffers: 6,
                values: 47,
                max_value: 15,
                workspace: 30,
            }
        );
    }

    #[test]
    fn training_and_inference_bytes_match_a_hand_count() {
        let e = training(
            &small(),
            8,
            optimizer_slots(&OptimizerConfig::adam(0.0)),
            true,
        );
        // weights 4·(43 + 6) = 196, gradients 4·43 = 172, Adam 4·2·43 = 344,
        // copies 4·(49 snapshot + 86 moments + 49 best) = 736,
        // activations 4 · 8 · (47 + 2·15 + 30) = 3,424.
        assert_eq!(
            e,
            MemoryEstimate {
                weights: 196,
                gradients: 172,
                optimizer: 344,
                copies: 736,
                activations: 3_424,
            }
        );
        assert_eq!(e.total(), 4_872);
        // plain SGD keeps no moments, no best copy: copies 4·49 = 196
        let s = training(
            &small(),
            8,
            optimizer_slots(&OptimizerConfig::sgd(0.0, false, 0.0)),
            false,
        );
        assert_eq!((s.optimizer, s.copies), (0, 196));
        // evaluation: weights 196 + 4 · 100 · (47 + 30) = 30,800
        assert_eq!(inference(&small(), 100).total(), 196 + 30_800);
    }
}
