//! Tests of the quantized eval forward: fp32 matches `Model::forward`, float(4,3) rounds
//! weights and every activation, int8 ranges come from calibration and values sit on the
//! grid, stored sizes are counted per spec §6, and int8 keeps a trained net's accuracy.

use super::eval::*;
use super::float::FloatFormat;
use super::format::Format;
use super::int::Affine;
use crate::config::{ModelConfig, TcnConfig, TcnLayerConfig};
use crate::data::{DataSet, Split};
use crate::model::Model;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

fn tiny_tcn() -> ModelConfig {
    let mut c = TcnConfig::seed(6);
    c.layers.truncate(3);
    c.layers[2] = TcnLayerConfig {
        channels: 5,
        kernel: 3,
        dilation: 2,
    };
    c.classes = 3;
    ModelConfig::Tcn(c)
}

fn inputs(n: usize, seed: u64) -> Tensor {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * 490)
        .map(|_| r.random::<f32>() * 2.0 - 0.7)
        .collect();
    Tensor::from_vec(v, (n, 10, 49), &Device::Cpu).unwrap()
}

/// A model whose BN running statistics are not the identity (two train-mode passes).
fn model_with_bn_stats() -> Model {
    let m = Model::new(tiny_tcn(), 3).unwrap();
    for s in 0..2 {
        m.forward(&inputs(8, 10 + s), true).unwrap();
    }
    m
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn fp32_equals_model_eval_forward() {
    let m = model_with_bn_stats();
    let x = inputs(4, 99);
    let want = vals(&m.forward(&x, false).unwrap());
    let q = QuantModel::prepare(
        &m,
        Format::parse("fp32").unwrap(),
        None,
        &Default::default(),
    )
    .unwrap();
    let got = vals(&q.forward(&x).unwrap());
    for (a, b) in want.iter().zip(&got) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn float_4_3_rounds_weights_and_every_activation() {
    let m = model_with_bn_stats();
    let f = FloatFormat::new(4, 3).unwrap();
    let q = QuantModel::prepare(&m, Format::Float(f), None, &Default::default()).unwrap();
    let x = inputs(3, 5);
    // Every value a node sees as input is representable in T(4,3): the node outputs before
    // rounding are not all representable, the stored values after rounding are.
    let mut unrepresentable_before = 0;
    q.run(&x, &mut |_, t| {
        unrepresentable_before += vals(t).iter().filter(|&&v| f.round(v) != v).count();
        Ok(())
    })
    .unwrap();
    assert!(unrepresentable_before > 100);
    let y = vals(&q.forward(&x).unwrap());
    assert!(y.iter().all(|&v| f.round(v) == v));
    // Weights are rounded (biases stay fp32).
    let w = vals(
        q.tensor("conv0.weight")
            .or_else(|_| q.tensor(&first_weight(&q)))
            .unwrap(),
    );
    assert!(w.iter().all(|&v| f.round(v) == v));
    // Close to fp32 but not equal.
    let y32 = vals(&m.forward(&x, false).unwrap());
    let (mut diff, mut max) = (0f32, 0f32);
    for (a, b) in y.iter().zip(&y32) {
        diff = diff.max((a - b).abs());
        max = max.max(b.abs());
    }
    assert!(diff > 0.0 && diff < 0.25 * max, "diff {diff} max {max}");
}

fn first_weight(q: &QuantModel) -> String {
    format!("{}.weight", q.graph().nodes[0].name)
}

#[test]
fn int8_calibrates_ranges_and_values_sit_on_the_grid() {
    let m = model_with_bn_stats();
    let calib = inputs(20, 7);
    let q = QuantModel::prepare(&m, Format::Int8, Some(&calib), &Default::default()).unwrap();
    // Input range = min/max of the calibration data (widened to contain 0).
    let c = vals(&calib);
    let lo = c.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = c.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!(
        q.activation_quantizers()[0],
        ActQuant::Affine(Affine::asymmetric(lo, hi, 8))
    );
    // The output is on the last quantizer's grid, round trip is exact.
    let ActQuant::Affine(last) = *q.activation_quantizers().last().unwrap() else {
        panic!("int8 output has no affine quantizer")
    };
    let y = vals(&q.forward(&inputs(3, 8)).unwrap());
    for v in &y {
        assert_eq!(last.fake(*v), *v);
    }
    // Weights per output channel: integers times a scale, the largest at ±127.
    let name = first_weight(&q);
    let w = q.tensor(&name).unwrap();
    let c_out = w.dims()[0];
    let wv = vals(w);
    let per = wv.len() / c_out;
    for ch in wv.chunks(per) {
        let m = ch.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = m / 127.0;
        for v in ch {
            let k = v / s;
            assert!(
                (k - k.round()).abs() < 1e-3 && k.abs() <= 127.001,
                "{v} / {s}"
            );
        }
    }
    // Percentile observer gives a narrower input range than min/max.
    let qp = QuantModel::prepare(
        &m,
        Format::Int8,
        Some(&calib),
        &QuantOptions {
            observer: ObserverKind::Percentile(99.0),
            ..Default::default()
        },
    )
    .unwrap();
    let (ActQuant::Affine(a), ActQuant::Affine(b)) =
        (qp.activation_quantizers()[0], q.activation_quantizers()[0])
    else {
        panic!()
    };
    assert!(a.scale < b.scale);
    assert!(QuantModel::prepare(&m, Format::Int8, None, &Default::default()).is_err());
}

/// int8 biases are on the int32 grid of the exports: b = k·s_in·s_w[c] with k an integer, the
/// nearest one to the fp32 bias (round half to even); other formats keep fp32 biases.
#[test]
fn int8_biases_sit_on_the_exported_int32_grid() {
    let m = model_with_bn_stats();
    let calib = inputs(20, 7);
    let q = QuantModel::prepare(&m, Format::Int8, Some(&calib), &Default::default()).unwrap();
    let f = QuantModel::prepare(
        &m,
        Format::parse("fp32").unwrap(),
        None,
        &Default::default(),
    )
    .unwrap();
    let node = &q.graph().nodes[0];
    let bias = format!("{}.bias", node.name);
    let (bq, bf) = (
        vals(q.tensor(&bias).unwrap()),
        vals(f.tensor(&bias).unwrap()),
    );
    let ActQuant::Affine(input) = q.activation_quantizers()[node.inputs[0]] else {
        panic!("the input has no int8 quantizer")
    };
    let w = vals(f.tensor(&first_weight(&q)).unwrap());
    let per = w.len() / bq.len();
    let mut moved = 0;
    for (c, (&b8, &b32)) in bq.iter().zip(&bf).enumerate() {
        let m = w[c * per..(c + 1) * per]
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()));
        let s = (m / 127.0) * input.scale;
        let k = (b32 / s).round_ties_even();
        assert_eq!(b8, k * s, "channel {c}: {b8} vs {k}·{s}");
        assert!((b8 - b32).abs() <= s / 2.0 + 1e-9);
        moved += usize::from(b8 != b32);
    }
    assert!(
        moved > 0,
        "no bias moved: the test would not see a missing rounding"
    );
    // weight-only formats keep fp32 biases
    let w4 = QuantModel::prepare(
        &m,
        Format::parse("int4").unwrap(),
        None,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(vals(w4.tensor(&bias).unwrap()), bf);
}

#[test]
fn weight_bytes_hand_counted() {
    // 2 channels × 8 steps → conv k3 4 ch (24 w + 4 b) → BN (8) → ReLU → pool → FC 4→3 (12 + 3).
    let cfg = ModelConfig::Tcn(TcnConfig {
        input_channels: 2,
        input_len: 8,
        classes: 3,
        layers: vec![TcnLayerConfig {
            channels: 4,
            kernel: 3,
            dilation: 1,
        }],
        ..TcnConfig::seed(4)
    });
    let g = cfg.build().unwrap();
    assert_eq!(g.params(), 24 + 4 + 8 + 12 + 3);
    let wb = |s: &str, keep| weight_bytes(&g, Format::parse(s).unwrap(), keep);
    assert_eq!(wb("fp32", true), 51 * 4);
    assert_eq!(wb("fp16", true), 36 * 2 + 15 * 4);
    assert_eq!(wb("int8", true), 36 + 60);
    assert_eq!(wb("int4", false), 18 + 60);
    assert_eq!(
        wb("int4", true),
        36 + 60,
        "both layers are first/last → 8 bit"
    );
    assert_eq!(wb("float(4,3)", true), 36 + 60);
}

/// Class k (of 3) lights up input channel k.
fn synthetic(n: usize, seed: u64) -> Split {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * 490);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % 3;
        for j in 0..490 {
            let on = j / 49 == k;
            x.push(r.random::<f32>() - 0.5 + if on { 1.0 } else { 0.0 });
        }
        y.push(k as u32);
    }
    Split::classes(x, &[10, 49], y).unwrap()
}

