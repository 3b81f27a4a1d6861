//! Genetic design of sampling laws (`004` §4). A law's fitness for a target band (τ1, τ2) of
//! a metric m: draw `n_eval` valid candidates, take the mean µ and standard deviation σ of m
//! over them, and cost c = |µ − σ − τ1| + |µ + σ − τ2| (zero when µ ± σ is the band). The
//! search is a steady-state tournament GA: `n_init` random laws, then `n_steps` times pick
//! `tournament` laws at random, mutate a copy of the best of them (move the lower and/or upper
//! limit of one or more variables), and let the child replace the worst of them if it costs
//! less. `(n_init + n_steps) · n_eval` candidates are drawn in all. Of the final population,
//! the `k` most different laws are the best law of each of k spectral clusters.
//!
//! Bands slide over the grid [1, 2, 5] × 10^d across the decades asked for ([`bands`]).
//! Everything is seeded: same space, metric, band and configuration, same laws.

use super::cluster::spectral;
use super::{Costs, Law, Metric, Space};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

fn d100() -> usize {
    100
}
fn d900() -> usize {
    900
}
fn d10() -> usize {
    10
}
fn d5() -> usize {
    5
}

/// GA settings (defaults: `004`'s n_init = 100, n_steps = 900, n_eval = 10, k = 10).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaConfig {
    #[serde(default = "d100")]
    pub n_init: usize,
    #[serde(default = "d900")]
    pub n_steps: usize,
    #[serde(default = "d10")]
    pub n_eval: usize,
    #[serde(default = "d5")]
    pub tournament: usize,
    /// Laws kept per band (clusters).
    #[serde(default = "d10")]
    pub k: usize,
    #[serde(default)]
    pub seed: u64,
}

impl Default for GaConfig {
    fn default() -> Self {
        Self {
            n_init: 100,
            n_steps: 900,
            n_eval: 10,
            tournament: 5,
            k: 10,
            seed: 0,
        }
    }
}

impl GaConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.n_init < 2 || self.n_eval < 2 || self.k < 1 {
            return Err(format!(
                "ga: needs n_init ≥ 2, n_eval ≥ 2 and k ≥ 1, got n_init = {}, n_eval = {}, k = {}",
                self.n_init, self.n_eval, self.k
            ));
        }
        if !(2..=self.n_init).contains(&self.tournament) {
            return Err(format!(
                "ga: `tournament` must be in 2..=n_init ({}), got {}",
                self.n_init, self.tournament
            ));
        }
        Ok(())
    }
}

/// A law with its estimated statistic and cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    pub law: Law,
    pub mu: f64,
    pub sigma: f64,
    pub cost: f64,
}

/// Mean and (population) standard deviation.
pub fn stats(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mu = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / n;
    (mu, var.sqrt())
}

/// `004`'s cost |µ − σ − τ1| + |µ + σ − τ2|.
pub fn cost(mu: f64, sigma: f64, (t1, t2): (f64, f64)) -> f64 {
    (mu - sigma - t1).abs() + (mu + sigma - t2).abs()
}

/// Lowest share of valid draws a law may have: below it the law is unfit (cost +∞), so every
/// law the GA keeps samples reliably (a 5 % law fails [`super::MAX_DRAWS`] draws in a row
/// with probability 0.95^1000 ≈ 5·10^−23).
pub const MIN_VALID_SHARE: f64 = 0.05;

/// µ, σ of `metric` over `n` valid candidates drawn from `law`; `None` if the law yields no
/// valid candidate, fewer than [`MIN_VALID_SHARE`] of its draws are valid, or a candidate
/// fails to build.
pub fn estimate(
    space: &Space,
    law: &Law,
    metric: &Metric,
    n: usize,
    rng: &mut impl Rng,
) -> Option<(f64, f64)> {
    let mut v = Vec::with_capacity(n);
    let mut draws = 0;
    for _ in 0..n {
        let (x, d) = law.sample_counting(space, rng).ok()?;
        draws += d;
        let g = space.graph(&x).ok()?;
        v.push(metric.of(&Costs::of(&g)));
    }
    if (n as f64) < MIN_VALID_SHARE * draws as f64 {
        return None;
    }
    Some(stats(&v))
}

fn score(
    space: &Space,
    law: Law,
    metric: &Metric,
    band: (f64, f64),
    n: usize,
    rng: &mut impl Rng,
) -> Scored {
    match estimate(space, &law, metric, n, rng) {
        Some((mu, sigma)) => Scored {
            cost: cost(mu, sigma, band),
            law,
            mu,
            sigma,
        },
        None => Scored {
            law,
            mu: f64::NAN,
            sigma: f64::NAN,
            cost: f64::INFINITY,
        },
    }
}

fn random_law(space: &Space, rng: &mut impl Rng) -> Law {
    Law {
        limits: space
            .variables()
            .iter()
            .map(|v| {
                let (a, b) = (
                    rng.random_range(0..v.domain.len()),
                    rng.random_range(0..v.domain.len()),
                );
                [a.min(b), a.max(b)]
            })
            .collect(),
    }
}

