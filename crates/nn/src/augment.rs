//! Training-time augmentation of each batch, as `000` trains its tasks: keyword spotting with a
//! random time shift and background noise, image classification with a random crop after
//! zero padding and a horizontal flip. Every draw comes from a generator seeded by (seed,
//! epoch, batch), so a run is bit-identical to itself and a resumed run to an uninterrupted
//! one. Order per item: crop, flip, shift, noise.
//!
//! - `time_shift = s`: the item is shifted along its axis 1 by a uniform integer in [−s, s],
//!   zero-filled (axis 1 is time both for a (1, frames, coefficients) image and for a
//!   (channels, steps) sequence). `000` shifts the audio by up to 100 ms; on 20 ms frames that
//!   is 5.
//! - `noise = σ`: Gaussian noise of standard deviation σ added to every value. The features are
//!   stored, not the audio, so this stands in for mixing background recordings (the one
//!   place where whittle's augmentation differs from `000`'s).
//! - `crop_pad = p`: zero padding p on both sides of the last two axes, then a uniformly placed
//!   crop of the original size (`000`'s image recipe: p = 4).
//! - `hflip`: the last axis reversed with probability 1/2.

use anyhow::{Result, ensure};
use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What to do to each training item (all off by default).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    pub time_shift: usize,
    pub noise: f32,
    pub crop_pad: usize,
    pub hflip: bool,
}

impl Augment {
    /// True when nothing is done.
    pub fn is_off(&self) -> bool {
        *self == Augment::default()
    }

    /// Checks the values against an item shape (without N).
    pub fn validate(&self, item: &[usize]) -> Result<()> {
        ensure!(
            self.noise.is_finite() && self.noise >= 0.0,
            "augment.noise must be ≥ 0, got {}",
            self.noise
        );
        if self.time_shift > 0 {
            ensure!(
                item.len() >= 2,
                "augment.time_shift needs items with a time axis (axis 1), the items have shape {item:?}"
            );
            ensure!(
                self.time_shift < item[1],
                "augment.time_shift {} must be smaller than the {} steps of axis 1",
                self.time_shift,
                item[1]
            );
        }
        if self.crop_pad > 0 || self.hflip {
            ensure!(
                item.len() == 3,
                "augment.crop_pad and augment.hflip need (channels, height, width) items, the items have shape {item:?}"
            );
        }
        Ok(())
    }

