//! The training loop: small TCN and DS-CNN learn a separable problem; kill-and-resume gives
//! bit-identical weights; divergence, cancellation and early stopping behave.

use super::models::{small_dscnn, small_tcn};
use crate::data::{DataSet, Split};
use crate::model::Model;
use crate::optim::OptimizerConfig;
use crate::schedule::ScheduleConfig;
use crate::train::*;
use std::cell::Cell;
use std::path::{Path, PathBuf};

/// Class k (of 3) lights up a band: TCN input channel k (+1.5), or DS-CNN rows 16k..16k+16.
fn synthetic(n: usize, seed: u64, dscnn: bool) -> Split {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (shape, per): (Vec<usize>, usize) = if dscnn {
        (vec![1, 49, 10], 490)
    } else {
        (vec![10, 49], 490)
    };
    let mut x = Vec::with_capacity(n * per);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let k = (i % 3) as u32;
        for j in 0..per {
            let row = j / (if dscnn { 10 } else { 49 });
            let on = if dscnn {
                row / 16 == k as usize
            } else {
                row == k as usize
            };
            x.push(r.random::<f32>() - 0.5 + if on { 1.5 } else { 0.0 });
        }
        y.push(k);
    }
    Split::classes(x, &shape, y).unwrap()
}

fn data(dscnn: bool, n: usize) -> DataSet {
    DataSet {
        train: synthetic(n, 1, dscnn),
        val: Some(synthetic(30, 2, dscnn)),
        test: Some(synthetic(30, 3, dscnn)),
    }
}

fn cfg(epochs: u64) -> TrainConfig {
    TrainConfig {
        augment: Default::default(),
        epochs,
        batch_size: 10,
        lr: 2e-2,
        optimizer: OptimizerConfig::adam(1e-4),
        schedule: ScheduleConfig::MultiStep {
            milestones: vec![3],
            gamma: 0.5,
        },
        loss: crate::loss::LossKind::CrossEntropy,
        patience: None,
        monitor: Monitor::ValLoss,
        keep_best: true,
        seed: 42,
    }
}

