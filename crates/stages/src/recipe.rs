//! The training recipe keys shared by every stage that trains (train, finetune, search,
//! distill): epochs, batch size, learning rate, optimizer, schedule, early stopping. Defaults
//! are the KWS recipe of spec §2 (Adam lr 5e-4, wd 1e-4, ×0.2 at epochs 12 and 24, batch 100).
//! `allow_divergence = true` lets a diverged training succeed (see [`Recipe::allow_divergence`]).

use serde::{Deserialize, Serialize};
use whittle_nn::loss::LossKind;
use whittle_nn::schedule::ScheduleConfig;
use whittle_nn::train::Monitor;
use whittle_nn::{OptimizerConfig, TrainConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recipe {
    pub epochs: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub loss: LossKind,
    /// Early stopping: epochs without validation improvement.
    pub patience: Option<u64>,
    pub monitor: Monitor,
    /// Keep the best-on-validation weights.
    pub keep_best: bool,
    /// A training that diverges (non-finite loss, loss over 1000× the initial one, or final
    /// accuracy at chance; see `whittle_nn::divergence`) fails its node unless this is true;
    /// then the node succeeds with a `diverged` message in its metrics, which the report shows
    /// as a warning. Left out of the resolved parameters when false, so existing keys (and an
    /// explicit `false`) are unchanged; `true` is part of the key, because it decides whether
    /// a diverged result exists at all (a cached diverged entry must not satisfy a stage that
    /// would refuse it).
    #[serde(skip_serializing_if = "is_false")]
    pub allow_divergence: bool,
    /// Training-time augmentation (`time_shift`, `noise`, `crop_pad`, `hflip`; see
    /// `whittle_nn::augment`). Left out of the resolved parameters when off, so existing keys
    /// are unchanged.
    #[serde(skip_serializing_if = "whittle_nn::augment::Augment::is_off")]
    pub augment: whittle_nn::augment::Augment,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            epochs: 36,
            batch_size: 100,
            lr: 5e-4,
            optimizer: OptimizerConfig::adam(1e-4),
            schedule: ScheduleConfig::MultiStep {
                milestones: vec![12, 24],
                gamma: 0.2,
            },
            loss: LossKind::CrossEntropy,
            patience: None,
            monitor: Monitor::ValLoss,
            keep_best: true,
            allow_divergence: false,
            augment: Default::default(),
        }
    }
}

impl Recipe {
    /// Checks the values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.epochs == 0 {
            return Err("epochs must be ≥ 1".into());
        }
        if self.batch_size == 0 {
            return Err("batch_size must be ≥ 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("lr must be a positive number, got {}", self.lr));
        }
        self.schedule.validate().map_err(|e| e.to_string())
    }

    /// The nn training configuration, data order seeded by `seed`.
    pub fn train_config(&self, seed: u64) -> TrainConfig {
        TrainConfig {
            augment: self.augment.clone(),
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            optimizer: self.optimizer.clone(),
            schedule: self.schedule.clone(),
            loss: self.loss,
            patience: self.patience,
            monitor: self.monitor,
            keep_best: self.keep_best,
            seed,
        }
    }
}
