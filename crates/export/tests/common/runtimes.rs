//! The ONNX runtimes the export tests run our files in: tract in-process (pure Rust, always)
//! and, as an extra cross-check, onnxruntime through `python3 ort_run.py` when python3 can
//! import onnxruntime and numpy. Included with `#[path]` by the export and stages tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use tract_onnx::prelude::*;

/// Loads the ONNX file at `path` in tract, runs it on `x` (f32 of `shape`) and returns the
/// first output, flattened.
pub fn tract_run(path: &Path, shape: &[usize], x: &[f32]) -> anyhow::Result<Vec<f32>> {
    let model = tract_onnx::onnx()
        .model_for_path(path)?
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let out = model.run(tvec!(Tensor::from_shape(shape, x)?.into()))?;
    Ok(out[0]
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect())
}

/// One model to run: the ONNX file, its input shape and the f32 input.
pub struct OrtCase {
    pub model: PathBuf,
    pub shape: Vec<usize>,
    pub input: Vec<f32>,
}

/// Runs every case in onnxruntime in one python3 process (scratch files go to `dir`) and
/// returns their first outputs; `None`, after one line on stderr, when python3 cannot import
/// onnxruntime and numpy.
pub fn onnxruntime_run(cases: &[OrtCase], dir: &Path) -> Option<Vec<Vec<f32>>> {
    let importable = Command::new("python3")
        .args(["-c", "import onnxruntime, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !importable {
        // Straight to the stream, not through the test harness's captured eprintln!.
        let _ = writeln!(
            std::io::stderr(),
            "onnxruntime cross-check skipped: python3 cannot import onnxruntime \
             (pip install onnxruntime numpy)"
        );
        return None;
    }
    let mut manifest = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let (inp, out) = (
            dir.join(format!("ort{i}_in.bin")),
            dir.join(format!("ort{i}_out.bin")),
        );
        let bytes: Vec<u8> = c.input.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&inp, bytes).unwrap();
        manifest.push(serde_json::json!({
            "model": c.model, "input": inp, "shape": c.shape, "output": out,
        }));
    }
    let (mf, script) = (dir.join("ort_manifest.json"), dir.join("ort_run.py"));
    std::fs::write(&mf, serde_json::to_string(&manifest).unwrap()).unwrap();
    std::fs::write(&script, include_str!("ort_run.py")).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(&mf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ort_run.py failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let outputs = manifest.iter().map(|m| {
        let bytes = std::fs::read(m["output"].as_str().unwrap()).unwrap();
        let v = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()));
        v.collect()
    });
    Some(outputs.collect())
}