#[test]
fn small_tcn_and_dscnn_learn_a_separable_problem() {
    for (model_cfg, dscnn) in [(small_tcn(), false), (small_dscnn(), true)] {
        let m = Model::new(model_cfg, 0).unwrap();
        let d = data(dscnn, 60);
        let mut calls = 0;
        let mut prog = |p: &Progress| {
            assert!(p.batch < p.batches && p.loss.is_finite());
            calls += 1;
        };
        let r = train(
            &m,
            &d,
            &cfg(5),
            Hooks {
                progress: Some(&mut prog),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(calls, 5 * 6); // 60 samples / 10 → 6 batches per epoch
        let acc = r.test.unwrap().accuracy.unwrap();
        assert!(
            acc >= 0.8,
            "dscnn={dscnn}: test accuracy {acc} (chance 0.33), history {:?}",
            r.history
        );
        assert_eq!(r.history.len(), 5);
        assert_eq!(r.history[3].lr, 1e-2);
        // Best-on-validation weights are what the model holds at the end.
        let best = r.best_epoch.unwrap() as usize;
        assert_eq!(r.val.unwrap(), r.history[best].val.unwrap());
        let min = r
            .history
            .iter()
            .map(|h| h.val.unwrap().loss)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(r.history[best].val.unwrap().loss, min);
    }
}

/// Checkpoints in numbered sub-folders of a temp dir.
struct DirSink {
    root: PathBuf,
    saves: Cell<u64>,
}

impl CheckpointSink for DirSink {
    fn save(
        &self,
        step: u64,
        write: &mut dyn FnMut(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let tmp = self.root.join(format!("tmp-{step}"));
        std::fs::create_dir_all(&tmp)?;
        write(&tmp)?;
        std::fs::rename(&tmp, self.root.join(format!("ckpt-{step:06}")))?;
        self.saves.set(self.saves.get() + 1);
        Ok(())
    }
    fn latest(&self) -> Option<(u64, PathBuf)> {
        let mut v: Vec<_> = std::fs::read_dir(&self.root)
            .ok()?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                Some((
                    name.strip_prefix("ckpt-")?.parse::<u64>().ok()?,
                    self.root.join(&name),
                ))
            })
            .collect();
        v.sort();
        v.pop()
    }
}

#[test]
fn killed_training_resumes_to_bit_identical_weights() {
    let d = data(false, 48);
    let mut c = cfg(5);
    c.optimizer = OptimizerConfig::adamw(1e-2);
    c.patience = Some(10);
    // Uninterrupted, with checkpoints (they must not change the result).
    let full_dir = tempfile::tempdir().unwrap();
    let sink = DirSink {
        root: full_dir.path().into(),
        saves: Cell::new(0),
    };
    let a = Model::new(small_tcn(), 11).unwrap();
    let ra = train(
        &a,
        &d,
        &c,
        Hooks {
            checkpoints: Some(&sink),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(sink.saves.get(), 5);

    // Interrupted after the second epoch's checkpoint, then everything is dropped.
    let dir = tempfile::tempdir().unwrap();
    {
        let sink = DirSink {
            root: dir.path().into(),
            saves: Cell::new(0),
        };
        let b = Model::new(small_tcn(), 11).unwrap();
        let cancel = || sink.saves.get() >= 2;
        let err = train(
            &b,
            &d,
            &c,
            Hooks {
                checkpoints: Some(&sink),
                cancel: Some(&cancel),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<TrainError>(),
                Some(TrainError::Cancelled { epoch: 2 })
            ),
            "{err}"
        );
    }
    // Resume in a fresh model (different init seed: the checkpoint must override it).
    let sink = DirSink {
        root: dir.path().into(),
        saves: Cell::new(0),
    };
    let b = Model::new(small_tcn(), 999).unwrap();
    let rb = train(
        &b,
        &d,
        &c,
        Hooks {
            checkpoints: Some(&sink),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(sink.saves.get(), 3, "resumed at epoch 2 of 5");
    assert_eq!(ra, rb);
    let (sa, sb) = (a.state().unwrap(), b.state().unwrap());
    for (k, t) in &sa {
        let x: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = sb[k].flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{k} differs"
        );
    }
    // A checkpoint of another configuration is refused.
    let mut other = c.clone();
    other.lr = 1.0;
    let err = train(
        &b,
        &d,
        &other,
        Hooks {
            checkpoints: Some(&sink),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("different training configuration"),
        "{err}"
    );
}

#[test]
fn same_seed_gives_bit_identical_training() {
    let d = data(false, 32);
    let run = || {
        let m = Model::new(small_tcn(), 3).unwrap();
        train(&m, &d, &cfg(2), Hooks::default()).unwrap();
        m.state().unwrap()
    };
    let (a, b) = (run(), run());
    for (k, t) in &a {
        let x: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = b[k].flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{k} differs"
        );
    }
}

#[test]
fn nan_loss_is_an_error_naming_epoch_and_batch() {
    // ReLU maps NaN to 0 (Rust's f32::max), so poison the MSE targets instead of the inputs.
    use crate::config::{AutoEncoderConfig, ModelConfig};
    let x = super::models::randn(&[20, 6], 1);
    let nan = candle_core::Tensor::full(f32::NAN, (20, 6), &candle_core::Device::Cpu).unwrap();
    let d = DataSet {
        train: Split {
            x,
            y: crate::data::Targets::Values(nan),
        },
        val: None,
        test: None,
    };
    let m = Model::new(
        ModelConfig::AutoEncoder(AutoEncoderConfig {
            input: 6,
            hidden: vec![4],
            batch_norm: false,
        }),
        0,
    )
    .unwrap();
    let mut c = cfg(2);
    c.loss = crate::loss::LossKind::Mse;
    let err = train(&m, &d, &c, Hooks::default()).unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<TrainError>(),
            Some(TrainError::Diverged {
                epoch: 0,
                batch: 0,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("epoch 0, batch 0"), "{err}");
}

#[test]
fn early_stopping_stops_after_patience_epochs_without_improvement() {
    // Validation labels are noise, so validation loss soon stops improving.
    let mut d = data(false, 30);
    let mut v = synthetic(30, 2, false);
    {
        use rand::{Rng, SeedableRng};
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(77);
        let noise: Vec<u32> = (0..30).map(|_| r.random_range(0..3u32)).collect();
        v.y = crate::data::Targets::Classes(
            candle_core::Tensor::new(noise, &candle_core::Device::Cpu).unwrap(),
        );
    }
    d.val = Some(v);
    let mut c = cfg(30);
    c.patience = Some(2);
    c.lr = 2e-2;
    let m = Model::new(small_tcn(), 0).unwrap();
    let r = train(&m, &d, &c, Hooks::default()).unwrap();
    assert!(
        r.stopped_early && r.history.len() < 30,
        "ran {} epochs",
        r.history.len()
    );
    let best = r.best_epoch.unwrap() as usize;
    assert_eq!(
        r.history.len(),
        best + 1 + 2,
        "stops exactly patience epochs after the best"
    );
}

#[test]
fn mse_autoencoder_trains_and_mismatched_loss_is_an_error() {
    use crate::config::{AutoEncoderConfig, ModelConfig};
    let x = super::models::randn(&[40, 12], 5);
    let split = Split::reconstruction(x);
    let d = DataSet {
        train: split.clone(),
        val: Some(split.clone()),
        test: Some(split),
    };
    let m = Model::new(
        ModelConfig::AutoEncoder(AutoEncoderConfig {
            input: 12,
            hidden: vec![16, 8, 16],
            batch_norm: true,
        }),
        0,
    )
    .unwrap();
    let mut c = cfg(8);
    c.loss = crate::loss::LossKind::Mse;
    let r = train(&m, &d, &c, Hooks::default()).unwrap();
    assert!(r.history.last().unwrap().train.loss < r.history[0].train.loss);
    assert!(r.test.unwrap().accuracy.is_none());
    c.loss = crate::loss::LossKind::CrossEntropy;
    let err = train(&m, &d, &c, Hooks::default()).unwrap_err().to_string();
    assert!(err.contains("class labels"), "{err}");
}
