//! Renders a [`Document`] as `reports/<experiment>.md` plus the SVG plots beside it, to be
//! read top-down: summary (and warnings), the architecture study (error vs latency over seeds,
//! when there is one), one front plot per cost axis with a compact table of
//! its Pareto front and the best network of each method, the precision plot and tables, the
//! distillation comparison (mean ± std over seeds next to the no-KD twin), the latency model;
//! then the full tables, per-layer channel charts and the node list collapsed in `<details>`.
//! Deterministic: the same document gives byte-identical files.

use crate::lineage::Lineage;
use crate::model::{Document, ModelRow};
use crate::table::{Align, Table, percent, thousands};
use serde_json::Value;

/// The rendered report: the Markdown text and the files for `reports/<experiment>/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub markdown: String,
    /// (file name inside the report folder, contents)
    pub files: Vec<(String, String)>,
}

/// What every section needs: the rows, what produced each, which are plotted, the seed.
pub(crate) struct Ctx<'a> {
    pub doc: &'a Document,
    pub rows: &'a [ModelRow],
    pub lineage: Lineage<'a>,
    /// The method of each row (see [`Lineage::method`]).
    pub methods: Vec<String>,
    /// Rows drawn in the front plots and tables: fp32 networks of their own, without the
    /// search / prune outputs a `finetune` stage refines unless `show_intermediate`.
    pub shown: Vec<bool>,
    pub seed: Option<usize>,
    /// The report folder relative to the Markdown file, for image links.
    pub folder: &'a str,
    /// The task metric of the rows (accuracy, or AUC for anomaly detection).
    pub metric: crate::model::Metric,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(doc: &'a Document, folder: &'a str) -> Self {
        let lineage = Lineage::new(doc);
        let rows = &doc.models[..];
        let methods = rows.iter().map(|m| lineage.method(m)).collect();
        let shown = rows
            .iter()
            .map(|m| {
                lineage.deployable(m) || (doc.options.show_intermediate && lineage.intermediate(m))
            })
            .collect();
        Ctx {
            doc,
            rows,
            lineage,
            methods,
            shown,
            seed: seed_index(rows),
            folder,
            metric: crate::model::Metric::of(rows),
        }
    }

    /// Accuracy of the seed network.
    pub fn seed_accuracy(&self) -> Option<f64> {
        self.seed.and_then(|s| self.rows[s].score())
    }
}

/// A collapsed section: GitHub renders Markdown inside it when a blank line follows the
/// `<summary>`.
pub(crate) fn details(summary: &str, body: &str) -> String {
    format!(
        "<details>\n<summary>{summary}</summary>\n\n{}\n\n</details>\n\n",
        body.trim_end()
    )
}

pub(crate) fn opt_u(v: Option<u64>) -> String {
    v.map(thousands).unwrap_or_else(|| "–".into())
}

pub(crate) fn opt_acc(v: Option<f64>) -> String {
    v.map(percent).unwrap_or_else(|| "–".into())
}

pub(crate) fn opt_ms(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "–".into())
}

