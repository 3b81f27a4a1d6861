//! Experiments with more than one task (several `fetch` nodes whose networks are measured, as
//! `experiments/mlperf_tiny.toml`'s four MLPerf Tiny tasks): each network belongs to the data
//! set it was trained and tested on — the `fetch` node its inputs lead back to — and fronts,
//! summaries and tables are drawn per task, never across tasks (an accuracy and an AUC, or
//! accuracies on different data, are not one axis).
//!
//! Per task the report opens with the table of `000` Tables 6.1–6.4: one row per PIT λ of the
//! deployable (fine-tuned) networks, with the task metric, parameters, Δ% of parameters and Δ of
//! the metric against the seed, the int8 metric when measured, and the Pareto points (metric ↑,
//! parameters ↓, the seed included) in bold; beside it the figures `000` reports for the same
//! task on the real data set, as reference points.

use crate::model::{Document, Metric, ModelRow, NodeRecord};
use crate::pareto;
use crate::render::{Ctx, num_str, opt_acc, opt_u};
use crate::table::{Align, Table, points_delta, thousands};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

/// One task: its `fetch` node, the nodes downstream of it (itself included), its document.
pub(crate) struct Task {
    pub name: String,
    /// The data set kind the `fetch` node built (`synthetic_kws`, `cifar10`, …).
    pub dataset: String,
    pub doc: Document,
}

/// The `fetch` node each node's inputs lead back to (the first one in input order).
fn origins(nodes: &[NodeRecord]) -> HashMap<&str, &str> {
    let by_name: HashMap<&str, &NodeRecord> = nodes.iter().map(|n| (n.node.as_str(), n)).collect();
    fn walk<'a>(
        n: &'a str,
        by_name: &HashMap<&str, &'a NodeRecord>,
        memo: &mut HashMap<&'a str, Option<&'a str>>,
        depth: usize,
    ) -> Option<&'a str> {
        if let Some(v) = memo.get(n) {
            return *v;
        }
        let rec = by_name.get(n)?;
        let found = if rec.kind == "fetch" {
            Some(rec.node.as_str())
        } else if depth > 256 {
            None
        } else {
            rec.inputs
                .iter()
                .find_map(|i| walk(i.as_str(), by_name, memo, depth + 1))
        };
        memo.insert(rec.node.as_str(), found);
        found
    }
    let mut memo = HashMap::new();
    nodes
        .iter()
        .filter_map(|n| walk(&n.node, &by_name, &mut memo, 0).map(|o| (n.node.as_str(), o)))
        .collect()
}

/// The tasks of `doc` when there are at least two `fetch` nodes with measured networks
/// downstream; `None` for a one-task experiment (rendered as before).
pub(crate) fn split(doc: &Document) -> Option<Vec<Task>> {
    let origin = origins(&doc.nodes);
    let with_models: BTreeSet<&str> = doc
        .models
        .iter()
        .filter_map(|m| origin.get(m.node.as_str()).copied())
        .collect();
    if with_models.len() < 2 {
        return None;
    }
    // in node order of the fetch nodes
    let fetches: Vec<&NodeRecord> = doc
        .nodes
        .iter()
        .filter(|n| n.kind == "fetch" && with_models.contains(n.node.as_str()))
        .collect();
    Some(
        fetches
            .into_iter()
            .map(|f| {
                let mine = |node: &str| origin.get(node).copied() == Some(f.node.as_str());
                let mut provenance = doc.provenance.clone();
                provenance.experiment = format!("{} · {}", doc.provenance.experiment, f.node);
                Task {
                    name: f.node.clone(),
                    dataset: f
                        .params
                        .pointer("/dataset/kind")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    doc: Document {
                        provenance,
                        constraints: doc.constraints.clone(),
                        options: doc.options.clone(),
                        nodes: doc
                            .nodes
                            .iter()
                            .filter(|n| mine(&n.node))
                            .cloned()
                            .collect(),
                        models: doc
                            .models
                            .iter()
                            .filter(|m| mine(&m.node))
                            .cloned()
                            .collect(),
                    },
                }
            })
            .collect(),
    )
}