/// A copy of `law` with at least one limit moved (each variable with probability 1/#vars).
fn mutate(space: &Space, law: &Law, rng: &mut impl Rng) -> Law {
    let vars = space.variables();
    let mut out = law.clone();
    for _ in 0..16 {
        for (i, v) in vars.iter().enumerate() {
            if !rng.random_bool(1.0 / vars.len() as f64) {
                continue;
            }
            let len = v.domain.len() as i64;
            let step = (len / 4).max(1);
            let [mut a, mut b] = out.limits[i].map(|x| x as i64);
            match rng.random_range(0..3) {
                0 => a += rng.random_range(-step..=step),
                1 => b += rng.random_range(-step..=step),
                _ => {
                    let d = rng.random_range(-step..=step);
                    a += d;
                    b += d;
                }
            }
            let (a, b) = (a.clamp(0, len - 1) as usize, b.clamp(0, len - 1) as usize);
            out.limits[i] = [a.min(b), a.max(b)];
        }
        if out != *law {
            break;
        }
    }
    out
}

/// One GA run for `band`: the final population, sorted by cost (best first).
pub fn evolve(space: &Space, metric: &Metric, band: (f64, f64), cfg: &GaConfig) -> Vec<Scored> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut pop: Vec<Scored> = (0..cfg.n_init)
        .map(|_| {
            let l = random_law(space, &mut rng);
            score(space, l, metric, band, cfg.n_eval, &mut rng)
        })
        .collect();
    let by_cost =
        |p: &[Scored], a: usize, b: usize| p[a].cost.total_cmp(&p[b].cost).then(a.cmp(&b));
    for _ in 0..cfg.n_steps {
        let mut pick: Vec<usize> = vec![];
        while pick.len() < cfg.tournament {
            let i = rng.random_range(0..pop.len());
            if !pick.contains(&i) {
                pick.push(i);
            }
        }
        let best = *pick
            .iter()
            .min_by(|&&a, &&b| by_cost(&pop, a, b))
            .expect("tournament ≥ 2");
        let worst = *pick
            .iter()
            .max_by(|&&a, &&b| by_cost(&pop, a, b))
            .expect("tournament ≥ 2");
        let child = mutate(space, &pop[best].law, &mut rng);
        let child = score(space, child, metric, band, cfg.n_eval, &mut rng);
        if child.cost < pop[worst].cost {
            pop[worst] = child;
        }
    }
    pop.sort_by(|a, b| a.cost.total_cmp(&b.cost).then(a.law.cmp(&b.law)));
    pop
}

/// The `k` most different laws of a population: the distinct finite-cost laws clustered
/// spectrally on their limits (each scaled to [0, 1] by its domain), the best of each cluster,
/// best first. Fewer than k distinct laws: all of them.
pub fn most_different(space: &Space, pop: &[Scored], k: usize, seed: u64) -> Vec<Scored> {
    let mut uniq: Vec<Scored> = vec![];
    for s in pop.iter().filter(|s| s.cost.is_finite()) {
        if !uniq.iter().any(|u| u.law == s.law) {
            uniq.push(s.clone());
        }
    }
    let vars = space.variables();
    let feats: Vec<Vec<f64>> = uniq
        .iter()
        .map(|s| {
            s.law
                .limits
                .iter()
                .zip(vars)
                .flat_map(|(&[a, b], v)| {
                    let m = (v.domain.len() - 1).max(1) as f64;
                    [a as f64 / m, b as f64 / m]
                })
                .collect()
        })
        .collect();
    let labels = spectral(&feats, k, seed);
    let mut out: Vec<Scored> = vec![];
    for c in 0..k {
        let best = (0..uniq.len())
            .filter(|&i| labels[i] == c)
            .min_by(|&a, &b| uniq[a].cost.total_cmp(&uniq[b].cost).then(a.cmp(&b)));
        if let Some(i) = best {
            out.push(uniq[i].clone());
        }
    }
    out.sort_by(|a, b| a.cost.total_cmp(&b.cost).then(a.law.cmp(&b.law)));
    out
}

/// Target bands over the grid 10^d·{1, 2, 5} for d in `from..to`, closed by 10^to:
/// consecutive grid values, e.g. (3, 4) → (1e3, 2e3), (2e3, 5e3), (5e3, 1e4).
pub fn bands(from: i32, to: i32) -> Vec<(f64, f64)> {
    let mut grid: Vec<f64> = (from..to)
        .flat_map(|d| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(d)))
        .collect();
    grid.push(10f64.powi(to));
    if from >= to {
        return vec![];
    }
    grid.windows(2).map(|w| (w[0], w[1])).collect()
}

/// The laws designed for one band.
#[derive(Clone, Debug)]
pub struct BandLaws {
    pub band: (f64, f64),
    /// The k most different laws, best first.
    pub laws: Vec<Scored>,
    /// Cost of the best law of the final population.
    pub best_cost: f64,
}

/// One GA run per band (in parallel; band i seeded with `seed + i`), then the k most
/// different laws of each.
pub fn design(
    space: &Space,
    metric: &Metric,
    bands: &[(f64, f64)],
    cfg: &GaConfig,
) -> Vec<BandLaws> {
    bands
        .par_iter()
        .enumerate()
        .map(|(i, &band)| {
            let c = GaConfig {
                seed: cfg.seed.wrapping_add(i as u64),
                ..cfg.clone()
            };
            let pop = evolve(space, metric, band, &c);
            tracing::debug!(?band, best = pop[0].cost, "ga band done");
            BandLaws {
                band,
                best_cost: pop[0].cost,
                laws: most_different(space, &pop, c.k, c.seed),
            }
        })
        .collect()
}
