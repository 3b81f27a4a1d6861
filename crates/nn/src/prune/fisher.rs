//! Fisher pruning (spec §4, `002` §4.2.3, Theis et al. 2018): channels are removed greedily by
//! the smallest estimated loss increase
//!
//!   Δ_c = 1/(2N) · Σ_n g_nc²,   g_nc = Σ_points Σ_spatial a_nc · ∂L_n/∂a_nc,
//!
//! i.e. the squared per-sample derivative of the loss in a channel mask m_c held at 1, over N
//! training samples (`fisher_batches` seeded minibatches), with `finetune_steps` optimizer
//! steps on training minibatches after each removal. A channel group (a residual-coupled set
//! of layers, a depthwise conv with its producer) shares one mask, so g_nc sums the a·∂L/∂a
//! terms of every layer of the group *before* squaring: Δ_c is the Fisher estimate of
//! removing the coupled channel everywhere at once. The output layer's group is never pruned.
//!
//! Speed: every step costs `fisher_batches + finetune_steps` forward/backward passes of the
//! full-size network (removed channels are zeroed by their mask, not cut, until the end), so
//! `channels_per_step` (default 8) channels go per step rather than Theis's one; all of a
//! step's channels are taken from one Δ estimate, in increasing Δ. Defaults: 8 channels per
//! step, 2 minibatches per estimate, 4 fine-tuning steps per removal.
//!
//! Δ is estimated with the batch norms in eval mode (running statistics), so the per-sample
//! losses L_n are independent of each other; the fine-tuning steps train in train mode. At the
//! end the kept channels are exported with the same code as PIT and the other methods.

use super::Scope;
use super::masked::{self, Mask};
use crate::data::{Split, Targets};
use crate::loss::{self, LossKind};
use crate::model::Model;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::pit::plan::{Plan, plan};
use crate::pit::{Keep, LayerChange, export};
use anyhow::{Result, bail, ensure};
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of Fisher pruning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FisherConfig {
    /// Fraction of the prunable channels to remove, in [0, 1).
    pub ratio: f64,
    /// `Global`: round(ratio·P) of all P prunable channels, wherever Δ is smallest (at least
    /// one channel left per group). `Layer`: each group loses C − max(1, round((1−ratio)·C))
    /// channels, the next one always the smallest Δ among groups with quota left.
    pub scope: Scope,
    /// Channels removed per Δ estimate.
    pub channels_per_step: usize,
    /// Minibatches whose Δ are accumulated before each removal.
    pub fisher_batches: usize,
    /// Optimizer steps on training minibatches after each removal (0 = none).
    pub finetune_steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerConfig,
    pub loss: LossKind,
    /// Seed of the minibatch order.
    pub seed: u64,
}

impl FisherConfig {
    /// Defaults around a training recipe's batch size, learning rate, optimizer and loss.
    pub fn new(ratio: f64, batch_size: usize, lr: f64, optimizer: OptimizerConfig) -> Self {
        Self {
            ratio,
            scope: Scope::Global,
            channels_per_step: 8,
            fisher_batches: 2,
            finetune_steps: 4,
            batch_size,
            lr,
            optimizer,
            loss: LossKind::CrossEntropy,
            seed: 0,
        }
    }

    /// Check the values (messages name the key).
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (0.0..1.0).contains(&self.ratio),
            "fisher: ratio must be in [0, 1), got {}",
            self.ratio
        );
        ensure!(
            self.channels_per_step >= 1,
            "fisher: channels_per_step must be ≥ 1"
        );
        ensure!(
            self.fisher_batches >= 1,
            "fisher: fisher_batches must be ≥ 1"
        );
        ensure!(self.batch_size >= 1, "fisher: batch_size must be ≥ 1");
        ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "fisher: lr must be a positive number, got {}",
            self.lr
        );
        Ok(())
    }
}

