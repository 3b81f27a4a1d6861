//! The distillation section: each student configuration (a distilled network, its `seed`
//! sweep coordinate removed) with its test accuracy as mean ± sample standard deviation over
//! the seeds, its teacher, and the no-KD twin (the same architecture and size trained without a
//! teacher, also over its seeds) with the difference of the means.

use crate::model::ModelRow;
use crate::render::{Ctx, without_seed};
use crate::table::{Align, Table, percent, points_delta, thousands};

/// Mean and sample standard deviation (n − 1; 0 for one value).
pub(crate) fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = if v.len() > 1 {
        (v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, std)
}

fn cell(v: &[f64]) -> String {
    match v.len() {
        0 => "–".into(),
        1 => percent(v[0]),
        n => {
            let (m, s) = mean_std(v);
            format!("{} ± {:.2} (n = {n})", percent(m), 100.0 * s)
        }
    }
}

/// Groups of rows by node name without its seed, in order of first appearance.
fn groups<'a>(rows: impl Iterator<Item = &'a ModelRow>) -> Vec<(String, Vec<&'a ModelRow>)> {
    let mut out: Vec<(String, Vec<&ModelRow>)> = Vec::new();
    for m in rows {
        let k = without_seed(&m.node);
        match out.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(m),
            None => out.push((k, vec![m])),
        }
    }
    out
}

fn accs(v: &[&ModelRow]) -> Vec<f64> {
    v.iter().filter_map(|m| m.score()).collect()
}

pub(crate) fn section(ctx: &Ctx) -> String {
    let fp32 = |m: &&ModelRow| m.format == "fp32" && m.stage_kind != "quantize";
    let students = groups(
        ctx.rows
            .iter()
            .filter(fp32)
            .filter(|m| m.teacher.is_some() || m.stage_kind == "distill"),
    );
    if students.is_empty() {
        return String::new();
    }
    let plain = groups(
        ctx.rows
            .iter()
            .filter(fp32)
            .filter(|m| m.teacher.is_none() && m.stage_kind == "train"),
    );
    let mut t = Table::new(&[
        ("student", Align::Left),
        ("teacher (test acc.)", Align::Left),
        ("params", Align::Right),
        ("with KD", Align::Right),
        ("no-KD twin", Align::Left),
        ("without KD", Align::Right),
        ("Δ KD − no KD (pts)", Align::Right),
    ]);
    for (name, rows) in &students {
        let first = rows[0];
        let teachers: Vec<String> =
            rows.iter()
                .filter_map(|m| m.teacher.clone())
                .fold(Vec::new(), |mut v, t| {
                    if !v.contains(&t) {
                        v.push(t);
                    }
                    v
                });
        let teacher = teachers
            .first()
            .map(|t| {
                let acc: Vec<f64> = ctx
                    .rows
                    .iter()
                    .filter(|r| r.format == "fp32" && teachers.contains(&r.node))
                    .filter_map(|r| r.score())
                    .collect();
                let (m, _) = mean_std(&acc);
                format!(
                    "`{}`{}",
                    without_seed(t),
                    if acc.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", percent(m))
                    }
                )
            })
            .unwrap_or_else(|| "–".into());
        let twin = plain.iter().find(|(_, v)| {
            v[0].arch == first.arch && v[0].params == first.params && v[0].params.is_some()
        });
        let kd = accs(rows);
        let (twin_name, twin_acc, delta) = match twin {
            Some((n, v)) => {
                let a = accs(v);
                let d = if kd.is_empty() || a.is_empty() {
                    "–".into()
                } else {
                    points_delta(mean_std(&kd).0 - mean_std(&a).0)
                };
                (format!("`{n}`"), cell(&a), d)
            }
            None => ("–".into(), "–".into(), "–".into()),
        };
        t.row(vec![
            format!("`{name}`"),
            teacher,
            first.params.map(thousands).unwrap_or_else(|| "–".into()),
            cell(&kd),
            twin_name,
            twin_acc,
            delta,
        ]);
    }
    format!(
        "## Distillation\n\nEach student configuration trained with knowledge distillation next to its no-KD twin (the same architecture and size trained without a teacher): test accuracy as mean ± sample standard deviation (points) over the seeds.\n\n{}\n",
        t.render()
    )
}

#[cfg(test)]
mod tests {
    use super::mean_std;

    #[test]
    fn sample_standard_deviation() {
        let (m, s) = mean_std(&[0.80, 0.84, 0.82]);
        assert!((m - 0.82).abs() < 1e-12);
        assert!((s - 0.02).abs() < 1e-12, "sqrt((0.0004 + 0.0004) / 2)");
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
    }
}
