//! Tasks of a multi-task document: the split by `fetch` origin, the `000`-style table against
//! hand-computed values, and the rendered report's per-task sections and file names.

use super::*;
use serde_json::json;

fn node(name: &str, kind: &str, inputs: &[&str], params: Value) -> NodeRecord {
    NodeRecord {
        node: name.into(),
        stage: name.split('[').next().unwrap().into(),
        kind: kind.into(),
        key: format!("{name:0>16}"),
        state: "ran".into(),
        params,
        metrics: json!({}),
        duration_s: Some(1.0),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
    }
}

fn row(node: &str, kind: &str, parent: Option<&str>, params: u64, score: f64) -> ModelRow {
    ModelRow {
        node: node.into(),
        stage_kind: kind.into(),
        format: "fp32".into(),
        params: Some(params),
        weight_bytes: Some(4 * params),
        test_accuracy: Some(score),
        parent: parent.map(Into::into),
        ..Default::default()
    }
}

fn with_lambda(mut r: ModelRow, l: f64) -> ModelRow {
    r.extra.insert("lambda".into(), json!(l));
    r.method = Some("pit".into());
    r
}

/// One task `t`: fetch `t_data`, seed `t` (1000 params, 0.90), PIT at three λ and their
/// fine-tuned networks, an int8 evaluation of the seed and of the λ = 1e-5 network.
fn task(t: &str, dataset: &str) -> (Vec<NodeRecord>, Vec<ModelRow>) {
    let data = format!("{t}_data");
    let seed = t.to_string();
    let mut nodes = vec![
        node(
            &data,
            "fetch",
            &[],
            json!({ "dataset": { "kind": dataset } }),
        ),
        node(&seed, "train", &[&data], json!({})),
    ];
    let mut rows = vec![row(&seed, "train", None, 1000, 0.90)];
    let q = format!("{t}_int8");
    let mut qrows = vec![];
    let mut q_inputs = vec![seed.clone()];
    for (l, ls, p, a) in [
        (1e-4, "1e-4", 100u64, 0.70),
        (1e-5, "1e-5", 500, 0.89),
        (1e-6, "1e-6", 900, 0.85),
    ] {
        let pit = format!("{t}_pit[lambda={ls}]");
        let ft = format!("{t}_ft[lambda={ls}]");
        nodes.push(node(
            &pit,
            "search",
            &[&seed, &data],
            json!({ "method": "pit", "lambda": l }),
        ));
        nodes.push(node(&ft, "finetune", &[&pit, &data], json!({})));
        rows.push(with_lambda(row(&pit, "search", Some(&seed), p, 0.3), l));
        rows.push(with_lambda(row(&ft, "finetune", Some(&pit), p, a), l));
        if l == 1e-5 {
            let mut r = row(&q, "quantize", Some(&ft), p, 0.885);
            r.format = "int8".into();
            qrows.push(r);
        }
        q_inputs.push(ft);
    }
    let mut r = row(&q, "quantize", Some(&seed), 1000, 0.895);
    r.format = "int8".into();
    qrows.push(r);
    q_inputs.push(data.clone());
    let qi: Vec<&str> = q_inputs.iter().map(String::as_str).collect();
    nodes.push(node(&q, "quantize", &qi, json!({})));
    rows.extend(qrows);
    (nodes, rows)
}

fn doc(tasks: &[(&str, &str)]) -> Document {
    let (mut nodes, mut models) = (vec![], vec![]);
    for (t, d) in tasks {
        let (n, m) = task(t, d);
        nodes.extend(n);
        models.extend(m);
    }
    Document {
        provenance: crate::model::Provenance {
            experiment: "two".into(),
            ..Default::default()
        },
        nodes,
        models,
        ..Default::default()
    }
}

#[test]
fn networks_belong_to_the_fetch_node_their_inputs_lead_back_to() {
    assert!(
        split(&doc(&[("kws", "synthetic_kws")])).is_none(),
        "one task"
    );
    let d = doc(&[("kws", "synthetic_kws"), ("ad", "synthetic_machine")]);
    let tasks = split(&d).unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0].name, "kws_data");
    assert_eq!(tasks[0].dataset, "synthetic_kws");
    assert_eq!(tasks[1].dataset, "synthetic_machine");
    for t in &tasks {
        let pre = t.name.trim_end_matches("_data");
        assert_eq!(
            t.doc.nodes.len(),
            9,
            "fetch, seed, 3 PIT, 3 fine-tuned, int8"
        );
        assert_eq!(t.doc.models.len(), 9);
        assert!(t.doc.models.iter().all(|m| m.node.starts_with(pre)));
        assert!(t.doc.nodes.iter().all(|n| n.node.starts_with(pre)));
    }
}

