//! Renders a [`Document`] as `reports/<experiment>.md` plus the SVG plots beside it:
//! summary, one table per axis (architectures, pruning, precision, distillation) with the
//! computed Pareto fronts marked, plots, per-layer channel charts, provenance.
//! Deterministic: the same document gives byte-identical files.

use crate::model::{Document, ModelRow};
use crate::pareto;
use crate::svg::{Scatter, Series, bars};
use crate::table::{Align, Table, percent, points_delta, thousands};
use serde_json::Value;
use std::collections::BTreeMap;

/// The rendered report: the Markdown text and the files for `reports/<experiment>/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub markdown: String,
    /// (file name inside the report folder, contents)
    pub files: Vec<(String, String)>,
}

/// A cost axis of the Pareto fronts.
#[derive(Clone, Copy)]
struct Axis {
    tag: &'static str,
    title: &'static str,
    file: &'static str,
    get: fn(&ModelRow) -> Option<f64>,
}

const AXES: [Axis; 4] = [
    Axis {
        tag: "P",
        title: "parameters",
        file: "acc_vs_params.svg",
        get: |m| m.params.map(|v| v as f64),
    },
    Axis {
        tag: "M",
        title: "MACs",
        file: "acc_vs_macs.svg",
        get: |m| m.macs.map(|v| v as f64),
    },
    Axis {
        tag: "B",
        title: "weight bytes",
        file: "acc_vs_weight_bytes.svg",
        get: |m| m.weight_bytes.map(|v| v as f64),
    },
    Axis {
        tag: "L",
        title: "latency (ms)",
        file: "acc_vs_latency.svg",
        get: |m| m.latency_ms,
    },
];

/// For each row, the tags of the fronts it is on (e.g. "P M B").
fn front_marks(rows: &[ModelRow]) -> Vec<String> {
    let mut marks = vec![String::new(); rows.len()];
    for axis in AXES {
        let idx: Vec<usize> = (0..rows.len())
            .filter(|&i| (axis.get)(&rows[i]).is_some() && rows[i].test_accuracy.is_some())
            .collect();
        let pts: Vec<(f64, f64)> = idx
            .iter()
            .map(|&i| {
                (
                    (axis.get)(&rows[i]).unwrap_or(f64::NAN),
                    rows[i].test_accuracy.unwrap_or(f64::NAN),
                )
            })
            .collect();
        for k in pareto::front(&pts) {
            let m = &mut marks[idx[k]];
            if !m.is_empty() {
                m.push(' ');
            }
            m.push_str(axis.tag);
        }
    }
    marks
}

fn opt_u(v: Option<u64>) -> String {
    v.map(thousands).unwrap_or_else(|| "–".into())
}

fn opt_acc(v: Option<f64>) -> String {
    v.map(percent).unwrap_or_else(|| "–".into())
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "–".into())
}

fn extra_str(m: &ModelRow, key: &str) -> String {
    if key == "teacher" {
        return m
            .teacher
            .as_ref()
            .map(|t| format!("`{t}`"))
            .unwrap_or_else(|| "none".into());
    }
    match m.extra.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_f64() => num_str(n.as_f64().unwrap_or(f64::NAN)),
        Some(v) => v.to_string(),
    }
}

/// A parameter value as a node name shows it: scientific for small and large magnitudes
/// (`1e-5`, `3e-4`), plain otherwise (`0.25`, `2.0`).
fn num_str(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) {
        format!("{v:e}")
    } else {
        Value::from(v).to_string()
    }
}

#[cfg(test)]
#[test]
fn parameter_numbers_read_like_node_names() {
    assert_eq!(num_str(1e-5), "1e-5");
    assert_eq!(num_str(3e-5), "3e-5");
    assert_eq!(num_str(0.0003), "3e-4");
    assert_eq!(num_str(0.25), "0.25");
    assert_eq!(num_str(2.0), "2.0");
    assert_eq!(num_str(0.0), "0.0");
}

