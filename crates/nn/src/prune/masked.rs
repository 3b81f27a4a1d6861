//! Forward pass of a seed network with one multiplicative mask per channel group (applied
//! where the PIT [`Plan`] puts it: after the batch norm that follows a layer, else after the
//! layer), used by Fisher pruning both to zero removed channels and, with a per-sample mask
//! variable at 1, to read ∂L_n/∂m_c off the backward pass.
//!
//! A [`Mask`] has two parts. `params` (C) scales the parameters that produce the channel
//! (the batch norm's γ and β, else the layer's weight rows and bias): m·(γx̂ + β) = (mγ)x̂ + mβ,
//! so this is exact and costs nothing per sample (used to zero removed channels). `acts` (N, C)
//! multiplies the activations, one value per sample, so its gradient is the per-sample
//! Σ_spatial a·∂L/∂a. Where a masked batch norm's only consumer is a ReLU, both run fused (as
//! in [`Model::forward`]) and `acts` multiplies the ReLU's output: for m ≥ 0, relu(m·y) =
//! m·relu(y), and at m = 1 both have the same derivative in m (y·1[y>0]·∂L/∂out). The pass is
//! the shared interpreter ([`crate::interp`]) with the masks as hooks; eval mode keeps batch
//! norms unfolded (the scores stay bit-identical to the layer-by-layer pass).

use crate::graph::Op;
use crate::interp::{self, Hook};
use crate::model::Model;
use crate::pit::plan::Plan;
use anyhow::{Context, Result, ensure};
use candle_core::Tensor;

/// Multipliers of one channel group (either part may be absent).
#[derive(Clone, Debug, Default)]
pub struct Mask {
    /// (C): scales the parameters producing the channels.
    pub params: Option<Tensor>,
    /// (N, C): scales the activations per sample.
    pub acts: Option<Tensor>,
}

/// `t` (C, ...) with row c scaled by `m[c]`.
fn scale_rows(t: &Tensor, m: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1usize; t.rank()];
    shape[0] = m.elem_count();
    Ok(t.broadcast_mul(&m.reshape(shape)?)?)
}

/// Run `model` on `x` with `masks[g]` multiplying the channels of group g at every mask point
/// of the plan. Train mode uses batch statistics and updates the running statistics, like
/// [`Model::forward`].
pub fn forward(
    model: &Model,
    plan: &Plan,
    masks: &[Mask],
    x: &Tensor,
    train: bool,
) -> Result<Tensor> {
    let graph = model.graph();
    ensure!(
        masks.len() == plan.groups.len(),
        "fisher: {} masks for {} channel groups",
        masks.len(),
        plan.groups.len()
    );
    // Where each group's per-sample mask multiplies: at the plan's mask point, or after the
    // ReLU that is the only consumer of a masked batch norm (relu(m·y) = m·relu(y) for m ≥ 0,
    // so the batch norm and its ReLU still run as one op).
    let uses = graph.value_uses();
    let acts: Vec<Option<Tensor>> = masks.iter().map(|m| m.acts.clone()).collect();
    let params: Vec<Option<Tensor>> = masks.iter().map(|m| m.params.clone()).collect();
    let mut acts_at: Vec<Option<Tensor>> = vec![None; graph.nodes.len()];
    let mut params_at: Vec<Option<Tensor>> = vec![None; graph.nodes.len()];
    for i in 0..graph.nodes.len() {
        if !plan.mask_at[i] {
            continue;
        }
        params_at[i] = plan.gather(i + 1, &params)?;
        let Some(m) = plan.gather(i + 1, &acts)? else {
            continue;
        };
        let relu_next = matches!(graph.nodes[i].op, Op::BatchNorm { .. })
            && uses[i + 1] == 1
            && graph
                .nodes
                .get(i + 1)
                .is_some_and(|r| matches!(r.op, Op::Relu) && r.inputs[0] == i + 1);
        acts_at[if relu_next { i + 1 } else { i }] = Some(m);
    }
    let mut hook = FisherHook { params_at, acts_at };
    interp::forward(graph, model, x, train, &mut hook).context("fisher")
}

/// The masks as interpreter hooks.
struct FisherHook {
    /// Per mask point: the parameter mask of its channels.
    params_at: Vec<Option<Tensor>>,
    /// Per node: the per-sample mask multiplying its output.
    acts_at: Vec<Option<Tensor>>,
}

impl Hook for FisherHook {
    /// Scales the parameters that produce a masked group's channels.
    fn weight(&mut self, node: usize, _suffix: &str, t: &Tensor) -> Result<Tensor> {
        match &self.params_at[node] {
            Some(m) => scale_rows(t, m),
            None => Ok(t.clone()),
        }
    }
    fn output(&mut self, node: usize, y: Tensor) -> Result<Tensor> {
        match &self.acts_at[node] {
            Some(m) => {
                let mut shape = m.dims().to_vec();
                shape.resize(y.rank(), 1);
                Ok(y.broadcast_mul(&m.reshape(shape)?)?)
            }
            None => Ok(y),
        }
    }
    fn keep(&self, node: usize) -> bool {
        self.acts_at[node].is_some()
    }
    /// Keeps the eval forward (the Fisher scores) layer by layer, as it was.
    fn fold_eval_bn(&self) -> bool {
        false
    }
}
