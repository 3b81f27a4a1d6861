//! The report's "Dynamic inference" section, from the metrics of `ladder` nodes (issue 20):
//! the ladder's variants (accuracy, latency, weight and activation bytes, slices before and
//! after batch-norm re-calibration), the policy, one table per resource trace comparing the
//! policy with every fixed variant (expected and effective accuracy, deadline misses, memory
//! violations, switches), a variant-over-time plot per trace, and the C artifact's flash /
//! SRAM accounting.

use crate::model::NodeRecord;
use crate::table::{Align, Table, escape, percent, thousands};
use serde_json::Value;
use std::fmt::Write as _;

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}
fn u(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_u64)
        .map(thousands)
        .unwrap_or_else(|| "–".into())
}
fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}
fn ms(x: Option<f64>) -> String {
    match x {
        Some(x) if x < 0.01 => format!("{x:.4}"),
        Some(x) => format!("{x:.3}"),
        None => "–".into(),
    }
}
fn arr(v: &Value, k: &str) -> Vec<Value> {
    v.get(k)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// File-name-safe form of a name.
fn stem(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Markdown for every ladder node (empty when there is none); plots go into `files`.
pub fn section(nodes: &[NodeRecord], folder: &str, files: &mut Vec<(String, String)>) -> String {
    let mut md = String::new();
    for n in nodes.iter().filter(|n| n.kind == "ladder") {
        let Some(l) = n.metrics.get("ladder") else {
            continue;
        };
        let variants = arr(l, "variants");
        let on_front = variants
            .iter()
            .filter(|v| v.get("dominated_by").is_none())
            .count();
        let costs: Vec<String> = arr(l, "costs")
            .iter()
            .filter_map(|c| c.as_str().map(String::from))
            .collect();
        let _ = write!(
            md,
            "## Dynamic inference: ladder `{}`\n\n{} of {} variants are on the accuracy-vs-cost front \
             (costs: {}; latency: {}{}). Cheapest first; the policy switches among the front's variants.\n\n",
            escape(&n.node),
            on_front,
            l.get("candidates").and_then(Value::as_u64).unwrap_or(0),
            costs.join(", "),
            match s(l, "latency_source") {
                "mcu" => "device estimate",
                _ => "measured on the host",
            },
            match (f(l, "min_accuracy"), arr(l, "below_min_accuracy").len()) {
                (Some(a), k) if k > 0 =>
                    format!("; {k} below the accuracy floor of {} left out", percent(a)),
                _ => String::new(),
            }
        );
        let mut t = Table::new(&[
            ("#", Align::Right),
            ("variant", Align::Left),
            ("kind", Align::Left),
            ("accuracy", Align::Right),
            ("before BN re-cal.", Align::Right),
            ("latency ms", Align::Right),
            ("host ms", Align::Right),
            ("device ms", Align::Right),
            ("params", Align::Right),
            ("weight B", Align::Right),
            ("peak act. B", Align::Right),
            ("dominated by", Align::Left),
        ]);
        for (i, v) in variants.iter().enumerate() {
            let kind = match (s(v, "kind"), f(v, "width")) {
                ("slice", Some(w)) => format!("slice ×{w}"),
                (k, _) => k.to_string(),
            };
            t.row(vec![
                i.to_string(),
                escape(s(v, "name")),
                kind,
                f(v, "accuracy").map(percent).unwrap_or_default(),
                f(v, "accuracy_uncalibrated")
                    .map(percent)
                    .unwrap_or_else(|| "–".into()),
                ms(f(v, "latency_ms")),
                ms(f(v, "host_latency_ms")),
                ms(f(v, "mcu_latency_ms")),
                u(v, "params"),
                u(v, "weight_bytes"),
                u(v, "peak_activation_bytes"),
                escape(s(v, "dominated_by")),
            ]);
        }
        md.push_str(&t.render());
        md.push_str(&candidates(l));
        let pool: Vec<&Value> = variants
            .iter()
            .filter(|v| v.get("dominated_by").is_none())
            .collect();
        let p = l.get("policy").cloned().unwrap_or(Value::Null);
        let _ = write!(
            md,
            "\nPolicy `{}`: {}hysteresis {} %, minimum dwell {} steps; RAM need = peak activations{}.\n\n",
            s(&p, "kind"),
            f(&p, "deadline_ms")
                .map(|d| format!("deadline {d} ms per inference, "))
                .unwrap_or_default(),
            f(&p, "hysteresis")
                .map(|h| format!("{:.0}", 100.0 * h))
                .unwrap_or_default(),
            p.get("min_dwell").and_then(Value::as_u64).unwrap_or(0),
            if p.get("weights_in_ram").and_then(Value::as_bool) == Some(true) {
                " + weights"
            } else {
                ""
            },
        );
        for tr in arr(l, "traces") {
            let name = s(&tr, "name").to_string();
            let _ = write!(
                md,
                "### Trace `{}` ({}, {} steps)\n\n",
                escape(&name),
                s(&tr, "kind"),
                tr.get("steps").and_then(Value::as_u64).unwrap_or(0)
            );
            let mut t = Table::new(&[
                ("strategy", Align::Left),
                ("expected acc.", Align::Right),
                ("effective acc.", Align::Right),
                ("deadline misses", Align::Right),
                ("memory violations", Align::Right),
                ("switches", Align::Right),
            ]);
            let row = |label: String, o: &Value| {
                vec![
                    label,
                    f(o, "accuracy").map(percent).unwrap_or_default(),
                    f(o, "effective_accuracy").map(percent).unwrap_or_default(),
                    u(o, "deadline_misses"),
                    u(o, "memory_violations"),
                    u(o, "switches"),
                ]
            };
            if let Some(o) = tr.get("policy") {
                let mut r = row("**policy**".into(), o);
                r[0] = "**policy**".into();
                t.row(r);
            }
            for o in arr(&tr, "fixed") {
                t.row(row(format!("fixed {}", escape(s(&o, "variant"))), &o));
            }
            md.push_str(&t.render());
            let file = format!("ladder_{}_{}.svg", stem(&n.node), stem(&name));
            let needs: Vec<f64> = arr(l, "ram_needs")
                .iter()
                .filter_map(Value::as_f64)
                .collect();
            files.push((file.clone(), plot(&tr, &pool, &needs, &name)));
            let _ = write!(md, "\n![variant over time, {name}]({folder}/{file})\n\n");
        }
        if let Some(a) = l
            .get("artifact")
            .filter(|a| !a.is_null() && s(a, "mode") == "loader")
        {
            md.push_str(&loader_artifact(a));
        } else if let Some(a) = l.get("artifact").filter(|a| !a.is_null()) {
            let _ = write!(
                md,
                "### C artifact for {}\n\n{} variants in `{}.c` / `.h` (+ one file pair each): {} B of \
                 parameters (flash budget {} B) and {} B of SRAM (the largest arena + int8 input and \
                 output; budget {} B) — {}.\n\n",
                s(a, "device"),
                arr(a, "variants").len(),
                s(a, "name"),
                u(a, "flash_bytes"),
                u(a, "flash_budget_bytes"),
                u(a, "sram_bytes"),
                u(a, "sram_budget_bytes"),
                if a.get("fits").and_then(Value::as_bool) == Some(true) {
                    "they fit together"
                } else {
                    "**they do not fit**"
                }
            );
            let mut t = Table::new(&[
                ("variant", Align::Left),
                ("flash B", Align::Right),
                ("arena B", Align::Right),
                ("", Align::Left),
            ]);
            for v in arr(a, "variants") {
                t.row(vec![
                    escape(s(&v, "variant")),
                    u(&v, "flash_bytes"),
                    u(&v, "arena_bytes"),
                    "in".into(),
                ]);
            }
            for v in arr(a, "excluded") {
                t.row(vec![
                    escape(s(&v, "variant")),
                    u(&v, "flash_bytes"),
                    "–".into(),
                    escape(s(&v, "reason")),
                ]);
            }
            md.push_str(&t.render());
            md.push('\n');
        }
    }
    md
}

/// The loader-mode C artifact: one variant resident at a time, its blobs, the slot, the
/// flash / SRAM accounting and the switch cost per trace.
fn loader_artifact(a: &Value) -> String {
    let mut md = String::new();
    let in_ram = s(a, "slot") != "flash";
    let _ = write!(
        md,
        "### C artifact for {} (loader)\n\n{} variants in `{}.c` / `.h` (+ one file pair and one \
         parameter blob `{}_v<k>.bin` each), one resident at a time: they do not fit the flash \
         together, so `{}_load` reads a variant's blob into a {} B parameter slot in {} on a \
         switch. Flash: {} B (the C tables{}; budget {} B); SRAM: {} B (the largest arena + int8 \
         input and output{}; budget {} B) — {}.\n\n",
        s(a, "device"),
        arr(a, "variants").len(),
        s(a, "name"),
        s(a, "name"),
        s(a, "name"),
        u(a, "slot_bytes"),
        if in_ram { "SRAM" } else { "flash" },
        u(a, "flash_bytes"),
        if in_ram { "" } else { " + the slot" },
        u(a, "flash_budget_bytes"),
        u(a, "sram_bytes"),
        if in_ram { " + the slot" } else { "" },
        u(a, "sram_budget_bytes"),
        if a.get("fits").and_then(Value::as_bool) == Some(true) {
            "each fits, one at a time"
        } else {
            "**they do not fit**"
        }
    );
    let mut t = Table::new(&[
        ("variant", Align::Left),
        ("parameter B", Align::Right),
        ("blob B (read per switch)", Align::Right),
        ("tables B", Align::Right),
        ("arena B", Align::Right),
        ("", Align::Left),
    ]);
    for v in arr(a, "variants") {
        t.row(vec![
            escape(s(&v, "variant")),
            u(&v, "param_bytes"),
            u(&v, "blob_bytes"),
            u(&v, "table_bytes"),
            u(&v, "arena_bytes"),
            "in".into(),
        ]);
    }
    for v in arr(a, "excluded") {
        t.row(vec![
            escape(s(&v, "variant")),
            u(&v, "flash_bytes"),
            "–".into(),
            "–".into(),
            "–".into(),
            escape(s(&v, "reason")),
        ]);
    }
    md.push_str(&t.render());
    let cost = arr(a, "switch_cost");
    if !cost.is_empty() {
        md.push_str(
            "\nSwitch cost of the policy on each trace (`step` loads on the first step and on every \
             change of variant):\n\n",
        );
        let mut t = Table::new(&[
            ("trace", Align::Left),
            ("steps", Align::Right),
            ("loads", Align::Right),
            ("bytes read", Align::Right),
        ]);
        for c in cost {
            t.row(vec![
                escape(s(&c, "trace")),
                u(&c, "steps"),
                u(&c, "loads"),
                u(&c, "bytes_read"),
            ]);
        }
        md.push_str(&t.render());
    }
    md.push('\n');
    md
}

/// Every candidate variant (collapsed): accuracy before and after BN re-calibration for the
/// slices, costs, and whether it is on the ladder, dominated or below the accuracy floor.
fn candidates(l: &Value) -> String {
    let all = arr(l, "all");
    if all.iter().all(|v| !v.is_object()) {
        return String::new();
    }
    let on: Vec<String> = arr(l, "variants")
        .iter()
        .map(|v| s(v, "name").to_string())
        .collect();
    let below: Vec<String> = arr(l, "below_min_accuracy")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let mut t = Table::new(&[
        ("variant", Align::Left),
        ("accuracy", Align::Right),
        ("before BN re-cal.", Align::Right),
        ("latency ms", Align::Right),
        ("weight B", Align::Right),
        ("peak act. B", Align::Right),
        ("", Align::Left),
    ]);
    for v in &all {
        let name = s(v, "name");
        let status = if below.iter().any(|b| b == name) {
            "below the accuracy floor"
        } else if on.iter().any(|o| o == name) {
            "on the ladder"
        } else {
            "dominated"
        };
        t.row(vec![
            escape(name),
            f(v, "accuracy").map(percent).unwrap_or_default(),
            f(v, "accuracy_uncalibrated")
                .map(percent)
                .unwrap_or_else(|| "–".into()),
            ms(f(v, "latency_ms")),
            u(v, "weight_bytes"),
            u(v, "peak_activation_bytes"),
            status.into(),
        ]);
    }
    format!(
        "\n{}",
        crate::render::details(
            &format!("All {} candidate variants", all.len()),
            &t.render()
        )
    )
}

/// Variant over time (a step line over the ladder's rungs) above the trace's free RAM and CPU
/// budget (each scaled to its range), with the RAM need of every rung as a dotted line.
fn plot(tr: &Value, pool: &[&Value], needs: &[f64], title: &str) -> String {
    let chosen: Vec<usize> = arr(tr, "chosen")
        .iter()
        .filter_map(|v| v.as_u64())
        .map(|v| v as usize)
        .collect();
    let ram: Vec<f64> = arr(tr, "free_ram_bytes")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let cpu: Vec<f64> = arr(tr, "cpu_budget")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let n = chosen.len().max(2);
    let k = pool.len().max(1);
    let longest = pool
        .iter()
        .map(|v| s(v, "name").chars().count() + 10)
        .max()
        .unwrap_or(10);
    let left = (longest as f64 * 11.0 * 0.55).max(160.0) + 16.0;
    let (w, right) = (left + 540.0, 20.0);
    let (top_h, bot_h, gap, top) = (22.0 * k as f64 + 10.0, 120.0, 40.0, 36.0);
    let h = top + top_h + gap + bot_h + 40.0;
    let pw = w - left - right;
    let x = |i: usize| left + pw * i as f64 / (n - 1) as f64;
    let yv = |r: usize| top + top_h - 10.0 - 22.0 * r as f64 - 6.0;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" font-size=\"14\" text-anchor=\"middle\">variant over time — {}</text>\n",
        w / 2.0,
        xml(title)
    );
    for (r, v) in pool.iter().enumerate() {
        let y = yv(r);
        let _ = writeln!(
            o,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} ({})</text>",
            w - right,
            left - 6.0,
            y + 4.0,
            xml(s(v, "name")),
            f(v, "accuracy").map(percent).unwrap_or_default()
        );
    }
    let mut d = String::new();
    for (i, &c) in chosen.iter().enumerate() {
        let (x0, y) = (x(i), yv(c));
        if i == 0 {
            let _ = write!(d, "M{x0:.1},{y:.1}");
        } else {
            let _ = write!(d, " H{x0:.1} V{y:.1}");
        }
    }
    let _ = writeln!(
        o,
        "<path d=\"{d}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
    );
    // Resources.
    let b0 = top + top_h + gap;
    let _ = writeln!(
        o,
        "<rect x=\"{left}\" y=\"{b0}\" width=\"{pw}\" height=\"{bot_h}\" fill=\"none\" stroke=\"#999\"/>"
    );
    let (rlo, rhi) = ram
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let rspan = (rhi - rlo).max(1.0);
    let ry = |v: f64| b0 + bot_h - bot_h * ((v - rlo) / rspan).clamp(0.0, 1.0);
    for &need in needs {
        if need >= rlo && need <= rhi {
            let y = ry(need);
            let _ = writeln!(
                o,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d62728\" stroke-dasharray=\"2,3\" stroke-width=\"0.8\"/>",
                w - right
            );
        }
    }
    let line = |vals: &[f64], map: &dyn Fn(f64) -> f64, color: &str| {
        let pts: Vec<String> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| format!("{:.1},{:.1}", x(i), map(v)))
            .collect();
        format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.2\"/>\n",
            pts.join(" ")
        )
    };
    o.push_str(&line(&ram, &ry, "#d62728"));
    let cy = |v: f64| b0 + bot_h - bot_h * v.clamp(0.0, 1.0);
    o.push_str(&line(&cpu, &cy, "#2ca02c"));
    let _ = writeln!(
        o,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#d62728\">free RAM {}–{} B</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#2ca02c\">CPU budget 0–1</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#d62728\">dotted: RAM needs</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step (of {})</text>",
        left - 6.0,
        b0 + 14.0,
        thousands(rlo.max(0.0) as u64),
        thousands(rhi.max(0.0) as u64),
        left - 6.0,
        b0 + 30.0,
        left - 6.0,
        b0 + 46.0,
        left + pw / 2.0,
        b0 + bot_h + 20.0,
        chosen.len()
    );
    o.push_str("</svg>\n");
    o
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ladder_section_has_variants_traces_plot_and_artifact() {
        let v = |name: &str, acc: f64, act: u64| {
            json!({ "name": name, "kind": "network", "width": 1.0, "accuracy": acc,
                    "latency_ms": 1.0, "host_latency_ms": 0.1, "params": 10,
                    "weight_bytes": 100, "peak_activation_bytes": act })
        };
        let o = |var: Option<&str>, acc: f64| {
            json!({ "variant": var, "steps": 3, "switches": 1, "deadline_misses": 0,
                    "memory_violations": 2, "accuracy": acc, "effective_accuracy": acc / 2.0 })
        };
        let node = NodeRecord {
            node: "ladder".into(),
            stage: "ladder".into(),
            kind: "ladder".into(),
            key: "k".into(),
            state: "ran".into(),
            params: Value::Null,
            metrics: json!({ "ladder": {
                "candidates": 3, "costs": ["latency_ms"], "latency_source": "host",
                "variants": [v("a/int8", 0.5, 100), v("b/int8", 0.75, 200)],
                "policy": { "kind": "fit", "deadline_ms": 2.0, "hysteresis": 0.1, "min_dwell": 0 },
                "traces": [{ "name": "square", "kind": "square", "steps": 3,
                    "free_ram_bytes": [300, 150, 300], "cpu_budget": [1.0, 0.5, 1.0],
                    "chosen": [1, 0, 1], "policy": o(None, 0.6),
                    "fixed": [o(Some("a/int8"), 0.5), o(Some("b/int8"), 0.75)] }],
                "artifact": { "device": "stm32f746", "name": "ladder", "flash_bytes": 300,
                    "flash_budget_bytes": 1048576, "sram_bytes": 500, "sram_budget_bytes": 327680,
                    "fits": true, "variants": [{ "variant": "a/int8", "flash_bytes": 100, "arena_bytes": 90 }],
                    "excluded": [{ "variant": "b/int8", "flash_bytes": 200, "reason": "does not fit with the others" }] }
            }}),
            duration_s: None,
            inputs: vec![],
        };
        let mut files = Vec::new();
        let md = section(&[node], "r", &mut files);
        assert!(
            md.contains("2 of 3 variants are on the accuracy-vs-cost front"),
            "{md}"
        );
        assert!(
            md.contains("| **policy** | 60.00 % | 30.00 % | 0 | 2 | 1 |"),
            "{md}"
        );
        assert!(md.contains("| fixed b/int8 | 75.00 % | 37.50 % |"), "{md}");
        assert!(md.contains("![variant over time, square](r/ladder_ladder_square.svg)"));
        assert!(
            md.contains("| b/int8 | 200 | – | does not fit with the others |"),
            "{md}"
        );
        assert!(md.contains("they fit together"));
        assert!(!md.contains("(loader)"));
        assert_eq!(files.len(), 1);
        // The step line visits rung 1, 0, 1: two vertical moves.
        let svg = &files[0].1;
        assert_eq!(svg.matches(" V").count(), 2, "{svg}");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn loader_artifact_has_slot_accounting_blobs_and_switch_cost() {
        let a = json!({ "mode": "loader", "slot": "ram", "device": "stm32f746", "name": "lad",
            "flash_budget_bytes": 4000, "sram_budget_bytes": 327680, "slot_bytes": 2500,
            "table_bytes": 1800, "flash_bytes": 1800, "sram_bytes": 3100, "fits": true,
            "variants": [
                { "variant": "a/int8", "param_bytes": 1200, "blob_bytes": 1220, "table_bytes": 900, "arena_bytes": 400 },
                { "variant": "b/int8", "param_bytes": 2500, "blob_bytes": 2520, "table_bytes": 900, "arena_bytes": 500 }],
            "excluded": [{ "variant": "c/int8", "flash_bytes": 9000, "reason": "does not fit alone" }],
            "switch_cost": [{ "trace": "square", "steps": 30, "loads": 4, "bytes_read": 7480 }] });
        let md = loader_artifact(&a);
        assert!(
            md.starts_with("### C artifact for stm32f746 (loader)"),
            "{md}"
        );
        assert!(
            md.contains("a 2,500 B parameter slot in SRAM on a switch. Flash: 1,800 B (the C tables; budget 4,000 B); SRAM: 3,100 B (the largest arena + int8 input and output + the slot; budget 327,680 B) — each fits, one at a time."),
            "{md}"
        );
        assert!(
            md.contains("| b/int8 | 2,500 | 2,520 | 900 | 500 | in |"),
            "{md}"
        );
        assert!(
            md.contains("| c/int8 | 9,000 | – | – | – | does not fit alone |"),
            "{md}"
        );
        assert!(md.contains("| square | 30 | 4 | 7,480 |"), "{md}");
    }
}
