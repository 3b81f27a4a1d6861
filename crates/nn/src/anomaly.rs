//! Anomaly scores of an auto-encoder: per item the mean squared reconstruction error over its
//! values (eval mode), per clip the mean over its windows ([`crate::auc::clip_means`]), and
//! the task's metrics: AUC and pAUC per machine ID, averaged ([`crate::auc::per_group`]).

use anyhow::{Result, ensure};
use candle_core::{D, Tensor};

use crate::auc::{GroupedAuc, clip_means, per_group};
use crate::train::Trainable;

/// MLPerf Tiny's partial-AUC limit.
pub const MAX_FPR: f64 = 0.1;

/// Mean squared reconstruction error of each item of `x` (N, ...), batch by batch.
pub fn reconstruction_errors(model: &dyn Trainable, x: &Tensor, batch: usize) -> Result<Vec<f32>> {
    let n = x.dims().first().copied().unwrap_or(0);
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let b = batch.max(1).min(n - i);
        let xb = x.narrow(0, i, b)?;
        let y = model.forward_t(&xb, false)?;
        ensure!(
            y.dims() == xb.dims(),
            "an anomaly score needs an auto-encoder: output {:?} for input {:?}",
            y.dims(),
            xb.dims()
        );
        let e = (y - &xb)?.sqr()?.flatten_from(1)?.mean(D::Minus1)?;
        out.extend(e.to_vec1::<f32>()?);
        i += b;
    }
    Ok(out)
}

/// Per-window errors → per-clip scores → AUC / pAUC per machine ID. `anomalous` and `group`
/// are per window (constant within a clip).
pub fn evaluate(
    errors: &[f32],
    clip: &[u32],
    anomalous: &[bool],
    group: &[u32],
) -> Result<GroupedAuc> {
    ensure!(
        errors.len() == clip.len() && clip.len() == anomalous.len() && clip.len() == group.len(),
        "anomaly evaluation: {} errors, {} clip ids, {} labels, {} machine ids",
        errors.len(),
        clip.len(),
        anomalous.len(),
        group.len()
    );
    let (_, scores, first) = clip_means(errors, clip);
    let a: Vec<bool> = first.iter().map(|&i| anomalous[i]).collect();
    let g: Vec<u32> = first.iter().map(|&i| group[i]).collect();
    per_group(&scores, &a, &g, MAX_FPR).ok_or_else(|| {
        anyhow::anyhow!("anomaly evaluation: no machine ID has both normal and anomalous clips")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AutoEncoderConfig, ModelConfig};
    use crate::data::{DataSet, Split};
    use crate::model::Model;
    use crate::train::{TrainConfig, train};
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    /// Normal items lie on a 2-d subspace of R^16; anomalies off it. A small auto-encoder
    /// trained on normal items only reconstructs them better: AUC well above 0.5.
    #[test]
    fn an_autoencoder_trained_on_normal_items_detects_anomalies() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let d = 16;
        let basis: Vec<[f32; 2]> = (0..d)
            .map(|_| [rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)])
            .collect();
        let item = |anomaly: bool, rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
            let (a, b): (f32, f32) = (rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
            (0..d)
                .map(|k| {
                    let v = a * basis[k][0] + b * basis[k][1];
                    if anomaly {
                        v + rng.random_range(-1.0..1.0)
                    } else {
                        v
                    }
                })
                .collect()
        };
        let train_x: Vec<f32> = (0..400).flat_map(|_| item(false, &mut rng)).collect();
        let mut test_x = Vec::new();
        let (mut clip, mut anomalous, mut group) = (Vec::new(), Vec::new(), Vec::new());
        for c in 0..40u32 {
            let anomaly = c % 2 == 1;
            for _ in 0..3 {
                test_x.extend(item(anomaly, &mut rng));
                clip.push(c);
                anomalous.push(anomaly);
                group.push(c % 4 / 2);
            }
        }
        let x = Tensor::from_vec(train_x, (400, d), &Device::Cpu).unwrap();
        let cfg = ModelConfig::AutoEncoder(AutoEncoderConfig {
            input: d,
            hidden: vec![8, 2, 8],
            batch_norm: true,
        });
        let model = Model::new(cfg, 7).unwrap();
        let data = DataSet {
            train: Split::reconstruction(x),
            val: None,
            test: None,
        };
        let tc = TrainConfig {
            augment: Default::default(),
            epochs: 30,
            batch_size: 32,
            lr: 1e-2,
            optimizer: crate::optim::OptimizerConfig::adam(0.0),
            schedule: Default::default(),
            loss: crate::loss::LossKind::Mse,
            patience: None,
            monitor: crate::train::Monitor::ValLoss,
            keep_best: false,
            seed: 1,
        };
        train(&model, &data, &tc, Default::default()).unwrap();
        let xt = Tensor::from_vec(test_x, (120, d), &Device::Cpu).unwrap();
        let e = reconstruction_errors(&model, &xt, 50).unwrap();
        let r = evaluate(&e, &clip, &anomalous, &group).unwrap();
        assert_eq!(r.groups.len(), 2);
        assert!(r.auc > 0.85, "AUC {}", r.auc);
        assert!(r.pauc > 0.5, "pAUC {}", r.pauc);
    }
}
