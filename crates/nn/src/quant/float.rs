//! IEEE-like reduced floats T(w,t) (`004`): 1 sign bit, `w` exponent bits, `t` mantissa bits,
//! bias 2^(w−1)−1, subnormals, round-to-nearest-even, overflow to ±Inf, NaN kept. Emulated on
//! f32: a value is rounded to the nearest representable T(w,t) value and stored as f32.

/// A reduced float format. fp16 = T(5,10), bf16 = T(8,7), fp32 = T(8,23).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FloatFormat {
    pub exp_bits: u32,
    pub man_bits: u32,
}

impl FloatFormat {
    pub const FP32: Self = Self {
        exp_bits: 8,
        man_bits: 23,
    };
    pub const FP16: Self = Self {
        exp_bits: 5,
        man_bits: 10,
    };
    pub const BF16: Self = Self {
        exp_bits: 8,
        man_bits: 7,
    };

    /// A format emulable on f32: 1 ≤ w ≤ 8 exponent bits, t ≤ 23 mantissa bits. With w = 1
    /// (`004`'s subnormal-only case) the exponent field is 0 (subnormals ±k·2^(1−t), k < 2^t)
    /// or all ones (±Inf), so t ≥ 1.
    pub fn new(exp_bits: u32, man_bits: u32) -> Result<Self, String> {
        if !(1..=8).contains(&exp_bits) {
            return Err(format!(
                "float({exp_bits},{man_bits}): exponent bits must be 1..=8 to be emulated on f32"
            ));
        }
        if exp_bits == 1 && man_bits == 0 {
            return Err(
                "float(1,0): with one exponent bit and no mantissa bit the only finite value is 0"
                    .into(),
            );
        }
        if man_bits > 23 {
            return Err(format!(
                "float({exp_bits},{man_bits}): mantissa bits must be 0..=23 to be emulated on f32"
            ));
        }
        Ok(Self { exp_bits, man_bits })
    }

    /// Storage bits per value: 1 + w + t.
    pub fn bits(&self) -> u32 {
        1 + self.exp_bits + self.man_bits
    }

    pub fn bias(&self) -> i32 {
        (1 << (self.exp_bits - 1)) - 1
    }

    /// Largest finite value: (2 − 2^−t)·2^bias; with w = 1 the largest subnormal 2 − 2^(1−t).
    pub fn max_finite(&self) -> f64 {
        if self.exp_bits == 1 {
            return 2.0 - (1.0 - self.man_bits as f64).exp2();
        }
        (2.0 - (-(self.man_bits as f64)).exp2()) * (self.bias() as f64).exp2()
    }

    /// Smallest positive normal value 2^(1−bias).
    pub fn min_normal(&self) -> f64 {
        ((1 - self.bias()) as f64).exp2()
    }

    /// Smallest positive subnormal value 2^(1−bias−t).
    pub fn min_subnormal(&self) -> f64 {
        ((1 - self.bias() - self.man_bits as i32) as f64).exp2()
    }

