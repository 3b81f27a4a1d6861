//! Knowledge distillation (spec §5, `002` §5.2): the loss
//! L = λ·CE(y, softmax(z_s)) + (1−λ)·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)), mean over the batch,
//! and computing a teacher's logits once for a whole split (they are cached by the stage).

use anyhow::{Result, ensure};
use candle_core::{D, Tensor};
use serde::{Deserialize, Serialize};

/// λ (weight of the hard-label term) and temperature T.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KdConfig {
    pub alpha: f64,
    pub temperature: f64,
}

impl KdConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (0.0..=1.0).contains(&self.alpha),
            "distillation: alpha must be in [0, 1], got {}",
            self.alpha
        );
        ensure!(
            self.temperature.is_finite() && self.temperature > 0.0,
            "distillation: temperature must be > 0, got {}",
            self.temperature
        );
        Ok(())
    }
}

/// The distillation loss of student logits (N, C) against teacher logits (N, C) and labels (N).
pub fn kd_loss(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    kd: &KdConfig,
) -> Result<Tensor> {
    ensure!(
        student.dims() == teacher.dims(),
        "distillation: student logits {:?} vs teacher logits {:?}",
        student.dims(),
        teacher.dims()
    );
    let ce = crate::loss::cross_entropy(student, labels)?;
    let t = kd.temperature;
    let log_ps = candle_nn::ops::log_softmax(&(student / t)?, D::Minus1)?;
    let log_pt = candle_nn::ops::log_softmax(&(teacher.detach() / t)?, D::Minus1)?;
    let pt = log_pt.exp()?;
    // KL(p_t ‖ p_s) = Σ_c p_t (log p_t − log p_s), mean over rows.
    let kl = (pt * (log_pt - log_ps)?)?.sum(D::Minus1)?.mean_all()?;
    Ok(((ce * kd.alpha)? + (kl * ((1.0 - kd.alpha) * t * t))?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(v: &[f32], n: usize, c: usize) -> Tensor {
        Tensor::from_slice(v, (n, c), &Device::Cpu).unwrap()
    }

    /// The loss by hand in f64 for one row.
    fn by_hand(zs: &[f64], zt: &[f64], y: usize, alpha: f64, temp: f64) -> f64 {
        let lse = |z: &[f64], s: f64| z.iter().map(|v| (v / s).exp()).sum::<f64>().ln();
        let ce = lse(zs, 1.0) - zs[y];
        let (ls, lt) = (lse(zs, temp), lse(zt, temp));
        let kl: f64 = zs
            .iter()
            .zip(zt)
            .map(|(s, t)| {
                let (lps, lpt) = (s / temp - ls, t / temp - lt);
                lpt.exp() * (lpt - lps)
            })
            .sum();
        alpha * ce + (1.0 - alpha) * temp * temp * kl
    }

    #[test]
    fn matches_hand_values() {
        // Two rows of 3 logits; T = 2, λ = 0.2 (002's choice).
        let zs = [1.0f32, 2.0, 0.5, -1.0, 0.0, 3.0];
        let zt = [2.0f32, 1.0, 0.0, 0.0, 0.5, 2.5];
        let y = Tensor::from_slice(&[1u32, 2], 2, &Device::Cpu).unwrap();
        let kd = KdConfig {
            alpha: 0.2,
            temperature: 2.0,
        };
        let got: f32 = kd_loss(&t(&zs, 2, 3), &t(&zt, 2, 3), &y, &kd)
            .unwrap()
            .to_scalar()
            .unwrap();
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let want = (by_hand(&f(&zs[..3]), &f(&zt[..3]), 1, 0.2, 2.0)
            + by_hand(&f(&zs[3..]), &f(&zt[3..]), 2, 0.2, 2.0))
            / 2.0;
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
        // Row 0 by hand: CE = ln(e + e² + e^0.5) − 2 = 0.4644; KL at T=2: p_t = [0.5065, 0.3072, 0.1863], log p_t − log p_s = [0.5516, −0.4484, −0.1984]
        // → KL = 0.10464; total 0.2·0.46436 + 0.8·4·0.10464 = 0.42772.
        let r0 = by_hand(&[1.0, 2.0, 0.5], &[2.0, 1.0, 0.0], 1, 0.2, 2.0);
        assert!((r0 - 0.42772).abs() < 1e-4, "{r0}");
    }

    #[test]
    fn alpha_one_is_cross_entropy_and_equal_logits_have_zero_kl() {
        let zs = t(&[0.3, -0.2, 1.1, 0.0, 0.4, -0.7], 2, 3);
        let zt = t(&[5.0, 1.0, -2.0, 0.1, 0.2, 0.3], 2, 3);
        let y = Tensor::from_slice(&[2u32, 0], 2, &Device::Cpu).unwrap();
        let ce: f32 = crate::loss::cross_entropy(&zs, &y)
            .unwrap()
            .to_scalar()
            .unwrap();
        let kd1: f32 = kd_loss(
            &zs,
            &zt,
            &y,
            &KdConfig {
                alpha: 1.0,
                temperature: 4.0,
            },
        )
        .unwrap()
        .to_scalar()
        .unwrap();
        assert!((ce - kd1).abs() < 1e-6);
        let kd0: f32 = kd_loss(
            &zs,
            &zs,
            &y,
            &KdConfig {
                alpha: 0.0,
                temperature: 3.0,
            },
        )
        .unwrap()
        .to_scalar()
        .unwrap();
        assert!(
            kd0.abs() < 1e-6,
            "KL of identical distributions is 0, got {kd0}"
        );
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let zs0 = [0.3f32, -0.2, 1.1, 0.0, 0.4, -0.7];
        let zt = t(&[1.0, 0.5, -0.5, 0.2, 0.1, 0.9], 2, 3);
        let y = Tensor::from_slice(&[2u32, 1], 2, &Device::Cpu).unwrap();
        let kd = KdConfig {
            alpha: 0.3,
            temperature: 2.5,
        };
        let v = Var::from_tensor(&t(&zs0, 2, 3)).unwrap();
        let loss = kd_loss(v.as_tensor(), &zt, &y, &kd).unwrap();
        let g = loss
            .backward()
            .unwrap()
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let f = |z: &[f32]| -> f64 {
            kd_loss(&t(z, 2, 3), &zt, &y, &kd)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        for i in 0..6 {
            let h = 1e-2f32;
            let (mut a, mut b) = (zs0, zs0);
            a[i] += h;
            b[i] -= h;
            let fd = (f(&a) - f(&b)) / (2.0 * h as f64);
            assert!(
                (fd - g[i] as f64).abs() < 2e-3,
                "d/dz{i}: analytic {} vs numeric {fd}",
                g[i]
            );
        }
    }
}
