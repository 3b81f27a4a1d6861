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
    // (Rows of the full tables carry the format column; the front tables do not.)
    let l1_row = md
        .lines()
        .find(|l| l.starts_with("| `l1[ratio=0.5]` | l1 pruning | fp32 |"))
        .unwrap();
    assert!(
        l1_row.trim_end().ends_with("|  |"),
        "l1 is on no front: {l1_row}"
    );
    let pit_row = md
        .lines()
        .find(|l| l.starts_with("| `pit[lambda=1e-5]` | PIT | fp32 |"))
        .unwrap();
    assert!(
        pit_row.contains("| P M B |"),
        "pit is on the params, MACs and weight bytes fronts: {pit_row}"
    );
    // The compact front table against parameters: pit alone (it dominates the seed too).
    assert!(md.contains("Pareto front (1 of 3 networks):"), "{md}");
    assert!(
        md.contains("| `pit[lambda=1e-5]` | PIT | 20,000 | 90.50 % | +0.50 |"),
        "{md}"
    );
    // Best per method: the seed's accuracy is 90 %, so within 1 point means ≥ 89 %.
    assert!(
        md.contains("| l1 pruning | 1 | `l1[ratio=0.5]` 85.00 % | 20,000 | – | – | 0 |"),
        "{md}"
    );
    assert!(
        md.contains("| PIT | 1 | `pit[lambda=1e-5]` 90.50 % | 20,000 | `pit[lambda=1e-5]` 90.50 % | 20,000 | 1 |"),
        "{md}"
    );
    // MACs order the networks as parameters do here: no repeated tables.
    assert!(
        md.contains("the same networks as against parameters."),
        "{md}"
    );
    let names: Vec<&str> = r.files.iter().map(|f| f.0.as_str()).collect();
    assert!(names.contains(&"acc_vs_params.svg"));
    assert!(names.contains(&"acc_vs_weight_bytes_formats.svg"));
    assert!(names.contains(&"channels_PIT_seed.svg"), "{names:?}");
    // The summary comes before the plots, the plots before the full tables.
    let at = |s: &str| md.find(s).unwrap_or_else(|| panic!("{s} missing"));
    assert!(at("## Summary") < at("## Pareto fronts"));
    assert!(at("## Pareto fronts") < at("## Precision formats"));
    assert!(at("## Precision formats") < at("## All networks"));
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
    // Front and best-per-method tables against parameters (MACs and weight bytes pick the same
    // networks, latency has one network), the precision front and families, then collapsed:
    // architectures, pruning, precision, and the provenance's nodes.
    assert_eq!(out.matches("<table>").count(), 8, "{out}");
    assert!(out.contains("<img src=\"demo/acc_vs_params.svg\""));
    // Markdown inside <details> is rendered (a blank line follows each <summary>).
    let blocks: Vec<&str> = out.split("<details>").skip(1).collect();
    assert_eq!(blocks.len(), 5, "{out}");
    for b in blocks {
        let b = b.split("</details>").next().unwrap();
        assert!(b.contains("<table>") || b.contains("<img"), "{b}");
        assert!(!b.contains("| ---"), "a table left as text: {b}");
    }
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

