//! The latency predictor of a space (`004` §3.3, Fig. 2): least squares of log-latency on
//! log-workload, ln y = a + b·ln x, with R² on the points it was fitted on and, what counts,
//! on held-out points it never saw. Fitted against FLOPs and against parameters, to show which
//! predicts better.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// ln y = intercept + slope · ln x.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LogLogFit {
    pub intercept: f64,
    pub slope: f64,
    /// R² in log space on the fitted points.
    pub r2: f64,
    pub n: usize,
}

impl LogLogFit {
    /// Least squares on (ln x, ln y); `None` with fewer than 2 points, a non-positive value,
    /// or all x equal.
    pub fn fit(x: &[f64], y: &[f64]) -> Option<LogLogFit> {
        if x.len() != y.len()
            || x.len() < 2
            || x.iter()
                .chain(y)
                .any(|&v| v.is_nan() || v <= 0.0 || !v.is_finite())
        {
            return None;
        }
        let lx: Vec<f64> = x.iter().map(|v| v.ln()).collect();
        let ly: Vec<f64> = y.iter().map(|v| v.ln()).collect();
        let n = lx.len() as f64;
        let (mx, my) = (lx.iter().sum::<f64>() / n, ly.iter().sum::<f64>() / n);
        let sxx: f64 = lx.iter().map(|a| (a - mx).powi(2)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let sxy: f64 = lx.iter().zip(&ly).map(|(a, b)| (a - mx) * (b - my)).sum();
        let slope = sxy / sxx;
        let mut f = LogLogFit {
            intercept: my - slope * mx,
            slope,
            r2: 0.0,
            n: lx.len(),
        };
        f.r2 = f.r2_on(x, y);
        Some(f)
    }

    /// Predicted y at x.
    pub fn predict(&self, x: f64) -> f64 {
        (self.intercept + self.slope * x.max(f64::MIN_POSITIVE).ln()).exp()
    }

    /// R² in log space of this fit on (x, y): 1 − SS_res / SS_tot (1 when all y are equal and
    /// predicted exactly, −∞ … 1 otherwise).
    pub fn r2_on(&self, x: &[f64], y: &[f64]) -> f64 {
        let ly: Vec<f64> = y.iter().map(|v| v.ln()).collect();
        let my = ly.iter().sum::<f64>() / ly.len().max(1) as f64;
        let ss_tot: f64 = ly.iter().map(|v| (v - my).powi(2)).sum();
        let ss_res: f64 = x
            .iter()
            .zip(&ly)
            .map(|(&a, b)| (b - (self.intercept + self.slope * a.ln())).powi(2))
            .sum();
        if ss_tot == 0.0 {
            return if ss_res == 0.0 {
                1.0
            } else {
                f64::NEG_INFINITY
            };
        }
        1.0 - ss_res / ss_tot
    }

    /// Median of |predicted − y| / y over (x, y).
    pub fn median_rel_error(&self, x: &[f64], y: &[f64]) -> f64 {
        let mut e: Vec<f64> = x
            .iter()
            .zip(y)
            .map(|(&a, &b)| (self.predict(a) - b).abs() / b)
            .collect();
        e.sort_by(f64::total_cmp);
        if e.is_empty() {
            f64::NAN
        } else {
            e[e.len() / 2]
        }
    }
}

/// A fit validated on held-out points.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Validated {
    pub fit: LogLogFit,
    /// R² in log space on the held-out points.
    pub heldout_r2: f64,
    pub heldout_median_rel_error: f64,
    pub heldout_n: usize,
}

/// The predictor of a space: latency against FLOPs and against parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LatencyPredictor {
    pub by_flops: Validated,
    pub by_params: Validated,
}

/// Seeded split of `n` indices into (fit, held-out), `holdout` ∈ (0, 1) of them held out
/// (at least one held out and two fitted when n ≥ 3; none held out below).
pub fn split(n: usize, holdout: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let k = if n < 3 {
        0
    } else {
        ((n as f64 * holdout).round() as usize).clamp(1, n - 2)
    };
    let mut held = idx[..k].to_vec();
    let mut fit = idx[k..].to_vec();
    fit.sort_unstable();
    held.sort_unstable();
    (fit, held)
}

/// Fits y on x on the `fit` indices and scores it on the `held` ones.
pub fn validate(x: &[f64], y: &[f64], fit_idx: &[usize], held: &[usize]) -> Option<Validated> {
    let pick = |v: &[f64], ix: &[usize]| ix.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    let fit = LogLogFit::fit(&pick(x, fit_idx), &pick(y, fit_idx))?;
    let (hx, hy) = (pick(x, held), pick(y, held));
    Some(Validated {
        fit,
        heldout_r2: fit.r2_on(&hx, &hy),
        heldout_median_rel_error: fit.median_rel_error(&hx, &hy),
        heldout_n: held.len(),
    })
}

impl LatencyPredictor {
    /// Fits latency (seconds) on FLOPs and on parameters with the same seeded split.
    pub fn fit(
        flops: &[f64],
        params: &[f64],
        latency: &[f64],
        holdout: f64,
        seed: u64,
    ) -> Option<Self> {
        let (f, h) = split(latency.len(), holdout, seed);
        if h.is_empty() {
            return None;
        }
        Some(LatencyPredictor {
            by_flops: validate(flops, latency, &f, &h)?,
            by_params: validate(params, latency, &f, &h)?,
        })
    }
}
