//! One-epoch PIT searches on the two MLPerf Tiny seed networks whose tasks are not keyword
//! spotting or image classification (`000`): the FC auto-encoder of anomaly detection (channel
//! masks on its linear layers, reconstruction loss) and MobileNetV1-0.25 on 96×96 visual wake
//! words (channel masks in 2-d). Each search runs, a strong λ shrinks the network, and the
//! exported smaller network computes what the masked one does.

use crate::config::{AutoEncoderConfig, MobileNetV1Config, ModelConfig};
use crate::data::{DataSet, Split};
use crate::model::Model;
use crate::optim::OptimizerConfig;
use crate::pit::{Cost, PitModel, SearchConfig, search};
use crate::tests::max_diff;
use crate::train::Trainable;
use candle_core::{Device, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| rand::Rng::random_range(&mut rng, -1.0f32..1.0))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn one_epoch(batch: usize) -> SearchConfig {
    SearchConfig {
        epochs: 1,
        batch_size: batch,
        lr_weights: 1e-3,
        lr_masks: 0.2,
        schedule: Default::default(),
        optimizer: OptimizerConfig::adam(0.0),
        mask_optimizer: OptimizerConfig::adam(0.0),
        patience: None,
        restore_best: false,
        seed: 3,
        augment: Default::default(),
    }
}

/// Search one epoch with `lambda`, export, and compare the exported network with the masked
/// one on `x`; returns (params before, params after).
fn search_and_export(
    model: Model,
    data: &DataSet,
    lambda: f64,
    batch: usize,
    x: &Tensor,
) -> (u64, u64) {
    let before = model.num_params();
    let pit = PitModel::new(model, Cost::Size, lambda, false).unwrap();
    let r = search(&pit, data, &one_epoch(batch), &|| false, &mut |_, _| {}).unwrap();
    assert_eq!(r.history.len(), 1);
    let masked = pit.forward_t(x, false).unwrap();
    let (small, _) = pit.export().unwrap();
    let out = small.forward_t(x, false).unwrap();
    let d = max_diff(&masked, &out);
    assert!(
        d < 1e-4,
        "exported network differs from the masked one by {d}"
    );
    (before, small.num_params())
}

#[test]
fn pit_searches_the_anomaly_detection_autoencoder() {
    let cfg = ModelConfig::AutoEncoder(AutoEncoderConfig::reference());
    let x = randn(&[64, 640], 1);
    let data = DataSet {
        train: Split::reconstruction(x.clone()),
        val: Some(Split::reconstruction(randn(&[16, 640], 2))),
        test: None,
    };
    let probe = randn(&[4, 640], 3);
    let (before, after) = search_and_export(Model::new(cfg, 5).unwrap(), &data, 1e-3, 16, &probe);
    assert_eq!(before, 267_928);
    assert!(
        after < before / 2,
        "a strong λ shrinks the hidden widths: {after}"
    );
}

#[test]
fn pit_searches_mobilenet_v1_quarter_width_at_96x96() {
    let cfg = ModelConfig::MobileNetV1(MobileNetV1Config::with_width(0.25, [3, 96, 96], 2));
    let n = 16;
    let x = randn(&[n, 3, 96, 96], 4);
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 2).collect();
    let split = Split::classes(
        x.flatten_all().unwrap().to_vec1().unwrap(),
        &[3, 96, 96],
        labels,
    )
    .unwrap();
    let data = DataSet {
        train: split.clone(),
        val: None,
        test: None,
    };
    let probe = randn(&[2, 3, 96, 96], 5);
    let (before, after) = search_and_export(Model::new(cfg, 6).unwrap(), &data, 1e-3, 4, &probe);
    assert!(after < before, "{before} → {after}");
}
