//! Report and diff on a hand-built document: summary picks, fronts, GitHub rendering
//! (parsed with a CommonMark/GFM renderer), determinism, and diff contents.

use serde_json::{Value, json};
use whittle_report::{Constraints, Document, NodeRecord, Provenance, diff, render};

fn node(name: &str, kind: &str, params: Value, models: Value) -> NodeRecord {
    NodeRecord {
        node: name.into(),
        stage: name.split('[').next().unwrap().into(),
        kind: kind.into(),
        key: format!("{:0>64}", name.len()),
        state: "ran".into(),
        params,
        metrics: json!({ "models": models }),
        duration_s: Some(1.5),
        inputs: vec![],
    }
}

fn doc(pit_acc: f64) -> Document {
    let layers =
        |a: u64, b: u64| json!([{ "name": "conv0", "c_out": a }, { "name": "conv1", "c_out": b }]);
    let nodes = vec![
        node(
            "seed",
            "train",
            json!({"epochs": 10}),
            json!([{ "method": "train", "arch": "tcn", "params": 40000, "macs": 2000000, "weight_bytes": 160000, "test_accuracy": 0.90, "layers": layers(64, 64) }]),
        ),
        node(
            "pit[lambda=1e-5]",
            "search",
            json!({"lambda": 1e-5}),
            json!([{ "method": "pit", "arch": "tcn", "params": 20000, "macs": 900000, "weight_bytes": 80000, "test_accuracy": pit_acc, "parent": "seed", "lambda": 1e-5, "layers": layers(30, 41) }]),
        ),
        node(
            "l1[ratio=0.5]",
            "prune",
            json!({"ratio": 0.5}),
            json!([{ "method": "l1", "arch": "tcn", "params": 20000, "macs": 1000000, "weight_bytes": 80000, "test_accuracy": 0.85, "parent": "seed", "ratio": 0.5 }]),
        ),
        node(
            "quant",
            "quantize",
            json!({}),
            json!([
                { "format": "fp32", "params": 40000, "weight_bytes": 160000, "test_accuracy": 0.90, "parent": "seed" },
                { "format": "int8", "params": 40000, "weight_bytes": 40000, "test_accuracy": 0.895, "parent": "seed" }
            ]),
        ),
        node(
            "lat",
            "calibrate",
            json!({}),
            json!([{ "format": "fp32", "parent": "seed", "latency_ms": 1.25 }]),
        ),
    ];
    Document::new(
        Provenance {
            experiment: "demo".into(),
            file: "experiments/demo.toml".into(),
            file_hash: "ab".repeat(32),
            tool_version: "0.1.0".into(),
            seed: 42,
            machine: "test cpu, 2 cores".into(),
            ..Default::default()
        },
        Constraints {
            max_params: Some(25000),
            max_weight_bytes: Some(50000),
            ..Default::default()
        },
        nodes,
    )
}

#[test]
fn summary_tables_fronts_and_plots() {
    let r = render(&doc(0.905), "demo");
    let md = &r.markdown;
    assert!(
        md.contains("**Seed network**: `seed` (tcn) — 40,000 parameters"),
        "{md}"
    );
    assert!(
        md.contains("**Best with ≤ 25,000 parameters**: `pit[lambda=1e-5]` — 90.50 %"),
        "{md}"
    );
    assert!(
        md.contains("**Best with ≤ 50,000 weight bytes**: `seed @ int8` — 89.50 %"),
        "{md}"
    );
    assert!(md.contains("**Smallest network reaching the seed's accuracy** (90.00 %): `pit[lambda=1e-5]` — 80,000 weight bytes"), "{md}");
    // Δ vs parent: 90.5 − 90.0 = +0.50 points; l1 85 − 90 = −5.00.
    assert!(md.contains("| +0.50 |"), "{md}");
    assert!(md.contains("| −5.00 |"), "{md}");
    // Latency from the calibrate node joins the seed's fp32 row.
    assert!(md.contains("| 1.250 |"), "{md}");
    // The l1 point (20k params, 85 %) is dominated by pit (20k, 90.5 %): not on the P front.
    let l1_row = md
        .lines()
        .find(|l| l.starts_with("| `l1[ratio=0.5]`"))
        .unwrap();
    assert!(
        l1_row.trim_end().ends_with("|  |"),
        "l1 is on no front: {l1_row}"
    );
    let pit_row = md
        .lines()
        .find(|l| l.starts_with("| `pit[lambda=1e-5]`"))
        .unwrap();
    assert!(
        pit_row.contains("| P M"),
        "pit is on the params and MACs fronts: {pit_row}"
    );
    let names: Vec<&str> = r.files.iter().map(|f| f.0.as_str()).collect();
    assert!(names.contains(&"acc_vs_params.svg"));
    assert!(names.contains(&"channels_pit_lambda_1e-5_.svg"));
    // Deterministic.
    assert_eq!(render(&doc(0.905), "demo"), r);
}

