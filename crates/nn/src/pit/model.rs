//! `PitModel`: a seed [`Model`] plus trainable PIT masks. The masked forward pass multiplies
//! Conv1d weights by their binary time masks and each channel group's activations (after the
//! batch norm) by its binary channel mask; the regulariser is the spec's size or MAC cost on
//! the continuous masks, summed over layers and scaled by λ.

use super::masks::{binarize, gamma_len, k_eff, theta_keep_alive, time_mask};
use super::plan::{Plan, plan};
use crate::graph::Op;
use crate::interp::{self, Hook};
use crate::model::Model;
use crate::ops;
use crate::train::Trainable;
use anyhow::{Context, Result, ensure};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

/// What the regulariser counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Cost {
    /// Parameters: C_in,eff·C_out,eff·K_eff / groups per layer.
    #[default]
    Size,
    /// size × output positions.
    Macs,
}

/// Per-layer cost on the continuous masks.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCost {
    pub name: String,
    pub size: f64,
    pub macs: f64,
}

/// A seed network with PIT masks.
pub struct PitModel {
    model: Model,
    plan: Plan,
    /// α per group (None for fixed groups).
    alpha: Vec<Option<Var>>,
    /// (β, γ) per node (time-masked Conv1d only).
    time: Vec<Option<(Var, Var)>>,
    cost: Cost,
    lambda: f64,
}

