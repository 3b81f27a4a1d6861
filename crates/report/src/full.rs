//! The full tables of the report, each collapsed in a `<details>` section: every measured
//! network by axis (architectures, searched / pruned networks, precision formats,
//! distillation) with all its numbers and the fronts it is on, and the networks repeated over
//! seeds.

use crate::model::ModelRow;
use crate::render::{
    Ctx, details, extra_str, opt_acc, opt_ms, opt_u, parent_accuracy, without_seed,
};
use crate::table::{Align, Table, percent, points_delta};
use serde_json::Value;
use std::collections::BTreeMap;

/// The full tables, collapsed; the `front` column lists the fronts a network is on.
pub(crate) fn sections(ctx: &Ctx) -> String {
    let rows = ctx.rows;
    if rows.is_empty() {
        return String::new();
    }
    let marks = crate::fronts::marks(ctx);
    let mut md = String::from("## All networks\n\n");
    let pick = |f: &dyn Fn(&ModelRow) -> bool| -> Vec<(usize, &ModelRow)> {
        rows.iter().enumerate().filter(|(_, m)| f(m)).collect()
    };
    let front_note = format!(
        "`front` lists the Pareto fronts a network is on: {} ↑ against P = parameters, M = MACs, B = weight bytes, L = latency ↓ over the plotted networks, and Q = weight bytes over every precision format.",
        ctx.metric.name()
    );
    model_table(
        ctx,
        "Architectures",
        &format!("Networks trained from their configuration. {front_note}"),
        &pick(&|m| table_of(m) == Axis2::Architecture),
        &marks,
        &[],
        &mut md,
    );
    model_table(
        ctx,
        "Pruning and search methods",
        &format!(
            "Networks derived from a seed by architecture search or pruning, and their fine-tuned versions; Δ is against the network they were derived from. {front_note}"
        ),
        &pick(&|m| table_of(m) == Axis2::Derived),
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
        ctx,
        "Precision formats",
        &intro,
        &precision,
        &marks,
        &[],
        &mut md,
    );
    model_table(
        ctx,
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
        &marks,
        &["teacher", "temperature", "alpha"],
        &mut md,
    );
    seeds_table(rows, &mut md);
    md
}

/// Which table a row belongs to: precision (quantized evaluations), distillation (a teacher),
/// derived (pruned or searched from a parent network), or architecture (trained from its
/// configuration). Decided from the row, not the stage kind, so any stage (also a `command`)
/// that reports `models` lands in the right table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Axis2 {
    Architecture,
    Derived,
    Precision,
    Distillation,
}

pub(crate) fn table_of(m: &ModelRow) -> Axis2 {
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

fn model_table(
    ctx: &Ctx,
    title: &str,
    intro: &str,
    rows: &[(usize, &ModelRow)],
    marks: &[String],
    extra_cols: &[&str],
    out: &mut String,
) {
    let all = ctx.rows;
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
        (ctx.metric.column(), Align::Right),
        ("Δ vs parent (pts)", Align::Right),
        ("front", Align::Left),
    ]);
    let mut t = Table::new(&cols);
    for (i, m) in rows {
        let mut cells = vec![
            format!("`{}`", m.label()),
            if ctx.lineage.intermediate(m) {
                format!("{} (before fine-tuning)", ctx.methods[*i])
            } else {
                ctx.methods[*i].clone()
            },
            if is_best_format(m) {
                format!("{} ★", m.format)
            } else {
                m.format.clone()
            },
        ];
        cells.extend(extra_cols.iter().map(|c| extra_str(m, c)));
        let delta = match (m.score(), parent_accuracy(all, m)) {
            (Some(a), Some(p)) => points_delta(a - p),
            _ => "–".into(),
        };
        cells.extend([
            opt_u(m.params),
            opt_u(m.macs),
            opt_u(m.weight_bytes),
            opt_u(m.peak_activation_bytes),
            opt_ms(m.latency_ms),
            opt_acc(m.score()),
            delta,
            marks[*i].clone(),
        ]);
        t.row(cells);
    }
    let n = rows.len();
    out.push_str(&details(
        &format!("{title} ({n} row{})", if n == 1 { "" } else { "s" }),
        &format!("{intro}\n\n{}", t.render()),
    ));
}

/// True for the row a `float(*,*)` grid picked as its network's best format within budget.
fn is_best_format(m: &ModelRow) -> bool {
    m.extra.get("best_format").and_then(Value::as_bool) == Some(true)
}

#[cfg(test)]
#[test]
fn the_best_grid_format_is_starred_and_explained() {
    use crate::model::Document;
    use crate::render::render;
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

/// Networks trained under several seeds (a `seed` sweep): test accuracy as mean ± standard
/// deviation (sample, n − 1) over the seeds.
fn seeds_table(rows: &[ModelRow], md: &mut String) {
    let mut body = String::new();
    let mut groups: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for m in rows.iter().filter(|m| m.node.contains("seed=")) {
        if let Some(a) = m.score() {
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
    let mean = format!("{} mean", crate::model::Metric::of(rows).column());
    let mut t = Table::new(&[
        ("network", Align::Left),
        ("format", Align::Left),
        ("seeds", Align::Right),
        (mean.as_str(), Align::Right),
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
    body.push_str("Networks trained under several seeds (a `seed` sweep): test accuracy mean ± sample standard deviation.\n\n");
    body.push_str(&t.render());
    md.push_str(&details(
        &format!("Repeated over seeds ({} networks)", groups.len()),
        &body,
    ));
}
