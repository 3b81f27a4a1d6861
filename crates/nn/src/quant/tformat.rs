//! The full grid of `004`'s IEEE-like reduced floats T(w,t): 1 sign bit, `w` ∈ 1..=8 exponent
//! bits, `t` ∈ 1..=23 trailing significand bits, 184 formats in all. Rounding is to nearest,
//! ties to even, with subnormals, overflow to ±Inf, NaN kept and ±0 kept.
//!
//! For w ≥ 2 a format is a [`FloatFormat`] (whose bit-level fast path is tested against the
//! `half` crate). w = 1 has bias 2^0 − 1 = 0 and only two exponent fields: 0 (subnormals) and
//! 1 (all ones: Inf/NaN). So it has no normal numbers at all: its finite values are the
//! subnormals ±k·2^(1−t), k = 0 … 2^t − 1, evenly spaced up to 2 − 2^(1−t); a value rounds to
//! the nearest multiple of 2^(1−t), and a result of k = 2^t (the value 2, i.e. anything from
//! 2 − 2^−t up, where the tie goes to the even k = 2^t) overflows to ±Inf.

use super::float::FloatFormat;

/// One T(w,t) format (w exponent bits, t trailing significand bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TFormat {
    pub w: u32,
    pub t: u32,
}

impl TFormat {
    /// A format of the grid: w ∈ 1..=8, t ∈ 1..=23.
    pub fn new(w: u32, t: u32) -> Result<Self, String> {
        if !(1..=8).contains(&w) {
            return Err(format!("T({w},{t}): exponent bits w must be in 1..=8"));
        }
        if !(1..=23).contains(&t) {
            return Err(format!("T({w},{t}): significand bits t must be in 1..=23"));
        }
        Ok(Self { w, t })
    }

    /// All 184 formats, w-major then t ascending.
    pub fn grid() -> Vec<TFormat> {
        (1..=8)
            .flat_map(|w| (1..=23).map(move |t| TFormat { w, t }))
            .collect()
    }

    /// Storage bits per value: 1 + w + t.
    pub fn bits(&self) -> u32 {
        1 + self.w + self.t
    }

    /// Bytes per stored weight: (1 + w + t) / 8 (fractional: weights are packed).
    pub fn bytes_per_weight(&self) -> f64 {
        self.bits() as f64 / 8.0
    }

    /// Bytes of `n` packed weights, rounded up to whole bytes.
    pub fn weight_bytes(&self, n: u64) -> u64 {
        (n * self.bits() as u64).div_ceil(8)
    }

    /// The same format as a [`FloatFormat`] (w ≥ 2 only).
    pub fn float_format(&self) -> Option<FloatFormat> {
        FloatFormat::new(self.w, self.t).ok()
    }

    /// Largest finite value: (2 − 2^−t)·2^bias for w ≥ 2, 2 − 2^(1−t) for w = 1.
    pub fn max_finite(&self) -> f64 {
        match self.float_format() {
            Some(f) => f.max_finite(),
            None => 2.0 - (1.0 - self.t as f64).exp2(),
        }
    }

    /// Smallest positive (subnormal) value: 2^(1 − bias − t); 2^(1−t) for w = 1.
    pub fn min_subnormal(&self) -> f64 {
        match self.float_format() {
            Some(f) => f.min_subnormal(),
            None => (1.0 - self.t as f64).exp2(),
        }
    }

    /// Name as in `004`: `T(w,t)`.
    pub fn name(&self) -> String {
        format!("T({},{})", self.w, self.t)
    }

    /// Rounds `x` to the nearest value of the format (ties to even), ±Inf on overflow.
    #[inline]
    pub fn round(&self, x: f32) -> f32 {
        if self.w >= 2 {
            return FloatFormat {
                exp_bits: self.w,
                man_bits: self.t,
            }
            .round(x);
        }
        if x.is_nan() || x.is_infinite() || x == 0.0 {
            return x;
        }
        // w = 1: multiples of q = 2^(1−t); |x| / q is exact in f64 (power-of-two scaling).
        let q = (1.0 - self.t as f64).exp2();
        let k = ((x as f64).abs() / q).round_ties_even();
        if k >= (1u64 << self.t) as f64 {
            return f32::INFINITY.copysign(x);
        }
        ((k * q) as f32).copysign(x)
    }