/// Which table a row belongs to: precision (quantized evaluations), distillation (a teacher),
/// derived (pruned or searched from a parent network), or architecture (trained from its
/// configuration). Decided from the row, not the stage kind, so any stage (also a `command`)
/// that reports `models` lands in the right table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Axis2 {
    Architecture,
    Derived,
    Precision,
    Distillation,
}

fn table_of(m: &ModelRow) -> Axis2 {
    if m.stage_kind == "quantize" || m.format != "fp32" {
        Axis2::Precision
    } else if m.teacher.is_some() || m.stage_kind == "distill" {
        Axis2::Distillation
    } else if m.parent.is_some() {
        Axis2::Derived
    } else {
        Axis2::Architecture
    }
}

/// The seed network: the architecture row with the most searched / pruned children (a
/// network quantized or distilled from is not a seed by that alone), else the first one that
/// another row names as its parent, else the most accurate architecture row (the first of equals).
fn seed_index(rows: &[ModelRow]) -> Option<usize> {
    let trained: Vec<usize> = (0..rows.len())
        .filter(|&i| table_of(&rows[i]) == Axis2::Architecture)
        .collect();
    let children = |i: usize, derived_only: bool| {
        rows.iter()
            .filter(|r| r.parent.as_deref() == Some(rows[i].node.as_str()))
            .filter(|r| !derived_only || table_of(r) == Axis2::Derived)
            .count()
    };
    let most = trained
        .iter()
        .copied()
        .filter(|&i| children(i, true) > 0)
        .max_by(|&a, &b| children(a, true).cmp(&children(b, true)).then(b.cmp(&a)));
    let acc = |i: usize| rows[i].test_accuracy.unwrap_or(f64::NEG_INFINITY);
    most.or_else(|| trained.iter().copied().find(|&i| children(i, false) > 0))
        .or_else(|| {
            trained
                .iter()
                .copied()
                .max_by(|&a, &b| acc(a).total_cmp(&acc(b)).then(b.cmp(&a)))
        })
}

#[cfg(test)]
#[test]
fn the_seed_is_the_network_that_was_searched_or_pruned_not_one_only_quantized() {
    let row = |node: &str, parent: Option<&str>, format: &str, kind: &str| ModelRow {
        node: node.into(),
        stage_kind: kind.into(),
        format: format.into(),
        parent: parent.map(Into::into),
        ..Default::default()
    };
    let rows = vec![
        row("dscnn", None, "fp32", "train"),
        row("tcn", None, "fp32", "train"),
        row("quant", Some("dscnn"), "int8", "quantize"),
        row("pit", Some("tcn"), "fp32", "search"),
    ];
    assert_eq!(seed_index(&rows), Some(1));
    assert_eq!(
        seed_index(&rows[..3]),
        Some(0),
        "else the first one named as a parent"
    );
    assert_eq!(
        seed_index(&rows[..2]),
        Some(0),
        "equal (unknown) accuracies: the first"
    );
    let mut alone = rows[..2].to_vec();
    alone[0].test_accuracy = Some(0.5);
    alone[1].test_accuracy = Some(0.8);
    assert_eq!(seed_index(&alone), Some(1), "else the most accurate");
}

/// Accuracy of the row's parent network (fp32), if it is in the document.
fn parent_accuracy(rows: &[ModelRow], m: &ModelRow) -> Option<f64> {
    let p = m.parent.as_deref()?;
    rows.iter()
        .find(|r| r.node == p && r.format == "fp32")
        .and_then(|r| r.test_accuracy)
}

