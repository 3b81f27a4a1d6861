//! The training loop: seeded data order, optimizer + per-epoch schedule, validation each
//! epoch, early stopping with patience, best-on-validation weights, divergence detection,
//! cancellation, progress reporting, and epoch-end checkpoints through a [`CheckpointSink`]
//! from which a killed run resumes to bit-identical final weights.

use crate::data::{DataSet, Split, Targets};
use crate::divergence::{Divergence, OnDivergence, check_chance, check_loss};
use crate::loss::{self, LossKind};
use crate::model::Model;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::schedule::ScheduleConfig;
use anyhow::{Context, Result, bail, ensure};
use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where checkpoints go; the engine's `Checkpoints` trait has the same shape.
pub trait CheckpointSink {
    /// Write checkpoint `step`: `write` fills the given empty folder.
    fn save(&self, step: u64, write: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()>;
    /// The newest complete checkpoint: (step, folder).
    fn latest(&self) -> Option<(u64, PathBuf)>;
}

/// Anything the loop can train: a forward pass, trainable variables, and the full state
/// (trainable + buffers) that checkpoints and best-weight selection copy.
pub trait Trainable {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    fn trainable_vars(&self) -> Vec<(String, Var)>;
    fn state_vars(&self) -> Vec<(String, Var)>;
    /// Extra term added to the task loss during training (e.g. a PIT cost regulariser).
    fn regularizer(&self) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

impl Trainable for Model {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward(x, train)
    }
    fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.params().to_vec()
    }
    fn state_vars(&self) -> Vec<(String, Var)> {
        self.params()
            .iter()
            .chain(self.buffers())
            .cloned()
            .collect()
    }
}

/// Which validation number picks the best epoch and drives early stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    #[default]
    ValLoss,
    ValAccuracy,
}

/// Training hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub loss: LossKind,
    /// Stop after this many epochs without validation improvement (needs a validation split).
    #[serde(default)]
    pub patience: Option<u64>,
    #[serde(default)]
    pub monitor: Monitor,
    /// Restore the best-on-validation weights at the end.
    #[serde(default = "yes")]
    pub keep_best: bool,
    /// Seed of the data order.
    pub seed: u64,
    /// Augmentation of each training batch (off: left out of the serialised config).
    #[serde(default, skip_serializing_if = "crate::augment::Augment::is_off")]
    pub augment: crate::augment::Augment,
}

fn yes() -> bool {
    true
}

/// Progress of one training batch.
#[derive(Clone, Debug)]
pub struct Progress {
    pub epoch: u64,
    pub epochs: u64,
    pub batch: usize,
    pub batches: usize,
    pub loss: f64,
}

/// Callbacks of a run; all optional.
#[derive(Default)]
pub struct Hooks<'a> {
    pub checkpoints: Option<&'a dyn CheckpointSink>,
    /// Polled between batches; true aborts with [`TrainError::Cancelled`].
    pub cancel: Option<&'a dyn Fn() -> bool>,
    pub progress: Option<&'a mut dyn FnMut(&Progress)>,
}

/// Errors callers may want to tell apart (wrapped in `anyhow`; use `downcast_ref`).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training cancelled at epoch {epoch}")]
    Cancelled { epoch: u64 },
    #[error("training diverged: loss {loss} at epoch {epoch}, batch {batch}")]
    Diverged { epoch: u64, batch: usize, loss: f64 },
    /// Any sign of divergence, with [`OnDivergence::Fail`].
    #[error("training {0}")]
    Divergence(Divergence),
}

/// Loss and (for classification) accuracy of one pass over a split.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub loss: f64,
    pub accuracy: Option<f64>,
}

/// One epoch of history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    pub lr: f64,
    pub train: Metrics,
    pub val: Option<Metrics>,
}

/// What a run returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainResult {
    pub history: Vec<EpochRecord>,
    /// Epoch whose weights the model holds at the end (best on validation, or the last).
    pub best_epoch: Option<u64>,
    pub stopped_early: bool,
    /// Validation metrics of the final weights.
    pub val: Option<Metrics>,
    pub test: Option<Metrics>,
    /// The sign of divergence found (see [`crate::divergence`]), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged: Option<Divergence>,
}