#[test]
fn int8_keeps_a_trained_nets_accuracy() {
    use crate::train::*;
    let m = Model::new(tiny_tcn(), 1).unwrap();
    let data = DataSet {
        train: synthetic(60, 1),
        val: None,
        test: Some(synthetic(300, 3)),
    };
    let cfg = TrainConfig {
        augment: Default::default(),
        epochs: 4,
        batch_size: 10,
        lr: 2e-2,
        optimizer: crate::optim::OptimizerConfig::adam(1e-4),
        schedule: crate::schedule::ScheduleConfig::MultiStep {
            milestones: vec![3],
            gamma: 0.5,
        },
        loss: crate::loss::LossKind::CrossEntropy,
        patience: None,
        monitor: Monitor::ValLoss,
        keep_best: false,
        seed: 42,
    };
    let r = train(&m, &data, &cfg, Hooks::default()).unwrap();
    let acc32 = r.test.unwrap().accuracy.unwrap();
    assert!(acc32 > 0.8, "fp32 accuracy {acc32}");
    let calib = data.train.x.narrow(0, 0, 50).unwrap();
    let test = data.test.as_ref().unwrap();
    let acc = |f: &str| {
        let q = QuantModel::prepare(
            &m,
            Format::parse(f).unwrap(),
            Some(&calib),
            &Default::default(),
        )
        .unwrap();
        evaluate(&q, test, crate::loss::LossKind::CrossEntropy, 100)
            .unwrap()
            .accuracy
            .unwrap()
    };
    let a8 = acc("int8");
    assert!(a8 >= acc32 - 0.01, "int8 {a8} vs fp32 {acc32}");
    assert!((acc("fp32") - acc32).abs() < 1e-9);
    assert!(acc("fp16") >= acc32 - 0.01);
}
