//! Sub-byte and reduced-float weights for the packed C export (issue 22 item 5): the codes of
//! every conv / linear weight of a network under a weight format, computed with nn's own
//! rounding (`fake_quantize_per_channel`'s per-channel symmetric quantizers for `wN`,
//! `FloatFormat::round` for `float(w,t)`), so the decoded weights are bit for bit the ones the
//! `quantize` stage evaluates, and [`write_packed`], which writes them as
//! `whittle_export::write_c_packed` C source (weights packed ⌈bits · n / 8⌉ bytes per layer).
//!
//! Decoding: `wN` codes are two's-complement integers times a per-channel scale; float formats
//! of at most 8 bits decode through a 2^bits-entry table, wider ones (fp16, bf16, up to 16
//! bits) from their bit pattern. Biases stay f32. The C runtime computes activations in f32:
//! for `wN` it is the network the quantize stage evaluates (weight-only formats keep float
//! activations); for `float(w,t)` the quantize stage also rounds every activation, which the
//! packed runtime does not (its weights are those of the quantize stage, its activations f32).

use crate::to_export::to_network;
use anyhow::{Context, Result, bail, ensure};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use whittle_export::c_packed::tfloat_value;
use whittle_export::{Decode, WeightCodes, write_c_packed};
use whittle_nn::Model;
use whittle_nn::quant::Format;
use whittle_nn::quant::eval::weight_bits_per_layer;
use whittle_nn::quant::float::FloatFormat;
use whittle_nn::quant::int::fake_quantize_per_channel;

/// The weight codes of every conv / linear layer of `model` (batch norm folded first) under
/// `format`, keyed by layer name (the export's tensor names); with `keep_first_last_8bit` a
/// `wN` format keeps the first and last weighted layer at 8 bits, as the quantize stage does.
pub fn weight_codes(
    model: &Model,
    format: Format,
    keep_first_last_8bit: bool,
) -> Result<BTreeMap<String, WeightCodes>> {
    let folded;
    let m = if model.bn_folded() {
        model
    } else {
        folded = model.fold_bn().context("folding batch norm")?;
        &folded
    };
    match format {
        Format::Int8 => bail!(
            "format int8 has int8 activations: it is exported by the int8 C export, the packed C export takes weight-only wN and float(w,t) formats"
        ),
        Format::Float(f) if f.bits() > 16 => bail!(
            "format {}: {} bits per weight; the packed C export stores at most 16 bits per weight (fp32 weights need no packing: use the float exports)",
            format.name(),
            f.bits()
        ),
        _ => {}
    }
    let mut out = BTreeMap::new();
    for (layer, bits) in weight_bits_per_layer(m.graph(), format, keep_first_last_8bit) {
        let t = m.get(&format!("{layer}.weight"))?.as_tensor();
        let dims = t.dims().to_vec();
        let w: Vec<f32> = t.flatten_all()?.to_vec1()?;
        let ctx = || format!("format {}, layer `{layer}`", format.name());
        let codes = match format {
            Format::WeightOnly(_) => {
                let mut fake = w.clone();
                let qs = fake_quantize_per_channel(&mut fake, dims[0], bits);
                let per = w.len() / dims[0];
                let codes: Vec<i32> = w
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| qs[i / per].quantize(v))
                    .collect();
                WeightCodes::per_channel(bits, &codes, qs.iter().map(|q| q.scale).collect())
                    .with_context(ctx)?
            }
            Format::Float(f) => float_codes(f, &w).with_context(ctx)?,
            Format::Int8 => unreachable!("refused above"),
        };
        out.insert(layer, codes);
    }
    Ok(out)
}

/// The T(w,t) bit patterns of `w` rounded by nn ([`FloatFormat::round`]), decoded by a table
/// (≤ 8 bits) or from the pattern; checks that every pattern decodes to the rounded value.
fn float_codes(f: FloatFormat, w: &[f32]) -> Result<WeightCodes> {
    let (e, t) = (f.exp_bits, f.man_bits);
    let codes = w
        .iter()
        .map(|&v| {
            let r = f.round(v);
            let p = encode(f, r).with_context(|| format!("weight {v:e} rounds to {r:e}"))?;
            ensure!(
                tfloat_value(e, t, p).to_bits() == r.to_bits(),
                "weight {v:e}: pattern {p:#x} decodes to {:e}, not {r:e}",
                tfloat_value(e, t, p)
            );
            Ok(p as u16)
        })
        .collect::<Result<Vec<u16>>>()?;
    let bits = f.bits();
    let decode = if bits <= 8 {
        Decode::Table((0..1u32 << bits).map(|p| tfloat_value(e, t, p)).collect())
    } else {
        Decode::Float {
            exp_bits: e,
            man_bits: t,
        }
    };
    Ok(WeightCodes {
        bits,
        codes,
        decode,
    })
}

