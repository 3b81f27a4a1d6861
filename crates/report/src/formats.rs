//! `004`'s view of precision after training (its Fig. 5): when networks are evaluated over a
//! grid of reduced floats T(w,t), the test metric against weight bytes (log axis) for fp32,
//! half (fp16 = T(5,10)), T(4,3), and each network's best format — the fewest weight bytes
//! within one point of its own fp32 metric — with the front of each series; and a table of the
//! best format per network.

use crate::model::ModelRow;
use crate::render::{Ctx, opt_acc, opt_u};
use crate::svg::{Scatter, Series};
use crate::table::{Align, Table, points_delta};
use std::collections::BTreeMap;

/// Tolerance of "best format": the fewest bytes within this of the network's fp32 metric.
const WITHIN: f64 = 0.01;

/// Networks with at least this many reduced-float evaluations get the view.
const GRID: usize = 8;

fn is_reduced_float(format: &str) -> bool {
    format.starts_with("float(") || format == "fp16" || format == "bf16"
}

/// Per evaluated network (a quantize row's parent): its rows in every format.
fn by_network<'a>(ctx: &'a Ctx) -> BTreeMap<&'a str, Vec<&'a ModelRow>> {
    let mut out: BTreeMap<&str, Vec<&ModelRow>> = BTreeMap::new();
    for m in ctx.rows.iter().filter(|m| m.stage_kind == "quantize") {
        if let Some(p) = m.parent.as_deref() {
            let v = out.entry(p).or_default();
            if !v.iter().any(|r| r.format == m.format) {
                v.push(m);
            }
        }
    }
    out.retain(|_, v| v.iter().filter(|r| is_reduced_float(&r.format)).count() >= GRID);
    out
}

/// The best format of one network: fewest weight bytes within [`WITHIN`] of its fp32 metric
/// (ties: the higher metric, then the name).
pub(crate) fn best<'a>(rows: &[&'a ModelRow]) -> Option<&'a ModelRow> {
    let fp32 = rows.iter().find(|r| r.format == "fp32")?.score()?;
    rows.iter()
        .copied()
        .filter(|r| r.format == "fp32" || is_reduced_float(&r.format))
        .filter(|r| r.score().is_some_and(|s| s >= fp32 - WITHIN) && r.weight_bytes.is_some())
        .min_by(|a, b| {
            a.weight_bytes
                .cmp(&b.weight_bytes)
                .then(
                    b.score()
                        .unwrap_or(0.0)
                        .total_cmp(&a.score().unwrap_or(0.0)),
                )
                .then(a.format.cmp(&b.format))
        })
}

pub(crate) fn section(ctx: &Ctx, files: &mut Vec<(String, String)>) -> String {
    let nets = by_network(ctx);
    if nets.is_empty() {
        return String::new();
    }
    let point = |m: &ModelRow, label: String| -> Option<(f64, f64, String)> {
        Some((m.weight_bytes? as f64, 100.0 * m.score()?, label))
    };
    let mut series: Vec<Series> = Vec::new();
    for (name, format) in [("fp32", "fp32"), ("half", "fp16"), ("T(4,3)", "float(4,3)")] {
        let points: Vec<_> = nets
            .iter()
            .filter_map(|(n, rows)| {
                let r = rows.iter().find(|r| r.format == format)?;
                point(r, format!("{n} @ {format}"))
            })
            .collect();
        if !points.is_empty() {
            series.push(Series {
                name: name.into(),
                points,
                ..Default::default()
            });
        }
    }
    let bests: Vec<(&str, &ModelRow)> = nets
        .iter()
        .filter_map(|(n, rows)| Some((*n, best(rows)?)))
        .collect();
    series.push(Series {
        name: "best format per network".into(),
        points: bests
            .iter()
            .filter_map(|(n, r)| point(r, format!("{n} @ {}", r.format)))
            .collect(),
        ..Default::default()
    });
    let file = "acc_vs_weight_bytes_004.svg";
    let plot = Scatter {
        title: format!(
            "{}: test {} vs weight bytes, fp32 / half / T(4,3) / best format",
            ctx.doc.provenance.experiment,
            ctx.metric.name()
        ),
        x_label: "weight bytes (log scale)".into(),
        y_label: format!("test {} (%)", ctx.metric.name()),
        log_x: true,
        series,
        y_bounds: Some((0.0, 100.0)),
        ..Default::default()
    };
    files.push((file.to_string(), plot.render()));
    let mut md = format!(
        "## Precision after training (`004` Fig. 5)\n\n{} evaluated in at least {} reduced-float formats (fp16, bf16, T(w,t)). A network's best format is the reduced float (or fp32) with the fewest weight bytes within {} point of its own fp32 {}.\n\n![test {} vs weight bytes per format series]({}/{file})\n\n",
        match nets.len() {
            1 => "One network".to_string(),
            n => format!("{n} networks"),
        },
        nets.values()
            .map(|v| v.iter().filter(|r| is_reduced_float(&r.format)).count())
            .min()
            .unwrap_or(0),
        100.0 * WITHIN,
        ctx.metric.name(),
        ctx.metric.name(),
        ctx.folder
    );
    let mut t = Table::new(&[
        ("network", Align::Left),
        ("fp32", Align::Right),
        ("fp32 bytes", Align::Right),
        ("best format", Align::Left),
        ("bits / param", Align::Right),
        ("bytes", Align::Right),
        (ctx.metric.column(), Align::Right),
        ("Δ vs fp32 (pts)", Align::Right),
    ]);
    for (n, b) in &bests {
        let rows = &nets[n];
        let fp32 = rows.iter().find(|r| r.format == "fp32");
        t.row(vec![
            format!("`{n}`"),
            opt_acc(fp32.and_then(|r| r.score())),
            opt_u(fp32.and_then(|r| r.weight_bytes)),
            format!("`{}`", b.format),
            match (b.weight_bytes, b.params) {
                (Some(w), Some(p)) if p > 0 => format!("{:.1}", 8.0 * w as f64 / p as f64),
                _ => "–".into(),
            },
            opt_u(b.weight_bytes),
            opt_acc(b.score()),
            match (b.score(), fp32.and_then(|r| r.score())) {
                (Some(a), Some(f)) => points_delta(a - f),
                _ => "–".into(),
            },
        ]);
    }
    md.push_str(&t.render());
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(format: &str, bytes: u64, acc: f64) -> ModelRow {
        ModelRow {
            node: "q".into(),
            stage_kind: "quantize".into(),
            format: format.into(),
            params: Some(100),
            weight_bytes: Some(bytes),
            test_accuracy: Some(acc),
            parent: Some("net".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_best_format_is_the_smallest_within_one_point_of_fp32() {
        let rows = [
            row("fp32", 400, 0.90),
            row("fp16", 200, 0.905),
            row("float(4,3)", 100, 0.891), // within 1 point (0.9 − 0.01 = 0.89)
            row("float(3,2)", 75, 0.80),
            row("float(2,5)", 100, 0.895), // same bytes, higher: preferred
            row("w4", 50, 0.90),           // not a float format
        ];
        let refs: Vec<&ModelRow> = rows.iter().collect();
        assert_eq!(best(&refs).unwrap().format, "float(2,5)");
        let refs: Vec<&ModelRow> = rows[..4].iter().collect();
        assert_eq!(best(&refs).unwrap().format, "float(4,3)");
        let refs: Vec<&ModelRow> = rows[1..5].iter().collect();
        assert!(best(&refs).is_none(), "no fp32 row, no reference");
    }
}
