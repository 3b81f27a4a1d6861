//! Export of real MobileNetV2 models (ReLU6, depthwise convs, residual adds, dropout, and with
//! squeeze-and-excitation: global pool → linear → ReLU → linear → sigmoid → channel
//! multiply), and of a ShuffleNet-style graph with the other new ops (narrow, concat, channel
//! shuffle, max / average pooling with padding, hard swish, hard sigmoid) through `to_export`: the reference evaluator matches `Model::forward` in eval
//! mode, the int8 reference stays near it, the generated C (compiled with `cc`) reproduces
//! the int8 reference, and the ONNX float / QDQ files run in tract (in-process) and, when
//! python3 can import it, onnxruntime match the reference.

use crate::to_export::to_network;
use candle_core::{Device, Tensor};
use serde_json::json;
use std::path::Path;

#[path = "../../export/tests/common/c_run.rs"]
mod c_run;
#[path = "../../export/tests/common/runtimes.rs"]
mod runtimes;
use c_run::run_c;
use runtimes::OrtCase;
use whittle_export::{Int8Params, reference, write_c, write_onnx, write_onnx_qdq};
use whittle_nn::Model;
use whittle_nn::arch::node_list::{NodeListConfig, parse_nodes};
use whittle_nn::config::{MobileNetV2Config, ModelConfig};

/// Six blocks on 3×8×8, two per width 4, 8, 16; with `se`, squeeze-and-excitation in every
/// stride-1 block.
fn mbv2(se: bool) -> ModelConfig {
    ModelConfig::MobileNetV2(MobileNetV2Config {
        input: [3, 8, 8],
        classes: 5,
        width: 4,
        blocks: 6,
        expand: 2,
        se,
        dropout: 0.2,
    })
}

/// A ShuffleNetV2-style graph (`arch = "graph"`) on 3×8×8: stem conv → BN → hard swish →
/// 3×3 max pool stride 2 ('same' padding) → channel split (narrow) → right half 1×1 → BN →
/// ReLU → depthwise → 1×1 → SE with a hard-sigmoid gate → concat with the left half →
/// channel shuffle → 2×2 average pool stride 1 with padding 1 (zeros counted) → pool → linear.
fn shuffle_graph() -> ModelConfig {
    let nodes = json!([
        { "name": "c0", "op": "conv", "c_out": 8, "kernel": [3, 3], "padding": "same", "bias": false },
        { "name": "b0", "op": "batch_norm" },
        { "name": "a0", "op": "hard_swish" },
        { "name": "mp", "op": "max_pool", "kernel": [3, 3], "stride": [2, 2], "padding": "same" },
        { "name": "left", "op": "narrow", "start": 0, "len": 4 },
        { "name": "right", "op": "narrow", "start": 4, "len": 4, "inputs": ["mp"] },
        { "name": "p1", "op": "conv", "c_out": 4, "kernel": [1, 1], "bias": false },
        { "name": "b1", "op": "batch_norm" },
        { "name": "r1", "op": "relu" },
        { "name": "dw", "op": "conv", "kernel": [3, 3], "padding": "same", "groups": "depthwise" },
        { "name": "p2", "op": "conv", "c_out": 4, "kernel": [1, 1] },
        { "name": "se.pool", "op": "global_avg_pool" },
        { "name": "se.f1", "op": "linear", "c_out": 2 },
        { "name": "se.relu", "op": "relu" },
        { "name": "se.f2", "op": "linear", "c_out": 4 },
        { "name": "se.gate", "op": "hard_sigmoid" },
        { "name": "se.mul", "op": "channel_mul", "inputs": ["p2", "se.gate"] },
        { "name": "cat", "op": "concat", "inputs": ["left", "se.mul"] },
        { "name": "shuf", "op": "channel_shuffle", "groups": 2 },
        { "name": "ap", "op": "avg_pool", "kernel": [2, 2], "stride": [1, 1], "padding": 1 },
        { "name": "pool", "op": "global_avg_pool" },
        { "name": "fc", "op": "linear" }
    ]);
    ModelConfig::Graph(NodeListConfig {
        input: vec![3, 8, 8],
        classes: 5,
        nodes: parse_nodes(nodes.as_array().unwrap()).unwrap(),
    })
}

