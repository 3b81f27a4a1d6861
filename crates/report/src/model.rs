//! The report's data: what the engine tells us about each node (its record) and the measured
//! networks that stages list in their metrics under `models`. This is also the shape of
//! `reports/<experiment>/metrics.json`, so `diff` can compare two runs without any model.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One node of the experiment as the engine saw it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeRecord {
    pub node: String,
    pub stage: String,
    pub kind: String,
    pub key: String,
    /// done, cached, ran, failed, pending …
    pub state: String,
    pub params: Value,
    pub metrics: Value,
    /// Seconds the node took when it ran (also for cached nodes: the time of the original run).
    pub duration_s: Option<f64>,
    /// Names of the input nodes.
    pub inputs: Vec<String>,
}

/// One measured network: a row of the report and of `metrics.json`'s `models` array.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct ModelRow {
    pub node: String,
    pub stage_kind: String,
    /// train, pit, l1, bn_gamma, fisher, uniform, random, kd, … (what produced the network).
    pub method: Option<String>,
    pub arch: Option<String>,
    /// Precision format (fp32 unless quantized).
    pub format: String,
    pub params: Option<u64>,
    pub macs: Option<u64>,
    pub weight_bytes: Option<u64>,
    pub peak_activation_bytes: Option<u64>,
    /// 0–1 (classification).
    pub test_accuracy: Option<f64>,
    /// ROC AUC and partial AUC (max FPR 0.1), averaged over machine IDs (anomaly detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_auc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_pauc: Option<f64>,
    /// Which of them is this network's task metric ([`ModelRow::score`]).
    #[serde(default, skip_serializing_if = "Metric::is_accuracy")]
    pub metric: Metric,
    pub latency_ms: Option<f64>,
    pub teacher: Option<String>,
    pub parent: Option<String>,
    /// Anything else the stage reported for this network (λ, ratio, per-layer channels, …).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, Value>,
}

/// A task's metric: both are 0–1 and higher is better.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Classification accuracy (`test_accuracy`).
    #[default]
    Accuracy,
    /// Anomaly detection: ROC AUC of per-clip scores (`test_auc`; `test_pauc` beside it).
    Auc,
}

impl Metric {
    pub fn is_accuracy(&self) -> bool {
        *self == Metric::Accuracy
    }
    /// `accuracy` or `AUC`, for sentences and axis labels.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Auc => "AUC",
        }
    }
    /// A table column of its value.
    pub fn column(self) -> &'static str {
        match self {
            Metric::Accuracy => "test acc.",
            Metric::Auc => "test AUC",
        }
    }
    /// The metrics key of its value.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Accuracy => "test_accuracy",
            Metric::Auc => "test_auc",
        }
    }
    /// The metric shared by all `rows` that have a score (accuracy when none or mixed).
    pub fn of(rows: &[ModelRow]) -> Metric {
        let mut it = rows
            .iter()
            .filter(|r| r.score().is_some())
            .map(|r| r.metric);
        match it.next() {
            Some(m) if it.all(|x| x == m) => m,
            _ => Metric::Accuracy,
        }
    }
}

const KNOWN: [&str; 16] = [
    "test_auc",
    "test_pauc",
    "metric",
    "node",
    "stage_kind",
    "method",
    "arch",
    "format",
    "params",
    "macs",
    "weight_bytes",
    "peak_activation_bytes",
    "test_accuracy",
    "latency_ms",
    "teacher",
    "parent",
];

impl ModelRow {
    /// Reads one entry of a node's `metrics.models` array; the node fills `node` and
    /// `stage_kind` when the entry leaves them out.
    pub fn from_metrics(entry: &Value, node: &NodeRecord) -> Option<Self> {
        let o = entry.as_object()?;
        let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
        let u = |k: &str| o.get(k).and_then(Value::as_f64).map(|v| v.round() as u64);
        let f = |k: &str| o.get(k).and_then(Value::as_f64);
        let extra = o
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Some(ModelRow {
            node: s("node").unwrap_or_else(|| node.node.clone()),
            stage_kind: s("stage_kind").unwrap_or_else(|| node.kind.clone()),
            method: s("method"),
            arch: s("arch"),
            format: s("format").unwrap_or_else(|| "fp32".into()),
            params: u("params"),
            macs: u("macs"),
            weight_bytes: u("weight_bytes"),
            peak_activation_bytes: u("peak_activation_bytes"),
            test_accuracy: f("test_accuracy"),
            test_auc: f("test_auc"),
            test_pauc: f("test_pauc"),
            metric: match o.get("metric").and_then(Value::as_str) {
                Some("auc") => Metric::Auc,
                _ => Metric::Accuracy,
            },
            latency_ms: f("latency_ms"),
            teacher: s("teacher"),
            parent: s("parent"),
            extra,
        })
    }

