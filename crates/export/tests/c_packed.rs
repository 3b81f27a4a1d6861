//! The packed-weight C export (`write_c_packed`): packed bytes of a tiny tensor by hand, the
//! header's weight bytes (⌈bits · n / 8⌉ per layer), and every test network (`common::all`:
//! CNNs, TCNs, MobileNet and ShuffleNet blocks, pooling, unfolded batch norm) with w4, w3, w2
//! (first / last layer 8 bit), float(4,3) (decode table) and fp16 (bit-pattern decoder)
//! weights compiled with `cc -ffp-contract=off`: its outputs equal the Rust reference
//! (`c_packed::run_reference`) bit for bit on several random inputs.

#[path = "common/c_packed_run.rs"]
mod c_packed_run;
mod common;

use c_packed_run::{have_cc, run_c_packed};
use std::collections::BTreeMap;
use whittle_export::c_packed::{pack, run_reference, tfloat_value};
use whittle_export::{Decode, Layer, Network, Tensor32, WeightCodes, reference, write_c_packed};

/// The weighted layers of `net`: (layer index, output name, weight tensor).
fn weighted(net: &Network) -> Vec<(usize, String, &Tensor32)> {
    net.layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| match l {
            Layer::Conv { weight, .. } | Layer::Linear { weight, .. } => {
                Some((i, l.output().to_string(), weight))
            }
            _ => None,
        })
        .collect()
}

/// Symmetric per-channel k-bit codes (scale max|w| / (2^(k−1) − 1)); `bits(j, n)` is the
/// width of weighted layer j of n.
fn int_codes(net: &Network, bits: impl Fn(usize, usize) -> u32) -> BTreeMap<String, WeightCodes> {
    let ws = weighted(net);
    let n = ws.len();
    ws.iter()
        .enumerate()
        .map(|(j, (_, name, w))| {
            let k = bits(j, n);
            let qmax = ((1 << (k - 1)) - 1) as f32;
            let cout = w.shape[0];
            let per = w.data.len() / cout;
            let mut codes = Vec::new();
            let mut scales = Vec::new();
            for ch in w.data.chunks(per) {
                let m = ch.iter().fold(0f32, |m, v| m.max(v.abs()));
                let s = m / qmax;
                scales.push(s);
                codes.extend(
                    ch.iter()
                        .map(|v| (v / s).round_ties_even().clamp(-qmax, qmax) as i32),
                );
            }
            let c = WeightCodes::per_channel(k, &codes, scales).unwrap();
            (name.clone(), c)
        })
        .collect()
}

/// float(4,3) codes: the nearest finite value of the 256-entry table.
fn t43_codes(net: &Network) -> BTreeMap<String, WeightCodes> {
    let table: Vec<f32> = (0..256).map(|p| tfloat_value(4, 3, p)).collect();
    weighted(net)
        .into_iter()
        .map(|(_, name, w)| {
            let codes = w
                .data
                .iter()
                .map(|&v| {
                    (0..256u16)
                        .filter(|&p| table[p as usize].is_finite())
                        .min_by(|&a, &b| {
                            let d = |p: u16| (table[p as usize] - v).abs();
                            d(a).total_cmp(&d(b))
                        })
                        .unwrap()
                })
                .collect();
            let c = WeightCodes {
                bits: 8,
                codes,
                decode: Decode::Table(table.clone()),
            };
            (name, c)
        })
        .collect()
}

/// fp16 codes by truncating the f32 mantissa (values below 2^−14 become ±0).
fn fp16_codes(net: &Network) -> BTreeMap<String, WeightCodes> {
    weighted(net)
        .into_iter()
        .map(|(_, name, w)| {
            let codes = w
                .data
                .iter()
                .map(|&v| {
                    let b = v.to_bits();
                    let sign = ((b >> 16) & 0x8000) as u16;
                    let e = ((b >> 23) & 0xff) as i32 - 127 + 15;
                    if e <= 0 {
                        sign
                    } else {
                        sign | (e as u16) << 10 | ((b >> 13) & 0x3ff) as u16
                    }
                })
                .collect();
            let c = WeightCodes {
                bits: 16,
                codes,
                decode: Decode::Float {
                    exp_bits: 5,
                    man_bits: 10,
                },
            };
            (name, c)
        })
        .collect()
}

