//! The `float(*,*)` grid of `004` §3.2: every reduced float T(w,t) over ranges of exponent
//! bits w and mantissa bits t, and the choice of each model's best format within a weight
//! memory budget (highest accuracy among the formats whose stored weights fit).

use super::float::FloatFormat;
use super::format::Format;
use serde::{Deserialize, Serialize};

/// Inclusive ranges of exponent bits `w` and mantissa bits `t` of the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatGrid {
    /// [lowest, highest] exponent bits, within 1..=8 (w = 1: subnormals only, t ≥ 1).
    pub exp_bits: [u32; 2],
    /// [lowest, highest] mantissa bits, within 0..=23.
    pub man_bits: [u32; 2],
}

impl Default for FloatGrid {
    /// w ∈ 2..=8, t ∈ 0..=7: 56 formats of 3 to 16 bits (every 8-bit float, bf16 = T(8,7)).
    /// `004`'s full grid is w ∈ 1..=8, t ∈ 1..=23 (184 types): `exp_bits = [1, 8]`,
    /// `man_bits = [1, 23]`.
    fn default() -> Self {
        Self {
            exp_bits: [2, 8],
            man_bits: [0, 7],
        }
    }
}

impl FloatGrid {
    /// The formats, w-major then t ascending; an error names an empty or unsupported range.
    pub fn formats(&self) -> Result<Vec<FloatFormat>, String> {
        let [w0, w1] = self.exp_bits;
        let [t0, t1] = self.man_bits;
        if w0 > w1 || t0 > t1 {
            return Err(format!(
                "float(*,*) grid: empty range exp_bits [{w0}, {w1}] or man_bits [{t0}, {t1}]"
            ));
        }
        let mut out = Vec::new();
        for w in w0..=w1 {
            for t in t0..=t1 {
                out.push(FloatFormat::new(w, t).map_err(|e| format!("float(*,*) grid: {e}"))?);
            }
        }
        Ok(out)
    }
}

/// One evaluated candidate of the budget choice.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub format: Format,
    pub weight_bytes: u64,
    pub accuracy: Option<f64>,
}

/// Index of the best float format within `budget_bytes` of stored weights (`004`: each
/// model's best tradeoff type T(w,t)): the highest accuracy among float-format candidates
/// whose weight bytes fit; ties go to fewer weight bytes, then to the earlier candidate.
/// Without a budget every candidate fits. `None` when nothing fits or no accuracy is known.
pub fn best_within_budget(cands: &[Candidate], budget_bytes: Option<u64>) -> Option<usize> {
    let mut best: Option<(usize, f64, u64)> = None;
    for (i, c) in cands.iter().enumerate() {
        let (Format::Float(_), Some(acc)) = (c.format, c.accuracy) else {
            continue;
        };
        if budget_bytes.is_some_and(|b| c.weight_bytes > b) || !acc.is_finite() {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, a, bytes)) => acc > a || (acc == a && c.weight_bytes < bytes),
        };
        if better {
            best = Some((i, acc, c.weight_bytes));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(w: u32, t: u32) -> Format {
        Format::Float(FloatFormat::new(w, t).unwrap())
    }

    #[test]
    fn default_grid_has_56_formats_in_order() {
        let g = FloatGrid::default().formats().unwrap();
        assert_eq!(g.len(), 56);
        assert_eq!((g[0].exp_bits, g[0].man_bits), (2, 0));
        assert_eq!((g[1].exp_bits, g[1].man_bits), (2, 1));
        assert_eq!((g[8].exp_bits, g[8].man_bits), (3, 0));
        assert_eq!(g[55], FloatFormat::BF16);
        let bits: Vec<u32> = g.iter().map(|f| f.bits()).collect();
        assert_eq!(bits.iter().min(), Some(&3));
        assert_eq!(bits.iter().max(), Some(&16));
        // Six formats of 8 bits: T(w, 7 − w) for w = 2..=7 (T(8,·) needs ≥ 9 bits).
        assert_eq!(bits.iter().filter(|&&b| b == 8).count(), 6);
        assert!(
            FloatGrid {
                exp_bits: [1, 8],
                man_bits: [0, 3]
            }
            .formats()
            .unwrap_err()
            .contains("float(1,0)")
        );
        let full = FloatGrid {
            exp_bits: [1, 8],
            man_bits: [1, 23],
        }
        .formats()
        .unwrap();
        assert_eq!(full.len(), 184, "004's grid");
        assert!(
            FloatGrid {
                exp_bits: [0, 2],
                man_bits: [1, 3]
            }
            .formats()
            .unwrap_err()
            .contains("exponent bits must be 1..=8")
        );
        assert!(
            FloatGrid {
                exp_bits: [5, 4],
                man_bits: [0, 3]
            }
            .formats()
            .unwrap_err()
            .contains("empty range")
        );
    }

    #[test]
    fn best_is_most_accurate_that_fits_ties_to_smaller() {
        let c = |format, weight_bytes, acc: f64| Candidate {
            format,
            weight_bytes,
            accuracy: Some(acc),
        };
        let cands = [
            c(f(8, 23), 400, 0.90),
            c(f(5, 10), 200, 0.90),
            c(f(4, 3), 100, 0.85),
            c(f(5, 2), 100, 0.85),
            c(f(3, 2), 75, 0.80),
            c(Format::Int8, 100, 0.95), // not a float format: never chosen
        ];
        assert_eq!(
            best_within_budget(&cands, None),
            Some(1),
            "tie 0.90: fewer bytes"
        );
        assert_eq!(best_within_budget(&cands, Some(399)), Some(1));
        assert_eq!(
            best_within_budget(&cands, Some(199)),
            Some(2),
            "tie: earlier"
        );
        assert_eq!(best_within_budget(&cands, Some(99)), Some(4));
        assert_eq!(best_within_budget(&cands, Some(74)), None);
    }
}
