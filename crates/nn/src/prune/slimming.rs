//! Network slimming (spec §4, BN-γ): a [`Trainable`] view of a model whose regulariser is
//! λ·Σ|γ| over its batch-norm scales, trained briefly before channels with small |γ| are cut.

use crate::graph::Op;
use crate::model::Model;
use crate::train::Trainable;
use anyhow::Result;
use candle_core::{Tensor, Var};

/// A model trained with an L1 penalty on its batch-norm scales.
pub struct Slimming<'a> {
    pub model: &'a Model,
    pub lambda: f64,
}

impl Slimming<'_> {
    /// Σ|γ| over every batch norm (unscaled), differentiable.
    pub fn l1_gamma(&self) -> Result<Tensor> {
        let mut total = Tensor::new(0f32, &candle_core::Device::Cpu)?;
        for n in &self.model.graph().nodes {
            if let Op::BatchNorm { .. } = n.op {
                let g = self.model.get(&format!("{}.weight", n.name))?.as_tensor();
                total = (total + g.abs()?.sum_all()?)?;
            }
        }
        Ok(total)
    }
}

impl Trainable for Slimming<'_> {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.model.forward(x, train)
    }
    fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.model.trainable_vars()
    }
    fn state_vars(&self) -> Vec<(String, Var)> {
        self.model.state_vars()
    }
    fn regularizer(&self) -> Result<Option<Tensor>> {
        Ok(Some((self.l1_gamma()? * self.lambda)?))
    }
}