/// What `000` reports for one MLPerf Tiny task on its real data set.
struct Reference {
    title: &'static str,
    table: &'static str,
    data: &'static str,
    seed: &'static str,
    seed_params: u64,
    seed_metric: f64,
    /// (λ, metric, parameters) of the Pareto points `000` discusses.
    points: &'static [(f64, f64, u64)],
}

const KWS: Reference = Reference {
    title: "keyword spotting",
    table: "6.4",
    data: "Speech Commands v2 (12 classes)",
    seed: "DS-CNN",
    seed_params: 40_396,
    seed_metric: 0.9188,
    points: &[
        (3e-5, 0.9164, 22_079),
        (8e-6, 0.9237, 31_547),
        (8e-7, 0.9349, 37_541),
    ],
};
const IC: Reference = Reference {
    title: "image classification",
    table: "6.2",
    data: "CIFAR-10",
    seed: "ResNet-8",
    seed_params: 78_052,
    seed_metric: 0.88,
    points: &[
        (1e-5, 0.875, 26_828),
        (5e-6, 0.895, 57_110),
        (3e-9, 0.90, 71_805),
    ],
};
const VWW: Reference = Reference {
    title: "visual wake words",
    table: "6.3",
    data: "Visual Wake Words (COCO 2014, 96×96)",
    seed: "MobileNetV1-0.25",
    seed_params: 213_586,
    seed_metric: 0.8332,
    points: &[
        (7e-5, 0.7847, 1_607),
        (5e-7, 0.8486, 17_612),
        (7e-8, 0.8528, 19_537),
    ],
};
const AD: Reference = Reference {
    title: "anomaly detection",
    table: "6.1",
    data: "ToyADMOS / DCASE 2020 task 2 (ToyCar)",
    seed: "FC auto-encoder",
    seed_params: 267_928,
    seed_metric: 0.855,
    points: &[
        (8e-3, 0.7914, 26_370),
        (8e-5, 0.8566, 121_375),
        (3e-8, 0.8666, 135_964),
    ],
};

fn reference(dataset: &str) -> Option<&'static Reference> {
    match dataset {
        "synthetic_kws" | "speech_commands" => Some(&KWS),
        "synthetic_images" | "cifar10" => Some(&IC),
        "synthetic_vww" | "vww" => Some(&VWW),
        "synthetic_machine" | "dcase2020" => Some(&AD),
        _ => None,
    }
}

fn percent_change(new: u64, old: u64) -> String {
    if old == 0 {
        return "–".into();
    }
    format!("{} %", points_delta((new as f64 - old as f64) / old as f64))
}

/// The heading of a task's section.
pub(crate) fn heading(task: &Task) -> String {
    match reference(&task.dataset) {
        Some(r) => format!(
            "## Task `{}`: {} ({})\n\n",
            task.name, r.title, task.dataset
        ),
        None => format!("## Task `{}` ({})\n\n", task.name, task.dataset),
    }
}

