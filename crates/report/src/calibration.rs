//! The report's "Latency model and devices" section, from the metrics of `calibrate` nodes:
//! the per-layer-type fits (latency ≈ a·work + b, R²), how the summed prediction validates
//! against every measured network (correlation, slope), and the micro-controller estimates
//! (fits in flash / SRAM, latency, energy).

use crate::model::NodeRecord;
use crate::table::{Align, Table, escape};
use serde_json::Value;

fn num(v: Option<&Value>, digits: usize) -> String {
    match v.and_then(Value::as_f64) {
        Some(x) if x != 0.0 && x.abs() < 1e-3 => format!("{x:.3e}"),
        Some(x) => format!("{x:.digits$}"),
        None => "–".into(),
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => escape(s),
        Some(Value::Null) | None => "–".into(),
        Some(v) => escape(&v.to_string()),
    }
}

fn yes_no(v: Option<&Value>) -> String {
    match v.and_then(Value::as_bool) {
        Some(true) => "yes".into(),
        Some(false) => "**no**".into(),
        None => "–".into(),
    }
}

/// Markdown for every calibrate node (empty when there is none).
pub fn section(nodes: &[NodeRecord]) -> String {
    let mut md = String::new();
    for n in nodes.iter().filter(|n| n.kind == "calibrate") {
        let m = &n.metrics;
        if m.is_null() {
            continue;
        }
        if md.is_empty() {
            md.push_str("## Latency model and devices\n\n");
        }
        md.push_str(&format!("### `{}`\n\n", n.node));
        if let Some(d) = m.get("device") {
            let p = m.get("protocol");
            md.push_str(&format!(
                "Measured on {} ({} cores, {} thread(s)): batch {}, {} warm-up runs, {} timed runs × {} passes in shuffled network order.\n\n",
                text(d.get("cpu")),
                text(d.get("cores")),
                text(d.get("threads")),
                text(p.and_then(|p| p.get("batch"))),
                text(p.and_then(|p| p.get("warmup"))),
                text(p.and_then(|p| p.get("runs"))),
                text(p.and_then(|p| p.get("passes"))),
            ));
        }
        if let Some(v) = m.get("validation") {
            md.push_str(&format!(
                "Network latency predicted as the sum of its layers' fitted latencies (a·work + b per layer type, below), against the measured median latency of {} networks: correlation **{}** (summed per-layer timings: {}), slope {}, intercept {} ms.\n\n",
                text(v.get("networks")),
                num(v.get("correlation"), 4),
                num(v.get("correlation_lut"), 4),
                num(v.get("slope"), 3),
                num(v.get("intercept_ms"), 4),
            ));
        }
        if let Some(fits) = m.get("fits").and_then(Value::as_array) {
            let mut t = Table::new(&[
                ("layer type", Align::Left),
                ("a (ms per unit of work)", Align::Right),
                ("b (ms)", Align::Right),
                ("R²", Align::Right),
                ("layers timed", Align::Right),
            ]);
            for f in fits {
                t.row(vec![
                    text(f.get("type")),
                    num(f.get("a_ms_per_work"), 4),
                    num(f.get("b_ms"), 4),
                    num(f.get("r2"), 4),
                    text(f.get("points")),
                ]);
            }
            md.push_str(&t.render());
            md.push('\n');
        }
        // No profile asked for (`mcu = []`): no estimates to show.
        if let Some(rows) = m
            .get("mcu")
            .and_then(Value::as_array)
            .filter(|r| !r.is_empty())
        {
            let mut t = Table::new(&[
                ("device", Align::Left),
                ("network", Align::Left),
                ("format", Align::Left),
                ("weight bytes", Align::Right),
                ("peak act. bytes", Align::Right),
                ("fits flash", Align::Left),
                ("fits SRAM", Align::Left),
                ("est. latency ms", Align::Right),
                ("est. energy µJ", Align::Right),
            ]);
            for r in rows {
                t.row(vec![
                    text(r.get("device")),
                    format!("`{}`", text(r.get("parent"))),
                    text(r.get("format")),
                    text(r.get("weight_bytes")),
                    text(r.get("peak_activation_bytes")),
                    yes_no(r.get("fits_flash")),
                    yes_no(r.get("fits_sram")),
                    num(r.get("est_latency_ms"), 2),
                    num(r.get("est_energy_uj"), 2),
                ]);
            }
            let fit = rows
                .iter()
                .filter(|r| {
                    r.get("fits_flash").and_then(Value::as_bool) == Some(true)
                        && r.get("fits_sram").and_then(Value::as_bool) == Some(true)
                })
                .count();
            let mut devices: Vec<String> = Vec::new();
            for r in rows {
                let d = text(r.get("device"));
                if !devices.contains(&d) {
                    devices.push(d);
                }
            }
            md.push_str(&format!(
                "Micro-controller estimates (cycles per MAC and energy per operation from the device profile of {}): {fit} of {} network / format pairs fit both flash and SRAM.\n\n",
                devices.join(", "),
                rows.len()
            ));
            md.push_str(&crate::render::details(
                &format!("Micro-controller estimates ({} rows)", rows.len()),
                &t.render(),
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
    fn renders_fits_validation_and_devices() {
        let node = NodeRecord {
            node: "latency".into(),
            stage: "latency".into(),
            kind: "calibrate".into(),
            key: "k".into(),
            state: "ran".into(),
            params: json!({}),
            metrics: json!({
                "device": {"cpu": "X", "cores": 2, "threads": 1},
                "protocol": {"batch": 1, "warmup": 5, "runs": 20, "passes": 3},
                "validation": {"networks": 23, "correlation": 0.99695, "slope": 0.9277, "intercept_ms": -0.016},
                "fits": [{"type": "conv1d", "a_ms_per_work": 6.17e-8, "b_ms": 0.0049, "r2": 0.989, "points": 30}],
                "mcu": [{"device": "stm32f746", "parent": "tcn", "format": "int8", "weight_bytes": 79152,
                         "peak_activation_bytes": 9408, "fits_flash": true, "fits_sram": false,
                         "est_latency_ms": 17.31, "est_energy_uj": 0.98}]
            }),
            duration_s: None,
            inputs: vec![],
        };
        let md = section(&[node]);
        assert!(md.contains("## Latency model and devices"), "{md}");
        assert!(
            md.contains(
                "23 networks: correlation **0.9970** (summed per-layer timings: –), slope 0.928"
            ),
            "{md}"
        );
        assert!(
            md.contains("| conv1d | 6.170e-8 | 0.0049 | 0.9890 | 30 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| stm32f746 | `tcn` | int8 | 79152 | 9408 | yes | **no** | 17.31 | 0.98 |"
            ),
            "{md}"
        );
        assert_eq!(section(&[]), "");
    }
}