pub(crate) fn extra_str(m: &ModelRow, key: &str) -> String {
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
pub(crate) fn num_str(v: f64) -> String {
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

/// The seed network: the architecture row with the most searched / pruned children (a
/// network quantized or distilled from is not a seed by that alone), else the first one that
/// another row names as its parent, else the most accurate architecture row (the first of equals).
pub(crate) fn seed_index(rows: &[ModelRow]) -> Option<usize> {
    let trained: Vec<usize> = (0..rows.len())
        .filter(|&i| crate::full::table_of(&rows[i]) == crate::full::Axis2::Architecture)
        .collect();
    let children = |i: usize, derived_only: bool| {
        rows.iter()
            .filter(|r| r.parent.as_deref() == Some(rows[i].node.as_str()))
            .filter(|r| !derived_only || crate::full::table_of(r) == crate::full::Axis2::Derived)
            .count()
    };
    let most = trained
        .iter()
        .copied()
        .filter(|&i| children(i, true) > 0)
        .max_by(|&a, &b| children(a, true).cmp(&children(b, true)).then(b.cmp(&a)));
    let acc = |i: usize| rows[i].score().unwrap_or(f64::NEG_INFINITY);
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
pub(crate) fn parent_accuracy(rows: &[ModelRow], m: &ModelRow) -> Option<f64> {
    let p = m.parent.as_deref()?;
    rows.iter()
        .find(|r| r.node == p && r.format == "fp32")
        .and_then(|r| r.score())
}

/// The summary: the seed, the best network under each `[report]` constraint and the smallest
/// one reaching the seed's accuracy, among the networks a user would deploy (the plotted fp32
/// networks and their evaluations in precision formats).
fn summary(ctx: &Ctx, out: &mut String) {
    let doc = ctx.doc;
    let all = ctx.rows;
    out.push_str("## Summary\n\n");
    if all.is_empty() {
        out.push_str("No measured networks yet: no stage reported `models` in its metrics.\n\n");
        return;
    }
    let candidates: Vec<&ModelRow> = all
        .iter()
        .enumerate()
        .filter(|&(i, m)| ctx.shown[i] || m.stage_kind == "quantize")
        .map(|(_, m)| m)
        .collect();
    let rows = &candidates;
    let seed = ctx.seed;
    if let Some(s) = seed {
        let r = &all[s];
        out.push_str(&format!(
            "- **Seed network**: `{}` ({}) — {} parameters, {} MACs, test {} {}.\n",
            r.node,
            r.arch.clone().unwrap_or_default(),
            opt_u(r.params),
            opt_u(r.macs),
            ctx.metric.name(),
            opt_acc(r.score())
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
            .filter(|m| ok(m) && m.score().is_some())
            .max_by(|a, b| {
                a.score()
                    .unwrap_or(0.0)
                    .total_cmp(&b.score().unwrap_or(0.0))
                    .then(b.node.cmp(&a.node))
            });
        match best {
            Some(m) => out.push_str(&format!(
                "- **Best with {name}**: `{}` — {}, {} parameters, {} weight bytes.\n",
                m.label(),
                opt_acc(m.score()),
                opt_u(m.params),
                opt_u(m.weight_bytes)
            )),
            None => out.push_str(&format!(
                "- **Best with {name}**: no measured network meets it.\n"
            )),
        }
    }
    if let Some(s) = seed {
        let target = all[s].score().unwrap_or(f64::INFINITY);
        let smallest = rows
            .iter()
            .filter(|m| m.score().is_some_and(|a| a >= target) && m.weight_bytes.is_some())
            .min_by(|a, b| {
                a.weight_bytes
                    .cmp(&b.weight_bytes)
                    .then(a.params.cmp(&b.params))
                    .then(a.node.cmp(&b.node))
            });
        match smallest {
            Some(m) => out.push_str(&format!(
                "- **Smallest network reaching the seed's {}** ({}): `{}` — {} weight bytes, {} parameters, {}.\n",
                ctx.metric.name(),
                opt_acc(all[s].score()),
                m.label(),
                opt_u(m.weight_bytes),
                opt_u(m.params),
                opt_acc(m.score())
            )),
            None => out.push_str(&format!(
                "- No network reaches the seed's {}.\n",
                ctx.metric.name()
            )),
        }
    }
    let hidden = (0..all.len())
        .filter(|&i| !ctx.shown[i] && ctx.lineage.intermediate(&all[i]))
        .count();
    let shown = ctx.shown.iter().filter(|&&s| s).count();
    if hidden > 0 {
        out.push_str(&format!(
            "- **Plotted**: the {shown} networks a user would deploy; the {hidden} search / prune outputs that a `finetune` stage refines are left out of the plots and fronts (`show_intermediate = true` in `[report]` draws them too) and listed in the full tables.\n"
        ));
    } else if doc.options.show_intermediate
        && ctx
            .shown
            .iter()
            .zip(all)
            .any(|(&s, m)| s && ctx.lineage.intermediate(m))
    {
        out.push_str("- **Plotted**: every fp32 network, also the search / prune outputs before fine-tuning (`show_intermediate = true`).\n");
    }
    out.push('\n');
}

/// Renders the whole report. `folder` is the name of the report folder relative to the
/// Markdown file (e.g. `kws_pit`), used in image links.
pub fn render(doc: &Document, folder: &str) -> Rendered {
    let p = &doc.provenance;
    let mut md = format!("# {}\n\n", p.experiment);
    if !p.description.is_empty() {
        md.push_str(&format!("{}\n\n", p.description.trim()));
    }
    let mut files = Vec::new();
    if let Some(tasks) = crate::tasks::split(doc) {
        // several tasks: an overview, then every section per task, never across tasks
        let ctxs: Vec<_> = tasks
            .iter()
            .map(|t| (t, Ctx::new(&t.doc, folder)))
            .collect();
        md.push_str(&crate::tasks::overview(&ctxs));
        md.push_str(&crate::warnings::section(&doc.nodes));
        for (task, ctx) in &ctxs {
            md.push_str(&crate::tasks::heading(task));
            md.push_str(&crate::tasks::table(ctx));
            let mut body = String::new();
            let mut own = Vec::new();
            summary(ctx, &mut body);
            body.push_str(&sections(ctx, &mut own));
            let (body, own) =
                crate::tasks::prefix_files(&task.name, folder, crate::tasks::demote(&body), own);
            md.push_str(&body);
            files.extend(own);
        }
    } else {
        let ctx = Ctx::new(doc, folder);
        summary(&ctx, &mut md);
        md.push_str(&crate::warnings::section(&doc.nodes));
        md.push_str(&sections(&ctx, &mut files));
    }
    provenance(doc, &mut md);
    Rendered {
        markdown: md,
        files,
    }
}

/// Every section after the summary and warnings, for one task's networks.
fn sections(ctx: &Ctx, files: &mut Vec<(String, String)>) -> String {
    let mut md = String::new();
    md.push_str(&crate::arch::section(ctx, files));
    md.push_str(&crate::fronts::sections(ctx, files));
    md.push_str(&crate::fronts::precision(ctx, files));
    md.push_str(&crate::formats::section(ctx, files));
    md.push_str(&crate::laws::section(&ctx.doc.nodes, ctx.folder, files));
    md.push_str(&crate::distill::section(ctx));
    md.push_str(&crate::calibration::section(&ctx.doc.nodes));
    md.push_str(&crate::ladder::section(&ctx.doc.nodes, ctx.folder, files));
    md.push_str(&crate::shipped::section(ctx));
    md.push_str(&crate::full::sections(ctx));
    md.push_str(&crate::channels::section(ctx, files));
    md
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
        "- Experiment file: `{}` (blake3 `{}`), seed {}\n- Tool: whittle {}\n- Machine: {}\n",
        p.file, p.file_hash, p.seed, p.tool_version, p.machine
    ));
    if !p.executor.is_empty() {
        let mut jobs: Vec<&str> = p.jobs.values().map(String::as_str).collect();
        jobs.sort();
        jobs.dedup();
        md.push_str(&format!(
            "- Executor: {} ({} node(s) in job(s) {})\n",
            p.executor,
            p.jobs.len(),
            jobs.join(", ")
        ));
    }
    match &p.cpu {
        _ if p.executor == "slurm" => {
            md.push_str("- Run: CPU n/a (slurm: nodes ran in batch jobs)\n")
        }
        Some(c) => md.push_str(&format!(
            "- Run: {} in the last run that computed nodes\n",
            c.line()
        )),
        None => {}
    }
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
            match p.jobs.get(&n.node) {
                Some(j) => format!("{} (job {j})", n.state),
                None => n.state.clone(),
            },
            n.duration_s
                .map(|d| format!("{d:.1}"))
                .unwrap_or_else(|| "–".into()),
        ]);
    }
    md.push_str(&format!(
        "- Total stage time: {total:.1} s over {} nodes.\n\n",
        doc.nodes.len()
    ));
    md.push_str(&details(
        &format!("Nodes ({})", doc.nodes.len()),
        &t.render(),
    ));
}