#[test]
fn the_000_table_bolds_the_front_and_computes_the_deltas() {
    let d = doc(&[("kws", "synthetic_kws"), ("ic", "synthetic_images")]);
    let tasks = split(&d).unwrap();
    let ctx = Ctx::new(&tasks[0].doc, "two");
    let md = table(&ctx);
    // seed 1000 params at 90 %: λ 1e-4 (100, 70 %) and 1e-5 (500, 89 %) are on the front,
    // 1e-6 (900, 85 %) is dominated by 1e-5; the seed (1000, 90 %) is on it too
    assert!(
        md.contains(
            "Seed network `kws` (): 1,000 parameters, test accuracy 90.00 % (89.50 % in int8)"
        ),
        "{md}"
    );
    assert!(md.contains("Table 6.4"), "{md}");
    assert!(md.contains("the seed included, and on it"), "{md}");
    let lines: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(
        lines[2],
        "| **1e-4** | **70.00 %** | **100** | −90.00 % | −20.00 | – | `kws_ft[lambda=1e-4]` |"
    );
    assert_eq!(
        lines[3],
        "| **1e-5** | **89.00 %** | **500** | −50.00 % | −1.00 | 88.50 % | `kws_ft[lambda=1e-5]` |"
    );
    assert_eq!(
        lines[4],
        "| 1e-6 | 85.00 % | 900 | −10.00 % | −5.00 | – | `kws_ft[lambda=1e-6]` |"
    );
    assert_eq!(
        lines.len(),
        5,
        "the search outputs before fine-tuning are not rows"
    );
    assert!(
        md.contains("seed DS-CNN with 40,396 parameters at accuracy 91.88 %"),
        "{md}"
    );
    assert!(md.contains("λ 8e-6 → 92.37 % at 31,547 (−21.91 %)"), "{md}");
}

#[test]
fn the_overview_names_the_smallest_network_within_one_point_per_task() {
    let d = doc(&[("kws", "synthetic_kws"), ("ad", "synthetic_machine")]);
    let tasks = split(&d).unwrap();
    let ctxs: Vec<_> = tasks.iter().map(|t| (t, Ctx::new(&t.doc, "two"))).collect();
    let md = overview(&ctxs);
    // 89 % ≥ 90 % − 1 point: λ 1e-5 with 500 parameters
    assert!(
        md.contains("| `kws_data` | synthetic_kws | accuracy | `kws` | 1,000 | 90.00 % | `kws_ft[lambda=1e-5]` | 500 (−50.00 %) | 89.00 % | 40,396 91.88 % → 22,079 (−45.34 %, 91.64 %) |"),
        "{md}"
    );
    // 000's anomaly-detection point within one point of 85.5 %: 121,375 at 85.66 %
    assert!(
        md.contains("267,928 85.50 % → 121,375 (−54.70 %, 85.66 %)"),
        "{md}"
    );
}

#[test]
fn a_multi_task_report_draws_every_section_per_task_with_its_own_files() {
    let mut d = doc(&[("kws", "synthetic_kws"), ("ad", "synthetic_machine")]);
    for m in d.models.iter_mut().filter(|m| m.node.starts_with("ad")) {
        m.metric = Metric::Auc;
        m.test_auc = m.test_accuracy.take();
    }
    let r = crate::render(&d, "two");
    let md = &r.markdown;
    assert!(md.contains("## Tasks\n"));
    assert!(md.contains("## Task `kws_data`: keyword spotting (synthetic_kws)\n"));
    assert!(md.contains("## Task `ad_data`: anomaly detection (synthetic_machine)\n"));
    assert!(!md.contains("\n## Summary"), "sections are one level down");
    assert_eq!(md.matches("\n### Summary").count(), 2);
    assert!(md.contains("\n### Pareto fronts"));
    let ad = &md[md.find("## Task `ad_data`").unwrap()..];
    assert!(ad.contains("| λ | test AUC |"), "{ad}");
    assert!(ad.contains("test AUC vs"), "the AD fronts plot AUC");
    assert!(!r.files.is_empty());
    for (f, _) in &r.files {
        assert!(
            f.starts_with("kws_data-") || f.starts_with("ad_data-"),
            "{f}"
        );
        assert!(md.contains(&format!("](two/{f})")), "{f} is linked");
    }
    // no file names or links of the un-prefixed sections remain
    assert!(!md.contains("](two/front"), "{md}");
    assert_eq!(r, crate::render(&d, "two"), "deterministic");
}

#[test]
fn demoting_headings_leaves_code_blocks_alone() {
    assert_eq!(
        demote("## a\ntext # no\n```\n# code\n```\n### b\n"),
        "### a\ntext # no\n```\n# code\n```\n#### b\n"
    );
}
