//! Integer quantization (spec §6, `002` §5.3, `001`): affine x_q = clamp(round(x/Δ) + z,
//! qmin, qmax), x̂ = (x_q − z)·Δ; symmetric per-output-channel weights; per-tensor
//! activation ranges from calibration data (min/max or percentile observers); k-bit uniform.

/// Parameters of one affine quantizer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    pub scale: f32,
    pub zero_point: i32,
    pub qmin: i32,
    pub qmax: i32,
}

impl Affine {
    /// The integer code of `x`.
    pub fn quantize(&self, x: f32) -> i32 {
        let q = (x / self.scale).round_ties_even() as i64 + self.zero_point as i64;
        q.clamp(self.qmin as i64, self.qmax as i64) as i32
    }

    pub fn dequantize(&self, q: i32) -> f32 {
        (q - self.zero_point) as f32 * self.scale
    }

    /// Quantize then dequantize (the "fake quantization" used to evaluate accuracy).
    pub fn fake(&self, x: f32) -> f32 {
        self.dequantize(self.quantize(x))
    }

    /// Symmetric signed quantizer for values in [−m, m] with `bits` bits: scale m/(2^(b−1)−1),
    /// zero point 0, codes in [−(2^(b−1)−1), 2^(b−1)−1] (the most negative code is unused, as in
    /// TFLite/ONNX per-channel weights).
    pub fn symmetric(max_abs: f32, bits: u32) -> Self {
        let qmax = (1i32 << (bits - 1)) - 1;
        let scale = if max_abs > 0.0 && max_abs.is_finite() {
            max_abs / qmax as f32
        } else {
            1.0
        };
        Self {
            scale,
            zero_point: 0,
            qmin: -qmax,
            qmax,
        }
    }

    /// Asymmetric signed quantizer for [lo, hi] (extended to contain 0 so that zero padding and
    /// ReLU zeros are exact) with `bits` bits: codes in [−2^(b−1), 2^(b−1)−1].
    pub fn asymmetric(lo: f32, hi: f32, bits: u32) -> Self {
        let qmin = -(1i32 << (bits - 1));
        let qmax = (1i32 << (bits - 1)) - 1;
        let lo = lo.min(0.0);
        let hi = hi.max(0.0);
        if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater)
            || !lo.is_finite()
            || !hi.is_finite()
        {
            return Self {
                scale: 1.0,
                zero_point: 0,
                qmin,
                qmax,
            };
        }
        let scale = (hi - lo) / (qmax - qmin) as f32;
        let zero_point = (qmin as f32 - lo / scale).round_ties_even() as i32;
        Self {
            scale,
            zero_point: zero_point.clamp(qmin, qmax),
            qmin,
            qmax,
        }
    }
}

/// Fake-quantizes weights of shape (C_out, rest…) per output channel, symmetric, in place;
/// returns the quantizer of each channel.
pub fn fake_quantize_per_channel(w: &mut [f32], c_out: usize, bits: u32) -> Vec<Affine> {
    if c_out == 0 || w.is_empty() {
        return Vec::new();
    }
    let per = w.len() / c_out;
    w.chunks_mut(per)
        .map(|ch| {
            let m = ch.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let q = Affine::symmetric(m, bits);
            for v in ch.iter_mut() {
                *v = q.fake(*v);
            }
            q
        })
        .collect()
}

/// k-bit uniform quantizer of `001` for x ∈ [0, 1]: Q_k(x) = round((2^k − 1)·x)/(2^k − 1).
pub fn uniform_k(x: f32, k: u32) -> f32 {
    let n = ((1u64 << k) - 1) as f32;
    (x.clamp(0.0, 1.0) * n).round_ties_even() / n
}

/// Collects an activation range over calibration batches.
#[derive(Clone, Debug)]
pub enum Observer {
    /// Running min and max of everything seen.
    MinMax { lo: f32, hi: f32 },
    /// Keeps the values and takes the given percentile (e.g. 99.99) of each tail.
    Percentile { pct: f64, values: Vec<f32> },
}

impl Observer {
    pub fn min_max() -> Self {
        Observer::MinMax {
            lo: f32::INFINITY,
            hi: f32::NEG_INFINITY,
        }
    }

    pub fn percentile(pct: f64) -> Self {
        Observer::Percentile {
            pct,
            values: Vec::new(),
        }
    }

