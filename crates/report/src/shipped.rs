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

/// The precision row of `net` in `format` (from a `quantize` node), if the report has one.
fn report_row<'a>(rows: &'a [ModelRow], net: &str, format: &str) -> Option<&'a ModelRow> {
    rows.iter().find(|r| {
        r.stage_kind == "quantize" && r.parent.as_deref() == Some(net) && r.format == format
    })
}

/// The format of the report row an artifact stands for, and the file kind that holds it.
fn artifact(a: &str) -> (&'static str, &'static str, &'static str) {
    match a {
        "onnx" => ("ONNX float", "fp32", "onnx"),
        "onnx_int8_qdq" => ("ONNX int8 (QDQ)", "int8", "onnx_int8_qdq"),
        "c_int8" => ("C int8", "int8", "c_source"),
        _ => ("?", "", ""),
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
            for f in sh.get("files").and_then(Value::as_array).into_iter().flatten() {
                let a = f.get("artifact").and_then(Value::as_str).unwrap_or("");
                let (label, format, kind) = artifact(a);
                let bytes = files
                    .into_iter()
                    .flatten()
                    .find(|x| x.get("kind").and_then(Value::as_str) == Some(kind))
                    .and_then(|x| x.get("bytes").and_then(Value::as_u64))
                    .map(thousands)
                    .unwrap_or_else(|| "–".into());
                if let Some(why) = f.get("skipped").and_then(Value::as_str) {
                    let cells = [net, label, &bytes, "not run", "", "", why];
                    t.row(cells.iter().map(|c| escape(c)).collect());
                    continue;
                }
                let value = f.get("value").and_then(Value::as_f64);
                let in_process = f.get("in_process").and_then(Value::as_f64);
                let report = report_row(ctx.rows, net, format).and_then(|r| r.score());
                let items = f.get("items").and_then(Value::as_u64).unwrap_or(0);
                let differ = f.get("differ").and_then(Value::as_u64);
                let mut notes = Vec::new();
                // the report's number, or (without a quantize row) the export's own
                let shown = report.or(in_process);
                if let (Some(r), Some(i)) = (report, in_process)
                    && (r - i).abs() > 1e-9
                {
                    notes.push(format!(
                        "⚠ not the report's {format} network (the export's in-process {format} scores {}: different calibration?)",
                        percent(i)
                    ));
                }
                if let Some(d) = differ
                    && d as f64 > HANDFUL * items as f64
                {
                    notes.push(format!("⚠ more than {:.0} % differ", 100.0 * HANDFUL));
                }
                if notes.is_empty() {
                    notes.push("✓".into());
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
                    shown.map(percent).unwrap_or_else(|| "–".into()),
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
