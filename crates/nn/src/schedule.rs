//! Per-epoch learning-rate schedules (PyTorch semantics): constant, step, multi-step,
//! exponential and cosine annealing. The rate of epoch e depends only on e, so the scheduler
//! state in a checkpoint is just the epoch.

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScheduleConfig {
    #[default]
    Constant,
    /// lr·gamma^⌊e/step_size⌋.
    Step { step_size: u64, gamma: f64 },
    /// lr·gamma^(number of milestones ≤ e).
    MultiStep { milestones: Vec<u64>, gamma: f64 },
    /// lr·gamma^e.
    Exponential { gamma: f64 },
    /// eta_min + (lr − eta_min)·(1 + cos(π·min(e, t_max)/t_max))/2.
    Cosine {
        t_max: u64,
        #[serde(default)]
        eta_min: f64,
    },
}

impl ScheduleConfig {
    pub fn validate(&self) -> Result<()> {
        match self {
            ScheduleConfig::Step { step_size, .. } => {
                ensure!(*step_size > 0, "step schedule: step_size must be > 0")
            }
            ScheduleConfig::Cosine { t_max, .. } => {
                ensure!(*t_max > 0, "cosine schedule: t_max must be > 0")
            }
            _ => {}
        }
        Ok(())
    }

    /// Learning rate for (0-based) epoch `epoch` given the base rate.
    pub fn lr(&self, base: f64, epoch: u64) -> f64 {
        match self {
            ScheduleConfig::Constant => base,
            ScheduleConfig::Step { step_size, gamma } => {
                base * gamma.powi((epoch / step_size.max(&1)) as i32)
            }
            ScheduleConfig::MultiStep { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|&&m| m <= epoch).count() as i32)
            }
            ScheduleConfig::Exponential { gamma } => base * gamma.powi(epoch as i32),
            ScheduleConfig::Cosine { t_max, eta_min } => {
                let e = epoch.min(*t_max) as f64;
                eta_min
                    + (base - eta_min) * (1.0 + (std::f64::consts::PI * e / *t_max as f64).cos())
                        / 2.0
            }
        }
    }
}
