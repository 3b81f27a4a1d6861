//! Runs the ONNX exports (float and int8 QDQ) of every test network (`common::all`) in tract
//! (in-process, pure Rust) and compares them with the Rust reference evaluator on the same
//! input. The same files also go through onnxruntime when python3 can import it (an extra
//! cross-check; skipped with one line otherwise).

mod common;
#[path = "common/runtimes.rs"]
mod runtimes;

use runtimes::{OrtCase, onnxruntime_run, tract_run};
use std::path::PathBuf;
use whittle_export::{Int8Params, fold_batchnorm, reference, write_onnx, write_onnx_qdq};

/// Float files: tract and onnxruntime agree with the reference to float rounding.
const FLOAT_TOL: f32 = 1e-4;
/// int8 files in tract, in output quantization steps. tract runs the QDQ graph as written
/// (float Conv/Gemm between QuantizeLinear/DequantizeLinear), as the reference does: on the
/// networks here its outputs equal the reference's bit for bit (0 steps, measured with
/// tract-onnx 0.23.9); one step leaves room for a rounding tie that another summation order
/// (another CPU's SIMD kernels) moves across.
const TRACT_INT8_STEPS: f32 = 1.0;
/// int8 files in onnxruntime, in output steps: ORT may fuse QDQ into integer kernels with
/// their own requantization rounding (0 steps measured with onnxruntime 1.32 on x86-64).
const ORT_INT8_STEPS: f32 = 3.0;

struct Case {
    label: String,
    model: PathBuf,
    shape: Vec<usize>,
    input: Vec<f32>,
    expected: Vec<f32>,
    /// Float: `None`. int8: the output's scale and zero point.
    quant: Option<(f32, i32)>,
}

#[test]
fn onnx_exports_match_reference_in_tract_and_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cases = Vec::new();
    for (k, net) in common::all(7).into_iter().enumerate() {
        let x = common::input(&net, 100 + k as u64);

        // Float, batch norm exported as BatchNormalization.
        let model = d.join(format!("{}.onnx", net.name));
        write_onnx(&net, &model).unwrap();
        let float_ref = reference::run(&net, &x, None).unwrap();
        cases.push(Case {
            label: format!("{} float", net.name),
            model,
            shape: net.input.1.clone(),
            input: x.clone(),
            expected: float_ref.clone(),
            quant: None,
        });

        // int8 QDQ of the folded network, calibrated on other random inputs.
        let folded = fold_batchnorm(&net).unwrap();
        let calib: Vec<Vec<f32>> = (0..8).map(|s| common::input(&net, 1000 + s)).collect();
        let params = Int8Params::calibrate(&folded, &calib).unwrap();
        let qmodel = d.join(format!("{}_int8.onnx", net.name));
        write_onnx_qdq(&folded, &params, &qmodel).unwrap();
        let expected = reference::run(&folded, &x, Some(&params)).unwrap();
        // The int8 reference must really be quantized (differs from float) yet close to it.
        let qerr = max_diff(&expected, &float_ref);
        assert!(
            qerr > 0.0 && qerr < 0.1,
            "{}: int8 vs float reference differ by {qerr}",
            net.name
        );
        let out = params.get(&net.output).unwrap();
        cases.push(Case {
            label: format!("{} int8", net.name),
            model: qmodel,
            shape: net.input.1.clone(),
            input: x,
            expected,
            quant: Some((out.scale, out.zero_point as i32)),
        });
    }

    for c in &cases {
        let got = tract_run(&c.model, &c.shape, &c.input)
            .unwrap_or_else(|e| panic!("{}: tract: {e:?}", c.label));
        check(c, &got, "tract", TRACT_INT8_STEPS);
        if let Some((scale, zp)) = c.quant {
            // The last DequantizeLinear ran: every output is (q − zp)·scale for an int8 q.
            for v in &got {
                let q = v / scale + zp as f32;
                assert!(
                    (q - q.round()).abs() < 1e-3 && (-128.0..=127.0).contains(&q.round()),
                    "{}: tract output {v} is off the int8 grid (scale {scale}, zero point {zp})",
                    c.label
                );
            }
        }
    }

    let ort_cases: Vec<OrtCase> = cases
        .iter()
        .map(|c| OrtCase {
            model: c.model.clone(),
            shape: c.shape.clone(),
            input: c.input.clone(),
        })
        .collect();
    if let Some(outs) = onnxruntime_run(&ort_cases, d) {
        for (c, got) in cases.iter().zip(&outs) {
            check(c, got, "onnxruntime", ORT_INT8_STEPS);
        }
    }
}