    pub fn observe(&mut self, xs: &[f32]) {
        match self {
            Observer::MinMax { lo, hi } => {
                for &x in xs.iter().filter(|x| x.is_finite()) {
                    *lo = lo.min(x);
                    *hi = hi.max(x);
                }
            }
            Observer::Percentile { values, .. } => {
                values.extend(xs.iter().copied().filter(|x| x.is_finite()))
            }
        }
    }

    /// The observed range (lo, hi); (0, 0) when nothing finite was seen.
    pub fn range(&self) -> (f32, f32) {
        match self {
            Observer::MinMax { lo, hi } => {
                if lo <= hi {
                    (*lo, *hi)
                } else {
                    (0.0, 0.0)
                }
            }
            Observer::Percentile { pct, values } => {
                if values.is_empty() {
                    return (0.0, 0.0);
                }
                let mut v = values.clone();
                v.sort_by(f32::total_cmp);
                let n = v.len();
                let at = |p: f64| v[((p / 100.0) * (n - 1) as f64).round() as usize];
                (at(100.0 - pct), at(*pct))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_hand_values() {
        // max |w| = 1.27 → scale 0.01; 0.505 → round(50.5) = 50 (ties to even) → 0.50.
        let q = Affine::symmetric(1.27, 8);
        assert!((q.scale - 0.01).abs() < 1e-9);
        assert_eq!((q.qmin, q.qmax, q.zero_point), (-127, 127, 0));
        assert_eq!(q.quantize(1.27), 127);
        assert_eq!(q.quantize(-5.0), -127);
        assert_eq!(q.quantize(0.013), 1);
    }

    #[test]
    fn asymmetric_hand_values_and_exact_zero() {
        // [−1, 3] over 255 steps: scale 4/255, z = round(−128 + 63.75) = −64.
        let q = Affine::asymmetric(-1.0, 3.0, 8);
        assert!((q.scale - 4.0 / 255.0).abs() < 1e-9);
        assert_eq!(q.zero_point, -64);
        assert_eq!(q.fake(0.0), 0.0, "zero is exactly representable");
        assert_eq!(q.quantize(3.0), 127);
        assert_eq!(q.quantize(-1.0), -128);
        // A range that excludes zero is widened to contain it.
        let q = Affine::asymmetric(2.0, 6.0, 8);
        assert_eq!(q.zero_point, -128);
        assert_eq!(q.fake(0.0), 0.0);
    }

    #[test]
    fn round_trip_error_is_at_most_half_a_step() {
        let q = Affine::asymmetric(-2.5, 4.0, 8);
        for i in 0..=1000 {
            let x = -2.5 + 6.5 * i as f32 / 1000.0;
            let e = (q.fake(x) - x).abs();
            assert!(e <= q.scale / 2.0 + 1e-6, "x={x} err={e} scale={}", q.scale);
            // Quantizing a dequantized value gives the same code.
            let c = q.quantize(x);
            assert_eq!(q.quantize(q.dequantize(c)), c);
        }
    }

    #[test]
    fn per_channel_uses_each_channels_range() {
        let mut w = vec![0.5, -1.0, 0.25, /* ch1 */ 10.0, 5.0, -2.0];
        let qs = fake_quantize_per_channel(&mut w, 2, 8);
        assert!((qs[0].scale - 1.0 / 127.0).abs() < 1e-9);
        assert!((qs[1].scale - 10.0 / 127.0).abs() < 1e-9);
        assert_eq!(w[1], -1.0);
        assert_eq!(w[3], 10.0);
        assert!((w[4] - 5.0).abs() <= qs[1].scale / 2.0);
    }

    #[test]
    fn uniform_k_levels() {
        assert_eq!(uniform_k(0.5, 1), 0.0, "tie at 0.5 rounds to even level 0");
        assert_eq!(uniform_k(0.6, 1), 1.0);
        assert_eq!(uniform_k(0.34, 2), 1.0 / 3.0);
        assert_eq!(uniform_k(2.0, 4), 1.0);
    }

    #[test]
    fn observers() {
        let mut m = Observer::min_max();
        assert_eq!(m.range(), (0.0, 0.0));
        m.observe(&[1.0, -2.0, f32::NAN]);
        m.observe(&[3.5]);
        assert_eq!(m.range(), (-2.0, 3.5));
        let mut p = Observer::percentile(99.0);
        let xs: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        p.observe(&xs);
        assert_eq!(p.range(), (1.0, 99.0));
    }
}
