//! The `search` (PIT) and `prune` stages on MobileNetV2-SE and ShuffleNetV2, run through a
//! hand-built `RunContext`, and their exported (smaller, node-list) networks through
//! `to_export` to int8: the reference evaluator matches `Model::forward`, the int8 reference
//! stays near it, and the ONNX float / QDQ files run in tract (in-process) and, when python3
//! can import it, onnxruntime match the reference.

use crate::prune::Prune;
use crate::search::Search;
use crate::stage_tests::run;
use crate::to_export::to_network;
use candle_core::{Device, Tensor};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use whittle_engine::InputArtifact;
use whittle_export::{Int8Params, reference, write_onnx, write_onnx_qdq};
use whittle_nn::Model;
use whittle_nn::arch::cifar::ShuffleNetV2Config;
use whittle_nn::config::{MobileNetV2Config, ModelConfig};

#[path = "../../export/tests/common/runtimes.rs"]
mod runtimes;
use runtimes::OrtCase;

const SHAPE: [usize; 3] = [3, 8, 8];

fn mbv2_se() -> ModelConfig {
    ModelConfig::MobileNetV2(MobileNetV2Config {
        input: SHAPE,
        classes: 3,
        width: 4,
        blocks: 6,
        expand: 2,
        se: true,
        dropout: 0.2,
    })
}

fn shufflenet_v2() -> ModelConfig {
    ModelConfig::ShuffleNetV2(ShuffleNetV2Config {
        input: SHAPE,
        classes: 3,
        width: 8,
        blocks: 6,
        se: 2,
    })
}

/// `n` images of 3×8×8 in 3 classes, class k lifted by 1 in channel k.
fn images(n: usize, seed: u64) -> whittle_data::dataset::Split {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let per: usize = SHAPE.iter().product();
    let mut x = Vec::with_capacity(n * per);
    let mut y = Vec::new();
    for i in 0..n {
        let k = i % 3;
        for j in 0..per {
            x.push(r.random::<f32>() - 0.5 + if j / 64 == k { 1.0 } else { 0.0 });
        }
        y.push(k as u32);
    }
    whittle_data::dataset::Split {
        x,
        shape: vec![n, 3, 8, 8],
        y,
        ..Default::default()
    }
}

/// A temp folder with `data/` (saved images) and `net/` (an untrained `cfg` network).
fn fixture(name: &str, cfg: ModelConfig) -> (PathBuf, Vec<InputArtifact>) {
    let root = std::env::temp_dir().join(format!("whittle-pruned-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ds = whittle_data::dataset::Dataset {
        train: images(30, 1),
        val: images(0, 2),
        test: images(15, 3),
        classes: vec!["a".into(), "b".into(), "c".into()],
        input_shape: SHAPE.to_vec(),
        layout: "channels,height,width".into(),
        normalization: None,
        description: json!({}),
        ..Default::default()
    };
    whittle_data::save(&ds, &root.join("data")).unwrap();
    Model::new(cfg, 1).unwrap().save(&root.join("net")).unwrap();
    let input = |kind: &str, node: &str, dir: &str| InputArtifact {
        stage: node.into(),
        node: node.into(),
        kind: kind.into(),
        key: "0".into(),
        dir: root.join(dir),
        params: json!({}),
        metrics: json!({}),
    };
    let inputs = vec![
        input("train", "seed", "net"),
        input("fetch", "data", "data"),
    ];
    (root, inputs)
}

fn table(s: &str) -> toml::Table {
    toml::from_str(s).unwrap()
}

/// `n` deterministic inputs in [−1, 1).
fn batch(n: usize, s: u64) -> Tensor {
    let per: usize = SHAPE.iter().product();
    let v: Vec<f32> = (0..n * per)
        .map(|i| (((i as u64 * 2654435761 + s) % 1000) as f32) / 500.0 - 1.0)
        .collect();
    Tensor::from_vec(v, (n, 3, 8, 8), &Device::Cpu).unwrap()
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

/// Float and int8 references of `m`; its ONNX float / QDQ files join `manifest` / `expected`.
fn check(
    label: &str,
    m: &Model,
    d: &Path,
    manifest: &mut Vec<OrtCase>,
    expected: &mut Vec<(String, Vec<f32>, f32)>,
) {
    let x = batch(1, 9);
    let want = flat(&m.forward(&x, false).unwrap());
    let net = to_network(&m.fold_bn().unwrap(), label).unwrap();
    let xv = flat(&x);
    let r = reference::run(&net, &xv, None).unwrap();
    let err = max_diff(&r, &want);
    eprintln!("{label}: max |reference − forward| = {err:e}");
    assert!(err < 1e-4, "{label}: reference {r:?} vs forward {want:?}");
    let calib: Vec<Vec<f32>> = flat(&batch(8, 3))
        .chunks(SHAPE.iter().product())
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
        qerr < 0.1 * spread + 2.0 * out.scale,
        "{label}: int8 reference {q:?} far from forward {want:?}"
    );
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
    expected.push((format!("{label} int8"), q, 3.0 * out.scale));
}

/// The smaller network a stage wrote, checked against its metrics row.
fn stage_output(m: &Value, root: &Path, kind: &str, seed_params: u64) -> Model {
    let small = Model::load(&root.join(format!("out-{kind}"))).unwrap();
    let row = &m["models"][0];
    assert_eq!(small.num_params(), row["params"].as_u64().unwrap());
    assert!(
        small.num_params() < seed_params,
        "{kind}: {} params, seed {seed_params}",
        small.num_params()
    );
    assert!(matches!(small.config(), ModelConfig::Graph(_)));
    assert!(row["changes"].as_array().is_some_and(|c| !c.is_empty()));
    small
}

#[test]
fn pit_and_pruned_mobilenet_v2_se_and_shufflenet_v2_export_to_int8() {
    let dir = std::env::temp_dir().join(format!("whittle-pruned-onnx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut manifest = Vec::new();
    let mut expected: Vec<(String, Vec<f32>, f32)> = Vec::new();
    for (label, cfg) in [("mbv2_se", mbv2_se()), ("shufflenet_v2", shufflenet_v2())] {
        let seed_params = Model::new(cfg.clone(), 1).unwrap().num_params();
        let (root, inputs) = fixture(label, cfg);
        let m = run(
            &Search,
            table(
                "method = 'pit'\nlambda = 3e-3\nlr_masks = 0.1\nepochs = 3\nbatch_size = 10\nlr = 1e-2\nallow_divergence = true",
            ),
            &root,
            &inputs,
        );
        let pit = stage_output(&m, &root, "search", seed_params);
        eprintln!(
            "{label}: PIT stage {seed_params} → {} params",
            pit.num_params()
        );
        let m = run(&Prune, table("method = 'l1'\nratio = 0.5"), &root, &inputs);
        let pruned = stage_output(&m, &root, "prune", seed_params);
        eprintln!(
            "{label}: L1 prune stage {seed_params} → {} params",
            pruned.num_params()
        );
        // Non-trivial running statistics before the export.
        for net in [&pit, &pruned] {
            net.forward(&batch(6, 1), true).unwrap();
        }
        check(
            &format!("{label}_pit"),
            &pit,
            &dir,
            &mut manifest,
            &mut expected,
        );
        check(
            &format!("{label}_l1"),
            &pruned,
            &dir,
            &mut manifest,
            &mut expected,
        );
        let _ = std::fs::remove_dir_all(&root);
    }
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
    if let Some(outs) = runtimes::onnxruntime_run(&manifest, &dir) {
        check_outputs("onnxruntime", &outs);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
