//! What produced each measured network, derived from the stage kinds and parameters (never
//! from stage names): the method a plot series stands for (trained, PIT, each pruning method,
//! distillation; a fine-tuned network inherits the method of the network it fine-tunes), which
//! networks a user would deploy (not the search / prune outputs that a `finetune` stage
//! refines), and the family of a precision format.

use crate::model::{Document, ModelRow, NodeRecord};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

/// Lookups over one document.
pub struct Lineage<'a> {
    nodes: HashMap<&'a str, &'a NodeRecord>,
    /// Nodes that a `finetune` node reads: their networks are intermediate results.
    refined: BTreeSet<&'a str>,
    rows: &'a [ModelRow],
}

impl<'a> Lineage<'a> {
    pub fn new(doc: &'a Document) -> Self {
        let nodes = doc.nodes.iter().map(|n| (n.node.as_str(), n)).collect();
        let refined = doc
            .nodes
            .iter()
            .filter(|n| n.kind == "finetune")
            .flat_map(|n| n.inputs.iter().map(String::as_str))
            .collect();
        Lineage {
            nodes,
            refined,
            rows: &doc.models,
        }
    }

    /// The method that produced the row's network, as a plot series / table shows it.
    pub fn method(&self, m: &ModelRow) -> String {
        self.method_of_node(&m.node, m, 0)
    }

    fn method_of_node(&self, node: &str, m: &ModelRow, depth: usize) -> String {
        let Some(n) = self.nodes.get(node) else {
            return fallback(m);
        };
        let param = |k: &str| n.params.get(k).and_then(Value::as_str).map(str::to_string);
        match n.kind.as_str() {
            "train" => "trained".into(),
            "search" => match param("method").or_else(|| m.method.clone()) {
                Some(s) if s == "pit" => "PIT".into(),
                Some(s) => format!("{s} search"),
                None => "search".into(),
            },
            "prune" => format!(
                "{} pruning",
                param("method")
                    .or_else(|| m.method.clone())
                    .unwrap_or_else(|| "channel".into())
            ),
            "distill" => "distillation".into(),
            "finetune" if depth < 16 => {
                // The network it fine-tunes: the first input that measured a network.
                match n
                    .inputs
                    .iter()
                    .find(|i| self.rows.iter().any(|r| &r.node == *i))
                {
                    Some(i) => self.method_of_node(i, m, depth + 1),
                    None => fallback(m),
                }
            }
            "quantize" | "calibrate" | "qat" => match m.parent.as_deref() {
                Some(p) if depth < 16 && p != node => self.method_of_node(p, m, depth + 1),
                _ => fallback(m),
            },
            _ => fallback(m),
        }
    }

    /// True for a network a user would deploy: an fp32 network of its own (not an evaluation
    /// in a precision format) that no `finetune` stage refines further.
    pub fn deployable(&self, m: &ModelRow) -> bool {
        m.format == "fp32"
            && !matches!(m.stage_kind.as_str(), "quantize" | "calibrate")
            && !self.refined.contains(m.node.as_str())
    }

    /// True for a search / prune output that a `finetune` stage refines.
    pub fn intermediate(&self, m: &ModelRow) -> bool {
        m.format == "fp32" && self.refined.contains(m.node.as_str())
    }

    /// The node record of a row, if the document has it.
    pub fn node(&self, name: &str) -> Option<&'a NodeRecord> {
        self.nodes.get(name).copied()
    }
}

fn fallback(m: &ModelRow) -> String {
    m.method.clone().unwrap_or_else(|| m.stage_kind.clone())
}

/// The family of a precision format, one series of the precision plot: `float(4,3)` →
/// `float(e,m)`, `w4` → `w4 (weights only)`, `int8+qat` → `int8 + QAT`; fp32, fp16, bf16 and
/// int8 are their own family.
pub fn format_family(format: &str) -> String {
    let (base, qat) = match format.strip_suffix("+qat") {
        Some(b) => (b, true),
        None => (format, false),
    };
    let fam = if base.starts_with("float(") {
        "float(e,m)".to_string()
    } else if base.len() > 1
        && base.starts_with('w')
        && base[1..].chars().all(|c| c.is_ascii_digit())
    {
        format!("{base} (weights only)")
    } else {
        base.to_string()
    };
    if qat { format!("{fam} + QAT") } else { fam }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, kind: &str, params: Value, inputs: &[&str], models: Value) -> NodeRecord {
        NodeRecord {
            node: name.into(),
            stage: name.split('[').next().unwrap_or(name).into(),
            kind: kind.into(),
            key: String::new(),
            state: "cached".into(),
            params,
            metrics: json!({ "models": models }),
            duration_s: None,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn methods_come_from_kinds_and_params_and_finetunes_inherit_them() {
        let nodes = vec![
            node("a", "train", json!({}), &[], json!([{ "method": "train" }])),
            node(
                "s",
                "search",
                json!({"method": "pit"}),
                &["a"],
                json!([{ "method": "pit", "parent": "a" }]),
            ),
            node(
                "x[method=fisher]",
                "prune",
                json!({"method": "fisher"}),
                &["a"],
                json!([{ "method": "fisher", "parent": "a" }]),
            ),
            node(
                "ft",
                "finetune",
                json!({}),
                &["x[method=fisher]", "data"],
                json!([{ "method": "fisher", "parent": "x[method=fisher]" }]),
            ),
            node(
                "ft2",
                "finetune",
                json!({}),
                &["s"],
                json!([{ "parent": "s" }]),
            ),
            node(
                "kd",
                "distill",
                json!({}),
                &["a"],
                json!([{ "method": "kd", "teacher": "a" }]),
            ),
            node(
                "q",
                "quantize",
                json!({}),
                &["ft2"],
                json!([{ "format": "int8", "parent": "ft2" }]),
            ),
            node(
                "c",
                "command",
                json!({}),
                &[],
                json!([{ "method": "custom" }]),
            ),
        ];
        let doc = Document::new(Default::default(), Default::default(), nodes);
        let l = Lineage::new(&doc);
        let methods: Vec<String> = doc.models.iter().map(|m| l.method(m)).collect();
        assert_eq!(
            methods,
            [
                "trained",
                "PIT",
                "fisher pruning",
                "fisher pruning",
                "PIT",
                "distillation",
                "PIT",
                "custom"
            ]
        );
        let deploy: Vec<bool> = doc.models.iter().map(|m| l.deployable(m)).collect();
        assert_eq!(deploy, [true, false, false, true, true, true, false, true]);
        assert!(l.intermediate(&doc.models[1]) && !l.intermediate(&doc.models[3]));
    }

    #[test]
    fn format_families() {
        assert_eq!(format_family("float(4,3)"), "float(e,m)");
        assert_eq!(format_family("bf16"), "bf16");
        assert_eq!(format_family("w4"), "w4 (weights only)");
        assert_eq!(format_family("w4+qat"), "w4 (weights only) + QAT");
        assert_eq!(format_family("int8+qat"), "int8 + QAT");
        assert_eq!(format_family("int8"), "int8");
    }
}