/// `got` from `runtime` against the case's reference: within [`FLOAT_TOL`] for float files,
/// within `int8_steps` output steps for int8 files.
fn check(c: &Case, got: &[f32], runtime: &str, int8_steps: f32) {
    assert_eq!(
        got.len(),
        c.expected.len(),
        "{} in {runtime}: output length",
        c.label
    );
    let tol = c.quant.map_or(FLOAT_TOL, |(scale, _)| int8_steps * scale);
    let err = max_diff(got, &c.expected);
    let steps = c.quant.map(|(scale, _)| err / scale);
    eprintln!(
        "{} in {runtime}: max |output - reference| = {err:e} (tolerance {tol:e}; steps {steps:?})",
        c.label
    );
    assert!(
        err <= tol * (1.0 + 1e-4),
        "{} in {runtime}: {got:?} vs reference {:?}",
        c.label,
        c.expected
    );
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

/// The files declare a symbolic batch axis: run at batch 100 in tract, every item's output
/// equals its output at batch 1 (float and int8, every test network). A static-batch file
/// (`Batch::One`) declares 1 and runs at batch 1.
#[test]
fn onnx_exports_run_at_any_batch_with_identical_items() {
    use whittle_export::{Batch, write_onnx_with};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    const N: usize = 100;
    for net in common::all(7) {
        let folded = fold_batchnorm(&net).unwrap();
        let calib: Vec<Vec<f32>> = (0..8).map(|s| common::input(&net, 1000 + s)).collect();
        let params = Int8Params::calibrate(&folded, &calib).unwrap();
        let items: Vec<Vec<f32>> = (0..N as u64)
            .map(|s| common::input(&net, 500 + s))
            .collect();
        for (label, model, q) in [("float", &net, None), ("int8", &folded, Some(&params))] {
            let path = d.join(format!("{}_{label}.onnx", net.name));
            write_onnx_with(model, q, Batch::Dynamic, &path).unwrap();
            let mut shape = net.input.1.clone();
            shape[0] = N;
            let all: Vec<f32> = items.concat();
            let batched = tract_run(&path, &shape, &all)
                .unwrap_or_else(|e| panic!("{} {label} at batch {N}: {e:?}", net.name));
            let per = batched.len() / N;
            // the runtime may sum in another order at another batch: float within rounding,
            // int8 within one output step (a rounding tie)
            let tol = match q {
                None => 1e-5,
                Some(p) => p.get(&net.output).unwrap().scale * 1.001,
            };
            for (i, x) in items.iter().enumerate().step_by(9) {
                let one = tract_run(&path, &net.input.1, x).unwrap();
                let diff = max_diff(&one, &batched[i * per..(i + 1) * per]);
                assert!(
                    diff <= tol,
                    "{} {label}: item {i} at batch 1 vs batch {N} differs by {diff}",
                    net.name
                );
            }
            let fixed = d.join(format!("{}_{label}_b1.onnx", net.name));
            write_onnx_with(model, q, Batch::One, &fixed).unwrap();
            let one = tract_run(&fixed, &net.input.1, &items[0]).unwrap();
            assert!(
                max_diff(&one, &batched[..per]) <= tol,
                "{} {label}: static batch file",
                net.name
            );
        }
    }
}
