//! Variants of a ladder and their accuracy-vs-cost front: a variant is dominated when another
//! is at least as accurate and no more costly on every cost axis, and strictly better on one.
//! The ladder lists variants cheapest first (by the first cost axis, then the others, then
//! accuracy), dominated ones dropped unless kept (then marked with the name of a dominator).

use serde::{Deserialize, Serialize};

/// One deployable variant with its measured cost and accuracy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// Unique name: `<network>`, `<network>@w0.5`, with `/int8` for int8 variants.
    pub name: String,
    /// The input node the variant comes from.
    pub network: String,
    /// `network` (an independently trained / searched / pruned network) or `slice` (an
    /// elastic-width slice sharing the network's weights).
    pub kind: String,
    /// Width fraction of a slice (1 for a network).
    pub width: f64,
    /// `fp32` or `int8`.
    pub format: String,
    pub accuracy: f64,
    /// Accuracy of a slice before its BN statistics were re-calibrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_uncalibrated: Option<f64>,
    /// The latency the ladder uses (host measured or MCU estimate, see `latency_source`).
    pub latency_ms: f64,
    /// Measured host latency (batch 1, median), ms.
    pub host_latency_ms: f64,
    /// Estimated latency on the device profile, ms (when a profile is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcu_latency_ms: Option<f64>,
    pub params: u64,
    pub macs: u64,
    pub weight_bytes: u64,
    pub peak_activation_bytes: u64,
    /// Name of a variant that dominates this one (only with `keep_dominated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dominated_by: Option<String>,
}

/// A cost axis of the front (lower is better).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cost {
    LatencyMs,
    WeightBytes,
    PeakActivationBytes,
    Macs,
}

impl Cost {
    pub fn of(self, v: &Variant) -> f64 {
        match self {
            Cost::LatencyMs => v.latency_ms,
            Cost::WeightBytes => v.weight_bytes as f64,
            Cost::PeakActivationBytes => v.peak_activation_bytes as f64,
            Cost::Macs => v.macs as f64,
        }
    }
}

/// True when `a` dominates `b` on accuracy and `costs`.
pub fn dominates(a: &Variant, b: &Variant, costs: &[Cost]) -> bool {
    let no_worse = a.accuracy >= b.accuracy && costs.iter().all(|c| c.of(a) <= c.of(b));
    let better = a.accuracy > b.accuracy || costs.iter().any(|c| c.of(a) < c.of(b));
    no_worse && better
}

/// The ladder: variants ordered cheapest first, dominated ones dropped (or kept and marked).
pub fn front(mut variants: Vec<Variant>, costs: &[Cost], keep_dominated: bool) -> Vec<Variant> {
    let marks: Vec<Option<String>> = variants
        .iter()
        .map(|b| {
            variants
                .iter()
                .find(|a| dominates(a, b, costs))
                .map(|a| a.name.clone())
        })
        .collect();
    for (v, m) in variants.iter_mut().zip(marks) {
        v.dominated_by = m;
    }
    if !keep_dominated {
        variants.retain(|v| v.dominated_by.is_none());
    }
    variants.sort_by(|a, b| {
        costs
            .iter()
            .map(|c| c.of(a).total_cmp(&c.of(b)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.accuracy.total_cmp(&b.accuracy))
            .then(a.name.cmp(&b.name))
    });
    variants
}

#[cfg(test)]
pub(crate) fn point(name: &str, acc: f64, ms: f64, wb: u64, act: u64) -> Variant {
    Variant {
        name: name.into(),
        network: name.into(),
        kind: "network".into(),
        width: 1.0,
        format: "int8".into(),
        accuracy: acc,
        accuracy_uncalibrated: None,
        latency_ms: ms,
        host_latency_ms: ms,
        mcu_latency_ms: None,
        params: wb,
        macs: 0,
        weight_bytes: wb,
        peak_activation_bytes: act,
        dominated_by: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_drops_dominated_points_and_orders_by_cost() {
        // (accuracy, latency): a (0.90, 4), b (0.80, 2), c (0.70, 3) is dominated by b,
        // d (0.90, 5) is dominated by a (same accuracy, slower), e (0.60, 1).
        let pts = vec![
            point("a", 0.90, 4.0, 10, 1),
            point("b", 0.80, 2.0, 10, 1),
            point("c", 0.70, 3.0, 10, 1),
            point("d", 0.90, 5.0, 10, 1),
            point("e", 0.60, 1.0, 10, 1),
        ];
        let f = front(pts.clone(), &[Cost::LatencyMs], false);
        let names: Vec<&str> = f.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["e", "b", "a"]);
        // Accuracy rises along the ladder.
        assert!(f.windows(2).all(|w| w[0].accuracy < w[1].accuracy));
        let k = front(pts.clone(), &[Cost::LatencyMs], true);
        let names: Vec<&str> = k.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["e", "b", "c", "a", "d"]);
        let by = |n: &str| k.iter().find(|v| v.name == n).unwrap().dominated_by.clone();
        assert_eq!(by("c").as_deref(), Some("b"));
        assert_eq!(by("d").as_deref(), Some("a"));
        assert_eq!(by("a"), None);
        // A second cost axis rescues c: it needs less weight memory than b.
        let mut pts2 = pts;
        pts2[2].weight_bytes = 5;
        let f = front(pts2, &[Cost::LatencyMs, Cost::WeightBytes], false);
        let names: Vec<&str> = f.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["e", "b", "c", "a"]);
        // Identical points do not dominate each other.
        let twins = vec![point("x", 0.5, 1.0, 1, 1), point("y", 0.5, 1.0, 1, 1)];
        assert_eq!(front(twins, &[Cost::LatencyMs], false).len(), 2);
    }
}