    /// Rounds `x` to the nearest value of this format (ties to even), ±Inf on overflow.
    ///
    /// Fast path for results in the format's normal range: round-to-nearest-even directly on
    /// the f32 bit pattern (add half a quantum minus one plus the kept lowest bit, then clear
    /// the dropped bits; a carry moves into the exponent as it should). Values below the
    /// smallest normal take the exact f64 path of [`FloatFormat::round_reference`].
    #[inline]
    pub fn round(&self, x: f32) -> f32 {
        let bits = x.to_bits();
        let abs = bits & 0x7fff_ffff;
        if abs >= 0x7f80_0000 || abs == 0 {
            return x; // NaN, ±Inf, ±0
        }
        // Biased f32 exponent of the smallest normal of this format: emin + 127.
        let min_normal_field = (1 - self.bias() + 127) as u32;
        if self.exp_bits == 1 {
            // no normal numbers: the exact path (multiples of 2^(1−t) below 2, else ±Inf)
            return self.round_reference(x);
        }
        if (abs >> 23) < min_normal_field {
            if self.exp_bits == 8 {
                // The scale 2^(126 + t) below would overflow f32.
                return self.round_reference(x);
            }
            // Subnormal result: a multiple of the quantum 2^(emin − t). Scaling by a power of
            // two is exact (x·2^(t − emin) < 2^(t + 1), and 2^(emin − t) ≥ 2^−85 is normal).
            let up = self.man_bits as i32 - (1 - self.bias());
            let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
            let k = (x * pow2(up)).round_ties_even();
            return k * pow2(-up);
        }
        let shift = 23 - self.man_bits;
        let r = if shift == 0 {
            abs
        } else {
            // With t = 0 the kept bit is the exponent's; the reference counts multiples of
            // the quantum 2^e instead (1 odd, 2 even), so a tie always rounds up.
            let lsb = if shift == 23 { 1 } else { (abs >> shift) & 1 };
            (abs + (1u32 << (shift - 1)) - 1 + lsb) & !((1u32 << shift) - 1)
        };
        // Largest finite value: exponent field bias + 127, the top t mantissa bits set.
        let max_bits =
            ((self.bias() + 127) as u32) << 23 | (((1u32 << self.man_bits) - 1) << shift);
        let sign = bits & 0x8000_0000;
        if r > max_bits {
            f32::from_bits(sign | 0x7f80_0000)
        } else {
            f32::from_bits(sign | r)
        }
    }

    /// The same rounding as [`FloatFormat::round`], computed in f64 arithmetic (one exact
    /// power-of-two scaling and one `round_ties_even`): the reference the fast path is tested
    /// against, and the path for subnormal results.
    pub fn round_reference(&self, x: f32) -> f32 {
        if x.is_nan() || x.is_infinite() || x == 0.0 {
            return x;
        }
        let a = (x as f64).abs();
        let emin = 1 - self.bias();
        // Every f32 (also subnormal) is a normal f64, so the exponent field gives floor(log2 a).
        let e = (((a.to_bits() >> 52) & 0x7ff) as i32 - 1023).max(emin);
        let quantum = ((e - self.man_bits as i32) as f64).exp2();
        // a / quantum is exact (power-of-two scaling), so a single rounding happens here.
        let r = (a / quantum).round_ties_even() * quantum;
        let r = if r > self.max_finite() {
            f64::INFINITY
        } else {
            r
        };
        (r as f32).copysign(x)
    }

