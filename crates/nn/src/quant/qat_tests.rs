//! Tests of quantization-aware training: the straight-through gradient is the derivative of
//! the clipped identity (1 inside the quantizer's range, 0 outside), the STE forward is the
//! post-training fake quantization bit for bit, and QAT on a small synthetic problem keeps or
//! improves post-training accuracy.

use super::eval::{ActQuant, QuantModel};
use super::format::Format;
use super::int::{Affine, fake_quantize_per_channel};
use super::qat::*;
use crate::config::{ModelConfig, TcnConfig, TcnLayerConfig};
use crate::data::{DataSet, Split};
use crate::loss::LossKind;
use crate::model::Model;
use crate::train::{Hooks, Monitor, TrainConfig, evaluate, train};
use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};

fn vals(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn ste_gradient_is_the_clipped_identity() {
    // [−1, 1] over 255 steps: scale 2/255, zero point ≈ −0.5 rounded (0 or −1 in f32), so
    // the representable range is [−1, 1] within one step s = 0.0078.
    let a = Affine::asymmetric(-1.0, 1.0, 8);
    let (lo, hi) = (a.dequantize(a.qmin), a.dequantize(a.qmax));
    assert!(
        (lo + 1.0).abs() <= a.scale && (hi - 1.0).abs() <= a.scale,
        "[{lo}, {hi}]"
    );
    let xs = [-3.0f32, -0.9, 0.2, 0.7, 0.98, 1.5, 2.5];
    let c = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
    let x = Var::from_tensor(&Tensor::new(&xs[..], &Device::Cpu).unwrap()).unwrap();
    let ct = Tensor::new(&c[..], &Device::Cpu).unwrap();
    let y = ste_affine(x.as_tensor(), &a).unwrap();
    // Forward: exactly the post-training fake quantization.
    let yv = vals(&y);
    for (x, y) in xs.iter().zip(&yv) {
        assert_eq!(y.to_bits(), a.fake(*x).to_bits(), "forward at {x}");
    }
    // Backward of Σ c·y: c inside the range, 0 outside.
    let g = (y * &ct).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = vals(g.get(x.as_tensor()).unwrap());
    assert_eq!(gx, vec![0.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0]);
    // The same by central finite differences of the clipped identity clamp(x, lo, hi), the
    // function whose derivative the STE stands for.
    let h = 1e-3f32;
    for (i, &x0) in xs.iter().enumerate() {
        let clip = |v: f32| v.clamp(lo, hi);
        let fd = (clip(x0 + h) - clip(x0 - h)) / (2.0 * h) * c[i];
        assert!(
            (fd - gx[i]).abs() < 1e-2,
            "x = {x0}: fd {fd}, ste {}",
            gx[i]
        );
    }
}

#[test]
fn weight_ste_passes_every_gradient_and_rounds_per_channel() {
    let wv = vec![0.5f32, -1.0, 0.3, 0.01, /* ch1 */ 10.0, 5.0, -2.0, 0.7];
    let w = Var::from_tensor(&Tensor::from_vec(wv.clone(), (2, 4), &Device::Cpu).unwrap()).unwrap();
    let y = ste_weight(w.as_tensor(), 4).unwrap();
    let mut want = wv.clone();
    fake_quantize_per_channel(&mut want, 2, 4);
    assert_eq!(vals(&y), want);
    assert_ne!(want, wv, "4-bit rounding changes some weights");
    let c = Tensor::from_vec((1..=8).map(|i| i as f32).collect(), (2, 4), &Device::Cpu).unwrap();
    let g = (y * &c).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(
        vals(g.get(w.as_tensor()).unwrap()),
        (1..=8).map(|i| i as f32).collect::<Vec<_>>()
    );
}

fn tiny_tcn() -> ModelConfig {
    let mut c = TcnConfig::seed(8);
    c.layers.truncate(3);
    c.layers[2] = TcnLayerConfig {
        channels: 8,
        kernel: 3,
        dilation: 2,
    };
    c.classes = 3;
    ModelConfig::Tcn(c)
}

/// Class k (of 3) raises input channel k by a weak offset under noise: not perfectly
/// separable at this size, so quantization error shows in the accuracy.
fn synthetic(n: usize, seed: u64) -> Split {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * 490);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % 3;
        for j in 0..490 {
            let on = j / 49 == k;
            x.push(2.0 * (r.random::<f32>() - 0.5) + if on { 0.15 } else { 0.0 });
        }
        y.push(k as u32);
    }
    Split::classes(x, &[10, 49], y).unwrap()
}

