//! The report's "Shipped files" section (issue 22), from the metrics of `export` nodes: each
//! exported file (ONNX float, ONNX int8 QDQ, C int8) with its size, its task metric measured by
//! running the file itself on the test split, the number the report's precision rows give for
//! the same network and format (the `quantize` stage's fp32 / int8 row), and how many test
//! predictions differ from the in-process network. A file whose number is not the report's, or
//! whose predictions differ on more than a handful of items (2 %), is flagged.

use crate::model::ModelRow;
use crate::render::Ctx;
use crate::table::{Align, Table, escape, percent, thousands};
use serde_json::Value;

/// Items whose prediction may differ from the in-process network before a file is flagged:
/// ties in the int8 logits and integer-kernel rounding, documented in the export stage.
const HANDFUL: f64 = 0.02;

/// The precision row of `net` in `format`: a `quantize` node's row of it, or, for a network a
/// `qat` node fine-tuned for that format, the `qat` node's own row (`int8+qat`, `w4+qat`).
fn report_row<'a>(rows: &'a [ModelRow], net: &str, format: &str) -> Option<&'a ModelRow> {
    rows.iter()
        .find(|r| {
            r.stage_kind == "quantize" && r.parent.as_deref() == Some(net) && r.format == format
        })
        .or_else(|| {
            let qat = format!("{format}+qat");
            rows.iter()
                .find(|r| r.stage_kind == "qat" && r.node == net && r.format == qat)
        })
}

/// The label of an artifact, the format of the report row it stands for, and the file kind
/// that holds it (`format`: a packed C export's weight format).
fn artifact(a: &str, format: &str) -> (String, String, &'static str) {
    match a {
        "onnx" => ("ONNX float".into(), "fp32".into(), "onnx"),
        "onnx_int8_qdq" => ("ONNX int8 (QDQ)".into(), "int8".into(), "onnx_int8_qdq"),
        "c_int8" => ("C int8".into(), "int8".into(), "c_source"),
        "c_packed" => (
            format!("C {format} weights (packed)"),
            format.into(),
            "c_packed_source",
        ),
        _ => ("?".into(), String::new(), ""),
    }
}