/// (x, y, w, h) of every legend entry, and the view box's width and height.
fn legend_boxes(svg: &str) -> (Vec<[f64; 4]>, f64, f64) {
    let nums = |s: &str| -> Vec<f64> { s.split(' ').map(|v| v.parse().unwrap()).collect() };
    let vb = nums(
        svg.split("viewBox=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap(),
    );
    let boxes = svg
        .split("class=\"legend-entry\" data-bbox=\"")
        .skip(1)
        .map(|s| {
            let v = nums(s.split('"').next().unwrap());
            [v[0], v[1], v[2], v[3]]
        })
        .collect();
    (boxes, vb[2], vb[3])
}

fn assert_legend_fits(svg: &str, entries: usize) {
    let (boxes, w, h) = legend_boxes(svg);
    assert_eq!(boxes.len(), entries);
    for (i, a) in boxes.iter().enumerate() {
        assert!(a[0] >= 0.0 && a[1] >= 0.0, "entry {i} starts inside: {a:?}");
        assert!(
            a[0] + a[2] <= w && a[1] + a[3] <= h,
            "entry {i} {a:?} ends inside {w}×{h}"
        );
        for (j, b) in boxes.iter().enumerate().take(i) {
            let apart = a[0] + a[2] <= b[0]
                || b[0] + b[2] <= a[0]
                || a[1] + a[3] <= b[1]
                || b[1] + b[3] <= a[1];
            assert!(apart, "legend entries {j} {b:?} and {i} {a:?} overlap");
        }
    }
}

#[test]
fn plots_have_one_series_per_method_and_a_legend_that_fits() {
    let r = render(&doc(0.905), "demo");
    let svg = &r
        .files
        .iter()
        .find(|f| f.0 == "acc_vs_params.svg")
        .unwrap()
        .1;
    let series: Vec<&str> = svg
        .split("<g class=\"series\" data-name=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    assert_eq!(series, ["trained", "PIT", "l1 pruning"]);
    assert_legend_fits(svg, 3 + 1);
    let prec = &r
        .files
        .iter()
        .find(|f| f.0 == "acc_vs_weight_bytes_formats.svg")
        .unwrap()
        .1;
    assert_eq!(prec.matches("<g class=\"series\"").count(), 2, "fp32, int8");

    // Twelve series with long names (and many points): the picture widens and lengthens so
    // that the legend stays inside, entries do not overlap, and the render is repeatable.
    use whittle_report::svg::{Scatter, Series};
    let plot = Scatter {
        title: "t".into(),
        x_label: "x".into(),
        y_label: "y".into(),
        log_x: true,
        series: (0..12)
            .map(|k| Series {
                name: format!(
                    "series {k} with a rather long method name {}",
                    "x".repeat(k)
                ),
                points: vec![(1e3 * (k + 1) as f64, 50.0 + k as f64, format!("p{k}"))],
                ..Default::default()
            })
            .collect(),
        y_bounds: Some((0.0, 100.0)),
        ..Default::default()
    };
    let svg = plot.render();
    assert_eq!(svg.matches("<g class=\"series\"").count(), 12);
    assert_legend_fits(&svg, 12 + 1);
    assert_eq!(svg, plot.render());
    let colours: std::collections::BTreeSet<&str> = svg
        .split("<g class=\"series\"")
        .skip(1)
        .map(|s| {
            s.split("fill=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(colours.len(), 12, "twelve distinct colours");
}

#[test]
fn search_outputs_refined_by_a_finetune_are_plotted_only_when_asked() {
    let mut d = doc(0.905);
    let mut ft = node(
        "pit_ft[lambda=1e-5]",
        "finetune",
        json!({}),
        json!([{ "method": "pit", "arch": "tcn", "params": 20000, "macs": 900000, "weight_bytes": 80000, "test_accuracy": 0.91, "parent": "pit[lambda=1e-5]" }]),
    );
    ft.inputs = vec!["pit[lambda=1e-5]".into()];
    d.nodes.push(ft);
    let d = Document::new(d.provenance, d.constraints, d.nodes);
    let labels = |d: &Document| -> Vec<String> {
        let r = render(d, "demo");
        let svg = &r
            .files
            .iter()
            .find(|f| f.0 == "acc_vs_params.svg")
            .unwrap()
            .1;
        svg.split("<title>")
            .skip(1)
            .map(|s| s.split(':').next().unwrap().to_string())
            .collect()
    };
    // Series in order of first appearance: trained, pruning, then PIT (its first plotted row is last).
    assert_eq!(labels(&d), ["seed", "l1[ratio=0.5]", "pit_ft[lambda=1e-5]"]);
    let md = render(&d, "demo").markdown;
    assert!(
        md.contains("the 1 search / prune outputs that a `finetune` stage refines are left out"),
        "{md}"
    );
    let mut shown = d.clone();
    shown.options.show_intermediate = true;
    assert_eq!(
        labels(&shown),
        [
            "seed",
            "pit[lambda=1e-5]",
            "pit_ft[lambda=1e-5]",
            "l1[ratio=0.5]"
        ]
    );
}