#[test]
fn renders_as_github_markdown() {
    use pulldown_cmark::{Options, Parser, html};
    let r = render(&doc(0.905), "demo");
    let mut out = String::new();
    html::push_html(
        &mut out,
        Parser::new_ext(&r.markdown, Options::ENABLE_TABLES),
    );
    // Architectures, pruning, precision, provenance tables.
    assert_eq!(out.matches("<table>").count(), 4, "{out}");
    assert!(out.contains("<img src=\"demo/acc_vs_params.svg\""));
    // Every table row has as many cells as its header.
    for table in out.split("<table>").skip(1) {
        let table = table.split("</table>").next().unwrap();
        let head = table
            .split("</thead>")
            .next()
            .unwrap()
            .matches("<th>")
            .count()
            + table
                .split("</thead>")
                .next()
                .unwrap()
                .matches("<th style")
                .count();
        for row in table
            .split("<tbody>")
            .nth(1)
            .unwrap()
            .split("</tr>")
            .filter(|r| r.contains("<td"))
        {
            assert_eq!(row.matches("<td").count(), head, "{row}");
        }
    }
}

#[test]
fn diff_reports_params_metrics_and_front_moves() {
    let a = doc(0.905);
    let mut b = doc(0.80);
    b.nodes[1].params = json!({"lambda": 5e-5});
    b.nodes.push(node("extra", "train", json!({}), json!([])));
    let b = Document::new(b.provenance.clone(), b.constraints.clone(), b.nodes.clone());
    let d = diff("a", &a, "b", &b);
    assert_eq!(d.nodes_only_in_b, vec!["extra"]);
    assert_eq!(d.params.len(), 1);
    assert_eq!(d.params[0].path, "lambda");
    assert_eq!(d.params[0].old, Some(json!(1e-5)));
    let acc = d
        .metrics
        .iter()
        .find(|m| m.network == "pit[lambda=1e-5]" && m.metric == "test_accuracy")
        .unwrap();
    assert!((acc.delta.unwrap() + 0.105).abs() < 1e-12);
    // With pit at 80 %, it no longer dominates: l1 (20k, 85 %) and the 40k / 90 % networks
    // (seed and its fp32 evaluation in `quant`, labelled `seed @ fp32`) join the params front and pit leaves it.
    let p = d.fronts.iter().find(|f| f.axis == "params").unwrap();
    assert_eq!(p.added, vec!["l1[ratio=0.5]", "seed", "seed @ fp32"]);
    assert_eq!(p.removed, vec!["pit[lambda=1e-5]"]);
    let md = d.to_markdown();
    assert!(
        md.contains("| `pit[lambda=1e-5]` | lambda | 0.00001 | 0.00005 |"),
        "{md}"
    );
    let j = serde_json::to_value(&d).unwrap();
    assert_eq!(j["params"][0]["node"], "pit[lambda=1e-5]");
    // Identical documents: nothing differs.
    let same = diff("a", &a, "a", &a);
    assert!(same.params.is_empty() && same.metrics.is_empty() && same.fronts.is_empty());
}

#[test]
fn seed_sweeps_are_summarised_as_mean_and_std() {
    assert_eq!(whittle_report::render::without_seed("kd[seed=3]"), "kd");
    assert_eq!(
        whittle_report::render::without_seed("kd[lambda=1e-5,seed=3]"),
        "kd[lambda=1e-5]"
    );
    let nodes: Vec<NodeRecord> = [(1, 0.80), (2, 0.84), (3, 0.82)]
        .iter()
        .map(|(s, a)| {
            node(
                &format!("kd[seed={s}]"),
                "distill",
                json!({}),
                json!([{ "method": "kd", "params": 500, "test_accuracy": a, "teacher": "big" }]),
            )
        })
        .collect();
    let d = Document::new(Provenance::default(), Constraints::default(), nodes);
    let md = render(&d, "x").markdown;
    // mean 0.82, sample std sqrt((0.0004 + 0.0004 + 0) / 2) = 0.02 → 2.00 points.
    assert!(md.contains("| `kd` | fp32 | 3 | 82.00 % | 2.00 |"), "{md}");
}