    /// Rounds every element in place.
    pub fn round_slice(&self, xs: &mut [f32]) {
        if *self == Self::FP32 {
            return;
        }
        for x in xs {
            *x = self.round(*x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    /// Deterministic f32 bit patterns covering all exponents, signs, subnormals.
    fn sample_bits(n: usize) -> impl Iterator<Item = u32> {
        let mut s = 0x9E3779B97F4A7C15u64;
        (0..n).map(move |_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 16) as u32
        })
    }

    #[test]
    fn fp16_keeps_every_half_value() {
        for bits in 0..=u16::MAX {
            let v = f16::from_bits(bits).to_f32();
            let r = FloatFormat::FP16.round(v);
            if v.is_nan() {
                assert!(r.is_nan());
            } else {
                assert_eq!(r.to_bits(), v.to_bits(), "half bits {bits:#06x} = {v:e}");
            }
        }
    }

    #[test]
    fn fp16_and_bf16_round_like_the_half_crate() {
        for bits in sample_bits(400_000) {
            let x = f32::from_bits(bits);
            if x.is_nan() {
                continue;
            }
            let want16 = f16::from_f32(x).to_f32();
            assert_eq!(
                FloatFormat::FP16.round(x).to_bits(),
                want16.to_bits(),
                "fp16 of {x:e} ({bits:#010x})"
            );
            let wantb = bf16::from_f32(x).to_f32();
            assert_eq!(
                FloatFormat::BF16.round(x).to_bits(),
                wantb.to_bits(),
                "bf16 of {x:e} ({bits:#010x})"
            );
        }
    }

    #[test]
    fn float_4_3_hand_checked() {
        // T(4,3): bias 7, max (2 − 1/8)·2^7 = 240, min normal 2^−6, min subnormal 2^−9.
        let f = FloatFormat::new(4, 3).unwrap();
        assert_eq!(f.bits(), 8);
        assert_eq!(f.max_finite(), 240.0);
        assert_eq!(f.min_normal(), 1.0 / 64.0);
        assert_eq!(f.min_subnormal(), 1.0 / 512.0);
        // Between 1 and 2 the spacing is 1/8: 1.0625 is a tie between 1.0 (even) and 1.125.
        assert_eq!(f.round(1.0625), 1.0);
        assert_eq!(
            f.round(1.1875),
            1.25,
            "tie between 1.125 (odd) and 1.25 (even)"
        );
        assert_eq!(f.round(1.1), 1.125);
        assert_eq!(f.round(-3.3), -3.25);
        // Overflow: 248 is the tie between 240 (odd mantissa 111) and 256 → Inf.
        assert_eq!(f.round(247.9), 240.0);
        assert_eq!(f.round(248.0), f32::INFINITY);
        assert_eq!(f.round(-1e6), f32::NEG_INFINITY);
        // Subnormals: multiples of 2^−9; 2^−10 is a tie between 0 (even) and 2^−9.
        assert_eq!(f.round(3.0 / 512.0 + 0.0001), 3.0 / 512.0);
        assert_eq!(f.round(1.0 / 1024.0), 0.0);
        assert_eq!(f.round(1.5 / 1024.0), 1.0 / 512.0);
        assert!(f.round(f32::NAN).is_nan());
        assert_eq!(f.round(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn one_exponent_bit_is_subnormal_only_as_tformat_rounds_it() {
        let xs: Vec<f32> = sample_bits(20_000)
            .map(f32::from_bits)
            .filter(|x| !x.is_nan())
            .chain((0..4096).map(|i| i as f32 / 2048.0))
            .collect();
        for t in 1..=23 {
            let f = FloatFormat::new(1, t).unwrap();
            let r = crate::quant::TFormat::new(1, t).unwrap();
            assert_eq!(f.max_finite(), 2.0 - (1.0 - t as f64).exp2());
            for &x in &xs {
                assert_eq!(
                    f.round(x).to_bits(),
                    r.round(x).to_bits(),
                    "T(1,{t}) at {x:e}"
                );
            }
        }
        // T(1,2): multiples of 0.5 below 2; 1.74 → 1.5, 1.76 → Inf (2 is not in the format)
        let f = FloatFormat::new(1, 2).unwrap();
        assert_eq!(f.round(1.74), 1.5);
        assert_eq!(f.round(-0.3), -0.5);
        assert_eq!(f.round(1.76), f32::INFINITY);
        assert_eq!(f.round(0.24), 0.0);
    }

    #[test]
    fn bit_path_agrees_with_the_f64_reference_on_every_grid_format() {
        let mut xs: Vec<f32> = sample_bits(20_000)
            .map(f32::from_bits)
            .filter(|x| !x.is_nan())
            .collect();
        // Values near 1 (ties and carries into the exponent) and near each format's limits.
        xs.extend((0..4096).map(|i| 1.0 + i as f32 / 4096.0));
        for w in 2..=8 {
            for t in 0..=23 {
                let f = FloatFormat::new(w, t).unwrap();
                let edge = [f.max_finite(), f.min_normal(), f.min_subnormal()];
                let mut all = xs.clone();
                for e in edge {
                    for k in [0.5, 0.999, 1.0, 1.0001, 1.5, 2.0] {
                        all.push((e * k) as f32);
                        all.push(-(e * k) as f32);
                    }
                }
                for &x in &all {
                    assert_eq!(
                        f.round(x).to_bits(),
                        f.round_reference(x).to_bits(),
                        "float({w},{t}) of {x:e}"
                    );
                }
            }
        }
    }

    #[test]
    fn fp32_is_identity_and_bad_formats_are_rejected() {
        for bits in sample_bits(10_000) {
            let x = f32::from_bits(bits);
            if !x.is_nan() {
                assert_eq!(FloatFormat::FP32.round(x).to_bits(), bits);
            }
        }
        assert!(FloatFormat::new(9, 3).is_err());
        assert!(FloatFormat::new(1, 0).is_err(), "only zero is finite");
        assert!(FloatFormat::new(0, 3).is_err());
        assert!(FloatFormat::new(5, 24).is_err());
    }
}
