//! The sampling laws of `space` nodes (`004`'s search before training): per space, the
//! distribution of the sampled candidates' parameters per law (counts over quarter-decade bins,
//! one line per law, log axis) and a table of the laws with their GA target band, the
//! candidates drawn and the latency predictor's held-out fit when the space timed candidates.

use crate::model::NodeRecord;
use crate::render::{num_str, sanitize};
use crate::svg::{Scatter, Series};
use crate::table::{Align, Table, thousands};
use serde_json::Value;

pub(crate) fn section(
    nodes: &[NodeRecord],
    folder: &str,
    files: &mut Vec<(String, String)>,
) -> String {
    let mut md = String::new();
    for n in nodes.iter().filter(|n| n.kind == "space") {
        let Some(h) = n.metrics.get("histograms").filter(|h| h.is_object()) else {
            continue;
        };
        let (Some(from), Some(step), Some(laws)) = (
            h.get("log10_from").and_then(Value::as_f64),
            h.get("log10_step").and_then(Value::as_f64),
            h.get("laws").and_then(Value::as_array),
        ) else {
            continue;
        };
        if md.is_empty() {
            md.push_str("## Sampling laws\n\nThe untrained candidates each `space` node drew, by law: parameters per quarter decade (one line per law), and the laws' target bands.\n\n");
        }
        let mut series = Vec::new();
        let mut t = Table::new(&[
            ("law", Align::Right),
            ("target band (params)", Align::Left),
            ("candidates", Align::Right),
            ("median params", Align::Right),
        ]);
        for l in laws {
            let counts: Vec<u64> = l
                .get("counts")
                .and_then(Value::as_array)
                .map(|c| c.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            let law = l.get("law").and_then(Value::as_u64).unwrap_or(0);
            let band = match l.get("band").and_then(Value::as_array) {
                Some(b) if b.len() == 2 => {
                    let v = |x: &Value| {
                        x.as_f64()
                            .filter(|v| v.is_finite() && *v >= 0.0)
                            .map(|v| thousands(v.round() as u64))
                            .unwrap_or_else(|| num_str(x.as_f64().unwrap_or(f64::NAN)))
                    };
                    format!("{} – {}", v(&b[0]), v(&b[1]))
                }
                _ => "written".into(),
            };
            let total: u64 = counts.iter().sum();
            // the bin holding the median candidate, at its geometric centre
            let mut acc = 0;
            let median = counts.iter().position(|&c| {
                acc += c;
                2 * acc >= total && total > 0
            });
            let centre = |b: usize| 10f64.powf(from + (b as f64 + 0.5) * step);
            t.row(vec![
                law.to_string(),
                band.clone(),
                thousands(total),
                median
                    .map(|b| format!("≈ {}", thousands(centre(b).round() as u64)))
                    .unwrap_or_else(|| "–".into()),
            ]);
            let points: Vec<(f64, f64, String)> = counts
                .iter()
                .enumerate()
                .filter(|&(_, &c)| c > 0)
                .map(|(b, &c)| (centre(b), c as f64, format!("law {law}: {c}")))
                .collect();
            let line = (0..points.len()).collect();
            series.push(Series {
                name: format!("law {law} ({band})"),
                points,
                lines: vec![line],
                ..Default::default()
            });
        }
        let file = format!("laws_{}.svg", sanitize(&n.node));
        let plot = Scatter {
            title: format!("{}: parameters of the sampled candidates per law", n.node),
            x_label: "parameters (log scale)".into(),
            y_label: "candidates per quarter decade".into(),
            log_x: true,
            series,
            no_front: true,
            ..Default::default()
        };
        files.push((file.clone(), plot.render()));
        md.push_str(&format!(
            "### `{}`\n\n![parameters per law]({folder}/{file})\n\n",
            n.node
        ));
        md.push_str(&crate::render::details(
            &format!("Laws of `{}` ({})", n.node, laws.len()),
            &t.render(),
        ));
        if let Some(p) = n.metrics.get("predictor").filter(|p| p.is_object()) {
            let r2 = |k: &str| {
                p.pointer(&format!("/{k}/heldout_r2"))
                    .and_then(Value::as_f64)
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_else(|| "–".into())
            };
            md.push_str(&format!(
                "Latency predictor (log-latency vs log-workload, {} candidates timed untrained at batch 1): held-out R² {} against FLOPs, {} against parameters.\n\n",
                p.get("timed").and_then(Value::as_u64).unwrap_or(0),
                r2("by_flops"),
                r2("by_params")
            ));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_space_node_gets_a_histogram_per_law_and_its_table() {
        let node = NodeRecord {
            node: "space_plain".into(),
            stage: "space_plain".into(),
            kind: "space".into(),
            key: "k".into(),
            state: "ran".into(),
            params: json!({}),
            metrics: json!({
                "histograms": { "log10_from": 3.0, "log10_step": 0.25, "laws": [
                    { "law": 0, "band": [1000.0, 2000.0], "counts": [3, 1, 0, 0] },
                    { "law": 1, "band": null, "counts": [0, 0, 2, 2] },
                ]},
                "predictor": { "timed": 50, "by_flops": { "heldout_r2": 0.912 }, "by_params": { "heldout_r2": 0.8 } },
            }),
            duration_s: None,
            inputs: vec![],
        };
        let mut files = vec![];
        let md = section(&[node], "r", &mut files);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "laws_space_plain.svg");
        assert!(!files[0].1.contains("Pareto front"), "counts have no front");
        // law 0: 4 candidates, the median in the first bin [10^3, 10^3.25): centre 10^3.125
        assert!(md.contains("| 0 | 1,000 – 2,000 | 4 | ≈ 1,334 |"), "{md}");
        assert!(md.contains("| 1 | written | 4 | ≈ 4,217 |"), "{md}");
        assert!(md.contains("held-out R² 0.91 against FLOPs, 0.80 against parameters"));
    }
}
