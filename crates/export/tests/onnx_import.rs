//! The ONNX importer against the fixtures of `tests/fixtures/onnx` (made by `make.py` with
//! PyTorch's exporters and `onnx.helper`, and by `make_keras.py` with Keras + tf2onnx): every
//! network imports and its reference evaluation matches onnxruntime's stored outputs (after a
//! softmax where the file ends in one, which the import drops); whittle's own ONNX export of each
//! imported network re-imports to the same network; refused files fail with messages naming
//! op, node and file; truncated, mutated and random bytes never panic.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::path::{Path, PathBuf};
use whittle_export::onnx::onnx_bytes;
use whittle_export::{ImportOptions, Layer, import_onnx, import_onnx_file, reference};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn f32s(name: &str) -> Vec<f32> {
    std::fs::read(dir().join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
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

/// Largest |a − b| / (1 + |b|).
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}

fn networks() -> Vec<(String, String)> {
    manifest()["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["file"].as_str().unwrap().to_string(),
                n["family"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn every_fixture_matches_onnxruntime() {
    let m = manifest();
    let nets = networks();
    assert!(nets.len() >= 10, "fixtures missing: {nets:?}");
    for (file, fam) in nets {
        let imp = import_onnx_file(&dir().join(&file), &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{file}: {e:#}"));
        let f = &m["families"][&fam];
        let batch = f["batch"].as_u64().unwrap() as usize;
        let classes = f["outputs"].as_u64().unwrap() as usize;
        let (x, want) = (
            f32s(&format!("{fam}.in.bin")),
            f32s(&format!("{fam}.out.bin")),
        );
        let per = x.len() / batch;
        let soft = f["softmax"].as_bool().unwrap_or(false);
        assert_eq!(imp.final_softmax.is_some(), soft, "{file}");
        for i in 0..batch {
            let input = imp.network_input(&x[i * per..(i + 1) * per]).unwrap();
            let mut got = reference::run(&imp.network, &input, None).unwrap();
            if soft {
                got = softmax(&got, classes);
            }
            let exp = &want[i * classes..(i + 1) * classes];
            let err = rel_err(&got, exp);
            assert!(
                err < 1e-4,
                "{file} sample {i}: relative error {err}\n got {got:?}\nwant {exp:?}"
            );
        }
    }
}

#[test]
fn what_the_exporters_write_is_mapped() {
    let imp = |f: &str| import_onnx_file(&dir().join(f), &ImportOptions::default()).unwrap();
    let kinds =
        |f: &str| -> Vec<&'static str> { imp(f).network.layers.iter().map(Layer::kind).collect() };
    // Conv + BN folded by the exporter vs kept; Flatten after the pool.
    assert_eq!(
        kinds("cnn_residual_op13_fold_static.onnx"),
        [
            "conv",
            "relu",
            "conv",
            "relu",
            "conv",
            "add",
            "relu",
            "global_avg_pool",
            "flatten",
            "linear"
        ]
    );
    assert_eq!(
        kinds("cnn_residual_op17_nofold_dyn.onnx")
            .iter()
            .filter(|k| **k == "batch_norm")
            .count(),
        3
    );
    // SE: the 1×1 convs on the pooled vector are linear layers, the gate a channel multiply;
    // the explicit Pad is merged into the dilated conv (padding 2).
    let se = imp("se_relu6_op17_nofold_static.onnx").network;
    let k: Vec<&str> = se.layers.iter().map(Layer::kind).collect();
    assert_eq!(k.iter().filter(|k| **k == "linear").count(), 3, "{k:?}");
    assert!(k.contains(&"channel_mul") && k.contains(&"hard_swish") && k.contains(&"relu6"));
    let pw = se
        .layers
        .iter()
        .find_map(|l| match l {
            Layer::Conv {
                dilation, padding, ..
            } if dilation == &[2, 2] => Some(padding.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(pw, [(2, 2), (2, 2)]);
    // The 1-d network: the input transpose becomes the layout (10 features × 49 steps).
    let c1 = imp("conv1d_op13_nofold_dyn.onnx");
    assert_eq!(c1.network.input.1, [1, 10, 49]);
    assert_eq!(c1.file_input_shape, [49, 10]);
    assert_eq!(c1.input_perm.as_deref(), Some(&[1, 0][..]));
    // MatMul + Add is one linear layer with a bias.
    let mlp = imp("mlp_op13_nofold_static.onnx").network;
    let k: Vec<&str> = mlp.layers.iter().map(Layer::kind).collect();
    assert_eq!(k, ["flatten", "linear", "relu", "linear"]);
    assert!(matches!(&mlp.layers[3], Layer::Linear { bias: Some(b), .. } if b.len() == 5));
    // Gemm with transB = 0, alpha, beta; Pad attribute; SAME_UPPER.
    let odd = imp("odd_opset10.onnx").network;
    match &odd.layers[0] {
        Layer::Conv { padding, .. } => assert_eq!(padding, &[(1, 1), (1, 1)]),
        l => panic!("{l:?}"),
    }
}

/// What tf2onnx writes for Keras: the NHWC input transpose becomes the layout, 'SAME' at
/// stride 2 is an asymmetric (begin, end) padding of the conv and max pool, batch norm as
/// Mul + Add is folded into the conv, Relu6 as Clip, Dense as MatMul + Add, the final Softmax
/// dropped; the ShuffleNet pattern is a channel shuffle.
#[test]
fn what_tf2onnx_writes_is_mapped() {
    let imp = |f: &str| import_onnx_file(&dir().join(f), &ImportOptions::default()).unwrap();
    let kinds = |n: &whittle_export::Network| -> Vec<&'static str> {
        n.layers.iter().map(Layer::kind).collect()
    };
    let cnn = imp("keras_cnn.onnx");
    assert_eq!(cnn.network.input.1, [1, 3, 24, 24]);
    assert_eq!(cnn.file_input_shape, [24, 24, 3]);
    assert_eq!(cnn.input_perm.as_deref(), Some(&[2, 0, 1][..]));
    assert_eq!(cnn.final_softmax.as_deref(), Some("Softmax"));
    assert!(cnn.producer.starts_with("tf2onnx"), "{}", cnn.producer);
    assert_eq!(
        kinds(&cnn.network),
        [
            "conv",
            "relu",
            "conv",
            "relu",
            "conv",
            "relu",
            "max_pool",
            "global_avg_pool",
            "flatten",
            "linear"
        ]
    );
    let pads: Vec<Vec<(usize, usize)>> = cnn
        .network
        .layers
        .iter()
        .filter_map(|l| match l {
            Layer::Conv { padding, .. } | Layer::Pool { padding, .. } => Some(padding.clone()),
            _ => None,
        })
        .collect();
    // 24 → 12 at stride 2 needs one padded row: TensorFlow puts it at the end.
    assert_eq!(
        pads,
        [
            vec![(0, 1), (0, 1)],
            vec![(1, 1), (1, 1)],
            vec![(0, 0), (0, 0)],
            vec![(0, 1), (0, 1)]
        ]
    );
    // The batch norm (Mul + Add) is folded: the first conv's bias is no longer Keras' bias.
    assert!(matches!(&cnn.network.layers[0], Layer::Conv { bias: Some(b), .. } if b.len() == 8));
    let dw = imp("keras_dwsep.onnx").network;
    assert_eq!(
        kinds(&dw),
        [
            "conv",
            "relu6",
            "conv",
            "relu6",
            "conv",
            "relu6",
            "conv",
            "global_avg_pool",
            "flatten",
            "linear"
        ]
    );
    match &dw.layers[0] {
        Layer::Conv {
            groups, padding, ..
        } => assert_eq!((*groups, padding.as_slice()), (4, &[(0, 1), (0, 1)][..])),
        l => panic!("{l:?}"),
    }
    match &dw.layers[4] {
        Layer::Conv { padding, .. } => assert_eq!(padding, &[(1, 2), (1, 2)]),
        l => panic!("{l:?}"),
    }
    let dense = imp("keras_dense.onnx");
    assert_eq!(
        kinds(&dense.network),
        ["flatten", "linear", "relu", "linear"]
    );
    assert_eq!(dense.input_perm, None);
    let sh = imp("shuffle.onnx").network;
    assert_eq!(
        kinds(&sh),
        [
            "conv",
            "relu",
            "channel_shuffle",
            "conv",
            "conv",
            "channel_shuffle",
            "global_avg_pool",
            "flatten",
            "linear"
        ]
    );
    let groups: Vec<usize> = sh
        .layers
        .iter()
        .filter_map(|l| match l {
            Layer::ChannelShuffle { groups, .. } => Some(*groups),
            _ => None,
        })
        .collect();
    assert_eq!(groups, [2, 3]);
}

#[test]
fn own_export_reimports_to_the_same_network() {
    for (file, _) in networks() {
        let a = import_onnx_file(&dir().join(&file), &ImportOptions::default()).unwrap();
        let bytes = onnx_bytes(&a.network, None).unwrap();
        let b = import_onnx(&bytes, "re-export", &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{file}: {e:#}"));
        assert_eq!(b.network, a.network, "{file}");
        assert_eq!(b.input_perm, None);
    }
}

fn err_of(bytes: &[u8], file: &str) -> String {
    match import_onnx(bytes, file, &ImportOptions::default()) {
        Ok(_) => panic!("{file}: imported"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn refused_files_say_what_where_and_which_file() {
    let m = manifest();
    let errors = m["errors"].as_object().unwrap();
    assert_eq!(errors.len(), 5);
    for (file, want) in errors {
        let bytes = std::fs::read(dir().join(file)).unwrap();
        let msg = err_of(&bytes, file);
        for w in want.as_array().unwrap() {
            assert!(
                msg.contains(w.as_str().unwrap()),
                "{file}: `{msg}` lacks {w}"
            );
        }
    }
    let shape = err_of(
        &std::fs::read(dir().join("err_shape_mismatch.onnx")).unwrap(),
        "err_shape_mismatch.onnx",
    );
    assert!(
        shape.contains("expects 5 input channels, the input has 2 channels"),
        "{shape}"
    );
    let unsupported = err_of(
        &std::fs::read(dir().join("err_unsupported_op.onnx")).unwrap(),
        "err_unsupported_op.onnx",
    );
    assert!(unsupported.starts_with("err_unsupported_op.onnx: node `norm_1` (LpNormalization): unsupported op `LpNormalization`"), "{unsupported}");
}

#[test]
fn truncated_and_foreign_bytes_are_clear_errors() {
    let good = std::fs::read(dir().join("se_relu6_op13_fold_dyn.onnx")).unwrap();
    let cut = err_of(&good[..good.len() / 2], "half.onnx");
    assert!(cut.contains("half.onnx: not a valid ONNX model"), "{cut}");
    assert!(cut.contains("truncated"), "{cut}");
    assert!(err_of(b"", "empty.onnx").contains("empty.onnx: the file is empty"));
    let text = err_of(b"[experiment]\nname = \"x\"\n", "exp.toml");
    assert!(text.starts_with("exp.toml: not"), "{text}");
    let zip = err_of(&[0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 0], "a.zip");
    assert!(zip.starts_with("a.zip: not"), "{zip}");
}

/// Every prefix of a fixture and thousands of mutated / random inputs: an error or a
/// network, never a panic (the cargo-fuzz target `onnx_import` runs the same call).
#[test]
fn no_input_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let opts = ImportOptions::default();
    for (file, _) in networks().iter() {
        let good = std::fs::read(dir().join(file)).unwrap();
        let step = (good.len() / 97).max(1);
        for cut in (0..good.len()).step_by(step) {
            let _ = import_onnx(&good[..cut], file, &opts);
        }
        for _ in 0..150 {
            let mut b = good.clone();
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            let _ = import_onnx(&b, file, &opts);
        }
    }
    for _ in 0..2000 {
        let n = rng.random_range(0..256);
        let b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let _ = import_onnx(&b, "random.onnx", &opts);
    }
}

/// Constant scales and shifts (input normalisation, Rescaling, 1 − x, a scalar Mul) that no
/// Conv / Gemm / MatMul before them takes: on a map a depthwise 1×1 conv computing s·x + b,
/// on a vector folded into the linear layer after it; on the raw NHWC input they wait for
/// the Transpose (or, for one channel, the Reshape) that sets the layout.
#[test]
fn constant_scales_and_shifts_are_mapped() {
    let imp = |f: &str| import_onnx_file(&dir().join(f), &ImportOptions::default()).unwrap();
    let kinds = |n: &whittle_export::Network| -> Vec<&'static str> {
        n.layers.iter().map(Layer::kind).collect()
    };
    let dw = |l: &Layer| match l {
        Layer::Conv {
            weight,
            bias: Some(b),
            groups,
            padding,
            ..
        } if weight.shape[1..].iter().all(|&d| d == 1)
            && *groups == weight.shape[0]
            && padding.iter().all(|p| *p == (0, 0)) =>
        {
            (weight.data.clone(), b.clone())
        }
        l => panic!("not a depthwise 1×1 conv: {l:?}"),
    };
    let chain = [
        "conv",
        "conv",
        "relu",
        "conv",
        "conv",
        "relu",
        "global_avg_pool",
        "flatten",
        "linear",
    ];
    // Keras: Normalization (Sub + Mul) and BatchNormalization (Mul + Add) on the NHWC input,
    // Rescaling(0.5, offset = 0.25) after a ReLU, a batch norm on the pooled vector.
    let k = imp("keras_norm.onnx");
    assert_eq!(k.input_perm.as_deref(), Some(&[2, 0, 1][..]));
    assert_eq!(kinds(&k.network), chain);
    assert_eq!(k.network.layers[0].inputs(), ["image"]);
    assert_eq!(dw(&k.network.layers[0]).0.len(), 3);
    assert_eq!(dw(&k.network.layers[3]), (vec![0.5; 8], vec![0.25; 8]));
    // onnx.helper: (x − mean) / std, 1 − x, + shift, · 0.5, and · 2 on the vector.
    let a = imp("affine.onnx");
    assert_eq!(kinds(&a.network), chain);
    assert_eq!(a.network.layers[0].inputs(), ["x"]);
    let (s, _) = dw(&a.network.layers[3]);
    assert_eq!(s, vec![-0.5; 4]); // (1 − x + shift) · 0.5
    // A trained Keras DS-CNN with a batch norm on its one-channel (49, 10, 1) input: tf2onnx
    // writes the layout change as a Reshape.
    let t = imp("keras_kws_trained.onnx");
    assert_eq!(t.network.input.1, [1, 1, 49, 10]);
    assert_eq!(t.input_perm, None);
    assert_eq!(dw(&t.network.layers[0]).0.len(), 1);
}