/// The rows of the `000`-style table: the deployable PIT networks, by λ (largest first, as
/// `000` lists them), with their int8 evaluation when there is one.
fn pit_rows(ctx: &Ctx) -> Vec<(usize, f64)> {
    let mut out: Vec<(usize, f64)> = (0..ctx.rows.len())
        .filter(|&i| ctx.shown[i] && ctx.methods[i] == "PIT")
        .filter_map(|i| {
            let l = ctx.rows[i].extra.get("lambda").and_then(Value::as_f64)?;
            Some((i, l))
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

fn int8_of<'a>(rows: &'a [ModelRow], node: &str) -> Option<&'a ModelRow> {
    rows.iter().find(|r| {
        r.stage_kind == "quantize" && r.format == "int8" && r.parent.as_deref() == Some(node)
    })
}

/// The `000` Table 6.x of one task and the reference figures beside it.
pub(crate) fn table(ctx: &Ctx) -> String {
    let metric = ctx.metric;
    let mut md = String::new();
    let rows = pit_rows(ctx);
    let seed = ctx.seed.map(|s| &ctx.rows[s]);
    if let Some(s) = seed {
        md.push_str(&format!(
            "Seed network `{}` ({}): {} parameters, test {} {}{}.\n\n",
            s.node,
            s.arch.clone().unwrap_or_default(),
            opt_u(s.params),
            metric.name(),
            opt_acc(s.score()),
            match int8_of(ctx.rows, &s.node).and_then(ModelRow::score) {
                Some(q) => format!(" ({} in int8)", opt_acc(Some(q))),
                None => String::new(),
            }
        ));
    }
    if rows.is_empty() {
        md.push_str("No PIT search of this task was measured.\n\n");
    } else {
        // the front over the seed and the PIT networks: parameters ↓, metric ↑
        let mut pts: Vec<(f64, f64)> = rows.iter().map(|&(i, _)| point(&ctx.rows[i])).collect();
        if let Some(s) = seed {
            pts.push(point(s));
        }
        let front: BTreeSet<usize> = pareto::front(&pts).into_iter().collect();
        md.push_str(&format!(
            "PIT outcomes (as `000` Table {}): one row per λ, the fine-tuned network; **bold** rows are on the Pareto front of {} vs parameters (the seed included{}).\n\n",
            reference(&ctx_dataset(ctx)).map(|r| r.table).unwrap_or("6.x"),
            metric.name(),
            if seed.is_some_and(|_| front.contains(&rows.len())) {
                ", and on it"
            } else {
                ""
            }
        ));
        let mut t = Table::new(&[
            ("λ", Align::Right),
            (metric.column(), Align::Right),
            ("# parameters", Align::Right),
            ("Δ parameters", Align::Right),
            ("Δ vs seed (points)", Align::Right),
            ("int8", Align::Right),
            ("network", Align::Left),
        ]);
        for (k, &(i, lambda)) in rows.iter().enumerate() {
            let m = &ctx.rows[i];
            let bold = |s: String| {
                if front.contains(&k) {
                    format!("**{s}**")
                } else {
                    s
                }
            };
            t.row(vec![
                bold(num_str(lambda)),
                bold(opt_acc(m.score())),
                bold(opt_u(m.params)),
                match (m.params, seed.and_then(|s| s.params)) {
                    (Some(p), Some(sp)) => percent_change(p, sp),
                    _ => "–".into(),
                },
                match (m.score(), seed.and_then(ModelRow::score)) {
                    (Some(a), Some(b)) => points_delta(a - b),
                    _ => "–".into(),
                },
                opt_acc(int8_of(ctx.rows, &m.node).and_then(ModelRow::score)),
                format!("`{}`", m.node),
            ]);
        }
        md.push_str(&t.render());
        md.push('\n');
    }
    if let Some(r) = reference(&ctx_dataset(ctx)) {
        md.push_str(&reference_text(r, metric));
    }
    md
}

fn point(m: &ModelRow) -> (f64, f64) {
    (
        m.params.map(|p| p as f64).unwrap_or(f64::NAN),
        m.score().unwrap_or(f64::NAN),
    )
}

/// The data set kind of the task a context draws (its `fetch` node).
fn ctx_dataset(ctx: &Ctx) -> String {
    ctx.doc
        .nodes
        .iter()
        .find(|n| n.kind == "fetch")
        .and_then(|n| n.params.pointer("/dataset/kind").and_then(Value::as_str))
        .unwrap_or_default()
        .to_string()
}

fn reference_text(r: &Reference, metric: Metric) -> String {
    let mut s = format!(
        "Reference figures from `000` Table {}, on {} (real data: absolute numbers are not comparable with a synthetic set's, the shape of the trade-off is): seed {} with {} parameters at {} {}; PIT points on its front: ",
        r.table,
        r.data,
        r.seed,
        thousands(r.seed_params),
        metric.name(),
        opt_acc(Some(r.seed_metric))
    );
    let pts: Vec<String> = r
        .points
        .iter()
        .map(|&(l, v, p)| {
            format!(
                "λ {l:e} → {} at {} ({})",
                opt_acc(Some(v)),
                thousands(p),
                percent_change(p, r.seed_params)
            )
        })
        .collect();
    s.push_str(&pts.join("; "));
    s.push_str(".\n\n");
    s
}

/// The overview of all tasks: per task its seed, the smallest fine-tuned PIT network within
/// one point of the seed's metric, and `000`'s figures for the task.
pub(crate) fn overview(tasks: &[(&Task, Ctx)]) -> String {
    let mut t = Table::new(&[
        ("task", Align::Left),
        ("data", Align::Left),
        ("metric", Align::Left),
        ("seed", Align::Left),
        ("seed params", Align::Right),
        ("seed metric", Align::Right),
        ("smallest PIT within 1 point", Align::Left),
        ("params (Δ)", Align::Right),
        ("metric", Align::Right),
        ("`000` seed → smallest within 1 point", Align::Left),
    ]);
    for (task, ctx) in tasks {
        let seed = ctx.seed.map(|s| &ctx.rows[s]);
        let target = seed.and_then(ModelRow::score).map(|v| v - 0.01);
        let best = pit_rows(ctx)
            .into_iter()
            .map(|(i, _)| &ctx.rows[i])
            .filter(|m| m.score().zip(target).is_some_and(|(a, t)| a >= t))
            .filter(|m| m.params.is_some())
            .min_by(|a, b| a.params.cmp(&b.params).then(a.node.cmp(&b.node)));
        let r = reference(&task.dataset);
        let r_best = r.and_then(|r| {
            r.points
                .iter()
                .filter(|p| p.1 >= r.seed_metric - 0.01)
                .min_by_key(|p| p.2)
                .map(|p| (r, p))
        });
        t.row(vec![
            format!("`{}`", task.name),
            task.dataset.clone(),
            ctx.metric.name().to_string(),
            seed.map(|s| format!("`{}`", s.node)).unwrap_or("–".into()),
            opt_u(seed.and_then(|s| s.params)),
            opt_acc(seed.and_then(ModelRow::score)),
            best.map(|m| format!("`{}`", m.node))
                .unwrap_or_else(|| "none".into()),
            match (best.and_then(|m| m.params), seed.and_then(|s| s.params)) {
                (Some(p), Some(sp)) => format!("{} ({})", thousands(p), percent_change(p, sp)),
                _ => "–".into(),
            },
            opt_acc(best.and_then(ModelRow::score)),
            match r_best {
                Some((r, p)) => format!(
                    "{} {} → {} ({}, {})",
                    thousands(r.seed_params),
                    opt_acc(Some(r.seed_metric)),
                    thousands(p.2),
                    percent_change(p.2, r.seed_params),
                    opt_acc(Some(p.1))
                ),
                None => "–".into(),
            },
        ]);
    }
    let mut md = String::from("## Tasks\n\n");
    md.push_str("Each task's networks are compared only with each other: one section per task below, each opening with the table of `000` Chapter 6 for it.\n\n");
    md.push_str(&t.render());
    md.push('\n');
    md
}

/// Shifts every Markdown heading of `md` one level down (`## x` → `### x`), outside code.
pub(crate) fn demote(md: &str) -> String {
    let mut out = String::with_capacity(md.len() + 64);
    let mut fenced = false;
    for line in md.split_inclusive('\n') {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if !fenced && line.starts_with('#') {
            out.push('#');
        }
        out.push_str(line);
    }
    out
}

/// Renames the files of a task's sections to `<task>-<file>` and their links in `md`.
pub(crate) fn prefix_files(
    task: &str,
    folder: &str,
    md: String,
    files: Vec<(String, String)>,
) -> (String, Vec<(String, String)>) {
    let pre = crate::render::sanitize(task);
    let mut md = md;
    let mut renamed = Vec::with_capacity(files.len());
    for (f, text) in files {
        let new = format!("{pre}-{f}");
        md = md.replace(&format!("]({folder}/{f})"), &format!("]({folder}/{new})"));
        renamed.push((new, text));
    }
    (md, renamed)
}

#[cfg(test)]
mod tests;