/// The value of `#define <name> N` in `text`.
fn define(text: &str, name: &str) -> usize {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no #define {name}"))
        .parse()
        .unwrap()
}

#[test]
fn tiny_linear_by_hand() {
    // y = 0.25 + Σ w·x with w4 codes 1, −2, 3, −7 at scale 0.5: w = 0.5, −1, 1.5, −3.5,
    // x = 1, 2, 3, 4 → 0.25 + (0.5 − 2 + 4.5 − 14) = −10.75.
    let net = Network {
        name: "tiny".into(),
        input: ("x".into(), vec![1, 4]),
        output: "y".into(),
        layers: vec![Layer::Linear {
            input: "x".into(),
            output: "y".into(),
            weight: Tensor32::new(vec![1, 4], vec![9.0; 4]).unwrap(),
            bias: Some(vec![0.25]),
        }],
    };
    let codes = WeightCodes::per_channel(4, &[1, -2, 3, -7], vec![0.5]).unwrap();
    assert_eq!(codes.packed(), [0xe1, 0x93], "low nibble first");
    let w: BTreeMap<String, WeightCodes> = [("y".to_string(), codes)].into();
    let x = vec![1.0, 2.0, 3.0, 4.0];
    assert_eq!(run_reference(&net, &w, &x).unwrap(), [-10.75]);
    let dir = tempfile::tempdir().unwrap();
    let (hp, cp) = write_c_packed(&net, &w, dir.path(), "tiny").unwrap();
    let h = std::fs::read_to_string(hp).unwrap();
    let c = std::fs::read_to_string(cp).unwrap();
    assert_eq!(define(&h, "TINY_WEIGHT_BYTES"), 2);
    assert_eq!(define(&h, "TINY_L0_WEIGHT_BYTES"), 2);
    assert!(
        c.contains("static const uint8_t tiny_w0[2] = {\n    0xe1, 0x93,\n};"),
        "{c}"
    );
    if have_cc("tiny_linear_by_hand") {
        let y = run_c_packed(dir.path(), "tiny", &[x]);
        assert_eq!(y, [[(-10.75f32).to_bits()]]);
    }
}

