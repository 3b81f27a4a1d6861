//! Structured channel pruning to compare with PIT (spec §4): L1 filter magnitude (per layer
//! or global), batch-norm scale (network slimming), uniform width, random (the control), and
//! Fisher pruning (greedy, data-driven: [`fisher`]).
//! Channels are chosen per channel group of the PIT [`Plan`] — residual-coupled layers share
//! one group and are pruned together, a depthwise conv follows its producer, a
//! squeeze-and-excitation gate follows the channels it scales, concat / channel split /
//! shuffle / flatten are followed by position (see [`crate::pit::plan`] for the rules and what
//! is frozen), the output layer is never pruned — and exported with the same code as PIT, so
//! every method yields the same network form.

pub mod fisher;
pub mod masked;
pub mod slimming;

use crate::graph::Op;
use crate::model::Model;
use crate::pit::plan::{Plan, plan};
use crate::pit::{Keep, LayerChange, export};
use anyhow::{Result, bail, ensure};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Which channels go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Lowest Σ|w| of the output filters (summed over coupled layers).
    L1,
    /// Lowest |γ| of the batch norms after the layers (summed over coupled layers).
    BnGamma,
    /// The first ⌈(1−ratio)·C⌉ channels of every group (a width multiplier).
    Uniform,
    /// A seeded random subset.
    Random,
    /// Smallest Fisher importance, greedily with fine-tuning between removals; needs
    /// training data, so it runs through [`fisher::fisher_prune`], not [`prune`].
    Fisher,
}

/// Ratio per group, or one threshold over all groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    Layer,
    Global,
}

/// Per-group channel scores (higher = more important) of `method`.
pub fn scores(model: &Model, plan: &Plan, method: Method, seed: u64) -> Result<Vec<Vec<f32>>> {
    let g = model.graph();
    let mut s: Vec<Vec<f32>> = plan
        .groups
        .iter()
        .map(|gr| vec![0.0; gr.channels])
        .collect();
    match method {
        Method::Fisher => {
            bail!("pruning method fisher needs training data: use prune::fisher::fisher_prune")
        }
        Method::L1 | Method::BnGamma => {
            for (i, node) in g.nodes.iter().enumerate() {
                let w = match (&node.op, method) {
                    (Op::Conv { .. } | Op::Linear { .. }, Method::L1) if !plan.depthwise[i] => {
                        let w = model.get(&format!("{}.weight", node.name))?.as_tensor();
                        // Mean |w| per filter, so layers of different fan-in compare globally.
                        w.abs()?.flatten_from(1)?.mean(1)?
                    }
                    (Op::BatchNorm { .. }, Method::BnGamma) => model
                        .get(&format!("{}.weight", node.name))?
                        .as_tensor()
                        .abs()?,
                    _ => continue,
                };
                // Each output channel adds to the group channel it carries.
                for (&(grp, c), b) in plan.layout[i + 1].iter().zip(w.to_vec1::<f32>()?) {
                    s[grp][c] += b;
                }
            }
        }
        Method::Uniform => {
            for v in &mut s {
                let n = v.len();
                for (c, x) in v.iter_mut().enumerate() {
                    *x = (n - c) as f32;
                }
            }
        }
        Method::Random => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for v in &mut s {
                let mut order: Vec<usize> = (0..v.len()).collect();
                order.shuffle(&mut rng);
                for (rank, c) in order.into_iter().enumerate() {
                    v[c] = rank as f32;
                }
            }
        }
    }
    Ok(s)
}

/// Channels to keep: per group the `keep = max(1, round((1−ratio)·C))` best (Layer scope), or
/// (Global scope) every channel scoring above the global `ratio` quantile of the prunable
/// channels, at least the best one per group. Ties break towards the lower index.
pub fn select(
    plan: &Plan,
    scores: &[Vec<f32>],
    ratio: f64,
    scope: Scope,
) -> Result<Vec<Vec<usize>>> {
    ensure!(
        (0.0..1.0).contains(&ratio),
        "pruning ratio must be in [0, 1), got {ratio}"
    );
    let rank = |v: &[f32]| -> Vec<usize> {
        let mut o: Vec<usize> = (0..v.len()).collect();
        o.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
        o
    };
    let threshold = if scope == Scope::Global {
        let mut all: Vec<f32> = plan
            .groups
            .iter()
            .zip(scores)
            .filter(|(g, _)| !g.fixed)
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        all.sort_by(|a, b| a.total_cmp(b));
        let cut = ((ratio * all.len() as f64).round() as usize).min(all.len());
        Some(if cut == 0 {
            f32::NEG_INFINITY
        } else {
            all[cut - 1]
        })
    } else {
        None
    };
    Ok(plan
        .groups
        .iter()
        .zip(scores)
        .map(|(g, s)| {
            let order = rank(s);
            let n = if g.fixed {
                g.channels
            } else {
                match threshold {
                    None => (((1.0 - ratio) * g.channels as f64).round() as usize).max(1),
                    Some(t) => s.iter().filter(|&&x| x > t).count().max(1),
                }
            };
            let mut k: Vec<usize> = order[..n].to_vec();
            k.sort_unstable();
            k
        })
        .collect())
}

/// Prune `model` with `method` at `ratio` and export the smaller network.
pub fn prune(
    model: &Model,
    method: Method,
    ratio: f64,
    scope: Scope,
    seed: u64,
) -> Result<(Model, Vec<LayerChange>)> {
    let p = plan(model.graph(), false)?;
    let s = scores(model, &p, method, seed)?;
    let channels = select(&p, &s, ratio, scope)?;
    let keep = Keep {
        channels,
        taps: vec![None; model.graph().nodes.len()],
    };
    export(model, &p, &keep, &s)
}

#[cfg(test)]
mod fisher_tests;
#[cfg(test)]
mod tests;