/// 2^e as f64 (−1022 ≤ e ≤ 1023).
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// The bit pattern of `r`, a value of `f` (±0, ±Inf, subnormal or normal); `None` for NaN or
/// a value the format does not hold.
fn encode(f: FloatFormat, r: f32) -> Option<u32> {
    let (w, t) = (f.exp_bits, f.man_bits);
    let sign = (r.is_sign_negative() as u32) << (w + t);
    let a = r.abs() as f64;
    if r.is_nan() {
        return None;
    }
    if a.is_infinite() {
        return Some(sign | ((1 << w) - 1) << t);
    }
    if a == 0.0 {
        return Some(sign);
    }
    let emin = 1 - f.bias();
    let e = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let (field, m) = if w > 1 && e >= emin {
        (e + f.bias(), a * pow2(t as i32 - e) - pow2(t as i32))
    } else {
        (0, a * pow2(t as i32 - emin))
    };
    let ok = m.fract() == 0.0 && m >= 0.0 && m < pow2(t as i32) && field < (1 << w) - 1;
    ok.then(|| sign | (field as u32) << t | m as u32)
}

/// Writes `<out>/<stem>.h` and `<out>/<stem>.c`, the packed-weight C export of `model` under
/// `format` (see [`weight_codes`]); `stem` must be a C identifier. Returns
/// `[("c_packed_header", h), ("c_packed_source", c)]`.
pub fn write_packed(
    model: &Model,
    format: Format,
    keep_first_last_8bit: bool,
    out: &Path,
    stem: &str,
) -> Result<Vec<(String, PathBuf)>> {
    let folded;
    let m = if model.bn_folded() {
        model
    } else {
        folded = model.fold_bn().context("folding batch norm")?;
        &folded
    };
    let codes = weight_codes(m, format, keep_first_last_8bit)?;
    let net = to_network(m, stem)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (h, c) = write_c_packed(&net, &codes, out, stem)
        .with_context(|| format!("packed C export of `{stem}` under {}", format.name()))?;
    Ok(vec![
        ("c_packed_header".to_string(), h),
        ("c_packed_source".to_string(), c),
    ])
}

#[cfg(test)]
#[path = "../../export/tests/common/c_packed_run.rs"]
mod c_packed_run;

#[cfg(test)]
mod tests {
    use super::c_packed_run;
    use super::*;
    use candle_core::{Device, Tensor};
    use whittle_export::c_packed::run_reference;
    use whittle_nn::config::{MobileNetV2Config, ModelConfig};
    use whittle_nn::quant::{QuantModel, QuantOptions};

    /// MobileNetV2 on 3×8×8 (depthwise and pointwise convs, residual adds, ReLU6, dropout,
    /// linear head) with non-trivial batch-norm statistics.
    fn model() -> Model {
        let m = Model::new(
            ModelConfig::MobileNetV2(MobileNetV2Config {
                input: [3, 8, 8],
                classes: 5,
                width: 4,
                blocks: 3,
                expand: 2,
                se: true,
                dropout: 0.2,
            }),
            7,
        )
        .unwrap();
        m.forward(&input(6, 1), true).unwrap();
        m
    }

    fn input(n: usize, s: u64) -> Tensor {
        let v: Vec<f32> = (0..n * 192)
            .map(|i| (((i as u64 * 2654435761 + s) % 1000) as f32) / 500.0 - 1.0)
            .collect();
        Tensor::from_vec(v, (n, 3, 8, 8), &Device::Cpu).unwrap()
    }

