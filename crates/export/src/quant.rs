//! int8 quantization parameters and rules shared by the QDQ ONNX writer, the C writer and
//! the fake-quant reference: weights per output channel symmetric (zero point 0,
//! scale = max|w|/127), biases int32 with scale s_in·s_w, activations per tensor affine.

use anyhow::{Context, Result, ensure};
use std::collections::BTreeMap;

/// Affine int8 parameters of one activation tensor: x = (q − zero_point)·scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQuant {
    pub scale: f32,
    pub zero_point: i8,
}

impl ActQuant {
    /// Parameters covering [min, max] (widened to include 0) with the full int8 range.
    pub fn from_range(min: f32, max: f32) -> Self {
        let (lo, hi) = (min.min(0.0), max.max(0.0));
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zp = (-128.0 - lo / scale).round_ties_even().clamp(-128.0, 127.0);
        Self {
            scale,
            zero_point: zp as i8,
        }
    }

    /// clamp(round_half_even(x/scale) + zp, −128, 127), as ONNX QuantizeLinear.
    pub fn quantize(&self, x: f32) -> i8 {
        quantize_i8(x, self.scale, self.zero_point as i32)
    }

    pub fn dequantize(&self, q: i8) -> f32 {
        (q as i32 - self.zero_point as i32) as f32 * self.scale
    }

    /// quantize then dequantize.
    pub fn fake(&self, x: f32) -> f32 {
        self.dequantize(self.quantize(x))
    }
}

/// Activation parameters per tensor name (the network input and every layer output).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Int8Params {
    pub activations: BTreeMap<String, ActQuant>,
}

impl Int8Params {
    /// Parameters of tensor `name`, or an error naming it.
    pub fn get(&self, name: &str) -> Result<ActQuant> {
        let q = *self
            .activations
            .get(name)
            .with_context(|| format!("int8 parameters: no scale/zero point for tensor `{name}`"))?;
        ensure!(
            q.scale.is_finite() && q.scale > 0.0,
            "int8 parameters: tensor `{name}` has invalid scale {}",
            q.scale
        );
        Ok(q)
    }

    /// Min/max calibration: runs the float reference on `inputs` and covers every tensor's range.
    pub fn calibrate(net: &crate::Network, inputs: &[Vec<f32>]) -> Result<Self> {
        let mut ranges: BTreeMap<String, (f32, f32)> = BTreeMap::new();
        for x in inputs {
            for (name, t) in crate::reference::run_all(net, x, None)? {
                let r = ranges
                    .entry(name)
                    .or_insert((f32::INFINITY, f32::NEG_INFINITY));
                for v in t {
                    r.0 = r.0.min(v);
                    r.1 = r.1.max(v);
                }
            }
        }
        Ok(Self {
            activations: ranges
                .into_iter()
                .map(|(k, (lo, hi))| (k, ActQuant::from_range(lo, hi)))
                .collect(),
        })
    }
}

pub(crate) fn quantize_i8(x: f32, scale: f32, zp: i32) -> i8 {
    let q = (x / scale).round_ties_even() + zp as f32;
    q.clamp(-128.0, 127.0) as i8
}

/// Per-output-channel symmetric int8 weights: (values, scale per channel). Axis 0 is the
/// channel; an all-zero channel gets scale 1.
pub fn quantize_weights(data: &[f32], channels: usize) -> (Vec<i8>, Vec<f32>) {
    let per = data.len() / channels;
    let mut q = Vec::with_capacity(data.len());
    let mut scales = Vec::with_capacity(channels);
    for c in 0..channels {
        let row = &data[c * per..(c + 1) * per];
        let m = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = if m > 0.0 { m / 127.0 } else { 1.0 };
        scales.push(s);
        q.extend(row.iter().map(|&v| quantize_i8(v, s, 0).max(-127)));
    }
    (q, scales)
}

/// int32 bias with scale in_scale·w_scale[c] (round half to even, saturating).
pub fn quantize_bias(bias: &[f32], in_scale: f32, w_scales: &[f32]) -> (Vec<i32>, Vec<f32>) {
    let scales: Vec<f32> = w_scales.iter().map(|s| s * in_scale).collect();
    let q = bias
        .iter()
        .zip(&scales)
        .map(|(b, s)| {
            (b / s)
                .round_ties_even()
                .clamp(i32::MIN as f32, i32::MAX as f32) as i32
        })
        .collect();
    (q, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_per_channel_symmetric_by_hand() {
        // Channel 0: max 2.54 → scale 0.02; channel 1 all zero → scale 1.
        let (q, s) = quantize_weights(&[2.54, -1.0, 0.01, 0.0, 0.0, 0.0], 2);
        assert_eq!(s, vec![2.54 / 127.0, 1.0]);
        assert_eq!(q, vec![127, -50, 0, 0, 0, 0]);
        let (bq, bs) = quantize_bias(&[0.1, -0.3], 0.5, &s);
        assert_eq!(bs, vec![0.5 * 2.54 / 127.0, 0.5]);
        assert_eq!(bq, vec![10, -1]); // 0.1/0.01 = 10; −0.3/0.5 = −0.6 → −1
    }

    #[test]
    fn activations_affine_by_hand() {
        // [−1, 1.55] → scale 0.01, zero point −28; 0 is exact.
        let a = ActQuant::from_range(-1.0, 1.55);
        assert!((a.scale - 0.01).abs() < 1e-7);
        assert_eq!(a.zero_point, -28);
        assert_eq!(a.quantize(0.0), -28);
        assert_eq!(a.quantize(-1.0), -128);
        assert_eq!(a.quantize(5.0), 127);
        assert_eq!(a.fake(0.0), 0.0);
        // Half-way cases round to even, as ONNX QuantizeLinear.
        let b = ActQuant {
            scale: 1.0,
            zero_point: 0,
        };
        assert_eq!(
            (b.quantize(2.5), b.quantize(3.5), b.quantize(-2.5)),
            (2, 4, -2)
        );
        // Non-negative ranges put the zero point at −128.
        assert_eq!(ActQuant::from_range(0.0, 2.55).zero_point, -128);
        let p = Int8Params::default();
        assert!(p.get("t").unwrap_err().to_string().contains("`t`"));
    }
}