    /// The value of the network's task metric (accuracy or AUC), 0–1, higher is better.
    pub fn score(&self) -> Option<f64> {
        match self.metric {
            Metric::Accuracy => self.test_accuracy,
            Metric::Auc => self.test_auc,
        }
    }

    /// A readable label: the node, or for an evaluation of another network in a precision
    /// format (a `quantize` row) that network; plus the format when it is not plain fp32.
    pub fn label(&self) -> String {
        let base = match (&self.parent, self.stage_kind.as_str()) {
            (Some(p), "quantize") => p.as_str(),
            _ => self.node.as_str(),
        };
        if self.format == "fp32" && self.stage_kind != "quantize" {
            base.to_string()
        } else {
            format!("{base} @ {}", self.format)
        }
    }
}

/// Facts about the run that are not per node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Provenance {
    pub experiment: String,
    pub description: String,
    pub file: String,
    /// blake3 of the experiment file's bytes.
    pub file_hash: String,
    pub tool_version: String,
    pub seed: u64,
    pub machine: String,
    /// Where nodes ran when not in the controlling process (`slurm`); empty: locally.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub executor: String,
    /// Node → the executor's job that ran it (Slurm job ids).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub jobs: std::collections::BTreeMap<String, String>,
    /// CPU use of the `whittle run` that wrote the report, when its nodes ran locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<RunCpu>,
}

/// Whole-run CPU time against wall time on the run's core budget (`--jobs`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct RunCpu {
    pub cpu_secs: f64,
    pub wall_secs: f64,
    pub cores: usize,
}

impl RunCpu {
    /// `CPU 1.85 of 2 cores (185.0 s CPU / 100.0 s wall)`.
    pub fn line(&self) -> String {
        let busy = if self.wall_secs > 0.0 {
            self.cpu_secs / self.wall_secs
        } else {
            0.0
        };
        format!(
            "CPU {busy:.2} of {} cores ({:.1} s CPU / {:.1} s wall)",
            self.cores, self.cpu_secs, self.wall_secs
        )
    }
}

/// Constraints named in the experiment's `[report]` table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    pub max_params: Option<u64>,
    pub max_macs: Option<u64>,
    pub max_weight_bytes: Option<u64>,
    pub max_peak_activation_bytes: Option<u64>,
    pub max_latency_ms: Option<f64>,
}

/// How the experiment's `[report]` table asks the report to be drawn.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct ReportOptions {
    /// Also plot the search / prune outputs that a `finetune` stage refines (hidden by
    /// default: before fine-tuning they sit near chance accuracy).
    pub show_intermediate: bool,
}

/// Everything in `metrics.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Document {
    pub provenance: Provenance,
    pub constraints: Constraints,
    /// Absent from `metrics.json` files written before it existed.
    #[serde(default)]
    pub options: ReportOptions,
    pub nodes: Vec<NodeRecord>,
    pub models: Vec<ModelRow>,
}

impl Document {
    /// Collects the model rows of every node, in node order; latency measured by a separate
    /// node (a row whose `parent` names a network and that carries `latency_ms` but no
    /// accuracy) is joined onto that network's rows of the same format.
    pub fn new(provenance: Provenance, constraints: Constraints, nodes: Vec<NodeRecord>) -> Self {
        let mut models: Vec<ModelRow> = Vec::new();
        let mut latencies: Vec<ModelRow> = Vec::new();
        for n in &nodes {
            if let Some(list) = n.metrics.get("models").and_then(Value::as_array) {
                for e in list {
                    if let Some(row) = ModelRow::from_metrics(e, n) {
                        if row.score().is_none() && row.latency_ms.is_some() && row.parent.is_some()
                        {
                            latencies.push(row);
                        } else {
                            models.push(row);
                        }
                    }
                }
            }
        }
        for l in latencies {
            let parent = l.parent.as_deref().unwrap_or_default();
            for m in models
                .iter_mut()
                .filter(|m| m.node == parent && m.format == l.format)
            {
                m.latency_ms = l.latency_ms;
            }
        }
        Document {
            provenance,
            constraints,
            options: ReportOptions::default(),
            nodes,
            models,
        }
    }
}