    #[test]
    fn decoded_weights_are_the_quantize_stage_weights() {
        let m = model();
        let folded = m.fold_bn().unwrap();
        let net = to_network(&folded, "m").unwrap();
        let shape = |name: &str| {
            net.layers
                .iter()
                .find_map(|l| match l {
                    whittle_export::Layer::Conv { weight, output, .. }
                    | whittle_export::Layer::Linear { weight, output, .. }
                        if output == name =>
                    {
                        Some(weight.shape.clone())
                    }
                    _ => None,
                })
                .unwrap()
        };
        for fmt in [
            "w4",
            "w2",
            "w3",
            "w8",
            "float(4,3)",
            "float(2,5)",
            "float(1,3)",
            "fp16",
            "bf16",
        ] {
            let format = Format::parse(fmt).unwrap();
            for keep in [true, false] {
                let opts = QuantOptions {
                    keep_first_last_8bit: keep,
                    ..QuantOptions::default()
                };
                let q = QuantModel::prepare(&m, format, None, &opts).unwrap();
                let codes = weight_codes(&m, format, keep).unwrap();
                let bits = weight_bits_per_layer(folded.graph(), format, keep);
                assert_eq!(codes.len(), bits.len(), "{fmt}");
                assert!(codes.len() > 10, "{fmt}: {} weighted layers", codes.len());
                let mut changed = 0;
                for (layer, b) in bits {
                    let c = &codes[&layer];
                    assert_eq!(c.bits, b, "{fmt} {layer}");
                    let got = c.decode(&shape(&layer)).unwrap();
                    let want: Vec<f32> = q
                        .tensor(&format!("{layer}.weight"))
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap();
                    let orig: Vec<f32> = folded
                        .get(&format!("{layer}.weight"))
                        .unwrap()
                        .as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap();
                    assert_eq!(got.len(), want.len());
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            w.to_bits(),
                            "{fmt} keep={keep} {layer}[{i}]: {g:e} vs {w:e}"
                        );
                    }
                    changed += got.iter().zip(&orig).filter(|(g, o)| g != o).count();
                }
                assert!(changed > 0, "{fmt}: nothing was rounded");
            }
        }
        // w2 with the first and last layers kept at 8 bits: 8-bit codes there, 2 elsewhere.
        let c = weight_codes(&m, Format::WeightOnly(2), true).unwrap();
        let widths: Vec<u32> = weight_bits_per_layer(folded.graph(), Format::WeightOnly(2), true)
            .iter()
            .map(|(l, _)| c[l].bits)
            .collect();
        assert_eq!(widths.first(), Some(&8));
        assert_eq!(widths.last(), Some(&8));
        assert!(
            widths[1..widths.len() - 1].iter().all(|&b| b == 2),
            "{widths:?}"
        );
        // float(4,3) patterns by hand: 1.0 = 0 0111 000, −1.5 = 1 0111 100, 240 = 0 1110 111.
        let f = FloatFormat::new(4, 3).unwrap();
        assert_eq!(encode(f, 1.0), Some(0x38));
        assert_eq!(encode(f, -1.5), Some(0xbc));
        assert_eq!(encode(f, 240.0), Some(0x77));
        assert_eq!(encode(f, 1.0 / 512.0), Some(0x01));
        assert_eq!(encode(f, 1.1), None, "not a T(4,3) value");
    }

    #[test]
    fn packed_w4_export_compiles_and_computes_the_quantize_stage_network() {
        let m = model();
        let d = tempfile_dir();
        let format = Format::WeightOnly(4);
        let files = write_packed(&m, format, true, &d, "mbv2_w4").unwrap();
        assert_eq!(files[0].0, "c_packed_header");
        let h = std::fs::read_to_string(&files[0].1).unwrap();
        // Weight bytes: ⌈bits · n / 8⌉ per layer (first / last at 8 bits).
        let folded = m.fold_bn().unwrap();
        let want: usize = weight_bits_per_layer(folded.graph(), format, true)
            .iter()
            .map(|(l, b)| {
                let n = folded
                    .get(&format!("{l}.weight"))
                    .unwrap()
                    .as_tensor()
                    .elem_count();
                (*b as usize * n).div_ceil(8)
            })
            .sum();
        assert!(
            h.contains(&format!("#define MBV2_W4_WEIGHT_BYTES {want}\n")),
            "{want}"
        );
        // The reference of the packed runtime is the quantize stage's w4 network (float
        // activations) up to summation order.
        let q = QuantModel::prepare(&m, format, None, &QuantOptions::default()).unwrap();
        let x = input(1, 5);
        let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let nn: Vec<f32> = q
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let net = to_network(&folded, "mbv2_w4").unwrap();
        let codes = weight_codes(&m, format, true).unwrap();
        let r = run_reference(&net, &codes, &xv).unwrap();
        let err = r
            .iter()
            .zip(&nn)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            err < 1e-4,
            "reference {r:?} vs quantize-stage forward {nn:?}"
        );
        let fl = whittle_export::reference::run(&net, &xv, None).unwrap();
        let dw4 = fl
            .iter()
            .zip(&r)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "max |w4 − fp32| = {dw4:e}, max |C reference − quantize stage| = {err:e}, logits {r:?}"
        );
        assert!(
            dw4 > 100.0 * err.max(1e-7),
            "w4 output equals the fp32 output"
        );
        if c_packed_run::have_cc(
            "packed_w4_export_compiles_and_computes_the_quantize_stage_network",
        ) {
            let got = c_packed_run::run_c_packed(&d, "mbv2_w4", &[xv]);
            let want: Vec<u32> = r.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, [want]);
        }
        // int8 and fp32 are refused with a reason.
        let e = format!(
            "{:#}",
            write_packed(&m, Format::Int8, true, &d, "x").unwrap_err()
        );
        assert!(e.contains("int8 C export"), "{e}");
        let e = format!(
            "{:#}",
            write_packed(&m, Format::parse("fp32").unwrap(), true, &d, "x").unwrap_err()
        );
        assert!(e.contains("at most 16 bits"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("whittle_packed_{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
