//! Optimizers over candle `Var`s with serialisable state: Adam (L2 weight decay added to the
//! gradient), AdamW (decoupled weight decay) and SGD with momentum / Nesterov. The update
//! formulas follow PyTorch's `torch.optim` exactly; the arithmetic runs on plain f32 slices
//! in a fixed order, so the result is deterministic.

use anyhow::{Context, Result, bail, ensure};
use candle_core::{Device, Tensor, Var, backprop::GradStore};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Optimizer choice and hyper-parameters (the learning rate comes from the schedule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    Adam {
        #[serde(default = "b1")]
        beta1: f64,
        #[serde(default = "b2")]
        beta2: f64,
        #[serde(default = "eps")]
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
    },
    #[serde(rename = "adamw")]
    AdamW {
        #[serde(default = "b1")]
        beta1: f64,
        #[serde(default = "b2")]
        beta2: f64,
        #[serde(default = "eps")]
        eps: f64,
        #[serde(default = "wd_adamw")]
        weight_decay: f64,
    },
    Sgd {
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        dampening: f64,
        #[serde(default)]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f64,
    },
}

fn b1() -> f64 {
    0.9
}
fn b2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-8
}
fn wd_adamw() -> f64 {
    1e-2
}

impl OptimizerConfig {
    pub fn adam(weight_decay: f64) -> Self {
        Self::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }
    pub fn adamw(weight_decay: f64) -> Self {
        Self::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }
    pub fn sgd(momentum: f64, nesterov: bool, weight_decay: f64) -> Self {
        Self::Sgd {
            momentum,
            dampening: 0.0,
            nesterov,
            weight_decay,
        }
    }
}

/// Per-parameter state, kept as flat f32 vectors.
#[derive(Clone, Debug, Default)]
struct Slot {
    /// Adam: first moment; SGD: momentum buffer.
    m: Vec<f32>,
    /// Adam: second moment.
    v: Vec<f32>,
}

/// An optimizer bound to a list of named variables.
pub struct Optimizer {
    cfg: OptimizerConfig,
    vars: Vec<(String, Var)>,
    slots: Vec<Slot>,
    /// Number of steps taken.
    step: u64,
}

impl Optimizer {
    pub fn new(cfg: OptimizerConfig, vars: Vec<(String, Var)>) -> Result<Self> {
        match &cfg {
            OptimizerConfig::Sgd {
                nesterov: true,
                momentum,
                dampening,
                ..
            } => {
                ensure!(
                    *momentum > 0.0 && *dampening == 0.0,
                    "Nesterov SGD needs momentum > 0 and dampening 0"
                );
            }
            OptimizerConfig::Adam { beta1, beta2, .. }
            | OptimizerConfig::AdamW { beta1, beta2, .. } => {
                ensure!(
                    (0.0..1.0).contains(beta1) && (0.0..1.0).contains(beta2),
                    "Adam betas must be in [0, 1)"
                );
            }
            _ => {}
        }
        let slots = vec![Slot::default(); vars.len()];
        Ok(Self {
            cfg,
            vars,
            slots,
            step: 0,
        })
    }

    pub fn steps(&self) -> u64 {
        self.step
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.cfg
    }

