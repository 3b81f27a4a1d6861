//! The front sections of the report: per cost axis (parameters, MACs, weight bytes, latency)
//! a plot of the plotted networks (one series per method, sweeps joined in sweep order, the
//! computed Pareto front drawn), the front as a compact table, and the best network of each
//! method; then the precision plot (accuracy against weight bytes, one series per format
//! family) with its front and a per-family summary.

use crate::lineage::format_family;
use crate::model::ModelRow;
use crate::pareto;
use crate::render::{Ctx, opt_acc, parent_accuracy};
use crate::svg::{Scatter, Series};
use crate::table::{Align, Table, points_delta, thousands};
use serde_json::Value;
use std::collections::BTreeSet;

/// A cost axis of the Pareto fronts.
#[derive(Clone, Copy)]
pub(crate) struct Axis {
    /// One letter for the `front` column of the full tables.
    pub tag: &'static str,
    /// As in "accuracy vs …".
    pub name: &'static str,
    /// Column header of its values.
    pub column: &'static str,
    pub x_label: &'static str,
    pub file: &'static str,
    pub get: fn(&ModelRow) -> Option<f64>,
}

pub(crate) const AXES: [Axis; 4] = [
    Axis {
        tag: "P",
        name: "parameters",
        column: "params",
        x_label: "parameters (log scale)",
        file: "acc_vs_params.svg",
        get: |m| m.params.map(|v| v as f64),
    },
    Axis {
        tag: "M",
        name: "MACs",
        column: "MACs",
        x_label: "multiply-accumulates per inference (log scale)",
        file: "acc_vs_macs.svg",
        get: |m| m.macs.map(|v| v as f64),
    },
    Axis {
        tag: "B",
        name: "weight bytes",
        column: "weight bytes",
        x_label: "weight bytes, fp32 (log scale)",
        file: "acc_vs_weight_bytes.svg",
        get: |m| m.weight_bytes.map(|v| v as f64),
    },
    Axis {
        tag: "L",
        name: "latency",
        column: "latency ms",
        x_label: "latency in ms, batch 1 (log scale)",
        file: "acc_vs_latency.svg",
        get: |m| m.latency_ms,
    },
];

/// Accuracy within this of the seed's counts as keeping it (the "best per method" tables).
const KEEP: f64 = 0.01;

fn value(axis: &Axis, v: f64) -> String {
    if axis.tag == "L" {
        format!("{v:.3}")
    } else {
        thousands(v.round() as u64)
    }
}

/// Rows (indices) with a value on `get` and an accuracy among `set`.
fn measured(ctx: &Ctx, set: &[usize], get: fn(&ModelRow) -> Option<f64>) -> Vec<usize> {
    set.iter()
        .copied()
        .filter(|&i| get(&ctx.rows[i]).is_some() && ctx.rows[i].score().is_some())
        .collect()
}

/// The front of `idx` on (`get` ↓, accuracy ↑), as row indices in increasing cost.
fn front_of(ctx: &Ctx, idx: &[usize], get: fn(&ModelRow) -> Option<f64>) -> Vec<usize> {
    let pts: Vec<(f64, f64)> = idx
        .iter()
        .map(|&i| {
            let m = &ctx.rows[i];
            (get(m).unwrap_or(f64::NAN), m.score().unwrap_or(f64::NAN))
        })
        .collect();
    pareto::front(&pts).into_iter().map(|k| idx[k]).collect()
}

fn shown(ctx: &Ctx) -> Vec<usize> {
    (0..ctx.rows.len()).filter(|&i| ctx.shown[i]).collect()
}

/// Evaluations in precision formats (quantize rows), the first of equal labels only.
fn precision_rows(ctx: &Ctx) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    (0..ctx.rows.len())
        .filter(|&i| {
            matches!(ctx.rows[i].stage_kind.as_str(), "quantize" | "qat")
                && seen.insert(ctx.rows[i].label())
        })
        .collect()
}

fn weight_bytes(m: &ModelRow) -> Option<f64> {
    m.weight_bytes.map(|v| v as f64)
}