/// Everything of a run that is not a tensor, saved in `state.json` of each checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunState {
    config: TrainConfig,
    completed_epochs: u64,
    optimizer_steps: u64,
    rng_seed: [u8; 32],
    rng_stream: u64,
    /// u128 as decimal string (JSON numbers cannot hold it).
    rng_word_pos: String,
    best_epoch: Option<u64>,
    /// Bits of the best monitored value, so a resumed run compares exactly.
    best_score_bits: Option<u64>,
    bad_epochs: u64,
    stopped_early: bool,
    history: Vec<EpochRecord>,
    /// First batch loss of the run (before any update): the divergence tests' reference.
    #[serde(default)]
    initial_loss: Option<f64>,
    /// Output classes (classifiers only), seen on the first batch.
    #[serde(default)]
    classes: Option<usize>,
    #[serde(default)]
    diverged: Option<Divergence>,
}

const STATE_FILE: &str = "state.json";
const MODEL_FILE: &str = "model.safetensors";
const BEST_FILE: &str = "best.safetensors";
const OPTIM_FILE: &str = "optimizer.safetensors";

/// Batch loss of `out` against targets (mean over the batch), and the correct count.
fn batch_loss(kind: LossKind, out: &Tensor, y: &Targets) -> Result<(Tensor, Option<u64>)> {
    match (kind, y) {
        (LossKind::CrossEntropy, Targets::Classes(t)) => {
            Ok((loss::cross_entropy(out, t)?, Some(loss::correct(out, t)?)))
        }
        (LossKind::Mse, Targets::Values(t)) => Ok((loss::mse(out, t)?, None)),
        (LossKind::Mse, Targets::Classes(_)) => {
            bail!("MSE loss needs f32 target values, the data has class labels")
        }
        (
            LossKind::CrossEntropy,
            Targets::Distill {
                labels,
                teacher,
                kd,
            },
        ) => Ok((
            crate::distill::kd_loss(out, teacher, labels, kd)?,
            Some(loss::correct(out, labels)?),
        )),
        (LossKind::Mse, Targets::Distill { .. }) => {
            bail!("distillation needs the cross-entropy loss")
        }
        (LossKind::CrossEntropy, Targets::Values(_)) => {
            bail!("cross-entropy needs class labels, the data has f32 target values")
        }
    }
}

/// Loss and accuracy of the model (eval mode) over a split, in order, batch by batch.
pub fn evaluate(
    model: &dyn Trainable,
    split: &Split,
    kind: LossKind,
    batch_size: usize,
) -> Result<Metrics> {
    split.validate("evaluation")?;
    let n = split.len();
    let (mut sum, mut correct, mut has_acc) = (0.0f64, 0u64, false);
    let idx: Vec<u32> = (0..n as u32).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let (x, y) = split.batch(chunk)?;
        let out = model.forward_t(&x, false)?;
        let (l, c) = batch_loss(kind, &out, &y)?;
        sum += l.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        if let Some(c) = c {
            correct += c;
            has_acc = true;
        }
    }
    Ok(Metrics {
        loss: sum / n as f64,
        accuracy: has_acc.then(|| correct as f64 / n as f64),
    })
}

fn copy_state(vars: &[(String, Var)]) -> Result<HashMap<String, Tensor>> {
    vars.iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
        .collect()
}

fn restore_state(
    vars: &[(String, Var)],
    state: &HashMap<String, Tensor>,
    what: &str,
) -> Result<()> {
    ensure!(
        state.len() == vars.len(),
        "{what}: {} tensors saved, model has {}",
        state.len(),
        vars.len()
    );
    for (n, v) in vars {
        let t = state
            .get(n)
            .with_context(|| format!("{what}: no tensor {n}"))?;
        ensure!(
            t.dims() == v.dims(),
            "{what}: {n} has shape {:?}, model {:?}",
            t.dims(),
            v.dims()
        );
        v.set(t)?;
    }
    Ok(())
}

fn load_st(path: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))
}

/// Score to minimise for the monitored quantity.
fn score(monitor: Monitor, m: &Metrics) -> Result<f64> {
    Ok(match monitor {
        Monitor::ValLoss => m.loss,
        Monitor::ValAccuracy => -m
            .accuracy
            .context("monitor val_accuracy needs class labels")?,
    })
}

/// Train `model` in place on `data` and evaluate it on the test split. A non-finite loss is
/// an error ([`TrainError::Diverged`]); other signs of divergence are only reported in
/// [`TrainResult::diverged`] (see [`train_with`]).
pub fn train(
    model: &dyn Trainable,
    data: &DataSet,
    cfg: &TrainConfig,
    hooks: Hooks<'_>,
) -> Result<TrainResult> {
    train_with(model, data, cfg, hooks, OnDivergence::Report)
}

