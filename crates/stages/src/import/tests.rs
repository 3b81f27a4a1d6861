//! The `import` stage on the PyTorch fixtures of `crates/export/tests/fixtures/onnx`: every
//! fixture becomes a graph network whose `Model::forward` matches onnxruntime's stored
//! outputs; the stage labels its test split with onnxruntime's argmax and must score 100 %
//! (so the data reaches the network in the right layout, transposed for the 1-d network);
//! whittle's ONNX export of an imported model imports to the same configuration and weights;
//! an imported network (PyTorch's, and tf2onnx's with asymmetric 'SAME' padding and a channel
//! shuffle) goes through PIT (one epoch), L1 pruning, int8 quantization and export; wrong
//! layouts, class counts and files are errors that say so; the memory need counts the file.

use super::from_network::{model, to_config};
use super::{Import, Layout, check_layout};
use crate::export::Export;
use crate::prune::Prune;
use crate::quantize::Quantize;
use crate::search::Search;
use crate::stage_tests::{NoCkpt, NoProgress, run};
use candle_core::{Device, Tensor};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use whittle_engine::{CancelToken, InputArtifact, RunContext, StageKind};
use whittle_export::onnx::onnx_bytes;
use whittle_export::{ImportOptions, import_onnx, import_onnx_file};
use whittle_nn::Model;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../export/tests/fixtures/onnx")
}

fn f32s(name: &str) -> Vec<f32> {
    std::fs::read(fixtures().join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap())
        .unwrap()
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}

/// Softmax of each row of `classes` values.
fn softmax(x: &[f32], classes: usize) -> Vec<f32> {
    x.chunks(classes)
        .flat_map(|r| {
            let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = r.iter().map(|v| (v - m).exp()).collect();
            let s: f32 = e.iter().sum();
            e.into_iter().map(move |v| v / s)
        })
        .collect()
}

/// The model of a fixture and its input batch (network layout) and expected outputs.
fn imported(file: &str, fam: &str) -> (Model, Tensor, Vec<f32>) {
    let m = manifest();
    let f = &m["families"][fam];
    let classes = f["outputs"].as_u64().unwrap() as usize;
    let batch = f["batch"].as_u64().unwrap() as usize;
    let imp = import_onnx_file(&fixtures().join(file), &ImportOptions::default()).unwrap();
    let (cfg, state) = to_config(&imp.network, classes).unwrap_or_else(|e| panic!("{file}: {e:#}"));
    let model = model(cfg, &state).unwrap_or_else(|e| panic!("{file}: {e:#}"));
    let x = f32s(&format!("{fam}.in.bin"));
    let per = x.len() / batch;
    let mut xs = vec![];
    for i in 0..batch {
        xs.extend(imp.network_input(&x[i * per..(i + 1) * per]).unwrap());
    }
    let mut shape = vec![batch];
    shape.extend(&imp.network.input.1[1..]);
    let x = Tensor::from_vec(xs, shape, &Device::Cpu).unwrap();
    (model, x, f32s(&format!("{fam}.out.bin")))
}

#[test]
fn every_fixture_runs_as_onnxruntime_does() {
    for n in manifest()["networks"].as_array().unwrap() {
        let (file, fam) = (n["file"].as_str().unwrap(), n["family"].as_str().unwrap());
        let (model, x, want) = imported(file, fam);
        let mut got: Vec<f32> = model
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let f = &manifest()["families"][fam];
        if f["softmax"].as_bool().unwrap_or(false) {
            got = softmax(&got, f["outputs"].as_u64().unwrap() as usize);
        }
        let err = rel_err(&got, &want);
        assert!(
            err < 1e-4,
            "{file}: relative error {err}: {got:?} vs {want:?}"
        );
    }
}

