//! Pareto fronts: which points are not dominated when one quantity is minimised (a cost:
//! parameters, MACs, bytes, latency) and another maximised (accuracy). Computed, never
//! hand-picked.

/// Indices of the points on the front of (cost ↓, value ↑), ordered by increasing cost.
///
/// A point is dominated when another point is at least as good on both axes and strictly
/// better on one. Equal points do not dominate each other, so duplicates are all kept.
/// Points with a NaN coordinate are never on the front.
pub fn front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..points.len())
        .filter(|&i| !points[i].0.is_nan() && !points[i].1.is_nan())
        .collect();
    // Sort by cost ascending, then value descending: a sweep keeps a point when its value
    // beats the best value seen at any strictly smaller cost (or ties the best at the same
    // cost and value).
    idx.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[b].1.total_cmp(&points[a].1))
            .then(a.cmp(&b))
    });
    let mut out = Vec::new();
    let mut best: Option<(f64, f64)> = None; // (cost, value) of the last kept point
    for i in idx {
        let (c, v) = points[i];
        match best {
            None => {
                out.push(i);
                best = Some((c, v));
            }
            Some((bc, bv)) => {
                if v > bv || (v == bv && c == bc) {
                    out.push(i);
                    best = Some((c, v));
                }
            }
        }
    }
    out
}

/// True when `a` dominates `b` on (cost ↓, value ↑).
pub fn dominates(a: (f64, f64), b: (f64, f64)) -> bool {
    a.0 <= b.0 && a.1 >= b.1 && (a.0 < b.0 || a.1 > b.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: a point is on the front when no other point dominates it.
    fn naive(points: &[(f64, f64)]) -> Vec<usize> {
        let mut out: Vec<usize> = (0..points.len())
            .filter(|&i| !points[i].0.is_nan() && !points[i].1.is_nan())
            .filter(|&i| !(0..points.len()).any(|j| j != i && dominates(points[j], points[i])))
            .collect();
        out.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0).then(a.cmp(&b)));
        out
    }

    #[test]
    fn hand_example() {
        // params, accuracy: (10k, 0.80) (20k, 0.90) (15k, 0.78) dominated by the first,
        // (30k, 0.90) dominated by the second, (40k, 0.92).
        let p = [
            (10e3, 0.80),
            (20e3, 0.90),
            (15e3, 0.78),
            (30e3, 0.90),
            (40e3, 0.92),
        ];
        assert_eq!(front(&p), vec![0, 1, 4]);
    }

    #[test]
    fn duplicates_and_nan() {
        let p = [
            (1.0, 0.5),
            (1.0, 0.5),
            (f64::NAN, 0.9),
            (2.0, f64::NAN),
            (0.5, 0.4),
        ];
        assert_eq!(front(&p), vec![4, 0, 1]);
    }

    #[test]
    fn matches_brute_force_on_random_sets() {
        // Small integer grid so that ties are frequent.
        let mut state = 0x2545F4914F6CDD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 7) as f64
        };
        for _ in 0..500 {
            let n = 1 + (next() as usize) * 2;
            let pts: Vec<(f64, f64)> = (0..n).map(|_| (next(), next())).collect();
            let mut got = front(&pts);
            got.sort_by(|&a, &b| pts[a].0.total_cmp(&pts[b].0).then(a.cmp(&b)));
            assert_eq!(got, naive(&pts), "points {pts:?}");
        }
    }
}
