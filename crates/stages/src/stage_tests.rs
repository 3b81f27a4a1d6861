//! End-to-end tests of the quantize, calibrate and export stage kinds on tiny trained TCNs
//! (symmetric and causal) and a synthetic data set, run through a hand-built `RunContext`,
//! and of the ONNX export of real models against `Model::forward` in tract (and onnxruntime
//! when python3 can import it).

use crate::calibrate::Calibrate;
use crate::quantize::Quantize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use whittle_engine::{CancelToken, Checkpoints, InputArtifact, Progress, RunContext, StageKind};
use whittle_nn::config::{ModelConfig, TcnConfig, TcnLayerConfig, TcnPadding};
use whittle_nn::{DataSet, Model};

/// Checkpoints that are never written or found (the stages under test run in one go).
pub(crate) struct NoCkpt;
impl Checkpoints for NoCkpt {
    fn save(&self, _: u64, _: &mut dyn FnMut(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
        Ok(())
    }
    fn latest(&self) -> Option<(u64, PathBuf)> {
        None
    }
}
/// Progress that goes nowhere.
pub(crate) struct NoProgress;
impl Progress for NoProgress {
    fn set_length(&self, _: u64) {}
    fn set_position(&self, _: u64) {}
    fn set_message(&self, _: &str) {}
}

/// `n` clips of shape 10×49 in 3 classes, class k lifted by 1 in channel k.
pub(crate) fn split(n: usize, seed: u64) -> whittle_data::dataset::Split {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let k = i % 3;
        for j in 0..490 {
            x.push(r.random::<f32>() - 0.5 + if j / 49 == k { 1.0 } else { 0.0 });
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

/// A causal TCN of three k=3 layers with dilations 1, 2, 4 (6, 6, 5 channels, BN); with
/// `residual` the first two form a block whose skip is a 1×1 projection of the 10-channel
/// input (a third layer alone closes no block).
fn tiny_causal(residual: bool) -> ModelConfig {
    let mut c = TcnConfig::seed(6);
    c.layers = [(6, 1), (6, 2), (5, 4)]
        .iter()
        .map(|&(channels, dilation)| TcnLayerConfig {
            channels,
            kernel: 3,
            dilation,
        })
        .collect();
    c.padding = TcnPadding::Causal;
    c.residual_every = if residual { 2 } else { 0 };
    c.classes = 3;
    ModelConfig::Tcn(c)
}

/// A temp folder with `data/` (a saved data set) and `net/` (a trained [`tiny`] network).
fn fixture(name: &str) -> (PathBuf, Vec<InputArtifact>) {
    fixture_with(name, tiny())
}

/// Like [`fixture`] with the network `cfg`.
fn fixture_with(name: &str, cfg: ModelConfig) -> (PathBuf, Vec<InputArtifact>) {
    let root = std::env::temp_dir().join(format!("whittle-stage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ds = whittle_data::dataset::Dataset {
        train: split(60, 1),
        val: split(0, 2),
        test: split(150, 3),
        classes: vec!["a".into(), "b".into(), "c".into()],
        input_shape: vec![10, 49],
        layout: "channels,steps".into(),
        normalization: None,
        description: json!({}),
        ..Default::default()
    };
    whittle_data::save(&ds, &root.join("data")).unwrap();
    let m = Model::new(cfg, 1).unwrap();
    let nd = |s: &whittle_data::dataset::Split| {
        whittle_nn::Split::classes(s.x.clone(), &[10, 49], s.y.clone()).unwrap()
    };
    let data = DataSet {
        train: nd(&ds.train),
        val: None,
        test: Some(nd(&ds.test)),
    };
    let cfg = default_cfg();
    let r = whittle_nn::train(&m, &data, &cfg, Default::default()).unwrap();
    let acc = r.test.unwrap().accuracy.unwrap();
    m.save(&root.join("net")).unwrap();
    let input = |kind: &str, node: &str, dir: &str, metrics: Value| InputArtifact {
        stage: node.into(),
        node: node.into(),
        kind: kind.into(),
        key: "0".into(),
        dir: root.join(dir),
        params: json!({}),
        metrics,
    };
    let inputs = vec![
        input(
            "train",
            "seed",
            "net",
            json!({"models": [{"method": "train", "test_accuracy": acc}]}),
        ),
        input("fetch", "data", "data", json!({})),
    ];
    (root, inputs)
}

fn default_cfg() -> whittle_nn::TrainConfig {
    whittle_nn::TrainConfig {
        augment: Default::default(),
        epochs: 4,
        batch_size: 10,
        lr: 2e-2,
        optimizer: whittle_nn::OptimizerConfig::adam(1e-4),
        schedule: whittle_nn::ScheduleConfig::MultiStep {
            milestones: vec![3],
            gamma: 0.5,
        },
        loss: whittle_nn::loss::LossKind::CrossEntropy,
        patience: None,
        monitor: whittle_nn::train::Monitor::ValLoss,
        keep_best: false,
        seed: 42,
    }
}

/// Resolves `params` and runs `kind` once (seed 7, one thread) into `root/out-<kind>`.
pub(crate) fn run(
    kind: &dyn StageKind,
    params: toml::Table,
    root: &Path,
    inputs: &[InputArtifact],
) -> Value {
    let resolved = kind.resolve(&params).unwrap();
    let out = root.join(format!("out-{}", kind.name()));
    std::fs::create_dir_all(&out).unwrap();
    let ctx = RunContext {
        node: kind.name(),
        stage: kind.name(),
        key: "k",
        params: &resolved,
        seed: 7,
        inputs,
        out_dir: &out,
        experiment_dir: root,
        threads: 1,
        checkpoints: &NoCkpt,
        cancel: &CancelToken::default(),
        progress: &NoProgress,
    };
    kind.run(&ctx).unwrap()
}

#[test]
fn quantize_reports_every_format() {
    let (root, inputs) = fixture("quantize");
    let m = run(&Quantize, toml::Table::new(), &root, &inputs);
    let rows = m["models"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["format"].as_str().unwrap()).collect();
    assert_eq!(names, ["fp32", "fp16", "bf16", "float(4,3)", "int8", "w4"]);
    let fp32 = &rows[0];
    let acc32 = fp32["test_accuracy"].as_f64().unwrap();
    let parent_acc = inputs[0].metrics["models"][0]["test_accuracy"]
        .as_f64()
        .unwrap();
    assert!(
        (acc32 - parent_acc).abs() < 1e-9,
        "fp32 {acc32} vs trained {parent_acc}"
    );
    assert!(acc32 > 0.8);
    let params = fp32["params"].as_u64().unwrap();
    assert_eq!(fp32["weight_bytes"].as_u64().unwrap(), 4 * params);
    for r in rows {
        assert_eq!(r["parent"], "seed");
        assert_eq!(r["method"], "train");
        let d = r["delta_vs_fp32"].as_f64().unwrap();
        assert!((r["test_accuracy"].as_f64().unwrap() - acc32 - d).abs() < 1e-12);
    }
    let int8 = &rows[4];
    assert!(int8["delta_vs_fp32"].as_f64().unwrap() >= -0.01, "{int8}");
    assert_eq!(
        int8["peak_activation_bytes"].as_u64().unwrap() * 4,
        fp32["peak_activation_bytes"].as_u64().unwrap()
    );
    assert!(int8["weight_bytes"].as_u64().unwrap() < 2 * params);
    // Bad parameters are errors with a path.
    let mut t = toml::Table::new();
    t.insert("formats".into(), toml::Value::Array(vec!["int3".into()]));
    let e = Quantize.resolve(&t).unwrap_err();
    assert_eq!(e.path, ["formats", "0"]);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn quantize_float_grid_picks_the_best_format_within_the_budget() {
    let (root, inputs) = fixture("quantize-grid");
    let t: toml::Table = toml::from_str(
        r#"
        formats = ["fp32", "float(*,*)", "float(4,2)"]
        float_grid = { exp_bits = [3, 4], man_bits = [1, 2] }
        budget_bytes = 1
        "#,
    )
    .unwrap();
    // First a budget nothing fits: no best is marked.
    let m = run(&Quantize, t.clone(), &root, &inputs);
    let rows = m["models"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["format"].as_str().unwrap()).collect();
    // The grid expands in place, w-major; the explicit float(4,2) is a duplicate.
    assert_eq!(
        names,
        [
            "fp32",
            "float(3,1)",
            "float(3,2)",
            "float(4,1)",
            "float(4,2)"
        ]
    );
    assert!(rows.iter().all(|r| r.get("best_format").is_none()));
    assert_eq!(m["best_formats"], json!([]));
    // Stored bytes: bits·W/8 + 4·O for W conv/linear weights and O other parameters, so
    // one more bit costs W/8 bytes (W = 180 + 90 + 50 + 15 = 335 for the tiny TCN:
    // 10→6 k3, 6→5 k3, 1×1 projection 10→5, linear 5→3).
    let wb: Vec<u64> = rows
        .iter()
        .map(|r| r["weight_bytes"].as_u64().unwrap())
        .collect();
    assert!((41..=42).contains(&(wb[2] - wb[1])), "{wb:?}");
    assert_eq!(wb[2], wb[3], "float(3,2) and float(4,1) are both 6 bits");
    // A budget of the 6-bit size: float(4,2) (7 bits) and fp32 no longer fit.
    let mut t2 = t.clone();
    t2.insert("budget_bytes".into(), toml::Value::Integer(wb[2] as i64));
    let m = run(&Quantize, t2, &root, &inputs);
    let rows = m["models"].as_array().unwrap();
    let acc: Vec<f64> = rows
        .iter()
        .map(|r| r["test_accuracy"].as_f64().unwrap())
        .collect();
    // By hand: the most accurate of rows 1..=3, ties to fewer bytes, then the earlier row.
    let mut want = 1;
    for i in 2..=3 {
        if acc[i] > acc[want] || (acc[i] == acc[want] && wb[i] < wb[want]) {
            want = i;
        }
    }
    let marked: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].get("best_format") == Some(&json!(true)))
        .collect();
    assert_eq!(marked, [want], "accuracies {acc:?}, bytes {wb:?}");
    assert_eq!(m["best_formats"][0]["format"], rows[want]["format"]);
    assert_eq!(m["best_formats"][0]["network"], "seed");
    assert_eq!(m["budget_bytes"], json!(wb[2]));
    // Bad grid ranges are errors with a path.
    let mut bad = t.clone();
    bad.insert(
        "float_grid".into(),
        toml::from_str::<toml::Table>("g = { exp_bits = [1, 4], man_bits = [0, 2] }").unwrap()["g"]
            .clone(),
    );
    assert_eq!(Quantize.resolve(&bad).unwrap_err().path, ["float_grid"]);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn quantize_qat_adds_a_fine_tuned_row() {
    let (root, inputs) = fixture("quantize-qat");
    let t: toml::Table = toml::from_str(
        r#"
        formats = ["int8", "w2"]
        qat = true
        qat_epochs = 2
        qat_lr = 1e-3
        qat_batch_size = 20
        keep_first_last_8bit = false
        "#,
    )
    .unwrap();
    let m = run(&Quantize, t.clone(), &root, &inputs);
    let rows = m["models"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["format"].as_str().unwrap()).collect();
    assert_eq!(names, ["int8", "int8+qat", "w2", "w2+qat"]);
    let acc = |i: usize| rows[i]["test_accuracy"].as_f64().unwrap();
    assert_eq!(rows[0]["weight_bytes"], rows[1]["weight_bytes"]);
    assert_eq!(rows[1]["qat_epochs"], 2);
    assert!(acc(1) >= acc(0), "int8+qat {} < int8 {}", acc(1), acc(0));
    assert!(acc(3) >= acc(2), "w2+qat {} < w2 {}", acc(3), acc(2));
    // Same seed, same result.
    let again = run(&Quantize, t, &root, &inputs);
    assert_eq!(again["models"], m["models"]);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn calibrate_times_fits_and_estimates() {
    let (root, inputs) = fixture("calibrate");
    let params: toml::Table = toml::from_str(
        "warmup = 1\nruns = 3\npasses = 2\nlayer_runs = 3\n\
         [[mcu_profiles]]\nname = \"tiny\"\nflash_bytes = 1000\nsram_bytes = 100\nclock_mhz = 100.0\n\
         cycles_per_mac = { int8 = 1.0, fp16 = 2.0, fp32 = 2.0 }\n",
    )
    .unwrap();
    let m = run(&Calibrate, params, &root, &inputs);
    let rows = m["models"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["parent"], "seed");
    assert!(rows[0]["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(rows[0].get("test_accuracy").is_none());
    assert_eq!(m["host"][0]["measured"]["runs"], 6);
    assert!(m["host"][0]["predicted_lut_ms"].as_f64().unwrap() > 0.0);
    let types: Vec<&str> = m["fits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"conv1d") && types.contains(&"linear"),
        "{types:?}"
    );
    // stm32f746 (built in) + tiny, × fp32/int8.
    let mcu = m["mcu"].as_array().unwrap();
    assert_eq!(mcu.len(), 4);
    assert_eq!(mcu[0]["fits_flash"], true);
    assert_eq!(mcu[2]["device"], "tiny");
    assert_eq!(mcu[2]["fits_flash"], false);
    assert!(Calibrate.extra_key(&json!({}), &root).unwrap().len() > 3);
    let _ = std::fs::remove_dir_all(&root);
}

fn small_dscnn() -> ModelConfig {
    let mut c = whittle_nn::config::DsCnnConfig::reference();
    c.stem.channels = 6;
    c.blocks.truncate(2);
    for b in &mut c.blocks {
        b.channels = 5;
    }
    c.classes = 4;
    ModelConfig::DsCnn(c)
}

#[path = "../../export/tests/common/runtimes.rs"]
mod runtimes;

/// ONNX of real models (TCN, DS-CNN, causal TCNs with and without residual blocks; BN with
/// non-trivial statistics, folded) run in tract, and in onnxruntime when python3 has it: the
/// float file matches `Model::forward` in eval mode, the int8 QDQ file matches the int8
/// reference evaluator (tract within 1 output step, onnxruntime within 3: see
/// `whittle-export`'s tests/onnxruntime.rs) and the int8 reference stays near the float forward.
#[test]
fn exported_onnx_matches_model_forward() {
    let root = std::env::temp_dir().join(format!("whittle-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let mut cases = Vec::new();
    // (label, expected output, tolerance for tract, tolerance for onnxruntime)
    let mut expected: Vec<(String, Vec<f32>, f32, f32)> = Vec::new();
    let cfgs = [tiny(), small_dscnn(), tiny_causal(false), tiny_causal(true)];
    for (k, cfg) in cfgs.into_iter().enumerate() {
        let m = Model::new(cfg, 5 + k as u64).unwrap();
        let shape = m.graph().input_shape.clone();
        let per: usize = shape.iter().product();
        let mk = |n: usize, s: u64| {
            let v: Vec<f32> = (0..n * per)
                .map(|i| (((i as u64 * 2654435761 + s) % 1000) as f32) / 500.0 - 1.0)
                .collect();
            let mut d = vec![n];
            d.extend_from_slice(&shape);
            candle_core::Tensor::from_vec(v, d, &candle_core::Device::Cpu).unwrap()
        };
        m.forward(&mk(6, 1), true).unwrap(); // non-trivial running statistics
        let x = mk(1, 9);
        let want: Vec<f32> = m
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let folded = m.fold_bn().unwrap();
        let net = crate::to_export::to_network(&folded, &format!("n{k}")).unwrap();
        let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let r = whittle_export::reference::run(&net, &xv, None).unwrap();
        for (a, b) in r.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "n{k}: reference {a} vs forward {b}");
        }
        let model = root.join(format!("n{k}.onnx"));
        whittle_export::write_onnx(&net, &model).unwrap();
        let case = |model| runtimes::OrtCase {
            model,
            shape: net.input.1.clone(),
            input: xv.clone(),
        };
        cases.push(case(model));
        expected.push((format!("n{k} float"), want.clone(), 1e-4, 1e-4));

        // int8 QDQ, activation ranges from other inputs of the same kind.
        let calib: Vec<f32> = mk(8, 3).flatten_all().unwrap().to_vec1().unwrap();
        let calib: Vec<Vec<f32>> = calib.chunks(per).map(<[f32]>::to_vec).collect();
        let params = whittle_export::Int8Params::calibrate(&net, &calib).unwrap();
        let q = whittle_export::reference::run(&net, &xv, Some(&params)).unwrap();
        let out_scale = params.get(&net.output).unwrap().scale;
        let spread = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in q.iter().zip(&want) {
            assert!(
                (a - b).abs() < 0.1 * spread + 2.0 * out_scale,
                "n{k}: int8 reference {q:?} far from forward {want:?}"
            );
        }
        let qmodel = root.join(format!("n{k}_int8.onnx"));
        whittle_export::write_onnx_qdq(&net, &params, &qmodel).unwrap();
        cases.push(case(qmodel));
        expected.push((format!("n{k} int8"), q, out_scale, 3.0 * out_scale));
    }
    let close = |runtime: &str, got: &[f32], (label, want, tol): (&str, &[f32], f32)| {
        assert_eq!(got.len(), want.len(), "{label} in {runtime}");
        for (a, b) in got.iter().zip(want) {
            // Relative slack: a difference of exactly k steps may round above k·scale.
            assert!(
                (a - b).abs() <= tol * (1.0 + 1e-4),
                "{label}: {runtime} {a} vs {b}"
            );
        }
    };
    for (c, (label, want, tol, _)) in cases.iter().zip(&expected) {
        let got = runtimes::tract_run(&c.model, &c.shape, &c.input)
            .unwrap_or_else(|e| panic!("{label}: tract: {e:?}"));
        close("tract", &got, (label, want, *tol));
    }
    if let Some(outs) = runtimes::onnxruntime_run(&cases, &root) {
        for (got, (label, want, _, tol)) in outs.iter().zip(&expected) {
            close("onnxruntime", got, (label, want, *tol));
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn export_stage_writes_every_file() {
    let (root, inputs) = fixture("export");
    let m = run(&crate::export::Export, toml::Table::new(), &root, &inputs);
    let files = m["exports"][0]["files"].as_array().unwrap();
    let kinds: Vec<&str> = files.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "onnx",
            "onnx_int8_qdq",
            "c_header",
            "c_source",
            "safetensors",
            "architecture_json"
        ]
    );
    for f in files {
        let p = root.join("out-export").join(f["path"].as_str().unwrap());
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            f["bytes"].as_u64().unwrap()
        );
        assert!(f["bytes"].as_u64().unwrap() > 0);
    }
    assert_eq!(
        crate::export::file_stem("pit[lambda=1e-5]"),
        "pit_lambda_1e_5"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// The export stage on a trained causal residual TCN: every file is written, the JSON keeps
/// the left-only padding, and the network read back from safetensors computes what the
/// trained model computes.
#[test]
fn export_stage_handles_causal_tcn() {
    let (root, inputs) = fixture_with("export-causal", tiny_causal(true));
    let m = run(&crate::export::Export, toml::Table::new(), &root, &inputs);
    let files = m["exports"][0]["files"].as_array().unwrap();
    assert_eq!(files.len(), 6);
    let dir = root.join("out-export").join("seed");
    let net = whittle_export::read_safetensors(&dir, "seed").unwrap();
    let pads: Vec<Vec<(usize, usize)>> = net
        .layers
        .iter()
        .filter_map(|l| match l {
            whittle_export::Layer::Conv { padding, .. } => Some(padding.clone()),
            _ => None,
        })
        .collect();
    // convs.0, convs.1, the 1×1 projection proj.1, convs.2.
    assert_eq!(
        pads,
        [vec![(2, 0)], vec![(4, 0)], vec![(0, 0)], vec![(8, 0)]]
    );
    let model = Model::load(&root.join("net")).unwrap();
    let x: Vec<f32> = (0..490)
        .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
        .collect();
    let xt =
        candle_core::Tensor::from_vec(x.clone(), (1, 10, 49), &candle_core::Device::Cpu).unwrap();
    let want: Vec<f32> = model
        .forward(&xt, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let got = whittle_export::reference::run(&net, &x, None).unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-4, "exported {got:?} vs model {want:?}");
    }
    let c = std::fs::read_to_string(dir.join("seed.c")).unwrap();
    assert!(
        c.contains("seed_run"),
        "C source without the inference function"
    );
    let _ = std::fs::remove_dir_all(&root);
}