/// For each row, the tags of the fronts it is on (e.g. "P M B"; "Q" for the precision front).
pub(crate) fn marks(ctx: &Ctx) -> Vec<String> {
    let mut marks = vec![String::new(); ctx.rows.len()];
    let mut add = |i: usize, tag: &str| {
        let m: &mut String = &mut marks[i];
        if !m.is_empty() {
            m.push(' ');
        }
        m.push_str(tag);
    };
    let set = shown(ctx);
    for axis in AXES {
        for i in front_of(ctx, &measured(ctx, &set, axis.get), axis.get) {
            add(i, axis.tag);
        }
    }
    let prec = precision_rows(ctx);
    for i in front_of(ctx, &measured(ctx, &prec, weight_bytes), weight_bytes) {
        add(i, "Q");
    }
    marks
}

/// Sweep coordinates of a node name: `prune[method=l1,ratio=0.25]` → method, ratio.
fn coords(node: &str) -> Vec<(String, String)> {
    let Some((_, rest)) = node.split_once('[') else {
        return vec![];
    };
    rest.trim_end_matches(']')
        .split(',')
        .filter_map(|c| c.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Lines joining the points of one series that come from one sweep: per stage, along its
/// last numeric sweep coordinate that varies (other varying coordinates, the seed among them,
/// give separate lines), in sweep (node) order. Positions index `members`.
fn sweep_lines(ctx: &Ctx, members: &[usize]) -> Vec<Vec<usize>> {
    let stage = |i: usize| {
        let m = &ctx.rows[i];
        ctx.lineage
            .node(&m.node)
            .map(|n| n.stage.clone())
            .unwrap_or_else(|| m.node.split('[').next().unwrap_or(&m.node).to_string())
    };
    let mut stages: Vec<String> = Vec::new();
    for &i in members {
        let s = stage(i);
        if !stages.contains(&s) {
            stages.push(s);
        }
    }
    let mut lines = Vec::new();
    for s in stages {
        let pos: Vec<usize> = (0..members.len())
            .filter(|&p| stage(members[p]) == s)
            .collect();
        if pos.len() < 2 {
            continue;
        }
        let cs: Vec<Vec<(String, String)>> = pos
            .iter()
            .map(|&p| coords(&ctx.rows[members[p]].node))
            .collect();
        let get = |c: &[(String, String)], k: &str| {
            c.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone())
        };
        let keys: BTreeSet<String> = cs.iter().flatten().map(|(k, _)| k.clone()).collect();
        let varying: Vec<&String> = keys
            .iter()
            .filter(|k| {
                let vals: BTreeSet<Option<String>> = cs.iter().map(|c| get(c, k)).collect();
                vals.len() > 1
            })
            .collect();
        let Some(along) = varying
            .iter()
            .rev()
            .find(|k| {
                k.as_str() != "seed"
                    && cs
                        .iter()
                        .all(|c| get(c, k).is_some_and(|v| v.parse::<f64>().is_ok()))
            })
            .copied()
        else {
            continue;
        };
        let mut groups: Vec<(Vec<Option<String>>, Vec<usize>)> = Vec::new();
        for (c, &p) in cs.iter().zip(&pos) {
            let key: Vec<Option<String>> = varying
                .iter()
                .filter(|k| **k != along)
                .map(|k| get(c, k))
                .collect();
            match groups.iter_mut().find(|(g, _)| *g == key) {
                Some((_, v)) => v.push(p),
                None => groups.push((key, vec![p])),
            }
        }
        lines.extend(groups.into_iter().map(|(_, v)| v).filter(|v| v.len() > 1));
    }
    lines
}

/// Series of `idx` grouped by `group` (in order of first appearance), with sweep lines when
/// `join`.
fn series(
    ctx: &Ctx,
    idx: &[usize],
    x: fn(&ModelRow) -> Option<f64>,
    group: &dyn Fn(usize) -> String,
    join: bool,
) -> Vec<Series> {
    let mut names: Vec<String> = Vec::new();
    for &i in idx {
        let g = group(i);
        if !names.contains(&g) {
            names.push(g);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let members: Vec<usize> = idx.iter().copied().filter(|&i| group(i) == name).collect();
            let points = members
                .iter()
                .map(|&i| {
                    let m = &ctx.rows[i];
                    (
                        x(m).unwrap_or(f64::NAN),
                        100.0 * m.score().unwrap_or(f64::NAN),
                        m.label(),
                    )
                })
                .collect();
            let lines = if join {
                sweep_lines(ctx, &members)
            } else {
                vec![]
            };
            Series {
                name,
                points,
                lines,
                ..Default::default()
            }
        })
        .collect()
}

fn delta_vs_seed(ctx: &Ctx, m: &ModelRow) -> String {
    match (m.score(), ctx.seed_accuracy()) {
        (Some(a), Some(s)) => points_delta(a - s),
        _ => "–".into(),
    }
}

/// One section per cost axis with data; plots go to `files`.
pub(crate) fn sections(ctx: &Ctx, files: &mut Vec<(String, String)>) -> String {
    let set = shown(ctx);
    let mut md = String::new();
    let mut done: Vec<(&str, Vec<usize>, Vec<Pick>)> = Vec::new();
    for axis in AXES {
        let idx = measured(ctx, &set, axis.get);
        if idx.len() < 2 {
            continue;
        }
        if md.is_empty() {
            md.push_str("## Pareto fronts\n\n");
            md.push_str(&format!("Test {} against each cost of the networks a user would deploy: one series per method (a sweep's points joined in sweep order), the computed Pareto front dashed with its points ringed.", ctx.metric.name()));
            if let Some(s) = ctx.seed {
                md.push_str(&format!(
                    " Δ is against the seed network `{}` ({}).",
                    ctx.rows[s].node,
                    opt_acc(ctx.rows[s].score())
                ));
            }
            md.push_str("\n\n");
        }
        let notes = ctx
            .seed
            .filter(|s| idx.contains(s))
            .and_then(|s| {
                let m = &ctx.rows[s];
                Some((
                    (axis.get)(m)?,
                    100.0 * m.score()?,
                    format!("seed {}", m.node),
                ))
            })
            .into_iter()
            .collect();
        let plot = Scatter {
            title: format!(
                "{}: test {} vs {}",
                ctx.doc.provenance.experiment,
                ctx.metric.name(),
                axis.name
            ),
            x_label: axis.x_label.into(),
            y_label: format!("test {} (%)", ctx.metric.name()),
            log_x: true,
            series: series(ctx, &idx, axis.get, &|i| ctx.methods[i].clone(), true),
            y_bounds: Some((0.0, 100.0)),
            notes,
            ..Default::default()
        };
        files.push((axis.file.to_string(), plot.render()));
        let front = front_of(ctx, &idx, axis.get);
        md.push_str(&format!(
            "### {} vs {}\n\n![test {} vs {}]({}/{})\n\n",
            capital(ctx.metric.name()),
            axis.name,
            ctx.metric.name(),
            axis.name,
            ctx.folder,
            axis.file
        ));
        let chosen = picks(ctx, &axis, &idx, &front);
        // An axis proportional to an earlier one (fp32 weight bytes = 4 × parameters) picks
        // the same networks: say so instead of repeating the tables.
        if let Some((name, ..)) = done.iter().find(|(_, f, p)| *f == front && *p == chosen) {
            md.push_str(&format!(
                "Pareto front and best per method: the same networks as against {name}.\n\n"
            ));
            continue;
        }
        let mut t = Table::new(&[
            ("network", Align::Left),
            ("method", Align::Left),
            (axis.column, Align::Right),
            (ctx.metric.column(), Align::Right),
            ("Δ vs seed (pts)", Align::Right),
        ]);
        for &i in &front {
            let m = &ctx.rows[i];
            t.row(vec![
                format!("`{}`", m.label()),
                ctx.methods[i].clone(),
                (axis.get)(m).map(|v| value(&axis, v)).unwrap_or_default(),
                opt_acc(m.score()),
                delta_vs_seed(ctx, m),
            ]);
        }
        md.push_str(&format!(
            "Pareto front ({} of {} networks):\n\n{}\n",
            front.len(),
            idx.len(),
            t.render()
        ));
        md.push_str(&best_per_method(ctx, &axis, &chosen));
        done.push((axis.name, front, chosen));
    }
    md
}

/// Per method: how many networks, its most accurate one, its smallest one within [`KEEP`] of
/// the seed's accuracy, and how many of its networks are on the front.
type Pick = (String, usize, Option<usize>, Option<usize>, usize);

fn picks(ctx: &Ctx, axis: &Axis, idx: &[usize], front: &[usize]) -> Vec<Pick> {
    let mut methods: Vec<&str> = Vec::new();
    for &i in idx {
        if !methods.contains(&ctx.methods[i].as_str()) {
            methods.push(&ctx.methods[i]);
        }
    }
    let target = ctx.seed_accuracy().map(|a| a - KEEP);
    let acc = |i: usize| ctx.rows[i].score().unwrap_or(f64::NEG_INFINITY);
    let cost = |i: usize| (axis.get)(&ctx.rows[i]).unwrap_or(f64::INFINITY);
    methods
        .into_iter()
        .map(|meth| {
            let mine: Vec<usize> = idx
                .iter()
                .copied()
                .filter(|&i| ctx.methods[i] == meth)
                .collect();
            let best = mine.iter().copied().max_by(|&a, &b| {
                acc(a)
                    .total_cmp(&acc(b))
                    .then(cost(b).total_cmp(&cost(a)))
                    .then(b.cmp(&a))
            });
            let small = target.and_then(|t| {
                mine.iter()
                    .copied()
                    .filter(|&i| acc(i) >= t)
                    .min_by(|&a, &b| {
                        cost(a)
                            .total_cmp(&cost(b))
                            .then(acc(b).total_cmp(&acc(a)))
                            .then(a.cmp(&b))
                    })
            });
            let on = mine.iter().filter(|i| front.contains(i)).count();
            (meth.to_string(), mine.len(), best, small, on)
        })
        .collect()
}

fn best_per_method(ctx: &Ctx, axis: &Axis, picks: &[Pick]) -> String {
    let cell = |i: Option<usize>| -> (String, String) {
        match i {
            Some(i) => {
                let m = &ctx.rows[i];
                (
                    format!("`{}` {}", m.label(), opt_acc(m.score())),
                    (axis.get)(m).map(|v| value(axis, v)).unwrap_or_default(),
                )
            }
            None => ("–".into(), "–".into()),
        }
    };
    let keep = format!("smallest within {:.0} pt of the seed", 100.0 * KEEP);
    let mut t = Table::new(&[
        ("method", Align::Left),
        ("networks", Align::Right),
        ("most accurate", Align::Left),
        (axis.column, Align::Right),
        (&keep, Align::Left),
        (axis.column, Align::Right),
        ("on the front", Align::Right),
    ]);
    for (meth, n, best, small, on) in picks {
        let (b, bc) = cell(*best);
        let (s, sc) = cell(*small);
        t.row(vec![
            meth.clone(),
            n.to_string(),
            b,
            bc,
            s,
            sc,
            on.to_string(),
        ]);
    }
    format!("Best per method:\n\n{}\n", t.render())
}

/// Δ against the fp32 network: the stage's `delta_vs_fp32`, else against the parent's row.
fn delta_fp32(ctx: &Ctx, m: &ModelRow) -> Option<f64> {
    m.extra
        .get("delta_vs_fp32")
        .and_then(Value::as_f64)
        .or_else(|| Some(m.score()? - parent_accuracy(ctx.rows, m)?))
}

/// Weight bytes relative to the fp32 network of the same parent.
fn bytes_ratio(ctx: &Ctx, m: &ModelRow) -> Option<f64> {
    let p = m.parent.as_deref()?;
    let fp32 = ctx.rows.iter().find(|r| {
        r.format == "fp32"
            && (r.node == p || r.parent.as_deref() == Some(p))
            && r.weight_bytes.is_some()
    })?;
    Some(m.weight_bytes? as f64 / fp32.weight_bytes? as f64)
}

fn family_rank(format: &str) -> (u32, bool) {
    let qat = format.ends_with("+qat");
    let base = format.trim_end_matches("+qat");
    let rank = match base {
        "fp32" => 0,
        "fp16" => 1,
        "bf16" => 2,
        b if b.starts_with("float(") => 3,
        "int8" => 4,
        b if b.starts_with('w') => 100 - b[1..].parse::<u32>().unwrap_or(0).min(90),
        _ => 200,
    };
    (rank, qat)
}

/// The precision section: plot, front, per-family summary, the grid's picks.
pub(crate) fn precision(ctx: &Ctx, files: &mut Vec<(String, String)>) -> String {
    let idx = measured(ctx, &precision_rows(ctx), weight_bytes);
    if idx.len() < 2 {
        return String::new();
    }
    let family = |i: usize| format_family(&ctx.rows[i].format);
    // Families from the widest format to the narrowest (fp32, fp16, bf16, float(e,m), int8,
    // wK, each followed by its QAT variant), then any other.
    let mut idx = idx;
    idx.sort_by_key(|&i| (family_rank(&ctx.rows[i].format), i));
    let file = "acc_vs_weight_bytes_formats.svg";
    let plot = Scatter {
        title: format!(
            "{}: test {} vs weight bytes per precision format",
            ctx.doc.provenance.experiment,
            ctx.metric.name()
        ),
        x_label: "weight bytes (log scale)".into(),
        y_label: format!("test {} (%)", ctx.metric.name()),
        log_x: true,
        series: series(ctx, &idx, weight_bytes, &family, false),
        y_bounds: Some((0.0, 100.0)),
        ..Default::default()
    };
    files.push((file.to_string(), plot.render()));
    let mut md = format!(
        "## Precision formats\n\nEach quantized network evaluated in each format (weight-only formats keep fp32 activations), one series per format family, the front over all of them.\n\n![test {} vs weight bytes per format]({}/{file})\n\n",
        ctx.metric.name(),
        ctx.folder
    );
    let front = front_of(ctx, &idx, weight_bytes);
    let mut t = Table::new(&[
        ("network", Align::Left),
        ("format", Align::Left),
        ("weight bytes", Align::Right),
        (ctx.metric.column(), Align::Right),
        ("Δ vs fp32 (pts)", Align::Right),
    ]);
    for &i in &front {
        let m = &ctx.rows[i];
        t.row(vec![
            format!("`{}`", m.parent.as_deref().unwrap_or(&m.node)),
            m.format.clone(),
            m.weight_bytes.map(thousands).unwrap_or_default(),
            opt_acc(m.score()),
            delta_fp32(ctx, m)
                .map(points_delta)
                .unwrap_or_else(|| "–".into()),
        ]);
    }
    md.push_str(&format!(
        "Pareto front ({} of {} evaluations):\n\n{}\n",
        front.len(),
        idx.len(),
        t.render()
    ));
    let mut fams: Vec<String> = Vec::new();
    for &i in &idx {
        if !fams.contains(&family(i)) {
            fams.push(family(i));
        }
    }
    let mut t = Table::new(&[
        ("format family", Align::Left),
        ("evaluations", Align::Right),
        ("mean Δ vs fp32 (pts)", Align::Right),
        ("worst Δ (pts)", Align::Right),
        ("weight bytes vs fp32", Align::Right),
    ]);
    for f in fams {
        let mine: Vec<&ModelRow> = idx
            .iter()
            .filter(|&&i| family(i) == f)
            .map(|&i| &ctx.rows[i])
            .collect();
        let deltas: Vec<f64> = mine.iter().filter_map(|m| delta_fp32(ctx, m)).collect();
        let ratios: Vec<f64> = mine.iter().filter_map(|m| bytes_ratio(ctx, m)).collect();
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let (lo, hi) = ratios
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(a, b), &r| (a.min(r), b.max(r)));
        t.row(vec![
            f.clone(),
            mine.len().to_string(),
            mean(&deltas)
                .map(points_delta)
                .unwrap_or_else(|| "–".into()),
            deltas
                .iter()
                .copied()
                .reduce(f64::min)
                .map(points_delta)
                .unwrap_or_else(|| "–".into()),
            if ratios.is_empty() {
                "–".into()
            } else if hi - lo < 0.005 {
                format!("×{lo:.2}")
            } else {
                format!("×{lo:.2}–{hi:.2}")
            },
        ]);
    }
    md.push_str(&format!("Per format family:\n\n{}\n", t.render()));
    for m in ctx
        .rows
        .iter()
        .filter(|m| m.extra.get("best_format").and_then(Value::as_bool) == Some(true))
    {
        let budget = m
            .extra
            .get("budget_bytes")
            .and_then(Value::as_u64)
            .map(|b| format!(" within {} weight bytes", thousands(b)))
            .unwrap_or_default();
        md.push_str(&format!(
            "- Most accurate `float(w,t)` format of `{}`{budget}: {} — {}, {} weight bytes.\n",
            m.parent.as_deref().unwrap_or(&m.node),
            m.format,
            opt_acc(m.score()),
            m.weight_bytes.map(thousands).unwrap_or_else(|| "–".into())
        ));
    }
    if !md.ends_with("\n\n") {
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::coords;

    #[test]
    fn sweep_coordinates_of_node_names() {
        assert_eq!(
            coords("prune_ft[method=l1,ratio=0.25]"),
            vec![
                ("method".to_string(), "l1".to_string()),
                ("ratio".to_string(), "0.25".to_string())
            ]
        );
        assert!(coords("tcn").is_empty());
    }
}

/// `accuracy` → `Accuracy`, `AUC` stays.
fn capital(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}
