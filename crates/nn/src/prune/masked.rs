//! Forward pass of a seed network with one multiplicative mask per channel group (applied
//! where the PIT [`Plan`] puts it: after the batch norm that follows a layer, else after the
//! layer), used by Fisher pruning both to zero removed channels and, with a per-sample mask
//! variable at 1, to read ∂L_n/∂m_c off the backward pass.
//!
//! A [`Mask`] has two parts. `params` (C) scales the parameters that produce the channel
//! (the batch norm's γ and β, else the layer's weight rows and bias): m·(γx̂ + β) = (mγ)x̂ + mβ,
//! so this is exact and costs nothing per sample (used to zero removed channels). `acts` (N, C)
//! multiplies the activations, one value per sample, so its gradient is the per-sample
//! Σ_spatial a·∂L/∂a. Where a batch norm's (or a residual sum's) only consumer is a ReLU,
//! both run fused (as in [`Model::forward`]) and `acts` multiplies the ReLU's output: for m ≥ 0, relu(m·y) =
//! m·relu(y), and at m = 1 both have the same derivative in m (y·1[y>0]·∂L/∂out).

use crate::graph::Op;
use crate::model::{BnArgs, Model, conv};
use crate::ops;
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
fn scale_rows(t: &Tensor, m: Option<&Tensor>) -> Result<Tensor> {
    Ok(match m {
        Some(m) => {
            let mut shape = vec![1usize; t.rank()];
            shape[0] = m.elem_count();
            t.broadcast_mul(&m.reshape(shape)?)?
        }
        None => t.clone(),
    })
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
    let want = &graph.input_shape;
    ensure!(
        x.rank() == want.len() + 1 && &x.dims()[1..] == want.as_slice(),
        "fisher: input expected (N, {want:?}), got {:?}",
        x.dims()
    );
    ensure!(
        masks.len() == plan.groups.len(),
        "fisher: {} masks for {} channel groups",
        masks.len(),
        plan.groups.len()
    );
    let fused = model.bn_relu_pairs();
    let mut vals: Vec<Tensor> = Vec::with_capacity(graph.nodes.len() + 1);
    vals.push(x.detach());
    for (i, node) in graph.nodes.iter().enumerate() {
        let a = &vals[node.inputs[0]];
        if i > 0 && fused[i - 1] {
            // Applied inside the preceding batch norm or sum (and masked after it).
            let y = a.clone();
            vals.push(y);
            continue;
        }
        let p = |s: &str| {
            model
                .get(&format!("{}.{s}", node.name))
                .map(|v| v.as_tensor())
        };
        let mask = plan.mask_at[i].map(|g| &masks[g]);
        let pm = mask.and_then(|m| m.params.as_ref());
        let mut y = match &node.op {
            Op::Conv {
                kernel,
                stride,
                padding,
                dilation,
                groups,
                bias,
                ..
            } => {
                let b = if *bias {
                    Some(scale_rows(p("bias")?, pm)?)
                } else {
                    None
                };
                conv(
                    a,
                    &scale_rows(p("weight")?, pm)?,
                    b.as_ref(),
                    kernel.len(),
                    stride,
                    padding,
                    dilation,
                    *groups,
                )
                .with_context(|| format!("conv {}", node.name))?
            }
            Op::BatchNorm { eps, momentum, .. } => {
                let (g, bt) = (scale_rows(p("weight")?, pm)?, scale_rows(p("bias")?, pm)?);
                let bn = BnArgs {
                    eps: *eps,
                    momentum: *momentum,
                    train,
                    relu: fused[i],
                };
                model.batch_norm(&node.name, a, &g, &bt, bn)?
            }
            Op::Relu => ops::relu(a)?,
            Op::Add if fused[i] => ops::add_relu(a, &vals[node.inputs[1]])?,
            Op::Add => (a + &vals[node.inputs[1]])?,
            Op::GlobalAvgPool => ops::global_avg_pool(a)?,
            Op::Linear { bias, .. } => {
                let y = a.matmul(&scale_rows(p("weight")?, pm)?.t()?)?;
                if *bias {
                    y.broadcast_add(&scale_rows(p("bias")?, pm)?)?
                } else {
                    y
                }
            }
        };
        if let Some(m) = mask.and_then(|m| m.acts.as_ref()) {
            let mut shape = m.dims().to_vec();
            shape.resize(y.rank(), 1);
            y = y.broadcast_mul(&m.reshape(shape)?)?;
        }
        vals.push(y);
    }
    Ok(vals.pop().expect("graph has nodes"))
}