/// `n` deterministic inputs in [−1, 1) of per-sample `shape`.
fn batch(shape: &[usize], n: usize, s: u64) -> Tensor {
    let per: usize = shape.iter().product();
    let v: Vec<f32> = (0..n * per)
        .map(|i| (((i as u64 * 2654435761 + s) % 1000) as f32) / 500.0 - 1.0)
        .collect();
    let mut d = vec![n];
    d.extend_from_slice(shape);
    Tensor::from_vec(v, d, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

/// Every check of one model; the ONNX files are added to `manifest` / `expected` for one
/// tract (and onnxruntime) run.
fn check(
    label: &str,
    m: &Model,
    check_kinds: impl Fn(&whittle_export::Network),
    d: &Path,
    manifest: &mut Vec<OrtCase>,
    expected: &mut Vec<(String, Vec<f32>, f32)>,
) {
    let shape = m.graph().input_shape.clone();
    let per: usize = shape.iter().product();
    m.forward(&batch(&shape, 6, 1), true).unwrap(); // non-trivial running statistics
    let x = batch(&shape, 1, 9);
    let want = flat(&m.forward(&x, false).unwrap());
    let folded = m.fold_bn().unwrap();
    let net = to_network(&folded, label).unwrap();
    check_kinds(&net);
    let xv = flat(&x);
    let r = reference::run(&net, &xv, None).unwrap();
    let err = max_diff(&r, &want);
    eprintln!("{label}: max |reference − forward| = {err:e}");
    assert!(err < 1e-4, "{label}: reference {r:?} vs forward {want:?}");

    // int8, activation ranges from other inputs of the same kind.
    let calib: Vec<Vec<f32>> = flat(&batch(&shape, 8, 3))
        .chunks(per)
        .map(<[f32]>::to_vec)
        .collect();
    let params = Int8Params::calibrate(&net, &calib).unwrap();
    let q = reference::run(&net, &xv, Some(&params)).unwrap();
    let out = params.get(&net.output).unwrap();
    let spread = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let qerr = max_diff(&q, &want);
    eprintln!(
        "{label}: max |int8 reference − forward| = {qerr:e} (spread {spread:e}, output step {:e})",
        out.scale
    );
    assert!(
        qerr > 0.0 && qerr < 0.1 * spread + 2.0 * out.scale,
        "{label}: int8 reference {q:?} far from forward {want:?}"
    );

    // C int8: the compiled code reproduces the int8 reference.
    let (_, _) = write_c(&net, &params, d, label).unwrap();
    let got = run_c(d, label, &xv);
    let wantq: Vec<i32> = q.iter().map(|&v| out.quantize(v) as i32).collect();
    let steps = got
        .iter()
        .zip(&wantq)
        .map(|(g, w)| (g - w).abs())
        .max()
        .unwrap();
    eprintln!("{label}: C {got:?} vs int8 reference {wantq:?}: max {steps} steps");
    assert_eq!(got.len(), wantq.len());
    assert!(steps <= 2, "{label}: C {got:?} vs reference {wantq:?}");
    assert!(
        wantq.iter().max() != wantq.iter().min(),
        "{label}: constant logits {wantq:?}"
    );

    // ONNX float and QDQ, run below.
    let model = d.join(format!("{label}.onnx"));
    write_onnx(&net, &model).unwrap();
    let case = |model| OrtCase {
        model,
        shape: net.input.1.clone(),
        input: xv.clone(),
    };
    manifest.push(case(model));
    expected.push((format!("{label} float"), want.clone(), 1e-4));
    let qmodel = d.join(format!("{label}_int8.onnx"));
    write_onnx_qdq(&net, &params, &qmodel).unwrap();
    manifest.push(case(qmodel));
    // tract and onnxruntime both gave 0 steps here; 3 leave room for an integer-kernel
    // requantization that rounds differently.
    expected.push((format!("{label} int8"), q, 3.0 * out.scale));
}

#[test]
fn mobilenet_v2_and_shuffle_graph_export_in_every_format() {
    let dir = tempfile_dir("whittle-export-ops");
    let d = dir.as_path();
    let mut manifest = Vec::new();
    // (label, expected output, tolerance)
    let mut expected: Vec<(String, Vec<f32>, f32)> = Vec::new();
    for (k, se) in [false, true].into_iter().enumerate() {
        let label = if se { "mbv2_se" } else { "mbv2" };
        let m = Model::new(mbv2(se), 21 + k as u64).unwrap();
        let kinds = |net: &whittle_export::Network| {
            let kinds: Vec<&str> = net.layers.iter().map(|l| l.kind()).collect();
            let count = |k: &str| kinds.iter().filter(|&&v| v == k).count();
            // Stem + one per expansion and depthwise conv: 1 + 5 + 6 ReLU6; SE in the four
            // stride-1 blocks (0, 1, 3, 5), adds in those but the first (16 → 4 channels);
            // dropout is gone.
            assert_eq!(count("relu6"), 12, "{label}: {kinds:?}");
            assert_eq!(count("add"), 3, "{label}: {kinds:?}");
            assert_eq!(count("sigmoid"), if se { 4 } else { 0 }, "{label}");
            assert_eq!(count("channel_mul"), if se { 4 } else { 0 }, "{label}");
            assert_eq!(count("batch_norm"), 0, "{label}: BN folded");
            assert!(!kinds.contains(&"dropout"));
        };
        check(label, &m, kinds, d, &mut manifest, &mut expected);
    }
    let m = Model::new(shuffle_graph(), 31).unwrap();
    let kinds = |net: &whittle_export::Network| {
        let mut k: Vec<&str> = net.layers.iter().map(|l| l.kind()).collect();
        k.sort();
        k.dedup();
        for op in [
            "narrow",
            "concat",
            "channel_shuffle",
            "max_pool",
            "avg_pool",
            "hard_swish",
            "hard_sigmoid",
            "channel_mul",
        ] {
            assert!(k.contains(&op), "shuffle graph without {op}: {k:?}");
        }
    };
    check("shuffle", &m, kinds, d, &mut manifest, &mut expected);
    let check_outputs = |runtime: &str, outs: &[Vec<f32>]| {
        for (got, (label, want, tol)) in outs.iter().zip(&expected) {
            let err = max_diff(got, want);
            eprintln!("{label}: max |{runtime} − expected| = {err:e} (tolerance {tol:e})");
            assert!(err <= *tol, "{label}: {runtime} {got:?} vs {want:?}");
        }
    };
    let tract: Vec<Vec<f32>> = manifest
        .iter()
        .map(|c| runtimes::tract_run(&c.model, &c.shape, &c.input).unwrap())
        .collect();
    check_outputs("tract", &tract);
    if let Some(outs) = runtimes::onnxruntime_run(&manifest, d) {
        check_outputs("onnxruntime", &outs);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory under the system temp dir, unique to this process.
fn tempfile_dir(prefix: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}