#[test]
fn compiled_packed_c_matches_the_reference_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cc = have_cc("compiled_packed_c_matches_the_reference_bit_for_bit");
    let mut checked = 0;
    for (k, net) in common::all(21).into_iter().enumerate() {
        let formats: Vec<(&str, BTreeMap<String, WeightCodes>)> = vec![
            ("w4", int_codes(&net, |_, _| 4)),
            ("w3", int_codes(&net, |_, _| 3)),
            (
                "w2",
                int_codes(&net, |j, n| if j == 0 || j + 1 == n { 8 } else { 2 }),
            ),
            ("t43", t43_codes(&net)),
            ("fp16", fp16_codes(&net)),
        ];
        let xs: Vec<Vec<f32>> = (0..3)
            .map(|s| common::input(&net, 900 + 7 * k as u64 + s))
            .collect();
        let float_ref = reference::run(&net, &xs[0], None).unwrap();
        for (fmt, w) in &formats {
            let name = format!("p_{}_{fmt}", net.name);
            let (hp, cp) = write_c_packed(&net, w, d, &name).unwrap();
            let h = std::fs::read_to_string(&hp).unwrap();
            let c = std::fs::read_to_string(&cp).unwrap();
            let up = name.to_uppercase();
            // Weight bytes: ⌈bits · n / 8⌉ per layer, in the header and as the array length.
            let mut total = 0;
            for (i, lname, wt) in weighted(&net) {
                let bits = w[&lname].bits as usize;
                let want = (bits * wt.data.len()).div_ceil(8);
                assert_eq!(
                    define(&h, &format!("{up}_L{i}_WEIGHT_BYTES")),
                    want,
                    "{name} layer {i}"
                );
                assert!(
                    c.contains(&format!("static const uint8_t {name}_w{i}[{want}] = {{")),
                    "{name} layer {i}: array of {want} bytes"
                );
                total += want;
            }
            assert_eq!(define(&h, &format!("{up}_WEIGHT_BYTES")), total, "{name}");
            let want: Vec<Vec<u32>> = xs
                .iter()
                .map(|x| {
                    run_reference(&net, w, x)
                        .unwrap()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect()
                })
                .collect();
            // The packed weights are used: the outputs differ from the float network's,
            // and from input to input.
            assert!(
                want[0]
                    .iter()
                    .zip(&float_ref)
                    .any(|(a, b)| *a != b.to_bits()),
                "{name}: packed output equals the float output"
            );
            assert_ne!(want[0], want[1], "{name}: constant output");
            if cc {
                let got = run_c_packed(d, &name, &xs);
                for (s, (g, r)) in got.iter().zip(&want).enumerate() {
                    let f = |v: &[u32]| v.iter().map(|b| f32::from_bits(*b)).collect::<Vec<_>>();
                    assert_eq!(
                        g,
                        r,
                        "{name} input {s}: C {:?} vs reference {:?}",
                        f(g),
                        f(r)
                    );
                }
                checked += 1;
            }
        }
    }
    if cc {
        assert_eq!(checked, 11 * 5);
        eprintln!("{checked} packed C exports equal the reference bit for bit");
    }
}

#[test]
fn mistakes_are_refused_naming_the_layer() {
    let net = common::ds_cnn(3);
    let d = tempfile::tempdir().unwrap();
    let w = int_codes(&net, |_, _| 4);
    let (_, first, wt) = weighted(&net).into_iter().next().unwrap();
    // Missing codes.
    let mut missing = w.clone();
    missing.remove(&first);
    let e = format!(
        "{:#}",
        write_c_packed(&net, &missing, d.path(), "m").unwrap_err()
    );
    assert!(e.contains(&first) && e.contains("no weight codes"), "{e}");
    // Codes for a layer that has no weights.
    let mut extra = w.clone();
    extra.insert("nope".into(), w[&first].clone());
    let e = format!(
        "{:#}",
        write_c_packed(&net, &extra, d.path(), "m").unwrap_err()
    );
    assert!(e.contains("nope") && e.contains("not conv / linear"), "{e}");
    // Wrong number of scales, of codes, a short table.
    let mut bad = w.clone();
    if let Decode::PerChannelScale(s) = &mut bad.get_mut(&first).unwrap().decode {
        s.pop();
    }
    let e = format!(
        "{:#}",
        write_c_packed(&net, &bad, d.path(), "m").unwrap_err()
    );
    assert!(e.contains(&first) && e.contains("scales for"), "{e}");
    let mut bad = w.clone();
    bad.get_mut(&first).unwrap().codes.push(0);
    let e = format!(
        "{:#}",
        write_c_packed(&net, &bad, d.path(), "m").unwrap_err()
    );
    assert!(e.contains(&first) && e.contains("codes for"), "{e}");
    let mut bad = w.clone();
    bad.insert(
        first.clone(),
        WeightCodes {
            bits: 4,
            codes: vec![0; wt.data.len()],
            decode: Decode::Table(vec![0.0; 8]),
        },
    );
    let e = format!(
        "{:#}",
        write_c_packed(&net, &bad, d.path(), "m").unwrap_err()
    );
    assert!(e.contains(&first) && e.contains("8 entries"), "{e}");
    let e = format!(
        "{:#}",
        write_c_packed(&net, &w, d.path(), "9x").unwrap_err()
    );
    assert!(e.contains("not a C identifier"), "{e}");
    assert_eq!(pack(4, &[0xf, 0x0, 0x5]), [0x0f, 0x05]);
}