/// One removed channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Removal {
    /// Channel group of the plan, and the channel's index in the seed network.
    pub group: usize,
    pub channel: usize,
    /// Δ when it was removed.
    pub importance: f64,
}

/// One step: what went, and the mean training loss of the fine-tuning steps that followed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FisherStep {
    pub removed: Vec<Removal>,
    pub finetune_loss: Option<f64>,
}

/// Callbacks; both optional.
#[derive(Default)]
pub struct FisherHooks<'a> {
    /// Polled before each step; true aborts with an error.
    pub cancel: Option<&'a dyn Fn() -> bool>,
    /// (channels removed so far, channels to remove).
    pub progress: Option<&'a mut dyn FnMut(usize, usize)>,
}

/// Seeded minibatches: a shuffled order of the split, reshuffled whenever it runs out.
struct Batches<'a> {
    split: &'a Split,
    size: usize,
    order: Vec<u32>,
    pos: usize,
    rng: ChaCha8Rng,
}

impl<'a> Batches<'a> {
    fn new(split: &'a Split, size: usize, seed: u64) -> Self {
        let n = split.len();
        Self {
            split,
            size: size.min(n).max(1),
            order: (0..n as u32).collect(),
            pos: n,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn next(&mut self) -> Result<(Tensor, Targets)> {
        if self.pos + self.size > self.order.len() {
            self.order.sort_unstable();
            self.order.shuffle(&mut self.rng);
            self.pos = 0;
        }
        let idx = &self.order[self.pos..self.pos + self.size];
        self.pos += self.size;
        self.split.batch(idx)
    }
}

/// Mean loss over the batch (per-sample losses averaged).
fn mean_loss(kind: LossKind, out: &Tensor, y: &Targets) -> Result<Tensor> {
    match (kind, y) {
        (LossKind::CrossEntropy, Targets::Classes(t)) => loss::cross_entropy(out, t),
        (LossKind::Mse, Targets::Values(t)) => {
            // Mean over each sample's elements, then over the batch: the same as over all.
            loss::mse(out, t)
        }
        (LossKind::CrossEntropy, _) => {
            bail!("fisher: cross-entropy needs plain class labels as training targets")
        }
        (LossKind::Mse, _) => bail!("fisher: MSE needs f32 target values as training targets"),
    }
}

/// Parameter masks zeroing the removed channels (none for fixed or untouched groups).
fn keep_masks(plan: &Plan, alive: &[Vec<bool>]) -> Result<Vec<Mask>> {
    plan.groups
        .iter()
        .zip(alive)
        .map(|(g, a)| {
            if g.fixed || a.iter().all(|&k| k) {
                return Ok(Mask::default());
            }
            let v: Vec<f32> = a.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
            Ok(Mask {
                params: Some(Tensor::from_vec(v, g.channels, &Device::Cpu)?),
                acts: None,
            })
        })
        .collect()
}

/// Σ_n g_nc² of one batch per group (zeros for fixed groups), and the batch size. The model
/// runs in eval mode; `alive` zeroes removed channels (whose g is then 0).
pub fn batch_fisher(
    model: &Model,
    plan: &Plan,
    alive: &[Vec<bool>],
    x: &Tensor,
    y: &Targets,
    kind: LossKind,
) -> Result<(Vec<Vec<f64>>, usize)> {
    let n = x.dim(0)?;
    let keep = keep_masks(plan, alive)?;
    let vars: Vec<Option<Var>> = plan
        .groups
        .iter()
        .map(|g| {
            (!g.fixed)
                .then(|| Var::ones((n, g.channels), DType::F32, &Device::Cpu))
                .transpose()
        })
        .collect::<candle_core::Result<_>>()?;
    let masks: Vec<Mask> = vars
        .iter()
        .zip(keep)
        .map(|(v, k)| Mask {
            acts: v.as_ref().map(|v| v.as_tensor().clone()),
            ..k
        })
        .collect();
    let out = masked::forward(model, plan, &masks, x, false)?;
    // Σ_n L_n: its derivative in m_nc is the per-sample g_nc.
    let total = (mean_loss(kind, &out, y)? * n as f64)?;
    let grads = total.backward()?;
    plan.groups
        .iter()
        .zip(&vars)
        .map(|(g, v)| {
            let Some(v) = v else {
                return Ok(vec![0.0; g.channels]);
            };
            let Some(gr) = grads.get(v.as_tensor()) else {
                return Ok(vec![0.0; g.channels]);
            };
            let gr: Vec<Vec<f32>> = gr.to_vec2()?;
            let mut s = vec![0.0f64; g.channels];
            for row in &gr {
                for (a, &b) in s.iter_mut().zip(row) {
                    *a += (b as f64) * (b as f64);
                }
            }
            Ok(s)
        })
        .collect::<Result<_>>()
        .map(|s| (s, n))
}

/// Δ_c = 1/(2N)·Σ_n g_nc² over `count` minibatches from `batches`.
fn importance(
    model: &Model,
    plan: &Plan,
    alive: &[Vec<bool>],
    batches: &mut Batches,
    count: usize,
    kind: LossKind,
) -> Result<Vec<Vec<f64>>> {
    let mut acc: Vec<Vec<f64>> = plan.groups.iter().map(|g| vec![0.0; g.channels]).collect();
    let mut n_total = 0usize;
    for _ in 0..count {
        let (x, y) = batches.next()?;
        let (s, n) = batch_fisher(model, plan, alive, &x, &y, kind)?;
        for (a, b) in acc.iter_mut().zip(s) {
            for (p, q) in a.iter_mut().zip(b) {
                *p += q;
            }
        }
        n_total += n;
    }
    let k = 1.0 / (2.0 * n_total as f64);
    for a in &mut acc {
        for v in a {
            *v *= k;
        }
    }
    Ok(acc)
}

/// How many channels each group may lose at most, and how many go in total: `Layer` gives
/// each group its own ratio; `Global` lets every non-fixed group go down to one channel.
fn quotas(plan: &Plan, ratio: f64, scope: Scope) -> (Vec<usize>, usize) {
    let q: Vec<usize> = plan
        .groups
        .iter()
        .map(|g| {
            if g.fixed {
                return 0;
            }
            match scope {
                Scope::Layer => {
                    g.channels - (((1.0 - ratio) * g.channels as f64).round() as usize).max(1)
                }
                Scope::Global => g.channels - 1,
            }
        })
        .collect();
    let total = match scope {
        Scope::Layer => q.iter().sum(),
        Scope::Global => {
            let p: usize = plan
                .groups
                .iter()
                .filter(|g| !g.fixed)
                .map(|g| g.channels)
                .sum();
            ((ratio * p as f64).round() as usize).min(q.iter().sum())
        }
    };
    (q, total)
}

/// Everything a Fisher run produced.
pub struct FisherResult {
    pub model: Model,
    pub changes: Vec<LayerChange>,
    pub steps: Vec<FisherStep>,
    /// Kept channel indices per group of the seed's plan.
    pub kept: Vec<Vec<usize>>,
}

/// Prune `seed` (unchanged; a copy is fine-tuned) on the training split `train`.
pub fn fisher_prune(
    seed: &Model,
    train: &Split,
    cfg: &FisherConfig,
    mut hooks: FisherHooks<'_>,
) -> Result<FisherResult> {
    cfg.validate()?;
    ensure!(
        !seed.bn_folded(),
        "fisher: the network must not have folded batch norms"
    );
    train.validate("fisher training")?;
    let p = plan(seed.graph(), false)?;
    let model = Model::new(seed.config().clone(), 0)?;
    model.load_state(&seed.state()?)?;
    let mut alive: Vec<Vec<bool>> = p.groups.iter().map(|g| vec![true; g.channels]).collect();
    let mut scores: Vec<Vec<f64>> = p.groups.iter().map(|g| vec![0.0; g.channels]).collect();
    let (quota, target) = quotas(&p, cfg.ratio, cfg.scope);
    let mut removed_in = vec![0usize; p.groups.len()];
    let mut batches = Batches::new(train, cfg.batch_size, cfg.seed);
    let mut opt = Optimizer::new(cfg.optimizer.clone(), model.params().to_vec())?;
    let mut steps = vec![];
    let mut removed = 0usize;
    while removed < target {
        if hooks.cancel.is_some_and(|c| c()) {
            bail!("fisher pruning cancelled after {removed} of {target} channels");
        }
        if let Some(pr) = hooks.progress.as_mut() {
            pr(removed, target);
        }
        let delta = importance(
            &model,
            &p,
            &alive,
            &mut batches,
            cfg.fisher_batches,
            cfg.loss,
        )?;
        let mut cand: Vec<(usize, usize)> = vec![];
        for (g, grp) in p.groups.iter().enumerate() {
            if grp.fixed {
                continue;
            }
            for c in 0..grp.channels {
                if alive[g][c] {
                    scores[g][c] = delta[g][c];
                    cand.push((g, c));
                }
            }
        }
        cand.sort_by(|&(g, c), &(h, d)| {
            delta[g][c]
                .total_cmp(&delta[h][d])
                .then(g.cmp(&h))
                .then(c.cmp(&d))
        });
        let want = cfg.channels_per_step.min(target - removed);
        let mut step = vec![];
        for (g, c) in cand {
            if step.len() == want {
                break;
            }
            if removed_in[g] >= quota[g] {
                continue;
            }
            alive[g][c] = false;
            removed_in[g] += 1;
            step.push(Removal {
                group: g,
                channel: c,
                importance: delta[g][c],
            });
        }
        ensure!(
            !step.is_empty(),
            "fisher: no channel can be removed ({removed} of {target} done)"
        );
        removed += step.len();
        let finetune_loss = finetune(&model, &p, &alive, &mut batches, &mut opt, cfg)?;
        steps.push(FisherStep {
            removed: step,
            finetune_loss,
        });
    }
    if let Some(pr) = hooks.progress.as_mut() {
        pr(removed, target);
    }
    let kept: Vec<Vec<usize>> = alive
        .iter()
        .map(|a| (0..a.len()).filter(|&c| a[c]).collect())
        .collect();
    let keep = Keep {
        channels: kept.clone(),
        taps: vec![None; seed.graph().nodes.len()],
    };
    let s: Vec<Vec<f32>> = scores
        .iter()
        .map(|v| v.iter().map(|&x| x as f32).collect())
        .collect();
    let (small, changes) = export(&model, &p, &keep, &s)?;
    Ok(FisherResult {
        model: small,
        changes,
        steps,
        kept,
    })
}

/// `cfg.finetune_steps` optimizer steps of the masked network; mean task loss.
fn finetune(
    model: &Model,
    plan: &Plan,
    alive: &[Vec<bool>],
    batches: &mut Batches,
    opt: &mut Optimizer,
    cfg: &FisherConfig,
) -> Result<Option<f64>> {
    if cfg.finetune_steps == 0 {
        return Ok(None);
    }
    let masks = keep_masks(plan, alive)?;
    let mut sum = 0.0;
    for s in 0..cfg.finetune_steps {
        let (x, y) = batches.next()?;
        let out = masked::forward(model, plan, &masks, &x, true)?;
        let l = mean_loss(cfg.loss, &out, &y)?;
        let v = l.to_scalar::<f32>()? as f64;
        ensure!(
            v.is_finite(),
            "fisher: fine-tuning diverged (loss {v} at step {s})"
        );
        opt.step(&l.backward()?, cfg.lr)?;
        sum += v;
    }
    Ok(Some(sum / cfg.finetune_steps as f64))
}
