//! Host latency measurement (spec §7): batch-1 timing protocol (warm-up, timed runs, passes in
//! seeded shuffled order), single-node look-up table, per-layer-type fit latency ≈ a·work + b,
//! and the statistics used to validate predicted against measured network latency.

use anyhow::Result;
use std::time::Instant;

/// Summary statistics of timings in milliseconds.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Stats {
    pub runs: usize,
    pub mean_ms: f64,
    pub median_ms: f64,
    pub std_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

pub fn stats(xs: &[f64]) -> Stats {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let median = if s.is_empty() {
        0.0
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    Stats {
        runs: xs.len(),
        mean_ms: mean,
        median_ms: median,
        std_ms: var.sqrt(),
        min_ms: s.first().copied().unwrap_or(0.0),
        max_ms: s.last().copied().unwrap_or(0.0),
    }
}

/// Runs `f` `warmup` times untimed, then `runs` times timed; milliseconds per run.
pub fn time_runs(
    warmup: usize,
    runs: usize,
    f: &mut dyn FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(out)
}

/// Least-squares line y ≈ a·x + b with its R² (None when undefined: < 2 points or constant).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Line {
    pub a: f64,
    pub b: f64,
    pub r2: Option<f64>,
}

pub fn fit_line(xs: &[f64], ys: &[f64]) -> Line {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return Line {
            a: 0.0,
            b: 0.0,
            r2: None,
        };
    }
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let syy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
    if sxx <= 0.0 {
        return Line {
            a: 0.0,
            b: my,
            r2: None,
        };
    }
    let a = sxy / sxx;
    let b = my - a * mx;
    let r2 = (syy > 0.0).then(|| (sxy * sxy) / (sxx * syy));
    Line { a, b, r2 }
}

/// Pearson correlation (None when undefined).
pub fn correlation(xs: &[f64], ys: &[f64]) -> Option<f64> {
    let l = fit_line(xs, ys);
    let r2 = l.r2?;
    Some(r2.sqrt() * l.a.signum())
}

/// A permutation of 0..n from a seed (Fisher–Yates over a SplitMix64 stream).
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// CPU model (from /proc/cpuinfo), logical cores and tool version.
pub fn fingerprint() -> (String, usize, String) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cpu, cores, env!("CARGO_PKG_VERSION").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_hand_values() {
        let s = stats(&[1.0, 2.0, 3.0, 10.0]);
        assert_eq!(
            (s.mean_ms, s.median_ms, s.min_ms, s.max_ms),
            (4.0, 2.5, 1.0, 10.0)
        );
        assert!((s.std_ms - 3.5355339).abs() < 1e-6);
        assert_eq!(stats(&[3.0, 1.0, 2.0]).median_ms, 2.0);
    }

    #[test]
    fn fit_line_recovers_a_line_and_r2() {
        let xs = [0.0, 1.0, 2.0, 3.0];
        let ys = [1.0, 3.0, 5.0, 7.0];
        let l = fit_line(&xs, &ys);
        assert!((l.a - 2.0).abs() < 1e-12 && (l.b - 1.0).abs() < 1e-12);
        assert!((l.r2.unwrap() - 1.0).abs() < 1e-12);
        // y = [0, 1, 0, 1] on x = 0..3: a = 0.2, b = 0.2, r² = 0.2.
        let l = fit_line(&xs, &[0.0, 1.0, 0.0, 1.0]);
        assert!((l.a - 0.2).abs() < 1e-12 && (l.b - 0.2).abs() < 1e-12);
        assert!((l.r2.unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(fit_line(&[1.0], &[2.0]).r2, None);
        assert!((correlation(&xs, &[7.0, 5.0, 3.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let a = shuffled(10, 7);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
        assert_eq!(a, shuffled(10, 7));
        assert_ne!(a, shuffled(10, 8));
    }
}