    /// Rounds every element in place (the quantisation of a weight tensor).
    pub fn quantise(&self, xs: &mut [f32]) {
        if (self.w, self.t) == (8, 23) {
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

    /// Deterministic f32 bit patterns over all exponents and signs (xorshift).
    fn sample_bits(n: usize) -> impl Iterator<Item = u32> {
        let mut s = 0x2545F4914F6CDD1Du64;
        (0..n).map(move |_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as u32
        })
    }

    #[test]
    fn the_grid_has_184_formats_of_3_to_32_bits() {
        let g = TFormat::grid();
        assert_eq!(g.len(), 184);
        assert_eq!(g[0], TFormat { w: 1, t: 1 });
        assert_eq!(g[183], TFormat { w: 8, t: 23 });
        assert_eq!(g[0].bits(), 3);
        assert_eq!(g[183].bits(), 32);
        assert_eq!(TFormat::new(4, 3).unwrap().bytes_per_weight(), 1.0);
        assert_eq!(TFormat::new(5, 10).unwrap().bytes_per_weight(), 2.0);
        // 10 weights of 3 bits = 30 bits → 4 bytes
        assert_eq!(TFormat::new(1, 1).unwrap().weight_bytes(10), 4);
        assert!(TFormat::new(0, 3).is_err());
        assert!(TFormat::new(9, 3).is_err());
        assert!(TFormat::new(4, 0).is_err());
        assert!(TFormat::new(4, 24).is_err());
    }

    #[test]
    fn half_and_bfloat16_match_the_half_crate_incl_subnormals_and_overflow() {
        let (h, b) = (TFormat::new(5, 10).unwrap(), TFormat::new(8, 7).unwrap());
        let mut xs: Vec<f32> = sample_bits(300_000).map(f32::from_bits).collect();
        // half's subnormal range (below 2^−14), its overflow edge (65504, tie at 65520) and
        // bf16's subnormals (below 2^−126).
        for i in 0..2000 {
            let f = i as f32 / 2000.0;
            xs.push(f * 6.2e-5);
            xs.push(-f * 1.2e-7);
            xs.push(65_000.0 + f * 1_000.0);
            xs.push(f * 1.2e-38);
        }
        xs.extend([
            65_504.0, 65_519.99, 65_520.0, 1e6, -1e6, 5.96e-8, 2.98e-8, 2.99e-8,
        ]);
        let mut seen_sub = (0, 0, 0);
        for x in xs.into_iter().filter(|x| !x.is_nan()) {
            let want = f16::from_f32(x).to_f32();
            assert_eq!(h.round(x).to_bits(), want.to_bits(), "T(5,10) of {x:e}");
            let wantb = bf16::from_f32(x).to_f32();
            assert_eq!(b.round(x).to_bits(), wantb.to_bits(), "T(8,7) of {x:e}");
            if want != 0.0 && want.abs() < 6.1035e-5 {
                seen_sub.0 += 1;
            }
            if want.is_infinite() {
                seen_sub.1 += 1;
            }
            if wantb != 0.0 && wantb.abs() < f32::MIN_POSITIVE {
                seen_sub.2 += 1;
            }
        }
        assert!(
            seen_sub.0 > 100 && seen_sub.1 > 100 && seen_sub.2 > 100,
            "{seen_sub:?}"
        );
        assert!(h.round(f32::NAN).is_nan());
    }

    #[test]
    fn w1_is_subnormal_only_hand_values() {
        // T(1,2): bias 0, values k·2^(1−2) = k/2 for k = 0..3: 0, 0.5, 1, 1.5; 2 overflows.
        let f = TFormat::new(1, 2).unwrap();
        assert_eq!(f.max_finite(), 1.5);
        assert_eq!(f.min_subnormal(), 0.5);
        assert_eq!(f.round(0.2), 0.0);
        assert_eq!(f.round(0.25), 0.0, "tie between 0 (even) and 0.5");
        assert_eq!(f.round(0.3), 0.5);
        assert_eq!(f.round(0.75), 1.0, "tie between 0.5 (odd) and 1 (even)");
        assert_eq!(f.round(1.2), 1.0);
        assert_eq!(f.round(-1.3), -1.5);
        assert_eq!(f.round(1.74), 1.5);
        assert_eq!(
            f.round(1.75),
            f32::INFINITY,
            "tie between 1.5 and 2 → 2 → Inf"
        );
        assert_eq!(f.round(-100.0), f32::NEG_INFINITY);
        assert_eq!(f.round(-0.0).to_bits(), (-0.0f32).to_bits());
        assert!(f.round(f32::NAN).is_nan());
        // T(1,1): values 0 and 1 only; 1.5 is the tie between 1 (odd) and 2 → Inf.
        let g = TFormat::new(1, 1).unwrap();
        assert_eq!(
            [0.49, 0.5, 0.51, 1.0, 1.49, 1.5].map(|x| g.round(x)),
            [0.0, 0.0, 1.0, 1.0, 1.0, f32::INFINITY]
        );
        // T(1,23): quantum 2^−22 up to 2 − 2^−22; 1 + 2^−23 is a tie → 1 (even).
        let h = TFormat::new(1, 23).unwrap();
        assert_eq!(h.round(1.0 + 2f32.powi(-23)), 1.0);
        assert_eq!(h.round(1.0 + 3.0 * 2f32.powi(-23)), 1.0 + 2f32.powi(-21));
        assert_eq!(h.round(1e-7), 0.0);
        assert_eq!(h.round(1.9999999), f32::INFINITY);
        assert_eq!(h.max_finite(), 2.0 - 2f64.powi(-22));
    }

    #[test]
    fn every_format_rounds_onto_itself_and_is_monotone() {
        let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.013).collect();
        for f in TFormat::grid() {
            let mut prev = f32::NEG_INFINITY;
            for &x in &xs {
                let r = f.round(x);
                assert!(r >= prev, "{} not monotone at {x}", f.name());
                assert_eq!(f.round(r).to_bits(), r.to_bits(), "{} of {x}", f.name());
                if r.is_finite() {
                    assert!(r.abs() as f64 <= f.max_finite());
                }
                prev = r;
            }
            let mut v = xs.clone();
            f.quantise(&mut v);
            assert!(
                v.iter()
                    .zip(&xs)
                    .all(|(a, &x)| a.to_bits() == f.round(x).to_bits())
            );
        }
    }
}
