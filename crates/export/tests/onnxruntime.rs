//! Loads the ONNX exports (float and int8 QDQ) of every test network (`common::all`) in
//! onnxruntime (via `tests/ort_run.py`) and compares them with the Rust reference evaluator
//! on the same input.
//! Needs `python3 -m pip install onnxruntime numpy`; set WHITTLE_SKIP_ONNX=1 to skip.

mod common;

use std::path::Path;
use std::process::Command;
use whittle_export::{Int8Params, fold_batchnorm, reference, write_onnx, write_onnx_qdq};

fn ort_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import onnxruntime, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return true;
    }
    if std::env::var("WHITTLE_SKIP_ONNX").as_deref() == Ok("1") {
        eprintln!("onnxruntime not importable; skipped because WHITTLE_SKIP_ONNX=1");
        return false;
    }
    panic!(
        "python3 cannot import onnxruntime/numpy; install them with \
         `python3 -m pip install onnxruntime numpy` (or set WHITTLE_SKIP_ONNX=1 to skip)"
    );
}

struct Case {
    label: String,
    expected: Vec<f32>,
    tol: f32,
}

#[test]
fn onnxruntime_matches_reference_float_and_qdq() {
    if !ort_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut manifest = Vec::new();
    let mut cases = Vec::new();
    for (k, net) in common::all(7).into_iter().enumerate() {
        let x = common::input(&net, 100 + k as u64);
        let inp = d.join(format!("{}_in.bin", net.name));
        std::fs::write(&inp, common::f32_bytes(&x)).unwrap();

        // Float, batch norm exported as BatchNormalization.
        let model = d.join(format!("{}.onnx", net.name));
        write_onnx(&net, &model).unwrap();
        let expected = reference::run(&net, &x, None).unwrap();
        push(&mut manifest, &model, &inp, &net.input.1, d, &net.name);
        cases.push(Case {
            label: format!("{} float", net.name),
            expected,
            tol: 1e-4,
        });

        // int8 QDQ of the folded network, calibrated on other random inputs.
        let folded = fold_batchnorm(&net).unwrap();
        let calib: Vec<Vec<f32>> = (0..8).map(|s| common::input(&net, 1000 + s)).collect();
        let params = Int8Params::calibrate(&folded, &calib).unwrap();
        let qmodel = d.join(format!("{}_int8.onnx", net.name));
        write_onnx_qdq(&folded, &params, &qmodel).unwrap();
        let expected = reference::run(&folded, &x, Some(&params)).unwrap();
        // The int8 reference must really be quantized (differs from float) yet close to it.
        let float_ref = reference::run(&net, &x, None).unwrap();
        let qerr = max_diff(&expected, &float_ref);
        assert!(
            qerr > 0.0 && qerr < 0.1,
            "{}: int8 vs float reference differ by {qerr}",
            net.name
        );
        let out_scale = params.get(&net.output).unwrap().scale;
        let qname = format!("{}_int8", net.name);
        push(&mut manifest, &qmodel, &inp, &net.input.1, d, &qname);
        // ORT runs integer kernels with its own requantization rounding: allow 3 output steps.
        cases.push(Case {
            label: format!("{} int8", net.name),
            expected,
            tol: 3.0 * out_scale,
        });
    }
    let mf = d.join("manifest.json");
    std::fs::write(&mf, serde_json::to_string(&manifest).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ort_run.py");
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
    for (case, m) in cases.iter().zip(&manifest) {
        let bytes = std::fs::read(m["output"].as_str().unwrap()).unwrap();
        let got: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(
            got.len(),
            case.expected.len(),
            "{}: output length",
            case.label
        );
        let err = max_diff(&got, &case.expected);
        eprintln!(
            "{}: max |ort - reference| = {err:e} (tolerance {:e})",
            case.label, case.tol
        );
        assert!(
            err <= case.tol,
            "{}: onnxruntime {got:?} vs reference {:?}",
            case.label,
            case.expected
        );
    }
}

fn push(
    manifest: &mut Vec<serde_json::Value>,
    model: &Path,
    inp: &Path,
    shape: &[usize],
    d: &Path,
    name: &str,
) {
    manifest.push(serde_json::json!({
        "model": model, "input": inp, "shape": shape,
        "output": d.join(format!("{name}_out.bin")),
    }));
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}