    /// The augmented batch `x` (N, ...): the same shape, new values.
    pub fn apply(&self, x: &Tensor, seed: u64, epoch: u64, batch: usize) -> Result<Tensor> {
        if self.is_off() {
            return Ok(x.clone());
        }
        let dims = x.dims().to_vec();
        let item = &dims[1..];
        self.validate(item)?;
        let per: usize = item.iter().product();
        let mut v = x.flatten_all()?.to_vec1::<f32>()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (batch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
        );
        let mut tmp = vec![0f32; per];
        for it in v.chunks_mut(per) {
            if self.crop_pad > 0 || self.hflip {
                let (c, h, w) = (item[0], item[1], item[2]);
                let p = self.crop_pad as i64;
                let (dy, dx) = if p > 0 {
                    (
                        rng.random_range(0..=2 * p) - p,
                        rng.random_range(0..=2 * p) - p,
                    )
                } else {
                    (0, 0)
                };
                let flip = self.hflip && rng.random_bool(0.5);
                for ch in 0..c {
                    for y in 0..h {
                        for xx in 0..w {
                            let sx = if flip { w - 1 - xx } else { xx } as i64 + dx;
                            let sy = y as i64 + dy;
                            tmp[(ch * h + y) * w + xx] =
                                if sy >= 0 && sy < h as i64 && sx >= 0 && sx < w as i64 {
                                    it[(ch * h + sy as usize) * w + sx as usize]
                                } else {
                                    0.0
                                };
                        }
                    }
                }
                it.copy_from_slice(&tmp);
            }
            if self.time_shift > 0 {
                let s = self.time_shift as i64;
                let shift = rng.random_range(-s..=s);
                let t = item[1] as i64;
                let outer = item[0];
                let inner: usize = item[2..].iter().product();
                for o in 0..outer {
                    for step in 0..t {
                        let src = step - shift;
                        for k in 0..inner {
                            tmp[(o * t as usize + step as usize) * inner + k] =
                                if (0..t).contains(&src) {
                                    it[(o * t as usize + src as usize) * inner + k]
                                } else {
                                    0.0
                                };
                        }
                    }
                }
                it.copy_from_slice(&tmp);
            }
            if self.noise > 0.0 {
                for a in it.iter_mut() {
                    // Box–Muller: one normal draw from two uniforms
                    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
                    let u2: f32 = rng.random();
                    *a += self.noise * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
                }
            }
        }
        Ok(Tensor::from_vec(v, dims, x.device())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn off_is_the_identity_and_draws_are_seeded() {
        let x = t((0..24).map(|i| i as f32).collect(), &[2, 3, 4]);
        let a = Augment::default().apply(&x, 1, 0, 0).unwrap();
        assert_eq!(a.to_vec3::<f32>().unwrap(), x.to_vec3::<f32>().unwrap());
        let aug = Augment {
            time_shift: 1,
            noise: 0.1,
            ..Default::default()
        };
        let one = aug.apply(&x, 1, 2, 3).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(
            one,
            aug.apply(&x, 1, 2, 3).unwrap().to_vec3::<f32>().unwrap()
        );
        assert_ne!(
            one,
            aug.apply(&x, 1, 2, 4).unwrap().to_vec3::<f32>().unwrap()
        );
    }

    #[test]
    fn a_time_shift_moves_whole_steps_and_zero_fills() {
        // one item (1 channel, 5 steps, 2 values): every output row is an input row shifted by
        // the same s ∈ [−2, 2], rows shifted in from outside are zero
        let x = t((1..=10).map(|i| i as f32).collect(), &[1, 1, 5, 2]);
        let aug = Augment {
            time_shift: 2,
            ..Default::default()
        };
        let mut seen = std::collections::BTreeSet::new();
        for b in 0..40 {
            let y = aug
                .apply(&x, 9, 0, b)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let s = (-2i64..=2)
                .find(|&s| {
                    (0..5i64).all(|step| {
                        let src = step - s;
                        (0..2).all(|k| {
                            let want = if (0..5).contains(&src) {
                                (src * 2 + k + 1) as f32
                            } else {
                                0.0
                            };
                            y[(step * 2 + k) as usize] == want
                        })
                    })
                })
                .unwrap_or_else(|| panic!("not a shift: {y:?}"));
            seen.insert(s);
        }
        assert_eq!(seen.len(), 5, "every shift in [−2, 2] occurs: {seen:?}");
    }

    #[test]
    fn crop_and_flip_against_a_naive_reference() {
        // 1×3×3 image; with padding 1 a crop offset (dy, dx) and a flip are recovered from
        // the output and checked value by value
        let x = t((1..=9).map(|i| i as f32).collect(), &[1, 1, 3, 3]);
        let aug = Augment {
            crop_pad: 1,
            hflip: true,
            ..Default::default()
        };
        let mut flips = 0;
        for b in 0..50 {
            let y = aug
                .apply(&x, 4, 1, b)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let naive = |dy: i64, dx: i64, flip: bool| -> Vec<f32> {
                let mut o = vec![0f32; 9];
                for r in 0..3i64 {
                    for c in 0..3i64 {
                        let sc = if flip { 2 - c } else { c } + dx;
                        let sr = r + dy;
                        if (0..3).contains(&sr) && (0..3).contains(&sc) {
                            o[(r * 3 + c) as usize] = (sr * 3 + sc + 1) as f32;
                        }
                    }
                }
                o
            };
            let hit = (-1..=1)
                .flat_map(|dy| (-1..=1).flat_map(move |dx| [(dy, dx, false), (dy, dx, true)]))
                .find(|&(dy, dx, f)| naive(dy, dx, f) == y);
            let (_, _, f) = hit.unwrap_or_else(|| panic!("not a crop/flip: {y:?}"));
            flips += f as usize;
        }
        assert!((10..=40).contains(&flips), "flips {flips} of 50");
    }

    #[test]
    fn noise_has_the_asked_spread_and_bad_settings_are_refused() {
        let x = t(vec![0.0; 4000], &[4, 1000]);
        let y = Augment {
            noise: 0.5,
            ..Default::default()
        }
        .apply(&x, 2, 0, 0)
        .unwrap();
        let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let sd = (v.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
        assert!(
            mean.abs() < 0.03 && (sd - 0.5).abs() < 0.03,
            "mean {mean} sd {sd}"
        );
        assert!(
            Augment {
                crop_pad: 2,
                ..Default::default()
            }
            .validate(&[10, 49])
            .is_err()
        );
        assert!(
            Augment {
                time_shift: 49,
                ..Default::default()
            }
            .validate(&[1, 49, 10])
            .is_err()
        );
        assert!(
            Augment {
                noise: -1.0,
                ..Default::default()
            }
            .validate(&[3])
            .is_err()
        );
    }
}
