//! The architecture section (`002` Fig. 3.20/3.21): the networks trained from their
//! configuration, grouped by architecture family (the `model.arch` the experiment wrote), size
//! (its other model keys) and squeeze-and-excitation, each group being one configuration repeated
//! over a `seed` sweep. Per group: test error (1 − accuracy) in fp32 and in every precision format
//! a `quantize` stage evaluated, and host latency, each as mean ± sample standard deviation over
//! the seeds; one plot per format of error against latency with both error bars, one colour and
//! marker per family (SE variants as outlines of the same marker), and the Pareto front of the
//! means (latency ↓, error ↓) drawn and listed.
//!
//! Shown only for an architecture study: at least two families each with a configuration
//! trained under two or more seeds (a single network per configuration has no spread to show;
//! the fronts section already plots it).

use crate::distill::mean_std;
use crate::full::{Axis2, table_of};
use crate::model::ModelRow;
use crate::pareto;
use crate::render::{Ctx, without_seed};
use crate::svg::{Scatter, Series};
use crate::table::{Align, Table, points_delta, thousands};
use serde_json::Value;

/// One configuration: the rows of its seeds.
#[derive(Debug)]
pub(crate) struct Group {
    /// The node name without its seed coordinate.
    pub key: String,
    /// `model.arch` as the experiment wrote it (e.g. `mnasnet`, which the stage builds as
    /// another layout), else the row's `arch`.
    pub family: String,
    /// The size keys of the model, e.g. `width 8, blocks 3`.
    pub size: String,
    /// The squeeze-and-excitation setting when on: `r = 2`, or `on` for a boolean.
    pub se: Option<String>,
    /// Row indices of the fp32 networks (one per seed).
    pub members: Vec<usize>,
}

/// Mean and sample standard deviation of `v` (None when empty).
pub(crate) type Stat = Option<(f64, f64, usize)>;

fn stat(v: &[f64]) -> Stat {
    (!v.is_empty()).then(|| {
        let (m, s) = mean_std(v);
        (m, s, v.len())
    })
}

/// Model keys that are not the size of a network.
const NOT_SIZE: [&str; 6] = ["arch", "se", "dropout", "layout", "input", "classes"];

