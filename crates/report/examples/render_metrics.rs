//! Renders a report from a `metrics.json` (e.g. `reports/<name>/metrics.json`) without the
//! cache or the experiment: `cargo run -p whittle-report --example render_metrics -- IN.json OUT_DIR`.
//! Writes `OUT_DIR/<name>.md` and `OUT_DIR/<name>/*.svg`. The model rows are rebuilt from the
//! nodes' metrics, so a hand-made document may leave `models` empty. For working on the layout.

use anyhow::{Context, Result};
use whittle_report::Document;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, out] = args.as_slice() else {
        anyhow::bail!("usage: render_metrics IN.json OUT_DIR");
    };
    let text = std::fs::read_to_string(input).with_context(|| format!("reading {input}"))?;
    let doc: Document =
        serde_json::from_str(&text).with_context(|| format!("{input}: not a metrics.json"))?;
    let rebuilt = Document::new(doc.provenance, doc.constraints, doc.nodes);
    let name = whittle_report::render::sanitize(&rebuilt.provenance.experiment);
    let dir = std::path::Path::new(out);
    std::fs::create_dir_all(dir.join(&name))?;
    let r = whittle_report::render(&rebuilt, &name);
    for (file, svg) in &r.files {
        std::fs::write(dir.join(&name).join(file), svg)?;
    }
    std::fs::write(dir.join(format!("{name}.md")), &r.markdown)?;
    println!("{}", dir.join(format!("{name}.md")).display());
    Ok(())
}