fn cfg(epochs: u64, lr: f64) -> TrainConfig {
    TrainConfig {
        augment: Default::default(),
        epochs,
        batch_size: 20,
        lr,
        optimizer: crate::optim::OptimizerConfig::adam(0.0),
        schedule: Default::default(),
        loss: LossKind::CrossEntropy,
        patience: None,
        monitor: Monitor::ValLoss,
        keep_best: false,
        seed: 7,
    }
}

#[test]
fn qat_keeps_int8_and_recovers_low_bit_accuracy() {
    let data = DataSet {
        train: synthetic(300, 1),
        val: None,
        test: Some(synthetic(600, 2)),
    };
    let test = data.test.as_ref().unwrap();
    let m = Model::new(tiny_tcn(), 3).unwrap();
    let r = train(&m, &data, &cfg(4, 1e-2), Hooks::default()).unwrap();
    let acc32 = r.test.unwrap().accuracy.unwrap();
    let calib = data.train.x.narrow(0, 0, 100).unwrap();
    let opts = super::eval::QuantOptions {
        keep_first_last_8bit: false,
        ..Default::default()
    };
    let acc = |q: &QuantModel| {
        evaluate(q, test, LossKind::CrossEntropy, 100)
            .unwrap()
            .accuracy
            .unwrap()
    };
    let mut report = vec![format!("fp32 {acc32:.4}")];
    // int8 must not lose accuracy; 2-bit weights lose ~20 points after training (0.54 vs 0.77
    // here) and three QAT epochs must win back at least 10 of them.
    for (name, min_gain) in [("int8", 0.0), ("w2", 0.1)] {
        let f = Format::parse(name).unwrap();
        let ptq = acc(&QuantModel::prepare(&m, f, Some(&calib), &opts).unwrap());
        let qat = QatModel::new(&m, f, Some(&calib), &opts).unwrap();
        let frozen = qat.activation_quantizers().to_vec();
        // Before fine-tuning, the QAT network is the post-training one.
        assert_eq!(acc(&qat.quantized().unwrap()), ptq, "{name} before QAT");
        let fit = train(&qat, &data, &cfg(3, 2e-3), Hooks::default()).unwrap();
        let after = acc(&qat.quantized().unwrap());
        report.push(format!("{name}: ptq {ptq:.4} qat {after:.4}"));
        assert!(after >= ptq + min_gain, "{name}: QAT {after} < PTQ {ptq}");
        // Training's test pass used the STE forward: the same function as the evaluation.
        assert_eq!(fit.test.unwrap().accuracy.unwrap(), after);
        // The activation ranges stayed frozen and the input model is untouched.
        assert_eq!(qat.activation_quantizers(), frozen.as_slice());
        if f == Format::Int8 {
            assert!(frozen.iter().all(|a| matches!(a, ActQuant::Affine(_))));
        }
    }
    assert_eq!(
        r.test.unwrap().accuracy.unwrap(),
        evaluate(&m, test, LossKind::CrossEntropy, 100)
            .unwrap()
            .accuracy
            .unwrap(),
        "QAT trains a copy"
    );
    println!("{}", report.join("; "));
}

/// Dropout is active while QAT fine-tunes (train mode) and the identity when it evaluates: the
/// thesis DS-CNN (dropout 0.2 / 0.4) gives different training-mode outputs from the eval-mode
/// ones, the same for the same batch (seeded), and eval mode is the quantized network.
#[test]
fn qat_trains_with_dropout_and_evaluates_without() {
    use crate::config::DsCnnConfig;
    let mut c = DsCnnConfig::thesis();
    c.stem.channels = 8;
    c.blocks.truncate(1);
    c.blocks[0].channels = 8;
    let m = Model::new(ModelConfig::DsCnn(c), 5).unwrap();
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let v: Vec<f32> = (0..4 * 490).map(|_| r.random::<f32>() - 0.5).collect();
    let x = Tensor::from_vec(v, (4, 1, 49, 10), &Device::Cpu).unwrap();
    let q = QatModel::new(&m, Format::Int8, Some(&x), &Default::default()).unwrap();
    let train1 = vals(&crate::train::Trainable::forward_t(&q, &x, true).unwrap());
    let train2 = vals(&crate::train::Trainable::forward_t(&q, &x, true).unwrap());
    let eval = vals(&crate::train::Trainable::forward_t(&q, &x, false).unwrap());
    assert_eq!(train1, train2, "dropout masks are seeded");
    assert_ne!(train1, eval, "dropout is not active in QAT training");
    assert_eq!(eval, vals(&q.quantized().unwrap().forward(&x).unwrap()));
}