/// The size label of a model table: its scalar keys but the non-size ones, in their order
/// (`alpha` is left out when a `layout` replaces it).
fn size_label(model: &serde_json::Map<String, Value>) -> String {
    let has_layout = model.get("layout").is_some_and(|v| !v.is_null());
    model
        .iter()
        .filter(|(k, _)| !(NOT_SIZE.contains(&k.as_str()) || has_layout && *k == "alpha"))
        .filter_map(|(k, v)| match v {
            Value::Number(n) => Some(format!("{k} {n}")),
            Value::String(s) => Some(format!("{k} {s}")),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn se_label(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Bool(true) => Some("on".into()),
        Value::Number(n) if n.as_f64().is_some_and(|r| r > 0.0) => Some(format!("r = {n}")),
        _ => None,
    }
}

/// A family's display name: `002`'s spelling for the known presets, else as written.
fn family_name(arch: &str) -> String {
    match arch {
        "wrn" => "WRN",
        "mobilenet_v1" => "MobileNetV1",
        "mobilenet_v2" => "MobileNetV2",
        "mnasnet" => "MnasNet",
        "shufflenet_v1" => "ShuffleNetV1",
        "shufflenet_v2" => "ShuffleNetV2",
        "resnet8" => "ResNet-8",
        "ds_cnn" => "DS-CNN",
        "tcn" => "TCN",
        "mcunet" => "MCUNet",
        a => a,
    }
    .to_string()
}

/// The groups of the document, in order of first appearance.
pub(crate) fn groups(ctx: &Ctx) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for (i, m) in ctx.rows.iter().enumerate() {
        if table_of(m) != Axis2::Architecture || !ctx.shown[i] {
            continue;
        }
        let key = without_seed(&m.node);
        if let Some(g) = out.iter_mut().find(|g| g.key == key) {
            g.members.push(i);
            continue;
        }
        let model = ctx
            .lineage
            .node(&m.node)
            .and_then(|n| n.params.get("model"))
            .and_then(Value::as_object);
        let family = model
            .and_then(|o| o.get("arch"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| m.arch.clone())
            .unwrap_or_else(|| "?".into());
        out.push(Group {
            key,
            family,
            size: model.map(size_label).unwrap_or_default(),
            se: se_label(model.and_then(|o| o.get("se"))),
            members: vec![i],
        });
    }
    out
}

/// True when the document is an architecture study (see the module comment).
fn is_study(groups: &[Group]) -> bool {
    let mut fams: Vec<&str> = groups
        .iter()
        .filter(|g| g.members.len() >= 2)
        .map(|g| g.family.as_str())
        .collect();
    fams.sort_unstable();
    fams.dedup();
    fams.len() >= 2
}

/// Per group: latency (ms) and error (0–1) in `format` (fp32: the networks' own rows; else the
/// `quantize` rows whose parent is a member).
fn measure(ctx: &Ctx, g: &Group, format: &str) -> (Stat, Stat) {
    let lat: Vec<f64> = g
        .members
        .iter()
        .filter_map(|&i| ctx.rows[i].latency_ms)
        .collect();
    let err: Vec<f64> = if format == "fp32" {
        g.members
            .iter()
            .filter_map(|&i| ctx.rows[i].score())
            .map(|a| 1.0 - a)
            .collect()
    } else {
        g.members
            .iter()
            .filter_map(|&i| {
                let node = &ctx.rows[i].node;
                ctx.rows.iter().find(|r| {
                    r.stage_kind == "quantize"
                        && r.format == format
                        && r.parent.as_deref() == Some(node.as_str())
                })
            })
            .filter_map(|r| r.score())
            .map(|a| 1.0 - a)
            .collect()
    };
    (stat(&lat), stat(&err))
}

/// The formats the groups were evaluated in: fp32, then the quantized ones in order of
/// appearance.
fn formats(ctx: &Ctx, groups: &[Group]) -> Vec<String> {
    let mut out = vec!["fp32".to_string()];
    for r in ctx.rows.iter().filter(|r| r.stage_kind == "quantize") {
        let member = groups.iter().any(|g| {
            g.members
                .iter()
                .any(|&i| r.parent.as_deref() == Some(ctx.rows[i].node.as_str()))
        });
        if member && !out.contains(&r.format) {
            out.push(r.format.clone());
        }
    }
    out
}

/// Indices of `groups` on the front of the means (latency ↓, error ↓).
pub(crate) fn front(points: &[(Stat, Stat)]) -> Vec<usize> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .map(|(l, e)| match (l, e) {
            (Some(l), Some(e)) => (l.0, -e.0),
            _ => (f64::NAN, f64::NAN),
        })
        .collect();
    pareto::front(&pts)
}

fn ms(s: &Stat) -> String {
    match s {
        Some((m, _, 1)) => format!("{m:.3}"),
        Some((m, sd, _)) => format!("{m:.3} ± {sd:.3}"),
        None => "–".into(),
    }
}

fn pct(s: &Stat) -> String {
    match s {
        Some((m, _, 1)) => format!("{:.1}", 100.0 * m),
        Some((m, sd, _)) => format!("{:.1} ± {:.1}", 100.0 * m, 100.0 * sd),
        None => "–".into(),
    }
}

fn label(g: &Group) -> String {
    let mut s = family_name(&g.family);
    if !g.size.is_empty() {
        s.push_str(&format!(" ({})", g.size));
    }
    if g.se.is_some() {
        s.push_str(" + SE");
    }
    s
}

fn file_name(format: &str) -> String {
    format!(
        "arch_error_vs_latency_{}.svg",
        crate::render::sanitize(format)
    )
}

/// The plot of one format: a series per family and SE setting, a family's sizes joined in
/// order of latency.
fn plot(ctx: &Ctx, groups: &[Group], stats: &[(Stat, Stat)], format: &str) -> Scatter {
    let mut fams: Vec<&str> = Vec::new();
    for g in groups {
        if !fams.contains(&g.family.as_str()) {
            fams.push(&g.family);
        }
    }
    let mut series = Vec::new();
    for (k, fam) in fams.iter().enumerate() {
        for se in [false, true] {
            let mut idx: Vec<usize> = (0..groups.len())
                .filter(|&i| groups[i].family == *fam && groups[i].se.is_some() == se)
                .filter(|&i| stats[i].0.is_some() && stats[i].1.is_some())
                .collect();
            if idx.is_empty() {
                continue;
            }
            let lat = |i: usize| stats[i].0.map_or(f64::NAN, |s| s.0);
            idx.sort_by(|&a, &b| lat(a).total_cmp(&lat(b)).then(a.cmp(&b)));
            let mut s = Series {
                name: format!("{}{}", family_name(fam), if se { " + SE" } else { "" }),
                style: Some(k),
                hollow: se,
                ..Default::default()
            };
            for &i in &idx {
                let (Some(l), Some(e)) = stats[i] else {
                    continue;
                };
                s.points.push((
                    l.0,
                    100.0 * e.0,
                    format!("{} (n = {})", label(&groups[i]), e.2),
                ));
                s.errors.push((l.1, 100.0 * e.1));
            }
            if s.points.len() > 1 {
                s.lines.push((0..s.points.len()).collect());
            }
            series.push(s);
        }
    }
    Scatter {
        title: format!(
            "{}: test error ({format}) vs host latency",
            ctx.doc.provenance.experiment
        ),
        x_label: "host latency in ms, batch 1 (log scale)".into(),
        y_label: format!("test error, {format} (%)"),
        log_x: true,
        series,
        y_bounds: Some((0.0, 100.0)),
        lower_is_better: true,
        ..Default::default()
    }
}

/// The section; its plots go to `files`. Empty unless the document is an architecture study.
pub(crate) fn section(ctx: &Ctx, files: &mut Vec<(String, String)>) -> String {
    let mut groups = groups(ctx);
    if !is_study(&groups) {
        return String::new();
    }
    // Family by family (first appearance), then by size (parameters), without SE first.
    let mut fams: Vec<String> = Vec::new();
    for g in &groups {
        if !fams.contains(&g.family) {
            fams.push(g.family.clone());
        }
    }
    groups.sort_by_cached_key(|g| {
        (
            fams.iter().position(|f| *f == g.family),
            g.se.is_some(),
            ctx.rows[g.members[0]].params,
            g.members[0],
        )
    });
    let formats = formats(ctx, &groups);
    let per_format: Vec<Vec<(Stat, Stat)>> = formats
        .iter()
        .map(|f| groups.iter().map(|g| measure(ctx, g, f)).collect())
        .collect();
    let fronts: Vec<Vec<usize>> = per_format.iter().map(|s| front(s)).collect();
    let seeds: Vec<usize> = groups.iter().map(|g| g.members.len()).collect();
    let (lo, hi) = (
        seeds.iter().min().copied().unwrap_or(0),
        seeds.iter().max().copied().unwrap_or(0),
    );
    let n_seeds = if lo == hi {
        format!("{lo}")
    } else {
        format!("{lo}–{hi}")
    };
    let mut md = format!(
        "## Architectures\n\n{} configurations ({} architecture families × sizes × squeeze-and-excitation), each trained under {n_seeds} seeds: test error (1 − accuracy) and host latency (batch 1, the fp32 network with batch norm folded, medians of the `calibrate` stage) as mean ± sample standard deviation over the seeds, as `002` Fig. 3.20/3.21. The Pareto front is that of the means (latency ↓, error ↓); SE variants are drawn as outlines of their family's marker, a family's sizes joined in order of latency.\n\n",
        groups.len(),
        {
            let mut f: Vec<&str> = groups.iter().map(|g| g.family.as_str()).collect();
            f.sort_unstable();
            f.dedup();
            f.len()
        }
    );
    for (k, f) in formats.iter().enumerate() {
        let plotted = per_format[k]
            .iter()
            .filter(|(l, e)| l.is_some() && e.is_some())
            .count();
        if plotted < 2 {
            continue;
        }
        let file = file_name(f);
        files.push((file.clone(), plot(ctx, &groups, &per_format[k], f).render()));
        md.push_str(&format!(
            "![test error ({f}) vs host latency]({}/{file})\n\n",
            ctx.folder
        ));
        let names: Vec<String> = fronts[k]
            .iter()
            .map(|&i| {
                let (l, e) = &per_format[k][i];
                format!("{} — {} ms, {} %", label(&groups[i]), ms(l), pct(e))
            })
            .collect();
        md.push_str(&format!(
            "Pareto front of the means, {f} ({} of {plotted}): {}.\n\n",
            names.len(),
            names.join("; ")
        ));
    }
    let mut cols: Vec<(String, Align)> = vec![
        ("architecture".into(), Align::Left),
        ("size".into(), Align::Left),
        ("SE".into(), Align::Left),
        ("seeds".into(), Align::Right),
        ("params".into(), Align::Right),
        ("MACs".into(), Align::Right),
        ("latency ms".into(), Align::Right),
    ];
    cols.extend(
        formats
            .iter()
            .map(|f| (format!("error % {f}"), Align::Right)),
    );
    cols.push(("on the front".into(), Align::Left));
    let header: Vec<(&str, Align)> = cols.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let mut t = Table::new(&header);
    for (i, g) in groups.iter().enumerate() {
        let first: &ModelRow = &ctx.rows[g.members[0]];
        let mut cells = vec![
            family_name(&g.family),
            if g.size.is_empty() {
                format!("`{}`", g.key)
            } else {
                g.size.clone()
            },
            g.se.clone().unwrap_or_else(|| "–".into()),
            g.members.len().to_string(),
            first.params.map(thousands).unwrap_or_else(|| "–".into()),
            first.macs.map(thousands).unwrap_or_else(|| "–".into()),
            ms(&per_format[0][i].0),
        ];
        cells.extend(per_format.iter().map(|s| pct(&s[i].1)));
        let on: Vec<&str> = formats
            .iter()
            .zip(&fronts)
            .filter(|(_, f)| f.contains(&i))
            .map(|(f, _)| f.as_str())
            .collect();
        cells.push(on.join(", "));
        t.row(cells);
    }
    md.push_str(&format!(
        "Error in points of percent (mean ± std); `on the front`: the formats in whose front (latency ↓, error ↓) the configuration is.\n\n{}\n",
        t.render()
    ));
    md.push_str(&se_effect(ctx, &groups, &per_format[0]));
    md
}

/// Squeeze-and-excitation against the same family and size without it: difference of the mean
/// fp32 errors and ratio of the mean latencies.
fn se_effect(ctx: &Ctx, groups: &[Group], stats: &[(Stat, Stat)]) -> String {
    let mut t = Table::new(&[
        ("architecture", Align::Left),
        ("size", Align::Left),
        ("Δ error fp32 (pts)", Align::Right),
        ("latency ×", Align::Right),
        ("params ×", Align::Right),
    ]);
    for (i, g) in groups.iter().enumerate().filter(|(_, g)| g.se.is_some()) {
        let Some(j) = groups
            .iter()
            .position(|b| b.se.is_none() && b.family == g.family && b.size == g.size)
        else {
            continue;
        };
        let d = match (stats[i].1, stats[j].1) {
            (Some(a), Some(b)) => points_delta(a.0 - b.0),
            _ => "–".into(),
        };
        let r = match (stats[i].0, stats[j].0) {
            (Some(a), Some(b)) if b.0 > 0.0 => format!("×{:.2}", a.0 / b.0),
            _ => "–".into(),
        };
        let p = match (
            ctx.rows[g.members[0]].params,
            ctx.rows[groups[j].members[0]].params,
        ) {
            (Some(a), Some(b)) if b > 0 => format!("×{:.2}", a as f64 / b as f64),
            _ => "–".into(),
        };
        t.row(vec![family_name(&g.family), g.size.clone(), d, r, p]);
    }
    if t.is_empty() {
        return String::new();
    }
    format!(
        "Squeeze-and-excitation against the same network without it (means over the seeds; Δ < 0: SE lowers the error):\n\n{}\n",
        t.render()
    )
}

#[cfg(test)]
mod tests {
    use crate::model::{Constraints, Document, NodeRecord, Provenance};
    use crate::render::render;
    use serde_json::{Value, json};

    fn node(name: &str, kind: &str, params: Value, models: Value) -> NodeRecord {
        NodeRecord {
            node: name.into(),
            stage: name.split('[').next().unwrap_or(name).into(),
            kind: kind.into(),
            key: "0123456789abcdef".into(),
            state: "ran".into(),
            params,
            metrics: json!({ "models": models }),
            duration_s: None,
            inputs: vec![],
        }
    }

    /// A configuration: stage, model, parameters, per seed (fp32 acc., int8 acc., latency ms).
    type Config<'a> = (&'a str, Value, u64, &'a [(f64, f64, f64)]);

    fn study(configs: &[Config]) -> Document {
        let mut nodes = Vec::new();
        let (mut quant, mut lat) = (Vec::new(), Vec::new());
        for (stage, model, params, seeds) in configs {
            for (s, (fp32, int8, ms)) in seeds.iter().enumerate() {
                let name = if seeds.len() > 1 {
                    format!("{stage}[seed={}]", s + 1)
                } else {
                    stage.to_string()
                };
                nodes.push(node(
                    &name,
                    "train",
                    json!({ "model": model, "seed": s + 1 }),
                    json!([{ "arch": model["arch"], "params": params, "test_accuracy": fp32 }]),
                ));
                quant.push(json!({ "parent": name, "format": "int8", "test_accuracy": int8 }));
                lat.push(json!({ "parent": name, "format": "fp32", "latency_ms": ms }));
            }
        }
        nodes.push(node("quant", "quantize", json!({}), Value::Array(quant)));
        nodes.push(node("latency", "calibrate", json!({}), Value::Array(lat)));
        let provenance = Provenance {
            experiment: "arch".into(),
            ..Default::default()
        };
        Document::new(provenance, Constraints::default(), nodes)
    }

    fn mbv2(se: bool) -> Value {
        json!({ "arch": "mobilenet_v2", "width": 8, "blocks": 3, "expand": 4, "se": se, "dropout": 0.2 })
    }

    fn wrn(se: u64) -> Value {
        json!({ "arch": "wrn", "depth": 10, "widen": 0.5, "se": se })
    }

    fn doc() -> Document {
        study(&[
            // error 18 ± 2 %, int8 19 ± 2 %, latency 0.110 ± 0.010 ms
            (
                "mbv2",
                mbv2(false),
                6298,
                &[(0.80, 0.79, 0.10), (0.84, 0.83, 0.12), (0.82, 0.81, 0.11)],
            ),
            // error (0.30, 0.30, 0.27): 29 % ± sqrt((1 + 1 + 4)e-4 / 2) = 1.73 pts; 0.050 ms
            (
                "wrn_se",
                wrn(2),
                20870,
                &[(0.70, 0.70, 0.05), (0.70, 0.70, 0.05), (0.73, 0.73, 0.05)],
            ),
            // slower than mbv2 and less accurate: dominated
            (
                "mnas",
                json!({ "arch": "mnasnet", "width": 8, "blocks": 3, "expand": 4, "se": 0 }),
                7178,
                &[(0.74, 0.74, 0.20), (0.76, 0.76, 0.20)],
            ),
            // the fastest: on the front although the least accurate
            (
                "wrn",
                wrn(0),
                20794,
                &[(0.60, 0.60, 0.04), (0.60, 0.60, 0.04)],
            ),
        ])
    }

    #[test]
    fn groups_aggregate_over_seeds_with_sample_std() {
        let r = render(&doc(), "r");
        let md = &r.markdown;
        assert!(md.contains("## Architectures"), "{md}");
        assert!(
            md.contains(
                "| MobileNetV2 | width 8, blocks 3, expand 4 | – | 3 | 6,298 | – | 0.110 ± 0.010 | 18.0 ± 2.0 | 19.0 ± 2.0 | fp32, int8 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| WRN | depth 10, widen 0.5 | r = 2 | 3 | 20,870 | – | 0.050 ± 0.000 | 29.0 ± 1.7 | 29.0 ± 1.7 | fp32, int8 |"),
            "{md}"
        );
        assert!(
            md.contains("| MnasNet | width 8, blocks 3, expand 4 | – | 2 | 7,178 | – | 0.200 ± 0.000 | 25.0 ± 1.4 | 25.0 ± 1.4 |  |"),
            "dominated by MobileNetV2 (faster and more accurate): {md}"
        );
        // WRN rows: without SE first (same family, then SE off before on).
        let plain = md.find("| WRN | depth 10, widen 0.5 | – |").unwrap();
        let se = md.find("| WRN | depth 10, widen 0.5 | r = 2 |").unwrap();
        assert!(plain < se);
        assert!(md.contains("| WRN | depth 10, widen 0.5 | – | 2 | 20,794 | – | 0.040 ± 0.000 | 40.0 ± 0.0 | 40.0 ± 0.0 | fp32, int8 |"), "{md}");
        assert!(md.contains(
            "Pareto front of the means, int8 (3 of 4): WRN (depth 10, widen 0.5) — 0.040 ± 0.000 ms, 40.0 ± 0.0 %; WRN (depth 10, widen 0.5) + SE — 0.050 ± 0.000 ms, 29.0 ± 1.7 %; MobileNetV2 (width 8, blocks 3, expand 4) — 0.110 ± 0.010 ms, 19.0 ± 2.0 %."
        ), "{md}");
        // SE effect: WRN with SE 29 % vs 40 %, latency 0.05 / 0.04, params 20870 / 20794.
        assert!(
            md.contains("| WRN | depth 10, widen 0.5 | −11.00 | ×1.25 | ×1.00 |"),
            "{md}"
        );
        let names: Vec<&str> = r.files.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.contains(&"arch_error_vs_latency_fp32.svg"),
            "{names:?}"
        );
        assert!(
            names.contains(&"arch_error_vs_latency_int8.svg"),
            "{names:?}"
        );
    }

    #[test]
    fn the_plot_has_error_bars_hollow_se_markers_and_the_front_of_the_means() {
        let r = render(&doc(), "r");
        let svg = &r
            .files
            .iter()
            .find(|(n, _)| n == "arch_error_vs_latency_int8.svg")
            .unwrap()
            .1;
        assert_eq!(
            svg.matches("class=\"series\"").count(),
            4,
            "MobileNetV2, MnasNet, WRN, WRN + SE: {svg}"
        );
        // y bars where the std is > 0: MobileNetV2, WRN + SE, MnasNet; x bars: MobileNetV2.
        assert_eq!(svg.matches("class=\"error-bar\"").count(), 4, "{svg}");
        assert_eq!(
            svg.matches("r=\"7.5\"").count(),
            3,
            "three front points ringed"
        );
        assert!(
            svg.contains("fill=\"white\" stroke="),
            "the SE variant is an outline"
        );
        assert!(svg.contains("WRN + SE (1)"));
    }

    #[test]
    fn absent_without_two_families_over_seeds() {
        // One family over seeds, another trained once (like kws_pit's students and DS-CNN).
        let d = study(&[
            (
                "mbv2",
                mbv2(false),
                6298,
                &[(0.80, 0.79, 0.10), (0.84, 0.83, 0.12)],
            ),
            ("wrn", wrn(0), 20794, &[(0.60, 0.60, 0.04)]),
        ]);
        let r = render(&d, "r");
        assert!(!r.markdown.contains("## Architectures"));
        assert!(!r.files.iter().any(|(n, _)| n.starts_with("arch_")));
    }

    #[test]
    fn size_and_se_labels() {
        let m = json!({ "arch": "mobilenet_v1", "alpha": 0.25, "layout": "cifar", "width": 16, "blocks": 3, "se": 2 });
        assert_eq!(
            super::size_label(m.as_object().unwrap()),
            "width 16, blocks 3"
        );
        let m = json!({ "arch": "mobilenet_v1", "alpha": 0.5 });
        assert_eq!(super::size_label(m.as_object().unwrap()), "alpha 0.5");
        assert_eq!(super::se_label(Some(&json!(true))).as_deref(), Some("on"));
        assert_eq!(super::se_label(Some(&json!(2))).as_deref(), Some("r = 2"));
        assert_eq!(super::se_label(Some(&json!(0))), None);
        assert_eq!(super::se_label(Some(&json!(false))), None);
        assert_eq!(super::se_label(None), None);
    }
}
