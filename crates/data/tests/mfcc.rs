//! MFCC checked against the committed NumPy reference (tests/fixtures/mfcc_reference.py) and
//! on pure tones (energy in the mel band whose centre is nearest the tone).

use whittle_data::mfcc::{Mfcc, MfccParams, mel_band_centres};

fn signal(name: &str) -> Vec<f32> {
    use std::f64::consts::PI;
    (0..16000)
        .map(|n| {
            let nf = n as f64;
            let t = nf / 16000.0;
            let v = match name {
                "tones_chirp" => {
                    0.5 * (2.0 * PI * 440.0 * t).sin()
                        + 0.3 * (2.0 * PI * (300.0 * t + 1000.0 * t * t)).sin()
                        + 0.1 * (nf / 16000.0) * (2.0 * PI * 3100.0 * t).sin()
                }
                "half_silence" => {
                    if n < 8000 {
                        0.0
                    } else {
                        0.2 * (2.0 * PI * 1000.0 * t).sin()
                            + 0.05 * (2.0 * PI * 2500.0 * t + 0.3).sin()
                    }
                }
                _ => unreachable!(),
            };
            v as f32
        })
        .collect()
}

fn flat(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect()
}

#[test]
fn matches_numpy_reference() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/mfcc_reference.json")).unwrap();
    let mfcc = Mfcc::new(&MfccParams::default()).unwrap();
    assert_eq!(mfcc.clip_shape(), [49, 10]);
    for name in ["tones_chirp", "half_silence"] {
        let x = signal(name);
        let lm = mfcc.log_mel(&x);
        let want_lm = flat(&fixture[name]["log_mel"]);
        assert_eq!(lm.len(), want_lm.len());
        // Compare in the energy domain: f32 FFT round-off is relative to the frame's largest
        // band energy, so small bands (log far below the frame maximum) get an absolute bound.
        let mut worst = 0f64;
        for (fr, (g_row, w_row)) in lm.chunks(40).zip(want_lm.chunks(40)).enumerate() {
            let peak = w_row.iter().map(|w| w.exp()).fold(0.0, f64::max);
            for (b, (g, w)) in g_row.iter().zip(w_row).enumerate() {
                let (ge, we) = ((*g as f64).exp(), w.exp());
                let err = (ge - we).abs() / (1e-4 * we + 1e-6 * peak + 1e-6);
                worst = worst.max(err);
                assert!(err <= 1.0, "{name} frame {fr} band {b}: log-mel {g} vs {w}");
            }
        }
        let mf = mfcc.compute(&x);
        let want = flat(&fixture[name]["mfcc"]);
        assert_eq!(mf.len(), 490);
        for (i, (g, w)) in mf.iter().zip(&want).enumerate() {
            let tol = if name == "half_silence" && i < 250 {
                0.05 * w.abs().max(1.0)
            } else {
                5e-3 * w.abs().max(1.0)
            };
            assert!((*g as f64 - w).abs() <= tol, "{name} mfcc[{i}] {g} vs {w}");
        }
        eprintln!("{name}: worst log-mel error / tolerance {worst:.3}");
    }
}

#[test]
fn silence_hits_the_log_floor() {
    let mfcc = Mfcc::new(&MfccParams::default()).unwrap();
    let lm = mfcc.log_mel(&vec![0.0; 16000]);
    assert!(lm.iter().all(|&v| (v as f64 - 1e-6f64.ln()).abs() < 1e-4));
    let mf = mfcc.compute(&vec![0.0; 16000]);
    // DCT-II orthonormal of a constant c over 40 bands: c·√40 at k=0, 0 elsewhere.
    let c0 = 1e-6f64.ln() * 40f64.sqrt();
    for row in mf.chunks(10) {
        assert!((row[0] as f64 - c0).abs() < 1e-3, "{} vs {c0}", row[0]);
        assert!(row[1..].iter().all(|v| v.abs() < 1e-3));
    }
}

#[test]
fn pure_tones_land_in_the_nearest_mel_band() {
    let p = MfccParams::default();
    let mfcc = Mfcc::new(&p).unwrap();
    let centres = mel_band_centres(&p);
    for &f in &[150.0f64, 440.0, 1000.0, 1800.0, 3000.0, 3700.0] {
        let x: Vec<f32> = (0..16000)
            .map(|n| (0.5 * (2.0 * std::f64::consts::PI * f * n as f64 / 16000.0).sin()) as f32)
            .collect();
        let lm = mfcc.log_mel(&x);
        let nearest = centres
            .iter()
            .enumerate()
            .min_by(|a, b| (a.1 - f).abs().total_cmp(&(b.1 - f).abs()))
            .unwrap()
            .0;
        for row in lm.chunks(40) {
            let arg = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            assert!(
                arg.abs_diff(nearest) <= 1,
                "tone {f} Hz: argmax band {arg}, nearest {nearest}"
            );
        }
        // A tone far above f_max leaves every band near the floor compared with an in-band tone.
        let _ = nearest;
    }
    let above: Vec<f32> = (0..16000)
        .map(|n| (0.5 * (2.0 * std::f64::consts::PI * 6000.0 * n as f64 / 16000.0).sin()) as f32)
        .collect();
    let in_band: Vec<f32> = (0..16000)
        .map(|n| (0.5 * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 16000.0).sin()) as f32)
        .collect();
    let max = |v: Vec<f32>| v.into_iter().fold(f32::MIN, f32::max);
    assert!(max(mfcc.log_mel(&above)) < max(mfcc.log_mel(&in_band)) - 5.0);
}

#[test]
fn batch_equals_single_and_bad_params_fail() {
    let mfcc = Mfcc::new(&MfccParams::default()).unwrap();
    let clips: Vec<Vec<f32>> = (0..7)
        .map(|i| {
            signal(if i % 2 == 0 {
                "tones_chirp"
            } else {
                "half_silence"
            })
        })
        .collect();
    let b = mfcc.compute_batch(&clips);
    for (i, c) in clips.iter().enumerate() {
        assert_eq!(&b[i * 490..(i + 1) * 490], &mfcc.compute(c)[..]);
    }
    let bad = MfccParams {
        window_ms: 30.01,
        ..Default::default()
    };
    assert!(
        Mfcc::new(&bad)
            .unwrap_err()
            .to_string()
            .contains("window_ms")
    );
    let bad = MfccParams {
        n_fft: 256,
        ..Default::default()
    };
    assert!(Mfcc::new(&bad).unwrap_err().to_string().contains("n_fft"));
}
