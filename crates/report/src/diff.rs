//! `whittle diff A B`: which parameters differ (per node, old → new), which measured numbers
//! changed (with deltas), and how the Pareto fronts moved (points added, removed, and old
//! front points now dominated), as Markdown or JSON.

use crate::model::{Document, ModelRow};
use crate::pareto;
use crate::table::{Align, Table, escape};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ParamChange {
    pub node: String,
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricChange {
    /// Network label (node, plus format when not fp32).
    pub network: String,
    pub metric: String,
    pub old: Option<f64>,
    pub new: Option<f64>,
    pub delta: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FrontChange {
    pub axis: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Old front points that a point of the new front dominates.
    pub dominated: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Diff {
    pub a: String,
    pub b: String,
    pub nodes_only_in_a: Vec<String>,
    pub nodes_only_in_b: Vec<String>,
    pub params: Vec<ParamChange>,
    pub metrics: Vec<MetricChange>,
    pub fronts: Vec<FrontChange>,
}

/// Flattens JSON into dotted paths → leaf values (arrays are leaves).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

fn metrics_of(m: &ModelRow) -> [(&'static str, Option<f64>); 6] {
    [
        ("test_accuracy", m.score()),
        ("params", m.params.map(|v| v as f64)),
        ("macs", m.macs.map(|v| v as f64)),
        ("weight_bytes", m.weight_bytes.map(|v| v as f64)),
        (
            "peak_activation_bytes",
            m.peak_activation_bytes.map(|v| v as f64),
        ),
        ("latency_ms", m.latency_ms),
    ]
}

fn front_labels(rows: &[ModelRow], get: fn(&ModelRow) -> Option<f64>) -> Vec<(String, (f64, f64))> {
    let pts: Vec<(String, (f64, f64))> = rows
        .iter()
        .filter_map(|m| Some((m.label(), (get(m)?, m.score()?))))
        .collect();
    let coords: Vec<(f64, f64)> = pts.iter().map(|p| p.1).collect();
    pareto::front(&coords)
        .into_iter()
        .map(|i| pts[i].clone())
        .collect()
}

/// Compares two documents.
pub fn diff(a_name: &str, a: &Document, b_name: &str, b: &Document) -> Diff {
    let an: BTreeMap<&str, &Value> = a
        .nodes
        .iter()
        .map(|n| (n.node.as_str(), &n.params))
        .collect();
    let bn: BTreeMap<&str, &Value> = b
        .nodes
        .iter()
        .map(|n| (n.node.as_str(), &n.params))
        .collect();
    let mut params = Vec::new();
    for (node, pa) in &an {
        let Some(pb) = bn.get(node) else { continue };
        let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
        flatten("", pa, &mut fa);
        flatten("", pb, &mut fb);
        let keys: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
        for k in keys {
            let (x, y) = (fa.get(k), fb.get(k));
            if x != y {
                params.push(ParamChange {
                    node: node.to_string(),
                    path: k.clone(),
                    old: x.cloned(),
                    new: y.cloned(),
                });
            }
        }
    }
    let am: BTreeMap<String, &ModelRow> = a.models.iter().map(|m| (m.label(), m)).collect();
    let bm: BTreeMap<String, &ModelRow> = b.models.iter().map(|m| (m.label(), m)).collect();
    let mut metrics = Vec::new();
    let labels: BTreeSet<&String> = am.keys().chain(bm.keys()).collect();
    for l in labels {
        let ma = am.get(l).map(|m| metrics_of(m));
        let mb = bm.get(l).map(|m| metrics_of(m));
        for i in 0..6 {
            let name = ma
                .as_ref()
                .or(mb.as_ref())
                .map(|m| m[i].0)
                .unwrap_or_default();
            let x = ma.as_ref().and_then(|m| m[i].1);
            let y = mb.as_ref().and_then(|m| m[i].1);
            if x != y {
                let delta = match (x, y) {
                    (Some(x), Some(y)) => Some(y - x),
                    _ => None,
                };
                metrics.push(MetricChange {
                    network: l.clone(),
                    metric: name.to_string(),
                    old: x,
                    new: y,
                    delta,
                });
            }
        }
    }
    let axes: [(&str, fn(&ModelRow) -> Option<f64>); 4] = [
        ("params", |m| m.params.map(|v| v as f64)),
        ("macs", |m| m.macs.map(|v| v as f64)),
        ("weight_bytes", |m| m.weight_bytes.map(|v| v as f64)),
        ("latency_ms", |m| m.latency_ms),
    ];
    let mut fronts = Vec::new();
    for (axis, get) in axes {
        let fa = front_labels(&a.models, get);
        let fb = front_labels(&b.models, get);
        let sa: BTreeSet<&String> = fa.iter().map(|p| &p.0).collect();
        let sb: BTreeSet<&String> = fb.iter().map(|p| &p.0).collect();
        let added: Vec<String> = sb.difference(&sa).map(|s| s.to_string()).collect();
        let removed: Vec<String> = sa.difference(&sb).map(|s| s.to_string()).collect();
        let dominated: Vec<String> = fa
            .iter()
            .filter(|(_, p)| fb.iter().any(|(_, q)| pareto::dominates(*q, *p)))
            .map(|(l, _)| l.clone())
            .collect();
        if !(added.is_empty() && removed.is_empty() && dominated.is_empty()) {
            fronts.push(FrontChange {
                axis: axis.to_string(),
                added,
                removed,
                dominated,
            });
        }
    }
    Diff {
        a: a_name.to_string(),
        b: b_name.to_string(),
        nodes_only_in_a: an
            .keys()
            .filter(|k| !bn.contains_key(*k))
            .map(|s| s.to_string())
            .collect(),
        nodes_only_in_b: bn
            .keys()
            .filter(|k| !an.contains_key(*k))
            .map(|s| s.to_string())
            .collect(),
        params,
        metrics,
        fronts,
    }
}

fn show(v: &Option<Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => format!("{x:.4}"),
    }
}

impl Diff {
    pub fn to_markdown(&self) -> String {
        let mut s = format!("# diff: `{}` → `{}`\n\n", escape(&self.a), escape(&self.b));
        if !self.nodes_only_in_a.is_empty() || !self.nodes_only_in_b.is_empty() {
            s.push_str("## Nodes\n\n");
            for n in &self.nodes_only_in_a {
                s.push_str(&format!("- only in A: `{n}`\n"));
            }
            for n in &self.nodes_only_in_b {
                s.push_str(&format!("- only in B: `{n}`\n"));
            }
            s.push('\n');
        }
        s.push_str("## Parameters\n\n");
        if self.params.is_empty() {
            s.push_str("No parameter of a shared node differs.\n\n");
        } else {
            let mut t = Table::new(&[
                ("node", Align::Left),
                ("parameter", Align::Left),
                ("A", Align::Left),
                ("B", Align::Left),
            ]);
            for p in &self.params {
                t.row(vec![
                    format!("`{}`", p.node),
                    p.path.clone(),
                    show(&p.old),
                    show(&p.new),
                ]);
            }
            s.push_str(&t.render());
            s.push('\n');
        }
        s.push_str("## Metrics\n\n");
        if self.metrics.is_empty() {
            s.push_str("No measured number differs.\n\n");
        } else {
            let mut t = Table::new(&[
                ("network", Align::Left),
                ("metric", Align::Left),
                ("A", Align::Right),
                ("B", Align::Right),
                ("Δ", Align::Right),
            ]);
            for m in &self.metrics {
                t.row(vec![
                    format!("`{}`", m.network),
                    m.metric.clone(),
                    num(m.old),
                    num(m.new),
                    m.delta
                        .map(|d| format!("{d:+.4}"))
                        .unwrap_or_else(|| "–".into()),
                ]);
            }
            s.push_str(&t.render());
            s.push('\n');
        }
        s.push_str("## Pareto fronts\n\n");
        if self.fronts.is_empty() {
            s.push_str("The fronts did not move.\n");
        }
        for f in &self.fronts {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.iter()
                        .map(|x| format!("`{x}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            s.push_str(&format!(
                "- accuracy vs {}: added {}; removed {}; dominated by the new front: {}\n",
                f.axis,
                list(&f.added),
                list(&f.removed),
                list(&f.dominated)
            ));
        }
        s
    }
}