/// [`train`] with a choice of what a diverged run does. The tests run once per epoch (the
/// per-batch loss is already on the host for the epoch mean): the mean training loss of each
/// epoch against the first batch loss, and at the end the accuracy of the final weights on
/// the validation split (the last epoch's training accuracy without one) against chance.
pub fn train_with(
    model: &dyn Trainable,
    data: &DataSet,
    cfg: &TrainConfig,
    mut hooks: Hooks<'_>,
    on: OnDivergence,
) -> Result<TrainResult> {
    ensure!(
        cfg.epochs > 0 && cfg.batch_size > 0,
        "training: epochs and batch_size must be > 0"
    );
    ensure!(
        cfg.lr.is_finite() && cfg.lr > 0.0,
        "training: lr must be a positive number"
    );
    cfg.schedule.validate()?;
    data.train.validate("train")?;
    if let Some(v) = &data.val {
        v.validate("validation")?;
    }
    if let Some(t) = &data.test {
        t.validate("test")?;
    }
    ensure!(
        cfg.patience.is_none() || data.val.is_some(),
        "training: early stopping (patience) needs a validation split"
    );
    let state_vars = model.state_vars();
    let mut opt = Optimizer::new(cfg.optimizer.clone(), model.trainable_vars())?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut run = RunState {
        config: cfg.clone(),
        completed_epochs: 0,
        optimizer_steps: 0,
        rng_seed: rng.get_seed(),
        rng_stream: rng.get_stream(),
        rng_word_pos: rng.get_word_pos().to_string(),
        best_epoch: None,
        best_score_bits: None,
        bad_epochs: 0,
        stopped_early: false,
        history: vec![],
        initial_loss: None,
        classes: None,
        diverged: None,
    };
    let mut best: Option<HashMap<String, Tensor>> = None;

    // Resume from the newest checkpoint, if any.
    if let Some((step, dir)) = hooks.checkpoints.and_then(|c| c.latest()) {
        let text = std::fs::read_to_string(dir.join(STATE_FILE))
            .with_context(|| format!("reading checkpoint {step} in {}", dir.display()))?;
        let saved: RunState = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", dir.join(STATE_FILE).display()))?;
        ensure!(
            saved.config == *cfg,
            "checkpoint {} was written by a different training configuration",
            dir.display()
        );
        restore_state(
            &state_vars,
            &load_st(&dir.join(MODEL_FILE))?,
            "checkpoint weights",
        )?;
        opt.load_state(saved.optimizer_steps, &load_st(&dir.join(OPTIM_FILE))?)?;
        rng = ChaCha8Rng::from_seed(saved.rng_seed);
        rng.set_stream(saved.rng_stream);
        rng.set_word_pos(
            saved
                .rng_word_pos
                .parse::<u128>()
                .context("checkpoint rng_word_pos")?,
        );
        if dir.join(BEST_FILE).exists() {
            best = Some(load_st(&dir.join(BEST_FILE))?);
        }
        run = saved;
    }

    let n = data.train.len();
    let batches = n.div_ceil(cfg.batch_size);
    let cancel = hooks.cancel;
    let cancelled = |epoch| -> Result<()> {
        if cancel.is_some_and(|c| c()) {
            return Err(TrainError::Cancelled { epoch }.into());
        }
        Ok(())
    };
    let mut perm: Vec<u32> = (0..n as u32).collect();
    let mut epoch = run.completed_epochs;
    let stop_diverged = |run: &RunState| on == OnDivergence::Allow && run.diverged.is_some();
    while epoch < cfg.epochs && !run.stopped_early && !stop_diverged(&run) {
        let lr = cfg.schedule.lr(cfg.lr, epoch);
        perm.sort_unstable();
        perm.shuffle(&mut rng);
        let (mut sum, mut correct, mut has_acc) = (0.0f64, 0u64, false);
        for (b, chunk) in perm.chunks(cfg.batch_size).enumerate() {
            cancelled(epoch)?;
            let (x, y) = data.train.batch(chunk)?;
            let x = cfg.augment.apply(&x, cfg.seed, epoch, b)?;
            let out = model.forward_t(&x, true)?;
            let (mut l, c) = batch_loss(cfg.loss, &out, &y)?;
            let task = l.to_scalar::<f32>()? as f64;
            if run.initial_loss.is_none() {
                run.initial_loss = Some(task);
                run.classes = c.and_then(|_| out.dims().get(1).copied());
            }
            if let Some(r) = model.regularizer()? {
                l = (l + r)?;
            }
            let total = l.to_scalar::<f32>()? as f64;
            if !total.is_finite() {
                let d = Divergence::NonFinite {
                    epoch,
                    batch: b,
                    loss: total,
                };
                match on {
                    OnDivergence::Report => {
                        return Err(TrainError::Diverged {
                            epoch,
                            batch: b,
                            loss: total,
                        }
                        .into());
                    }
                    OnDivergence::Fail => return Err(TrainError::Divergence(d).into()),
                    // the step is not taken: the weights stay those before this batch
                    OnDivergence::Allow => {
                        run.diverged = Some(d);
                        break;
                    }
                }
            }
            let grads = l.backward()?;
            opt.step(&grads, lr)?;
            sum += task * chunk.len() as f64;
            if let Some(c) = c {
                correct += c;
                has_acc = true;
            }
            if let Some(p) = hooks.progress.as_mut() {
                p(&Progress {
                    epoch,
                    epochs: cfg.epochs,
                    batch: b,
                    batches,
                    loss: total,
                });
            }
        }
        if stop_diverged(&run) {
            // the epoch was cut short: no record, no checkpoint
            break;
        }
        let train_m = Metrics {
            loss: sum / n as f64,
            accuracy: has_acc.then(|| correct as f64 / n as f64),
        };
        if run.diverged.is_none() {
            if let Some(d) = check_loss(epoch, train_m.loss, run.initial_loss.unwrap_or(0.0)) {
                if on == OnDivergence::Fail {
                    return Err(TrainError::Divergence(d).into());
                }
                run.diverged = Some(d);
            }
        }
        let val_m = match &data.val {
            Some(v) => Some(evaluate(model, v, cfg.loss, cfg.batch_size)?),
            None => None,
        };
        run.history.push(EpochRecord {
            epoch,
            lr,
            train: train_m,
            val: val_m,
        });
        if let Some(vm) = &val_m {
            let s = score(cfg.monitor, vm)?;
            let improved = run.best_score_bits.is_none_or(|b| s < f64::from_bits(b));
            if improved {
                run.best_score_bits = Some(s.to_bits());
                run.best_epoch = Some(epoch);
                run.bad_epochs = 0;
                if cfg.keep_best {
                    best = Some(copy_state(&state_vars)?);
                }
            } else {
                run.bad_epochs += 1;
                if cfg.patience.is_some_and(|p| run.bad_epochs >= p) {
                    run.stopped_early = true;
                }
            }
        }
        epoch += 1;
        run.completed_epochs = epoch;
        run.optimizer_steps = opt.steps();
        run.rng_word_pos = rng.get_word_pos().to_string();
        if let Some(sink) = hooks.checkpoints {
            let (_, opt_state) = opt.state()?;
            let weights = copy_state(&state_vars)?;
            let json = serde_json::to_string_pretty(&run)?;
            sink.save(epoch, &mut |dir: &Path| {
                candle_core::safetensors::save(&weights, dir.join(MODEL_FILE))?;
                candle_core::safetensors::save(&opt_state, dir.join(OPTIM_FILE))?;
                if let Some(b) = &best {
                    candle_core::safetensors::save(b, dir.join(BEST_FILE))?;
                }
                std::fs::write(dir.join(STATE_FILE), &json)?;
                Ok(())
            })
            .with_context(|| format!("saving checkpoint after epoch {}", epoch - 1))?;
        }
        cancelled(epoch)?;
    }

    let best_epoch = match (&best, cfg.keep_best) {
        (Some(b), true) => {
            restore_state(&state_vars, b, "best weights")?;
            run.best_epoch
        }
        _ => run.completed_epochs.checked_sub(1),
    };
    let val = match &data.val {
        Some(v) => Some(evaluate(model, v, cfg.loss, cfg.batch_size)?),
        None => None,
    };
    let test = match &data.test {
        Some(t) => Some(evaluate(model, t, cfg.loss, cfg.batch_size)?),
        None => None,
    };
    if run.diverged.is_none() {
        let chance = match (&val, &data.val, run.history.last()) {
            (Some(m), Some(v), Some(last)) => m.accuracy.map(|a| (a, "validation", v.len(), last)),
            (None, _, Some(last)) => last.train.accuracy.map(|a| (a, "training", n, last)),
            _ => None,
        };
        if let (Some((acc, split, samples, last)), Some(classes), Some(initial)) =
            (chance, run.classes, run.initial_loss)
        {
            if let Some(d) = check_chance(acc, classes, split, samples, initial, last.train.loss) {
                if on == OnDivergence::Fail {
                    return Err(TrainError::Divergence(d).into());
                }
                run.diverged = Some(d);
            }
        }
    }
    Ok(TrainResult {
        history: run.history,
        best_epoch,
        stopped_early: run.stopped_early,
        val,
        test,
        diverged: run.diverged,
    })
}