#[test]
fn own_export_imports_to_the_same_configuration_and_weights() {
    for file in [
        "se_relu6_op13_fold_dyn.onnx",
        "cnn_residual_op17_nofold_dyn.onnx",
        "conv1d_op13_nofold_dyn.onnx",
        "keras_cnn.onnx",
        "shuffle.onnx",
    ] {
        let fam = file.split("_op").next().unwrap().trim_end_matches(".onnx");
        let (a, _, _) = imported(file, fam);
        let net = crate::to_export::to_network(&a, "again").unwrap();
        let back = import_onnx(
            &onnx_bytes(&net, None).unwrap(),
            "again.onnx",
            &ImportOptions::default(),
        )
        .unwrap();
        let (cfg, state) = to_config(
            &back.network,
            manifest()["families"][fam]["outputs"].as_u64().unwrap() as usize,
        )
        .unwrap();
        let (cfg0, state0) = (a.config().clone(), a.state().unwrap());
        assert_eq!(cfg, cfg0, "{file}");
        assert_eq!(state.len(), state0.len());
        for (k, v) in &state0 {
            let (p, q): (Vec<f32>, Vec<f32>) = (
                v.flatten_all().unwrap().to_vec1().unwrap(),
                state[k].flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert_eq!(p, q, "{file}: {k}");
        }
    }
}

/// A folder with the fixture `file` and a data set of `items` (train: the fixture inputs
/// scaled and shifted, random labels; test: the fixture inputs labelled with onnxruntime's
/// argmax). With an `item` of another shape than the file's input, the inputs are given in
/// the network's layout (the file's input transpose applied).
fn stage_fixture(
    name: &str,
    file: &str,
    fam: &str,
    item: &[usize],
) -> (PathBuf, Vec<InputArtifact>) {
    let root = std::env::temp_dir().join(format!("whittle-import-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(fixtures().join(file), root.join("net.onnx")).unwrap();
    let m = manifest();
    let classes = m["families"][fam]["outputs"].as_u64().unwrap() as usize;
    let mut x = f32s(&format!("{fam}.in.bin"));
    let imp = import_onnx_file(&fixtures().join(file), &ImportOptions::default()).unwrap();
    if imp.file_input_shape != item {
        let per = x.len() / m["families"][fam]["batch"].as_u64().unwrap() as usize;
        x = x
            .chunks(per)
            .flat_map(|c| imp.network_input(c).unwrap())
            .collect();
    }
    let out = f32s(&format!("{fam}.out.bin"));
    let y: Vec<u32> = out
        .chunks(classes)
        .map(|r| (0..classes).max_by(|&i, &j| r[i].total_cmp(&r[j])).unwrap() as u32)
        .collect();
    let per: usize = item.iter().product();
    let mut shape = vec![y.len()];
    shape.extend(item);
    let test = whittle_data::dataset::Split {
        x: x.clone(),
        shape: shape.clone(),
        y: y.clone(),
        ..Default::default()
    };
    // 40 training items: the fixture inputs, scaled and shifted.
    let mut tx = vec![];
    let mut ty = vec![];
    for k in 0..20 {
        for (i, v) in x.iter().enumerate() {
            tx.push(v * (0.5 + 0.05 * k as f32) + 0.01 * ((i * 7 + k) % 13) as f32);
        }
        ty.extend((0..y.len()).map(|i| ((i + k) % classes) as u32));
    }
    let mut tshape = vec![ty.len()];
    tshape.extend(item);
    assert_eq!(tx.len(), ty.len() * per);
    let ds = whittle_data::dataset::Dataset {
        train: whittle_data::dataset::Split {
            x: tx,
            shape: tshape,
            y: ty,
            ..Default::default()
        },
        val: whittle_data::dataset::Split {
            x: vec![],
            shape: {
                let mut s = vec![0];
                s.extend(item);
                s
            },
            y: vec![],
            ..Default::default()
        },
        test,
        classes: (0..classes).map(|c| format!("c{c}")).collect(),
        input_shape: item.to_vec(),
        layout: "as_file".into(),
        normalization: None,
        description: json!({}),
        ..Default::default()
    };
    whittle_data::save(&ds, &root.join("data")).unwrap();
    let inputs = vec![InputArtifact {
        stage: "data".into(),
        node: "data".into(),
        kind: "fetch".into(),
        key: "0".into(),
        dir: root.join("data"),
        params: json!({}),
        metrics: json!({ "input_shape": item, "classes": ds.classes }),
    }];
    (root, inputs)
}

fn table(s: &str) -> toml::Table {
    toml::from_str(s).unwrap()
}

fn try_run(params: &str, root: &Path, inputs: &[InputArtifact]) -> anyhow::Result<Value> {
    let resolved = Import.resolve(&table(params)).unwrap();
    Import.extra_key(&resolved, root)?;
    let out = root.join("out-import");
    std::fs::create_dir_all(&out).unwrap();
    let ctx = RunContext {
        node: "net",
        stage: "net",
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
    Import.run(&ctx)
}

#[test]
fn the_stage_feeds_the_data_in_the_network_layout() {
    // 2-d CNN on (49, 10) items read as 1×49×10; the 1-d network transposes (steps,
    // features) inside the file; the NHWC network reads whittle's channels-first images.
    for (file, fam, item) in [
        (
            "cnn_residual_op13_fold_static.onnx",
            "cnn_residual",
            vec![49, 10],
        ),
        ("conv1d_op13_nofold_dyn.onnx", "conv1d", vec![49, 10]),
        ("odd_opset18.onnx", "odd_opset18", vec![3, 8, 8]),
        ("keras_cnn.onnx", "keras_cnn", vec![3, 24, 24]),
        ("keras_dense.onnx", "keras_dense", vec![49, 10]),
        ("shuffle.onnx", "shuffle", vec![4, 6, 6]),
    ] {
        let (root, inputs) = stage_fixture(fam, file, fam, &item);
        let m = try_run("path = 'net.onnx'", &root, &inputs)
            .unwrap_or_else(|e| panic!("{file}: {e:#}"));
        let row = &m["models"][0];
        assert_eq!(row["method"], "import");
        assert_eq!(row["test_accuracy"], json!(1.0), "{file}: {m}");
        let saved = Model::load(&root.join("out-import")).unwrap();
        assert_eq!(saved.num_params(), row["params"].as_u64().unwrap());
        assert_eq!(m["source"]["blake3"].as_str().unwrap().len(), 64);
        let soft = fam.starts_with("keras").then_some("Softmax");
        assert_eq!(m["source"]["final_softmax"], json!(soft), "{file}");
        let _ = std::fs::remove_dir_all(&root);
    }
}

#[test]
fn bn_recalibration_changes_only_the_running_statistics() {
    let (root, inputs) = stage_fixture(
        "bn",
        "cnn_residual_op17_nofold_dyn.onnx",
        "cnn_residual",
        &[49, 10],
    );
    try_run("path = 'net.onnx'", &root, &inputs).unwrap();
    let before = Model::load(&root.join("out-import"))
        .unwrap()
        .state()
        .unwrap();
    let m = try_run(
        "path = 'net.onnx'\nbn_recalibrate = true\nbatch_size = 8",
        &root,
        &inputs,
    )
    .unwrap();
    // 40 items in batches of 8: 5 per pass, 6 passes for ≥ 30 batches.
    assert_eq!(m["bn_recalibrated_batches"], json!(30));
    let after = Model::load(&root.join("out-import"))
        .unwrap()
        .state()
        .unwrap();
    for (k, v) in &before {
        let same = v.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == after[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(same, !k.contains("running_"), "{k}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn an_imported_network_is_searched_pruned_quantized_and_exported() {
    for (file, fam, item) in [
        ("se_relu6_op17_nofold_static.onnx", "se_relu6", [3, 16, 16]),
        // tf2onnx: asymmetric 'SAME' pads in the conv and the max pool, depthwise convs
        ("keras_cnn.onnx", "keras_cnn", [3, 24, 24]),
        ("keras_dwsep.onnx", "keras_dwsep", [4, 16, 16]),
        // input normalisation (a depthwise 1×1 conv), Rescaling, a vector batch norm folded
        // into the last linear layer
        ("keras_norm.onnx", "keras_norm", [3, 12, 10]),
        // a one-channel input batch norm before tf2onnx's layout Reshape (a 1×1 conv)
        ("keras_kws_trained.onnx", "keras_kws_trained", [1, 49, 10]),
    ] {
        chain(file, fam, &item);
    }
}

fn chain(file: &str, fam: &str, item: &[usize]) {
    let (root, mut inputs) = stage_fixture(&format!("chain-{fam}"), file, fam, item);
    let m = try_run("path = 'net.onnx'", &root, &inputs).unwrap();
    let seed_params = m["models"][0]["params"].as_u64().unwrap();
    inputs.insert(
        0,
        InputArtifact {
            stage: "net".into(),
            node: "net".into(),
            kind: "import".into(),
            key: "1".into(),
            dir: root.join("out-import"),
            params: json!({}),
            metrics: m.clone(),
        },
    );
    let s = run(
        &Search,
        table(
            "method = 'pit'\nlambda = 1e-2\nlr_masks = 0.2\nepochs = 1\nbatch_size = 8\nlr = 1e-2\nallow_divergence = true",
        ),
        &root,
        &inputs,
    );
    let pit = Model::load(&root.join("out-search")).unwrap();
    assert_eq!(pit.num_params(), s["models"][0]["params"].as_u64().unwrap());
    assert!(
        pit.num_params() < seed_params,
        "{file}: PIT {} vs {seed_params}",
        pit.num_params()
    );
    let p = run(&Prune, table("method = 'l1'\nratio = 0.5"), &root, &inputs);
    let pruned = p["models"][0]["params"].as_u64().unwrap();
    assert!(
        pruned < seed_params,
        "{file}: pruned {pruned} vs {seed_params}"
    );
    let q = run(
        &Quantize,
        table("formats = ['fp32', 'int8']"),
        &root,
        &inputs,
    );
    let rows = q["models"].as_array().unwrap();
    assert_eq!(rows[1]["format"], "int8");
    assert_eq!(rows[0]["test_accuracy"], m["models"][0]["test_accuracy"]);
    let e = run(&Export, table("calibration_samples = 4"), &root, &inputs);
    let files: Vec<String> = std::fs::read_dir(root.join("out-export"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).into_iter().flatten())
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with(".onnx")),
        "{file}: {files:?} {e}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn wrong_layouts_classes_and_files_are_clear_errors() {
    // A (features, steps) network on (steps, features) data needs the layout key...
    let e = check_layout("n.onnx", vec![10, 49], &[49, 10], Layout::Nchw, false).unwrap_err();
    assert!(
        format!("{e}").contains("set layout = \"steps_features\""),
        "{e}"
    );
    check_layout(
        "n.onnx",
        vec![10, 49],
        &[49, 10],
        Layout::StepsFeatures,
        false,
    )
    .unwrap();
    check_layout("n.onnx", vec![1, 49, 10], &[49, 10], Layout::Nchw, false).unwrap();
    let e = check_layout(
        "n.onnx",
        vec![1, 49, 10],
        &[49, 10],
        Layout::StepsFeatures,
        false,
    )
    .unwrap_err();
    assert!(
        format!("{e}").contains("the network reads [1, 49, 10]"),
        "{e}"
    );
    let e = check_layout("n.onnx", vec![3, 16, 16], &[3, 32, 32], Layout::Nchw, false).unwrap_err();
    assert!(
        format!("{e}")
            .contains("items of shape [3, 16, 16], the data set has items of shape [3, 32, 32]"),
        "{e}"
    );
    // ...a 12-class network on 5-class data, a missing file and a refused op say so.
    let (root, inputs) = stage_fixture(
        "errors",
        "cnn_residual_op13_fold_static.onnx",
        "cnn_residual",
        &[49, 10],
    );
    let mut five = inputs.clone();
    five[0].metrics["classes"] = json!(["a", "b", "c", "d", "e"]);
    let e = format!(
        "{:#}",
        try_run("path = 'net.onnx'", &root, &five).unwrap_err()
    );
    assert!(
        e.contains("gives 12 scores per sample") && e.contains("5 classes"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        try_run("path = 'nope.onnx'", &root, &inputs).unwrap_err()
    );
    assert!(e.contains("reading the ONNX file `nope.onnx`"), "{e}");
    std::fs::copy(
        fixtures().join("err_unsupported_op.onnx"),
        root.join("bad.onnx"),
    )
    .unwrap();
    let e = format!(
        "{:#}",
        try_run("path = 'bad.onnx'", &root, &inputs).unwrap_err()
    );
    assert!(
        e.contains("bad.onnx: node `norm_1` (LpNormalization): unsupported op"),
        "{e}"
    );
    assert!(Import.resolve(&table("path = ''")).unwrap_err().path == ["path"]);
    assert!(
        Import
            .resolve(&table("path = 'a.onnx'\nlayout = 'nhwc'"))
            .is_err()
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_file_content_joins_the_key() {
    let root = std::env::temp_dir().join(format!("whittle-import-key-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let resolved = Import.resolve(&table("path = 'n.onnx'")).unwrap();
    std::fs::write(root.join("n.onnx"), b"one").unwrap();
    let a = Import.extra_key(&resolved, &root).unwrap();
    std::fs::write(root.join("n.onnx"), b"one").unwrap();
    assert_eq!(Import.extra_key(&resolved, &root).unwrap(), a);
    std::fs::write(root.join("n.onnx"), b"two").unwrap();
    assert_ne!(Import.extra_key(&resolved, &root).unwrap(), a);
    std::fs::remove_file(root.join("n.onnx")).unwrap();
    let e = format!("{:#}", Import.extra_key(&resolved, &root).unwrap_err());
    assert!(e.contains("reading the ONNX file `n.onnx`"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn asymmetric_padding_imports_and_runs_as_the_original() {
    // A causal TCN pads (2·d, 0): the importer reads whittle's export of it, the node list
    // writes the pads as [begin, end] pairs and the graph network computes what the TCN does.
    use whittle_nn::arch::node_list::Padding;
    use whittle_nn::config::{ModelConfig, TcnConfig, TcnPadding};
    let mut c = TcnConfig::seed(4);
    c.layers.truncate(2);
    c.padding = TcnPadding::Causal;
    c.classes = 3;
    let m = Model::new(ModelConfig::Tcn(c), 1).unwrap();
    let net = crate::to_export::to_network(&m, "causal").unwrap();
    let imp = import_onnx(
        &onnx_bytes(&net, None).unwrap(),
        "causal.onnx",
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(imp.network, net);
    let (cfg, state) = to_config(&imp.network, 3).unwrap();
    let whittle_nn::ModelConfig::Graph(g) = &cfg else {
        panic!("{cfg:?}")
    };
    let pairs: Vec<&Padding> = g
        .nodes
        .iter()
        .filter_map(|n| n.padding.as_ref())
        .filter(|p| matches!(p, Padding::Pairs(_)))
        .collect();
    assert!(!pairs.is_empty(), "{:?}", g.nodes);
    assert!(matches!(pairs[0], Padding::Pairs(v) if v[0][1] == 0 && v[0][0] > 0));
    let g2 = model(cfg, &state).unwrap();
    let mut shape = vec![2];
    shape.extend(&net.input.1[1..]);
    let x = Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
    let flat = |t: Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let (a, b) = (
        flat(m.forward(&x, false).unwrap()),
        flat(g2.forward(&x, false).unwrap()),
    );
    assert!(rel_err(&b, &a) < 1e-5, "{a:?} vs {b:?}");
}

#[test]
fn the_memory_need_counts_the_file() {
    let (root, inputs) = stage_fixture("memory", "keras_dense.onnx", "keras_dense", &[49, 10]);
    let resolved = Import.resolve(&table("path = 'net.onnx'")).unwrap();
    // Before the key is computed the folder is unknown: no estimate.
    let other = Import.resolve(&table("path = 'elsewhere.onnx'")).unwrap();
    assert!(Import.memory(&other, &inputs).is_none());
    Import.extra_key(&resolved, &root).unwrap();
    let size = std::fs::metadata(root.join("net.onnx")).unwrap().len();
    assert_eq!(size, 49798);
    // 7 × 49,798 file bytes; the data metrics carry no split sizes here, so no data bytes.
    let need = Import.memory(&resolved, &inputs).unwrap();
    assert_eq!(need.bytes, (7.0 * 49798.0 * crate::memory::HEADROOM) as u64);
    assert!(
        need.detail
            .starts_with("ONNX file `net.onnx` of 48.6 KiB held 7×"),
        "{}",
        need.detail
    );
    // A 1 GiB file with 10 MiB of data: (7 GiB + 10 MiB) · 1.25.
    let big = super::import_need("big.onnx", 1 << 30, 10 << 20);
    assert_eq!(big.bytes, ((7u64 << 30) + (10 << 20)) / 4 * 5);
    // Once parsed: the file's copies, the graph's evaluation at the batch, the data.
    let (model, _, _) = imported("keras_kws_trained.onnx", "keras_kws_trained");
    let e = whittle_nn::memory::inference(model.graph(), 100);
    let parsed = super::parsed_need("k.onnx", 1000, model.graph(), 100, 5000);
    let held = (7000.0 * crate::memory::HEADROOM) as u64;
    let rest = ((e.total() + 5000) as f64 * crate::memory::HEADROOM) as u64;
    assert_eq!(parsed.bytes, held + rest);
    assert!(e.activations > 100 * 4 * 24 * 25 * 5, "{e:?}"); // ≥ one 24 × 25 × 5 map
    assert!(
        parsed.detail.contains("evaluation: weights ")
            && parsed.detail.contains("activations at batch 100"),
        "{}",
        parsed.detail
    );
    // The scheduler refusing it under WHITTLE_MEMORY_LIMIT, and the check once parsed:
    // crates/cli/tests/import_guard.rs.
    let _ = std::fs::remove_dir_all(&root);
}