/// Markdown for the export nodes whose networks belong to this report's rows (empty if none).
pub fn section(ctx: &Ctx) -> String {
    let known = |n: &str| {
        ctx.rows
            .iter()
            .any(|r| r.node == n || r.parent.as_deref() == Some(n))
    };
    let mut t = Table::new(&[
        ("Network", Align::Left),
        ("File", Align::Left),
        ("Bytes", Align::Right),
        ("Measured on the file", Align::Right),
        ("Report row", Align::Right),
        ("Predictions that differ", Align::Right),
        ("", Align::Left),
    ]);
    let (mut flagged, mut metric) = (0, "accuracy");
    for n in ctx.doc.nodes.iter().filter(|n| n.kind == "export") {
        let exports = n.metrics.get("exports").and_then(Value::as_array);
        for e in exports.into_iter().flatten() {
            let net = e.get("parent").and_then(Value::as_str).unwrap_or("");
            let Some(sh) = e.get("shipped").filter(|_| known(net)) else {
                continue;
            };
            metric = sh.get("metric").and_then(Value::as_str).unwrap_or(metric);
            let files = e.get("files").and_then(Value::as_array);
            for f in sh
                .get("files")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let a = f.get("artifact").and_then(Value::as_str).unwrap_or("");
                let packed = f.get("format").and_then(Value::as_str);
                let (label, format, kind) = artifact(a, packed.unwrap_or(""));
                let (label, format) = (label.as_str(), format.as_str());
                let bytes = files
                    .into_iter()
                    .flatten()
                    .find(|x| {
                        x.get("kind").and_then(Value::as_str) == Some(kind)
                            && x.get("format").and_then(Value::as_str) == packed
                    })
                    .and_then(|x| x.get("bytes").and_then(Value::as_u64))
                    .map(thousands)
                    .unwrap_or_else(|| "–".into());
                if let Some(why) = f.get("skipped").and_then(Value::as_str) {
                    let cells = [net, label, &bytes, "not run", "", "", why];
                    t.row(cells.iter().map(|c| escape(c)).collect());
                    continue;
                }
                if let Some(err) = f.get("failed").and_then(Value::as_str) {
                    let first = err.lines().next().unwrap_or(err);
                    let why = format!("⚠ could not run the file: {first}");
                    let cells = [net, label, &bytes, "failed", "", "", &why];
                    t.row(cells.iter().map(|c| escape(c)).collect());
                    flagged += 1;
                    continue;
                }
                let value = f.get("value").and_then(Value::as_f64);
                let in_process = f.get("in_process").and_then(Value::as_f64);
                let report = report_row(ctx.rows, net, format).and_then(|r| r.score());
                let items = f.get("items").and_then(Value::as_u64).unwrap_or(0);
                let differ = f.get("differ").and_then(Value::as_u64);
                let mut notes = Vec::new();
                if report.is_none()
                    && let Some(i) = in_process
                {
                    notes.push(format!(
                        "no precision row (in-process {format}: {})",
                        percent(i)
                    ));
                }
                if let (Some(r), Some(i)) = (report, in_process)
                    && (r - i).abs() > 1e-9
                {
                    notes.push(format!(
                        "⚠ not the report's {format} network (the export's in-process {format} scores {}: different calibration or settings?)",
                        percent(i)
                    ));
                }
                if let Some(d) = differ
                    && d as f64 > HANDFUL * items as f64
                {
                    notes.push(format!("⚠ more than {:.0} % differ", 100.0 * HANDFUL));
                }
                let float_weights =
                    format.starts_with("float(") || format == "fp16" || format == "bf16";
                if a == "c_packed" && float_weights {
                    notes.push("activations in f32 (the precision row also rounds them)".into());
                }
                if notes.iter().all(|n| !n.starts_with('⚠')) {
                    notes.insert(0, "✓".into());
                } else {
                    flagged += 1;
                }
                let diff = differ
                    .map(|d| format!("{d} of {}", thousands(items)))
                    .unwrap_or_else(|| "–".into());
                let label = format!("{label} vs {format}");
                t.row(vec![
                    escape(net),
                    escape(&label),
                    bytes,
                    value.map(percent).unwrap_or_else(|| "–".into()),
                    report.map(percent).unwrap_or_else(|| "–".into()),
                    diff,
                    escape(&notes.join("; ")),
                ]);
            }
        }
    }
    if t.is_empty() {
        return String::new();
    }
    let mut md = format!(
        "## Shipped files\n\nEach exported file run on the test split ({metric}): the ONNX files in tract, the C source compiled with the system C compiler. \"Report row\" is the precision table's number for the same network and format; \"Predictions that differ\" counts test items whose class differs from the in-process network (int8 ties allowed up to {:.0} %).\n\n",
        100.0 * HANDFUL
    );
    md.push_str(&t.render());
    if flagged > 0 {
        md.push_str(&format!(
            "\n**{flagged} file(s) flagged**: what ships is not exactly what the report measured.\n"
        ));
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use crate::model::{Constraints, Document, NodeRecord, Provenance};
    use crate::render::render;
    use serde_json::{Value, json};

    fn node(name: &str, kind: &str, metrics: Value) -> NodeRecord {
        NodeRecord {
            node: name.into(),
            stage: name.into(),
            kind: kind.into(),
            key: "0123456789abcdef".into(),
            state: "ran".into(),
            params: json!({}),
            metrics,
            duration_s: None,
            inputs: vec![],
        }
    }

    /// Network `tcn` (fp32 0.9, int8 0.85 in the quantize rows) exported; `files` are the
    /// export's shipped rows.
    fn doc(files: Value) -> String {
        let nodes = vec![
            node(
                "tcn",
                "train",
                json!({ "models": [{ "arch": "tcn", "params": 100, "test_accuracy": 0.9 }] }),
            ),
            node(
                "quant",
                "quantize",
                json!({ "models": [
                    { "parent": "tcn", "format": "fp32", "test_accuracy": 0.9 },
                    { "parent": "tcn", "format": "int8", "test_accuracy": 0.85 },
                ] }),
            ),
            node(
                "ship",
                "export",
                json!({ "exports": [{
                    "parent": "tcn",
                    "files": [{ "kind": "onnx_int8_qdq", "path": "tcn/tcn_int8.onnx", "bytes": 12345 }],
                    "shipped": { "metric": "accuracy", "files": files },
                }] }),
            ),
        ];
        let provenance = Provenance {
            experiment: "ship".into(),
            ..Default::default()
        };
        let d = Document::new(provenance, Constraints::default(), nodes);
        render(&d, "ship").markdown
    }

    fn section(md: &str) -> &str {
        let s = md
            .find("## Shipped files")
            .expect("no Shipped files section");
        let rest = &md[s + 3..];
        &md[s..s + 3 + rest.find("\n## ").unwrap_or(rest.len())]
    }

    #[test]
    fn agreeing_files_pass_and_disagreeing_ones_are_flagged() {
        let ok = doc(json!([
            { "artifact": "onnx", "value": 0.9, "in_process": 0.9, "items": 200, "differ": 0 },
            { "artifact": "onnx_int8_qdq", "value": 0.855, "in_process": 0.85, "items": 200, "differ": 1 },
            { "artifact": "c_int8", "skipped": "no C compiler (`cc` or $CC) on this machine" },
        ]));
        let s = section(&ok);
        assert!(
            s.contains(
                "| tcn | ONNX int8 (QDQ) vs int8 | 12,345 | 85.50 % | 85.00 % | 1 of 200 | ✓ |"
            ),
            "{s}"
        );
        assert!(
            s.contains("| ONNX float vs fp32 | – | 90.00 % | 90.00 % | 0 of 200 | ✓ |"),
            "{s}"
        );
        assert!(s.contains("not run") && !s.contains("flagged"), "{s}");

        // an int8 file of another calibration, too many differing items, a file that failed
        let bad = doc(json!([
            { "artifact": "onnx_int8_qdq", "value": 0.80, "in_process": 0.81, "items": 200, "differ": 9 },
            { "artifact": "c_int8", "failed": "`cc` could not compile the exported tcn.c:\nerror" },
        ]));
        let s = section(&bad);
        assert!(s.contains("⚠ not the report's int8 network"), "{s}");
        assert!(s.contains("⚠ more than 2 % differ"), "{s}");
        assert!(
            s.contains("⚠ could not run the file: `cc` could not compile"),
            "{s}"
        );
        assert!(s.contains("**2 file(s) flagged**"), "{s}");
        // no export node with shipped rows: no section
        let none = doc(json!([]));
        assert!(!none.contains("## Shipped files"));
    }
}
