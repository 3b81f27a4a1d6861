//! Tests of the `qat` stage kind: located parameter errors and the QAT defaults in the key;
//! on a tiny trained TCN and a synthetic data set, the output is a network node whose files
//! (network + `int8.json`) give back the row's accuracy, whose ONNX QDQ export run in tract
//! (and onnxruntime when python3 has it) predicts what the row's int8 network predicts, and
//! which the `export` stage takes as an input.

use super::*;
use crate::stage_tests::run as run_stage;
use candle_core::Tensor;
use serde_json::json;
use std::path::{Path, PathBuf};
use whittle_engine::InputArtifact;
use whittle_nn::config::{ModelConfig, TcnConfig, TcnLayerConfig};
use whittle_nn::{DataSet, OptimizerConfig};

#[path = "../../export/tests/common/runtimes.rs"]
mod runtimes;

fn table(s: &str) -> toml::Table {
    toml::from_str(s).unwrap()
}

fn err_path(s: &str) -> Vec<String> {
    match Qat.resolve(&table(s)) {
        Err(e) => {
            assert!(!e.message.is_empty());
            e.path
        }
        Ok(v) => panic!("`{s}` resolved to {v}"),
    }
}

#[test]
fn bad_parameters_are_located_errors() {
    assert_eq!(err_path(r#"format = "fp16""#), ["format"]);
    assert_eq!(err_path(r#"format = "w9""#), ["format"]);
    assert_eq!(err_path(r#"format = "float(4,3)""#), ["format"]);
    assert_eq!(err_path("epochs = 0"), ["epochs"]);
    assert_eq!(err_path("batch_size = 0"), ["batch_size"]);
    assert_eq!(err_path("lr = -1e-3"), ["lr"]);
    assert_eq!(err_path("lr = nan"), ["lr"]);
    assert_eq!(err_path("calibration_samples = 0"), ["calibration_samples"]);
    assert_eq!(err_path(r#"observer = "mse""#), ["observer"]);
    assert_eq!(err_path("percentile = 20.0"), ["percentile"]);
    assert_eq!(err_path("qat_epochs = 2"), ["qat_epochs"], "unknown key");
    assert_eq!(
        err_path(r#"optimizer = { kind = "rmsprop" }"#),
        ["optimizer", "kind"]
    );
    assert_eq!(
        // serde locates errors inside an internally tagged table at the table
        err_path(r#"optimizer = { kind = "sgd", momentum = "x" }"#),
        ["optimizer"]
    );
    assert_eq!(
        err_path(r#"schedule = { kind = "step", step_size = 0, gamma = 0.5 }"#),
        ["schedule"]
    );
}

#[test]
fn defaults_and_hyper_parameters_are_in_the_key() {
    let v = Qat.resolve(&toml::Table::new()).unwrap();
    let p: QatParams = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(p.own.format, "int8");
    assert_eq!(p.own.calibration_samples, 500);
    assert_eq!(p.recipe.epochs, 3);
    assert_eq!(p.recipe.lr, 1e-4);
    assert_eq!(p.recipe.optimizer, OptimizerConfig::adam(0.0));
    assert_eq!(p.recipe.schedule, whittle_nn::ScheduleConfig::Constant);
    assert_eq!(v["recipe"]["optimizer"]["kind"], "adam");
    // `int4` is `w4`; an explicit default is the same key as leaving it out.
    let w = Qat.resolve(&table(r#"format = "int4""#)).unwrap();
    assert_eq!(w["format"], "w4");
    assert_eq!(
        Qat.resolve(&table(
            r#"format = "int8"
            epochs = 3"#
        ))
        .unwrap(),
        v
    );
    // Every hyper-parameter changes the resolved parameters (the key).
    for s in [
        "epochs = 4",
        "lr = 1e-3",
        "batch_size = 50",
        r#"optimizer = { kind = "sgd", momentum = 0.9 }"#,
        "calibration_samples = 100",
        r#"observer = "percentile""#,
    ] {
        assert_ne!(Qat.resolve(&table(s)).unwrap(), v, "{s}");
    }
    assert_eq!(Qat.threads(&v), 2);
    assert_eq!(Qat.min_threads(&v), 1);
}

/// A 2-layer TCN (6, 5 channels) on 10×49 items, 3 classes.
fn tiny() -> ModelConfig {
    let mut c = TcnConfig::seed(6);
    c.layers.truncate(2);
    c.layers[1] = TcnLayerConfig {
        channels: 5,
        kernel: 3,
        dilation: 2,
    };
    c.classes = 3;
    ModelConfig::Tcn(c)
}

/// Class signal of the synthetic clips (per value, against noise of amplitude 1).
const LIFT: f32 = 0.06;

/// `n` clips of shape 10×49 in 3 classes, noise U(−0.5, 0.5) with class k lifted by `lift` in
/// channel k (small enough that the networks make mistakes, so predictions can disagree).
fn split(n: usize, seed: u64, lift: f32) -> whittle_data::dataset::Split {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let k = i % 3;
        for j in 0..490 {
            x.push(r.random::<f32>() - 0.5 + if j / 49 == k { lift } else { 0.0 });
        }
        y.push(k as u32);
    }
    whittle_data::dataset::Split {
        x,
        shape: vec![n, 10, 49],
        y,
        ..Default::default()
    }
}

/// `root/data` (90 training, 300 test items) and `root/net` (a [`tiny`] TCN trained briefly).
fn fixture(name: &str) -> (PathBuf, Vec<InputArtifact>) {
    let root = std::env::temp_dir().join(format!("whittle-qat-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ds = whittle_data::dataset::Dataset {
        train: split(90, 1, LIFT),
        val: split(0, 2, LIFT),
        test: split(300, 3, LIFT),
        classes: vec!["a".into(), "b".into(), "c".into()],
        input_shape: vec![10, 49],
        layout: "channels,steps".into(),
        normalization: None,
        description: json!({}),
        ..Default::default()
    };
    whittle_data::save(&ds, &root.join("data")).unwrap();
    let m = Model::new(tiny(), 1).unwrap();
    let nd = |s: &whittle_data::dataset::Split| {
        whittle_nn::Split::classes(s.x.clone(), &[10, 49], s.y.clone()).unwrap()
    };
    let data = DataSet {
        train: nd(&ds.train),
        val: None,
        test: Some(nd(&ds.test)),
    };
    let cfg = whittle_nn::TrainConfig {
        augment: Default::default(),
        epochs: 3,
        batch_size: 10,
        lr: 2e-2,
        optimizer: OptimizerConfig::adam(1e-4),
        schedule: Default::default(),
        loss: LossKind::CrossEntropy,
        patience: None,
        monitor: whittle_nn::train::Monitor::ValLoss,
        keep_best: false,
        seed: 42,
    };
    let r = whittle_nn::train(&m, &data, &cfg, Default::default()).unwrap();
    m.save(&root.join("net")).unwrap();
    let inputs = vec![
        artifact(
            &root,
            "train",
            "seed",
            "net",
            json!({"models": [{"method": "train", "test_accuracy": r.test.unwrap().accuracy}]}),
        ),
        artifact(&root, "fetch", "data", "data", json!({})),
    ];
    (root, inputs)
}

fn artifact(root: &Path, kind: &str, node: &str, dir: &str, metrics: Value) -> InputArtifact {
    InputArtifact {
        stage: node.into(),
        node: node.into(),
        kind: kind.into(),
        key: "0".into(),
        dir: root.join(dir),
        params: json!({}),
        metrics,
    }
}

/// The test split as the network reads it.
fn test_split(root: &Path) -> whittle_nn::Split {
    let ds = whittle_data::load(&root.join("data")).unwrap();
    whittle_nn::Split::classes(ds.test.x.clone(), &[10, 49], ds.test.y.clone()).unwrap()
}

fn argmax_rows(v: &[f32], classes: usize) -> Vec<usize> {
    v.chunks(classes)
        .map(|r| {
            (0..classes)
                .max_by(|&a, &b| r[a].total_cmp(&r[b]).then(b.cmp(&a)))
                .unwrap()
        })
        .collect()
}

#[test]
fn qat_int8_network_is_saved_measured_and_exported_as_reported() {
    let (root, inputs) = fixture("int8");
    let params = table(
        r#"
        epochs = 2
        lr = 1e-3
        batch_size = 20
        calibration_samples = 30
        threads = 1
        "#,
    );
    let m = run_stage(&Qat, params.clone(), &root, &inputs);
    let out = root.join("out-qat");
    let row = &m["models"][0];
    assert_eq!(row["format"], "int8+qat");
    assert_eq!(row["parent"], "seed");
    assert_eq!(row["method"], "train");
    assert_eq!(row["qat_epochs"], 2);
    assert_eq!(row["qat_lr"], 1e-3);
    assert_eq!(m["calibration_samples"], 30);
    assert_eq!(m["history"].as_array().unwrap().len(), 2);
    let acc = row["test_accuracy"].as_f64().unwrap();
    let acc32 = m["fp32_score"].as_f64().unwrap();
    assert!(
        (row["delta_vs_fp32"].as_f64().unwrap() - (acc - acc32)).abs() < 1e-12,
        "{row}"
    );
    eprintln!(
        "int8+qat accuracy {acc}, fp32 {acc32}, before QAT {}",
        row["ptq_score"]
    );
    assert!(
        acc > 0.5 && acc < 1.0,
        "int8+qat accuracy {acc}: the data set should leave mistakes"
    );
    // Sizes as `quantize` counts the input network in int8.
    let parent = Model::load(&root.join("net")).unwrap();
    assert_eq!(
        row["weight_bytes"].as_u64().unwrap(),
        weight_bytes(parent.graph(), Format::Int8, true)
    );
    assert_eq!(
        row["peak_activation_bytes"].as_u64().unwrap(),
        peak_activation_elems(&parent)
    );

    // The output is a network: folded, fine-tuned (its weights moved off the input's).
    let saved = Model::load(&out).unwrap();
    assert!(saved.bn_folded());
    let folded = parent.fold_bn().unwrap();
    let w = |m: &Model| -> Vec<f32> {
        m.state().unwrap()["convs.0.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let moved = w(&saved)
        .iter()
        .zip(w(&folded))
        .filter(|(a, b)| *a != b)
        .count();
    assert!(moved > 0, "QAT left the weights unchanged");

    // int8.json: one quantizer per value, read back and written again byte for byte.
    let acts = crate::int8::load(&out, saved.graph()).unwrap().unwrap();
    assert_eq!(acts.len(), saved.graph().nodes.len() + 1);
    let again = root.join("again");
    std::fs::create_dir_all(&again).unwrap();
    crate::int8::save(&again, saved.graph(), &acts).unwrap();
    assert_eq!(
        std::fs::read(out.join(crate::int8::INT8_FILE)).unwrap(),
        std::fs::read(again.join(crate::int8::INT8_FILE)).unwrap()
    );

    // Re-evaluated from the saved files: the row's accuracy. The calibration set passed is
    // deliberately wrong (zeros): the quantizers must come from int8.json, not from it.
    let test = test_split(&root);
    let zeros = Tensor::zeros(
        (4, 10, 49),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let p: QatParams = serde_json::from_value(Qat.resolve(&params).unwrap()).unwrap();
    let q = crate::int8::int8_model(&saved, Some(&out), &zeros, &p.options()).unwrap();
    assert_eq!(q.activation_quantizers(), acts.as_slice());
    let re = whittle_nn::train::evaluate(&q, &test, LossKind::CrossEntropy, 100)
        .unwrap()
        .accuracy
        .unwrap();
    assert_eq!(re, acc, "re-evaluated {re} vs reported {acc}");

    // ONNX QDQ export of that network, run in tract on the whole test split (dynamic batch):
    // the same predictions as the row's network.
    let net = crate::to_export::to_network(&saved, "qat").unwrap();
    let ep = crate::int8::export_params(&q).unwrap();
    let onnx = root.join("qat_int8.onnx");
    whittle_export::write_onnx_with(&net, Some(&ep), whittle_export::Batch::Dynamic, &onnx)
        .unwrap();
    let n = test.len();
    let x: Vec<f32> = test.x.flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<f32> = q
        .forward(&test.x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want_logits = want.clone();
    let want = argmax_rows(&want, 3);
    let labels: Vec<u32> = match &test.y {
        whittle_nn::Targets::Classes(y) => y.to_vec1().unwrap(),
        _ => unreachable!(),
    };
    // One step of the output quantizer: tract's integer kernels may round an accumulator the
    // other way; anything larger is a different network.
    let step = match acts.last().unwrap() {
        whittle_nn::quant::eval::ActQuant::Affine(a) => a.scale,
        other => panic!("output quantizer {other:?}"),
    };
    let check = |runtime: &str, out: &[f32]| {
        let far = out
            .iter()
            .zip(&want_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            far <= 1.01 * step,
            "{runtime}: logits {far} apart, step {step}"
        );
        let got = argmax_rows(out, 3);
        assert_eq!(got.len(), n);
        let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        let right = got
            .iter()
            .zip(&labels)
            .filter(|(a, y)| **a == **y as usize)
            .count();
        let racc = right as f64 / n as f64;
        eprintln!(
            "{runtime}: {differ} of {n} predictions differ from the int8+qat row's network; \
             accuracy {racc:.4} vs row {acc:.4}"
        );
        assert!(
            differ * 100 <= n,
            "{runtime}: {differ} of {n} predictions differ"
        );
        assert!(
            (racc - acc).abs() <= 0.01 + 1e-12,
            "{runtime}: {racc} vs {acc}"
        );
    };
    let tract = runtimes::tract_run(&onnx, &[n, 10, 49], &x).unwrap();
    check("tract", &tract);
    let case = runtimes::OrtCase {
        model: onnx.clone(),
        shape: vec![n, 10, 49],
        input: x.clone(),
    };
    if let Some(outs) = runtimes::onnxruntime_run(&[case], &root) {
        check("onnxruntime", &outs[0]);
    }

    // The `export` stage takes the qat node as a network input, and the QDQ file it ships
    // (its quantizers read from int8.json, not calibrated anew) is the row's network too.
    let as_input = vec![
        artifact(&root, "qat", "seed-qat", "out-qat", m.clone()),
        inputs[1].clone(),
    ];
    let e = run_stage(&crate::export::Export, toml::Table::new(), &root, &as_input);
    assert_eq!(e["exports"][0]["parent"], "seed-qat");
    let shipped = e["exports"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "onnx_int8_qdq")
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    let shipped = root.join("out-export").join(shipped);
    let out = runtimes::tract_run(&shipped, &[n, 10, 49], &x).unwrap();
    check("export stage's QDQ file in tract", &out);
    // The export stage's own runs of its int8 files compare them with its in-process int8
    // network, which must be the row's.
    for r in e["exports"][0]["shipped"]["files"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if r["artifact"] != "onnx" && r["in_process"].is_f64() {
            eprintln!("export stage measured {r}");
            assert_eq!(r["in_process"].as_f64().unwrap(), acc, "{r}");
        }
    }

    // Same seed, same result.
    let again = run_stage(&Qat, params, &root, &inputs);
    assert_eq!(again["models"], m["models"]);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn qat_weight_only_network_is_saved_without_int8_file() {
    let (root, inputs) = fixture("w4");
    let params = table(
        r#"
        format = "w3"
        epochs = 2
        lr = 1e-3
        batch_size = 20
        keep_first_last_8bit = false
        threads = 1
        "#,
    );
    // Declared memory: a training of the input network; int8 counts the straight-through
    // copies of every activation on top.
    let need = |t: &toml::Table| Qat.memory(&Qat.resolve(t).unwrap(), &inputs).unwrap();
    let (w3, i8) = (need(&params), need(&table("batch_size = 20")));
    assert!(
        i8.bytes > w3.bytes,
        "int8 {} vs w3 {}",
        i8.detail,
        w3.detail
    );
    assert!(w3.detail.starts_with("QAT: weights"), "{}", w3.detail);
    let m = run_stage(&Qat, params, &root, &inputs);
    let out = root.join("out-qat");
    let row = &m["models"][0];
    assert_eq!(row["format"], "w3+qat");
    assert!(!out.join(crate::int8::INT8_FILE).exists());
    assert_eq!(m["calibration_samples"], Value::Null);
    let saved = Model::load(&out).unwrap();
    let parent = Model::load(&root.join("net")).unwrap();
    assert_eq!(
        row["weight_bytes"].as_u64().unwrap(),
        weight_bytes(parent.graph(), Format::WeightOnly(3), false)
    );
    // fp32 activations: peak bytes as fp32.
    assert_eq!(
        row["peak_activation_bytes"].as_u64().unwrap(),
        4 * peak_activation_elems(&parent)
    );
    let opts = QuantOptions {
        keep_first_last_8bit: false,
        ..Default::default()
    };
    let q = QuantModel::prepare(&saved, Format::WeightOnly(3), None, &opts).unwrap();
    let re = whittle_nn::train::evaluate(&q, &test_split(&root), LossKind::CrossEntropy, 100)
        .unwrap()
        .accuracy;
    assert_eq!(json!(re), row["test_accuracy"]);
    let _ = std::fs::remove_dir_all(&root);
}
