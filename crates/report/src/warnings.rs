//! The report's warnings: nodes whose metrics carry a `diverged` message (a training that
//! diverged and was kept because its stage says `allow_divergence = true`).

use crate::model::NodeRecord;
use serde_json::Value;

/// A `## Warnings` section listing each such node, or nothing when there is none.
pub fn section(nodes: &[NodeRecord]) -> String {
    let lines: Vec<String> = nodes
        .iter()
        .filter_map(|n| {
            let msg = n.metrics.get("diverged").and_then(Value::as_str)?;
            Some(format!(
                "- ⚠ `{}`: training {msg} (kept: `allow_divergence = true`)\n",
                n.node
            ))
        })
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!("## Warnings\n\n{}\n", lines.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, metrics: Value) -> NodeRecord {
        NodeRecord {
            node: name.into(),
            stage: name.into(),
            kind: "train".into(),
            key: "k".into(),
            state: "done".into(),
            params: Value::Null,
            metrics,
            duration_s: None,
            inputs: vec![],
        }
    }

    #[test]
    fn lists_diverged_nodes_only() {
        assert_eq!(section(&[node("a", serde_json::json!({}))]), "");
        let s = section(&[
            node("a", serde_json::json!({})),
            node(
                "b",
                serde_json::json!({"diverged": "diverged at epoch 2: loss inf"}),
            ),
        ]);
        assert_eq!(
            s,
            "## Warnings\n\n- ⚠ `b`: training diverged at epoch 2: loss inf (kept: `allow_divergence = true`)\n\n"
        );
    }
}