fn summary(doc: &Document, out: &mut String) {
    let rows = &doc.models;
    out.push_str("## Summary\n\n");
    if rows.is_empty() {
        out.push_str("No measured networks yet: no stage reported `models` in its metrics.\n\n");
        return;
    }
    let seed = seed_index(rows);
    if let Some(s) = seed {
        let r = &rows[s];
        out.push_str(&format!(
            "- **Seed network**: `{}` ({}) — {} parameters, {} MACs, test accuracy {}.\n",
            r.node,
            r.arch.clone().unwrap_or_default(),
            opt_u(r.params),
            opt_u(r.macs),
            opt_acc(r.test_accuracy)
        ));
    }
    let c = &doc.constraints;
    let cons: Vec<(String, Box<dyn Fn(&ModelRow) -> bool>)> = [
        c.max_params.map(|v| {
            (
                format!("≤ {} parameters", thousands(v)),
                Box::new(move |m: &ModelRow| m.params.is_some_and(|p| p <= v))
                    as Box<dyn Fn(&ModelRow) -> bool>,
            )
        }),
        c.max_macs.map(|v| {
            (
                format!("≤ {} MACs", thousands(v)),
                Box::new(move |m: &ModelRow| m.macs.is_some_and(|p| p <= v))
                    as Box<dyn Fn(&ModelRow) -> bool>,
            )
        }),
        c.max_weight_bytes.map(|v| {
            (
                format!("≤ {} weight bytes", thousands(v)),
                Box::new(move |m: &ModelRow| m.weight_bytes.is_some_and(|p| p <= v))
                    as Box<dyn Fn(&ModelRow) -> bool>,
            )
        }),
        c.max_peak_activation_bytes.map(|v| {
            (
                format!("≤ {} peak activation bytes", thousands(v)),
                Box::new(move |m: &ModelRow| m.peak_activation_bytes.is_some_and(|p| p <= v))
                    as Box<dyn Fn(&ModelRow) -> bool>,
            )
        }),
        c.max_latency_ms.map(|v| {
            (
                format!("≤ {v} ms latency"),
                Box::new(move |m: &ModelRow| m.latency_ms.is_some_and(|p| p <= v))
                    as Box<dyn Fn(&ModelRow) -> bool>,
            )
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (name, ok) in &cons {
        let best = rows
            .iter()
            .filter(|m| ok(m) && m.test_accuracy.is_some())
            .max_by(|a, b| {
                a.test_accuracy
                    .unwrap_or(0.0)
                    .total_cmp(&b.test_accuracy.unwrap_or(0.0))
                    .then(b.node.cmp(&a.node))
            });
        match best {
            Some(m) => out.push_str(&format!(
                "- **Best with {name}**: `{}` — {}, {} parameters, {} weight bytes.\n",
                m.label(),
                opt_acc(m.test_accuracy),
                opt_u(m.params),
                opt_u(m.weight_bytes)
            )),
            None => out.push_str(&format!(
                "- **Best with {name}**: no measured network meets it.\n"
            )),
        }
    }
    if let Some(s) = seed {
        let target = rows[s].test_accuracy.unwrap_or(f64::INFINITY);
        let smallest = rows
            .iter()
            .filter(|m| m.test_accuracy.is_some_and(|a| a >= target) && m.weight_bytes.is_some())
            .min_by(|a, b| {
                a.weight_bytes
                    .cmp(&b.weight_bytes)
                    .then(a.params.cmp(&b.params))
                    .then(a.node.cmp(&b.node))
            });
        match smallest {
            Some(m) => out.push_str(&format!(
                "- **Smallest network reaching the seed's accuracy** ({}): `{}` — {} weight bytes, {} parameters, {}.\n",
                opt_acc(rows[s].test_accuracy),
                m.label(),
                opt_u(m.weight_bytes),
                opt_u(m.params),
                opt_acc(m.test_accuracy)
            )),
            None => out.push_str("- No network reaches the seed's accuracy.\n"),
        }
    }
    out.push('\n');
}

fn model_table(
    title: &str,
    intro: &str,
    rows: &[(usize, &ModelRow)],
    all: &[ModelRow],
    marks: &[String],
    extra_cols: &[&str],
    out: &mut String,
) {
    if rows.is_empty() {
        return;
    }
    let mut cols: Vec<(&str, Align)> = vec![
        ("network", Align::Left),
        ("method", Align::Left),
        ("format", Align::Left),
    ];
    cols.extend(extra_cols.iter().map(|c| (*c, Align::Right)));
    cols.extend([
        ("params", Align::Right),
        ("MACs", Align::Right),
        ("weight bytes", Align::Right),
        ("peak act. bytes", Align::Right),
        ("latency ms", Align::Right),
        ("test acc.", Align::Right),
        ("Δ vs parent (pts)", Align::Right),
        ("front", Align::Left),
    ]);
    let mut t = Table::new(&cols);
    for (i, m) in rows {
        let mut cells = vec![
            format!("`{}`", m.label()),
            m.method.clone().unwrap_or_default(),
            if is_best_format(m) {
                format!("{} ★", m.format)
            } else {
                m.format.clone()
            },
        ];
        cells.extend(extra_cols.iter().map(|c| extra_str(m, c)));
        let delta = match (m.test_accuracy, parent_accuracy(all, m)) {
            (Some(a), Some(p)) => points_delta(a - p),
            _ => "–".into(),
        };
        cells.extend([
            opt_u(m.params),
            opt_u(m.macs),
            opt_u(m.weight_bytes),
            opt_u(m.peak_activation_bytes),
            opt_ms(m.latency_ms),
            opt_acc(m.test_accuracy),
            delta,
            marks[*i].clone(),
        ]);
        t.row(cells);
    }
    out.push_str(&format!("## {title}\n\n{intro}\n\n"));
    out.push_str(&t.render());
    out.push('\n');
}

/// True for the row a `float(*,*)` grid picked as its network's best format within budget.
fn is_best_format(m: &ModelRow) -> bool {
    m.extra.get("best_format").and_then(Value::as_bool) == Some(true)
}

#[cfg(test)]
#[test]
fn the_best_grid_format_is_starred_and_explained() {
    let row = |format: &str, best: bool| {
        let mut m = ModelRow {
            node: format!("q@{format}"),
            stage_kind: "quantize".into(),
            format: format.into(),
            parent: Some("seed".into()),
            test_accuracy: Some(0.5),
            ..Default::default()
        };
        if best {
            m.extra.insert("best_format".into(), Value::Bool(true));
        }
        m
    };
    let mut doc = Document::default();
    doc.models = vec![row("float(4,3)", true), row("float(5,2)", false)];
    let md = render(&doc, "r").markdown;
    assert!(md.contains("| float(4,3) ★ |"), "{md}");
    assert!(md.contains("| float(5,2) |"), "{md}");
    assert!(md.contains("★ marks each network's most accurate"), "{md}");
    doc.models[0].extra.clear();
    assert!(!render(&doc, "r").markdown.contains('★'));
}

/// Renders the whole report. `folder` is the name of the report folder relative to the
/// Markdown file (e.g. `kws_pit`), used in image links.
pub fn render(doc: &Document, folder: &str) -> Rendered {
    let rows = &doc.models;
    let marks = front_marks(rows);
    let p = &doc.provenance;
    let mut md = format!("# {}\n\n", p.experiment);
    if !p.description.is_empty() {
        md.push_str(&format!("{}\n\n", p.description.trim()));
    }
    summary(doc, &mut md);
    let pick = |f: &dyn Fn(&ModelRow) -> bool| -> Vec<(usize, &ModelRow)> {
        rows.iter().enumerate().filter(|(_, m)| f(m)).collect()
    };
    let front_note = "`front` lists the Pareto fronts (accuracy ↑ against P = parameters, M = MACs, B = weight bytes, L = latency ↓) a network is on, computed over every network in the report.";
    model_table(
        "Architectures",
        &format!("Networks trained from their configuration. {front_note}"),
        &pick(&|m| table_of(m) == Axis2::Architecture),
        rows,
        &marks,
        &[],
        &mut md,
    );
    model_table(
        "Pruning and search methods",
        "Networks derived from a seed by architecture search or pruning; Δ is against the network they were derived from.",
        &pick(&|m| table_of(m) == Axis2::Derived),
        rows,
        &marks,
        &["lambda", "ratio"],
        &mut md,
    );
    let precision = pick(&|m| table_of(m) == Axis2::Precision);
    let mut intro = String::from(
        "Each network evaluated with its weights and activations in each format (weight-only formats keep fp32 activations); Δ is against the fp32 network.",
    );
    if precision.iter().any(|(_, m)| is_best_format(m)) {
        intro.push_str(" ★ marks each network's most accurate `float(w,t)` format within its quantize stage's `budget_bytes` (the `float(*,*)` grid).");
    }
    model_table(
        "Precision formats",
        &intro,
        &precision,
        rows,
        &marks,
        &[],
        &mut md,
    );
    model_table(
        "Distillation",
        "Teachers, and students trained with knowledge distillation (teacher named) next to the same architecture trained without it (teacher: none).",
        &pick(&|m| {
            table_of(m) == Axis2::Distillation
                || (m.format == "fp32"
                    && rows
                        .iter()
                        .any(|r| r.teacher.as_deref() == Some(m.node.as_str())))
                || (table_of(m) == Axis2::Architecture
                    && rows
                        .iter()
                        .any(|r| r.teacher.is_some() && r.arch == m.arch && r.params == m.params))
        }),
        rows,
        &marks,
        &["teacher", "temperature", "alpha"],
        &mut md,
    );

    seeds_table(rows, &mut md);
    md.push_str(&crate::calibration::section(&doc.nodes));

    let mut files = Vec::new();
    let mut plots = String::new();
    for axis in AXES {
        let mut by_method: BTreeMap<String, Vec<(f64, f64, String)>> = BTreeMap::new();
        for m in rows {
            if let (Some(x), Some(y)) = ((axis.get)(m), m.test_accuracy) {
                let group = if m.format == "fp32" {
                    m.method.clone().unwrap_or_else(|| m.stage_kind.clone())
                } else {
                    m.format.clone()
                };
                by_method.entry(group).or_default().push((x, y, m.label()));
            }
        }
        if by_method.values().map(Vec::len).sum::<usize>() < 2 {
            continue;
        }
        let plot = Scatter {
            title: format!("test accuracy vs {}", axis.title),
            x_label: axis.title.to_string(),
            y_label: "test accuracy".into(),
            log_x: true,
            series: by_method
                .into_iter()
                .map(|(name, points)| Series { name, points })
                .collect(),
        };
        plots.push_str(&format!(
            "![test accuracy vs {}]({folder}/{})\n\n",
            axis.title, axis.file
        ));
        files.push((axis.file.to_string(), plot.render()));
    }
    // Per-layer channels of searched/pruned networks next to their parent.
    for m in rows
        .iter()
        .filter(|m| m.format == "fp32" && m.parent.is_some())
    {
        let (Some(layers), Some(parent)) = (
            m.extra.get("layers").and_then(Value::as_array),
            rows.iter()
                .find(|r| Some(r.node.as_str()) == m.parent.as_deref() && r.format == "fp32"),
        ) else {
            continue;
        };
        let Some(players) = parent.extra.get("layers").and_then(Value::as_array) else {
            continue;
        };
        let names: Vec<String> = layers
            .iter()
            .map(|l| {
                l.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string()
            })
            .collect();
        let ch = |ls: &[Value], name: &str| {
            ls.iter()
                .find(|l| l.get("name").and_then(Value::as_str) == Some(name))
                .and_then(|l| l.get("c_out"))
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN)
        };
        let ours: Vec<f64> = names.iter().map(|n| ch(layers, n)).collect();
        let theirs: Vec<f64> = names.iter().map(|n| ch(players, n)).collect();
        let file = format!("channels_{}.svg", sanitize(&m.node));
        let svg = bars(
            &format!("output channels per layer: {} vs {}", m.node, parent.node),
            "channels",
            &names,
            &[(parent.node.clone(), theirs), (m.node.clone(), ours)],
        );
        plots.push_str(&format!("![channels of {}]({folder}/{file})\n\n", m.node));
        files.push((file, svg));
    }
    if !plots.is_empty() {
        md.push_str("## Plots\n\nThe dashed line is the computed Pareto front.\n\n");
        md.push_str(&plots);
    }
    provenance(doc, &mut md);
    Rendered {
        markdown: md,
        files,
    }
}

/// The node name without its `seed=…` sweep coordinate: `kd[seed=3]` → `kd`,
/// `kd[lambda=1e-5,seed=3]` → `kd[lambda=1e-5]`.
pub fn without_seed(node: &str) -> String {
    let Some((stage, rest)) = node.split_once('[') else {
        return node.to_string();
    };
    let inner = rest.trim_end_matches(']');
    let kept: Vec<&str> = inner
        .split(',')
        .filter(|c| !c.trim_start().starts_with("seed="))
        .collect();
    if kept.is_empty() {
        stage.to_string()
    } else {
        format!("{stage}[{}]", kept.join(","))
    }
}

/// Networks trained under several seeds (a `seed` sweep): test accuracy as mean ± standard
/// deviation (sample, n − 1) over the seeds.
fn seeds_table(rows: &[ModelRow], md: &mut String) {
    let mut groups: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for m in rows.iter().filter(|m| m.node.contains("seed=")) {
        if let Some(a) = m.test_accuracy {
            groups
                .entry((without_seed(&m.node), m.format.clone()))
                .or_default()
                .push(a);
        }
    }
    groups.retain(|_, v| v.len() >= 2);
    if groups.is_empty() {
        return;
    }
    let mut t = Table::new(&[
        ("network", Align::Left),
        ("format", Align::Left),
        ("seeds", Align::Right),
        ("test acc. mean", Align::Right),
        ("± std (pts)", Align::Right),
    ]);
    for ((node, format), v) in &groups {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        t.row(vec![
            format!("`{node}`"),
            format.clone(),
            v.len().to_string(),
            percent(mean),
            format!("{:.2}", 100.0 * std),
        ]);
    }
    md.push_str("## Repeated over seeds\n\nNetworks trained under several seeds (a `seed` sweep): test accuracy mean ± sample standard deviation.\n\n");
    md.push_str(&t.render());
    md.push('\n');
}

/// A file-name-safe version of a node name.
pub fn sanitize(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn provenance(doc: &Document, md: &mut String) {
    let p = &doc.provenance;
    md.push_str("## Provenance\n\n");
    md.push_str(&format!(
        "- Experiment file: `{}` (blake3 `{}`), seed {}\n- Tool: whittle {}\n- Machine: {}\n\n",
        p.file, p.file_hash, p.seed, p.tool_version, p.machine
    ));
    let mut t = Table::new(&[
        ("node", Align::Left),
        ("kind", Align::Left),
        ("key", Align::Left),
        ("state", Align::Left),
        ("wall time s", Align::Right),
    ]);
    let mut total = 0.0;
    for n in &doc.nodes {
        total += n.duration_s.unwrap_or(0.0);
        t.row(vec![
            format!("`{}`", n.node),
            n.kind.clone(),
            format!("`{}`", &n.key[..n.key.len().min(12)]),
            n.state.clone(),
            n.duration_s
                .map(|d| format!("{d:.1}"))
                .unwrap_or_else(|| "–".into()),
        ]);
    }
    md.push_str(&t.render());
    md.push_str(&format!("\nTotal stage time: {total:.1} s.\n"));
}