impl PitModel {
    /// Wrap `model` with all masks at 1. `time_masks` enables β/γ on causal Conv1d layers.
    pub fn new(model: Model, cost: Cost, lambda: f64, time_masks: bool) -> Result<Self> {
        ensure!(
            !model.bn_folded(),
            "PIT: the seed model must not have folded batch norms"
        );
        ensure!(
            lambda.is_finite() && lambda >= 0.0,
            "PIT: lambda must be a finite number ≥ 0, got {lambda}"
        );
        let plan = plan(model.graph(), time_masks)?;
        let ones = |n: usize| -> Result<Var> {
            Ok(Var::from_tensor(&Tensor::ones(
                n,
                DType::F32,
                &Device::Cpu,
            )?)?)
        };
        let alpha = plan
            .groups
            .iter()
            .map(|g| {
                if g.fixed {
                    Ok(None)
                } else {
                    ones(g.channels).map(Some)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let time = model
            .graph()
            .nodes
            .iter()
            .zip(&plan.time_masked)
            .map(|(n, &t)| match (&n.op, t) {
                (Op::Conv { kernel, .. }, true) => {
                    Ok(Some((ones(kernel[0])?, ones(gamma_len(kernel[0]))?)))
                }
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            model,
            plan,
            alpha,
            time,
            cost,
            lambda,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    pub fn lambda(&self) -> f64 {
        self.lambda
    }
    pub fn cost_kind(&self) -> Cost {
        self.cost
    }

    /// Mask parameters, named `pit.alpha.<group>`, `<node>.pit_beta`, `<node>.pit_gamma`.
    pub fn mask_vars(&self) -> Vec<(String, Var)> {
        let mut v = vec![];
        for (g, a) in self.alpha.iter().enumerate() {
            if let Some(a) = a {
                v.push((format!("pit.alpha.{g}"), a.clone()));
            }
        }
        for (node, t) in self.model.graph().nodes.iter().zip(&self.time) {
            if let Some((b, c)) = t {
                v.push((format!("{}.pit_beta", node.name), b.clone()));
                v.push((format!("{}.pit_gamma", node.name), c.clone()));
            }
        }
        v
    }

    /// The network's weights (without the masks).
    pub fn weight_vars(&self) -> Vec<(String, Var)> {
        self.model.params().to_vec()
    }

    /// Set a mask parameter by name (see [`PitModel::mask_vars`]).
    pub fn set_mask(&self, name: &str, values: &[f32]) -> Result<()> {
        let (_, v) = self
            .mask_vars()
            .into_iter()
            .find(|(n, _)| n == name)
            .with_context(|| format!("PIT model has no mask {name}"))?;
        ensure!(
            v.elem_count() == values.len(),
            "mask {name}: {} values given, it has {}",
            values.len(),
            v.elem_count()
        );
        v.set(&Tensor::from_vec(
            values.to_vec(),
            values.len(),
            &Device::Cpu,
        )?)?;
        Ok(())
    }

    /// Continuous channel mask θ_α of group g (None if fixed); keep-alive at channel 0.
    fn theta_alpha(&self, g: usize) -> Result<Option<Tensor>> {
        self.alpha[g]
            .as_ref()
            .map(|a| Ok(theta_keep_alive(a.as_tensor(), 0)?))
            .transpose()
    }

    /// Binary channel mask of every group (all ones for fixed groups).
    pub fn channel_masks(&self) -> Result<Vec<Vec<f32>>> {
        (0..self.plan.groups.len())
            .map(|g| match self.theta_alpha(g)? {
                Some(t) => Ok(binarize(&t)?.to_vec1::<f32>()?),
                None => Ok(vec![1.0; self.plan.groups[g].channels]),
            })
            .collect()
    }

    /// |α| of every group (ones for fixed groups).
    pub fn alpha_values(&self) -> Result<Vec<Vec<f32>>> {
        self.alpha
            .iter()
            .zip(&self.plan.groups)
            .map(|(a, g)| match a {
                Some(a) => Ok(a.as_tensor().abs()?.to_vec1::<f32>()?),
                None => Ok(vec![1.0; g.channels]),
            })
            .collect()
    }

    /// Binary time mask of node i, if it has one.
    pub fn time_mask_of(&self, i: usize) -> Result<Option<Vec<f32>>> {
        self.time[i]
            .as_ref()
            .map(|(b, g)| Ok(time_mask(b.as_tensor(), g.as_tensor())?.to_vec1::<f32>()?))
            .transpose()
    }

    /// Masked forward pass (train mode updates BN running statistics like [`Model::forward`]).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let cmasks: Vec<Option<Tensor>> = (0..self.plan.groups.len())
            .map(|g| self.theta_alpha(g)?.map(|t| Ok(binarize(&t)?)).transpose())
            .collect::<Result<_>>()?;
        let node_masks = (0..self.plan.mask_at.len())
            .map(|i| {
                if self.plan.mask_at[i] {
                    self.plan.gather(i + 1, &cmasks)
                } else {
                    Ok(None)
                }
            })
            .collect::<Result<_>>()?;
        let mut hook = PitHook {
            pit: self,
            node_masks,
        };
        interp::forward(self.model.graph(), &self.model, x, train, &mut hook).context("PIT model")
    }

    /// Cost of every conv/linear layer on the continuous masks, as tensors (size, macs).
    fn layer_cost_tensors(&self) -> Result<Vec<(String, Tensor, Tensor)>> {
        let graph = self.model.graph();
        // Effective channels of value v: Σ θ over its channels (a whole group's own θ, made
        // afresh per use as it always was, when the value is exactly one group).
        let c_eff = |v: usize| -> Result<Tensor> {
            let plan = &self.plan;
            if plan.whole[v] {
                let g = plan.value_group[v];
                return Ok(match self.theta_alpha(g)? {
                    Some(t) => t.sum_all()?,
                    None => Tensor::new(plan.groups[g].channels as f32, &Device::Cpu)?,
                });
            }
            let thetas: Vec<Option<Tensor>> = (0..plan.groups.len())
                .map(|g| self.theta_alpha(g))
                .collect::<Result<_>>()?;
            Ok(match plan.gather(v, &thetas)? {
                Some(t) => t.sum_all()?,
                None => Tensor::new(plan.layout[v].len() as f32, &Device::Cpu)?,
            })
        };
        let mut out = vec![];
        for (i, node) in graph.nodes.iter().enumerate() {
            let (k, positions) = match &node.op {
                Op::Conv { kernel, .. } => {
                    let k = match &self.time[i] {
                        Some((b, g)) => k_eff(b.as_tensor(), g.as_tensor())?,
                        None => Tensor::new(kernel.iter().product::<usize>() as f32, &Device::Cpu)?,
                    };
                    (k, node.out_shape[1..].iter().product::<usize>())
                }
                Op::Linear { .. } => (Tensor::new(1f32, &Device::Cpu)?, 1),
                _ => continue,
            };
            let cout = c_eff(i + 1)?;
            let size = if self.plan.depthwise[i] {
                (cout * k)?
            } else {
                let cin = c_eff(node.inputs[0])?;
                ((cin * cout)? * k)?
            };
            let macs = (&size * positions as f64)?;
            out.push((node.name.clone(), size, macs));
        }
        Ok(out)
    }

    /// Per-layer cost on the continuous masks.
    pub fn layer_costs(&self) -> Result<Vec<LayerCost>> {
        self.layer_cost_tensors()?
            .into_iter()
            .map(|(name, s, m)| {
                Ok(LayerCost {
                    name,
                    size: s.to_scalar::<f32>()? as f64,
                    macs: m.to_scalar::<f32>()? as f64,
                })
            })
            .collect()
    }

    /// Σ_n cost(n) (unscaled), as a differentiable scalar.
    pub fn cost(&self) -> Result<Tensor> {
        let parts = self.layer_cost_tensors()?;
        let mut total = Tensor::new(0f32, &Device::Cpu)?;
        for (_, s, m) in parts {
            total = (total
                + match self.cost {
                    Cost::Size => s,
                    Cost::Macs => m,
                })?;
        }
        Ok(total)
    }
}

impl Trainable for PitModel {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward(x, train)
    }
    /// Weights and masks (one optimizer; the search loop uses two, see `pit::search`).
    fn trainable_vars(&self) -> Vec<(String, Var)> {
        let mut v = self.weight_vars();
        v.extend(self.mask_vars());
        v
    }
    fn state_vars(&self) -> Vec<(String, Var)> {
        let mut v = self.trainable_vars();
        v.extend(self.model.buffers().iter().cloned());
        v
    }
    /// λ·Σ cost.
    fn regularizer(&self) -> Result<Option<Tensor>> {
        if self.lambda == 0.0 {
            return Ok(None);
        }
        Ok(Some((self.cost()? * self.lambda)?))
    }
}

/// The PIT masks as interpreter hooks: time masks multiply Conv1d weights, channel masks the
/// outputs at the plan's mask points (which are therefore not fused with their consumer).
struct PitHook<'a> {
    pit: &'a PitModel,
    /// Per node: the binary channel mask of its output (None where there is none).
    node_masks: Vec<Option<Tensor>>,
}

impl PitHook<'_> {
    fn mask_of(&self, node: usize) -> Option<&Tensor> {
        self.node_masks[node].as_ref()
    }
}

impl Hook for PitHook<'_> {
    fn weight(&mut self, node: usize, suffix: &str, w: &Tensor) -> Result<Tensor> {
        match (&self.pit.time[node], suffix) {
            (Some((b, g)), "weight") => {
                let m = time_mask(b.as_tensor(), g.as_tensor())?;
                let k = m.elem_count();
                Ok(w.broadcast_mul(&m.reshape((1, 1, k))?)?)
            }
            _ => Ok(w.clone()),
        }
    }
    fn output(&mut self, node: usize, y: Tensor) -> Result<Tensor> {
        match self.mask_of(node) {
            // (N, C, …): one pass per plane and a plane-wise dot product for the mask's
            // gradient (candle's broadcast multiply sums that gradient over strided dims,
            // which made the masks cost more than the convolutions)
            Some(m) if y.rank() >= 3 => {
                let s = m.unsqueeze(0)?.broadcast_as((y.dim(0)?, m.elem_count()))?;
                Ok(whittle_kernels::channel_mul(&y, &s)?)
            }
            Some(m) => Ok(y.broadcast_mul(&ops::bcast(m, y.rank())?)?),
            None => Ok(y),
        }
    }
    fn keep(&self, node: usize) -> bool {
        self.mask_of(node).is_some()
    }
    /// Keeps the eval forward layer by layer (bit-identical to the seed network's unfused one).
    fn fold_eval_bn(&self) -> bool {
        false
    }
}