    /// One update with learning rate `lr` from the gradients in `grads`. Variables without a
    /// gradient are left unchanged (as PyTorch does for `grad is None`).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        for ((name, var), slot) in self.vars.iter().zip(self.slots.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g: Vec<f32> = g.flatten_all()?.to_vec1()?;
            let mut w: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
            ensure!(
                g.len() == w.len(),
                "gradient of {name} has {} elements, parameter {}",
                g.len(),
                w.len()
            );
            match self.cfg {
                OptimizerConfig::Adam {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                }
                | OptimizerConfig::AdamW {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let decoupled = matches!(self.cfg, OptimizerConfig::AdamW { .. });
                    if slot.m.is_empty() {
                        slot.m = vec![0.0; w.len()];
                        slot.v = vec![0.0; w.len()];
                    }
                    let (b1, b2) = (beta1 as f32, beta2 as f32);
                    let bc1 = 1.0 - beta1.powi(t);
                    let bc2 = 1.0 - beta2.powi(t);
                    let step_size = (lr / bc1) as f32;
                    let bc2_sqrt = bc2.sqrt() as f32;
                    let (eps, wd, lr32) = (eps as f32, weight_decay as f32, lr as f32);
                    for i in 0..w.len() {
                        let mut gi = g[i];
                        if decoupled {
                            w[i] *= 1.0 - lr32 * wd;
                        } else if wd != 0.0 {
                            gi += wd * w[i];
                        }
                        slot.m[i] = b1 * slot.m[i] + (1.0 - b1) * gi;
                        slot.v[i] = b2 * slot.v[i] + (1.0 - b2) * gi * gi;
                        let denom = slot.v[i].sqrt() / bc2_sqrt + eps;
                        w[i] -= step_size * slot.m[i] / denom;
                    }
                }
                OptimizerConfig::Sgd {
                    momentum,
                    dampening,
                    nesterov,
                    weight_decay,
                } => {
                    let (mu, damp, wd, lr32) = (
                        momentum as f32,
                        dampening as f32,
                        weight_decay as f32,
                        lr as f32,
                    );
                    let first = slot.m.is_empty();
                    if momentum != 0.0 && first {
                        slot.m = vec![0.0; w.len()];
                    }
                    for i in 0..w.len() {
                        let mut gi = g[i];
                        if wd != 0.0 {
                            gi += wd * w[i];
                        }
                        if momentum != 0.0 {
                            let b = if first {
                                gi
                            } else {
                                mu * slot.m[i] + (1.0 - damp) * gi
                            };
                            slot.m[i] = b;
                            gi = if nesterov { gi + mu * b } else { b };
                        }
                        w[i] -= lr32 * gi;
                    }
                }
            }
            var.set(&Tensor::from_vec(w, var.dims(), &Device::Cpu)?)?;
        }
        Ok(())
    }

    /// The state as tensors (`m.<name>`, `v.<name>`) plus the step count, for checkpoints.
    pub fn state(&self) -> Result<(u64, HashMap<String, Tensor>)> {
        let mut out = HashMap::new();
        for ((name, var), slot) in self.vars.iter().zip(&self.slots) {
            if !slot.m.is_empty() {
                out.insert(
                    format!("m.{name}"),
                    Tensor::from_vec(slot.m.clone(), var.dims(), &Device::Cpu)?,
                );
            }
            if !slot.v.is_empty() {
                out.insert(
                    format!("v.{name}"),
                    Tensor::from_vec(slot.v.clone(), var.dims(), &Device::Cpu)?,
                );
            }
        }
        Ok((self.step, out))
    }

    /// Restore a state produced by [`Optimizer::state`] for the same variables.
    pub fn load_state(&mut self, step: u64, state: &HashMap<String, Tensor>) -> Result<()> {
        let known: usize = self.vars.len();
        let mut used = 0;
        for ((name, var), slot) in self.vars.iter().zip(self.slots.iter_mut()) {
            let get = |k: &str| -> Result<Vec<f32>> {
                let t = &state[k];
                ensure!(
                    t.dims() == var.dims(),
                    "optimizer state {k}: shape {:?}, parameter {:?}",
                    t.dims(),
                    var.dims()
                );
                Ok(t.flatten_all()?.to_vec1()?)
            };
            let (mk, vk) = (format!("m.{name}"), format!("v.{name}"));
            slot.m = if state.contains_key(&mk) {
                used += 1;
                get(&mk).context("optimizer state")?
            } else {
                vec![]
            };
            slot.v = if state.contains_key(&vk) {
                used += 1;
                get(&vk).context("optimizer state")?
            } else {
                vec![]
            };
        }
        if used != state.len() {
            bail!(
                "optimizer state has {} tensors, only {used} match the {known} parameters",
                state.len()
            );
        }
        self.step = step;
        Ok(())
    }
}
