//! Log-mel windows (MLPerf Tiny anomaly detection) against the pure-Python reference
//! (tests/fixtures/logmel_reference.py, numbers pasted below), pure tones landing in their mel
//! band at the analytic power, the log floor on silence, and the window layout.

use whittle_data::logmel::{LOG_EPS, LogMel, LogMelParams, band_centres, mel_filterbank};

fn small() -> LogMelParams {
    LogMelParams {
        n_fft: 16,
        hop: 8,
        n_mels: 4,
        frames: 2,
        ..Default::default()
    }
}

fn reference_signal() -> Vec<f32> {
    (0..40)
        .map(|n| {
            let t = n as f64 / 16000.0;
            (0.5 * (2.0 * std::f64::consts::PI * 1100.0 * t).sin()
                + 0.25 * (n as f64 / 40.0) * (2.0 * std::f64::consts::PI * 3300.0 * t + 0.3).cos())
                as f32
        })
        .collect()
}

/// Printed by `python3 tests/fixtures/logmel_reference.py` (6 frames × 4 bands, dB).
const REFERENCE: [[f64; 4]; 6] = [
    [-33.023739, -30.624135, -32.896269, -41.577897],
    [-26.108408, -24.730968, -32.582779, -49.745411],
    [-26.137487, -24.794101, -32.543831, -43.810337],
    [-26.188904, -24.831565, -31.870438, -40.236259],
    [-26.269527, -24.805716, -30.553827, -37.675423],
    [-30.247481, -28.435056, -32.480100, -40.213631],
];

#[test]
fn matches_python_reference_including_reflect_padding() {
    let lm = LogMel::new(&small()).unwrap();
    let x = reference_signal();
    let got = lm.log_mel(&x).unwrap();
    assert_eq!(got.len(), 6 * 4);
    for (f, row) in REFERENCE.iter().enumerate() {
        for (b, want) in row.iter().enumerate() {
            let g = got[f * 4 + b] as f64;
            assert!((g - want).abs() < 2e-3, "frame {f} band {b}: {g} vs {want}");
        }
    }
    // Windows: 2 consecutive frames, frame-major; 6 frames → 5 windows of 8 values.
    let w = lm.windows(&x).unwrap();
    assert_eq!(w.len(), 5 * 8);
    for j in 0..5 {
        assert_eq!(&w[j * 8..j * 8 + 8], &got[j * 4..j * 4 + 8]);
    }
}

#[test]
fn pure_tone_lands_in_its_band_at_the_analytic_power() {
    let p = LogMelParams::default();
    let lm = LogMel::new(&p).unwrap();
    // 2000 Hz is exactly bin 128 of a 1024-point FFT at 16 kHz. With a periodic Hann window a
    // bin-centred sine of amplitude A gives |X|² = (A·N/4)² at its bin and (A·N/8)² at the two
    // neighbours, zero elsewhere (interior frames).
    let a = 0.5f64;
    let x: Vec<f32> = (0..16000)
        .map(|n| (a * (2.0 * std::f64::consts::PI * 2000.0 * n as f64 / 16000.0).sin()) as f32)
        .collect();
    let got = lm.log_mel(&x).unwrap();
    let frame = &got[10 * 128..11 * 128];
    let best = (0..128)
        .max_by(|&i, &j| frame[i].total_cmp(&frame[j]))
        .unwrap();
    let centres = band_centres(&p);
    let nearest = (0..128)
        .min_by(|&i, &j| {
            (centres[i] - 2000.0)
                .abs()
                .total_cmp(&(centres[j] - 2000.0).abs())
        })
        .unwrap();
    assert!(
        best.abs_diff(nearest) <= 1,
        "peak band {best} ({} Hz), nearest centre band {nearest}",
        centres[best]
    );
    let fb = mel_filterbank(16000.0, 1024, 128, 0.0, 8000.0);
    let (pk, side) = ((a * 1024.0 / 4.0).powi(2), (a * 1024.0 / 8.0).powi(2));
    for b in [best, nearest] {
        let e = fb[b][128] * pk + (fb[b][127] + fb[b][129]) * side;
        let want = 10.0 * (e + LOG_EPS).log10();
        assert!(
            (frame[b] as f64 - want).abs() < 0.01,
            "band {b}: {} vs {want}",
            frame[b]
        );
    }
    // Bands far from 2000 Hz hold only leakage: at least 60 dB below the peak.
    let far = (0..128).filter(|&b| (centres[b] - 2000.0).abs() > 1500.0);
    for b in far {
        assert!(frame[b] < frame[best] - 60.0, "band {b}: {}", frame[b]);
    }
}

#[test]
fn silence_hits_the_epsilon_floor_and_short_clips_fail() {
    let lm = LogMel::new(&LogMelParams::default()).unwrap();
    let got = lm.log_mel(&vec![0.0; 4096]).unwrap();
    let floor = (10.0 * LOG_EPS.log10()) as f32; // −156.54 dB
    assert!(got.iter().all(|&v| v == floor), "{}", got[0]);
    assert_eq!(got.len(), (1 + 4096 / 512) * 128);
    let err = lm.log_mel(&[0.1; 100]).unwrap_err().to_string();
    assert!(err.contains("too short"), "{err}");
    // A 10 s clip: 313 frames, the baseline's 309 windows of 640 values.
    assert_eq!(lm.windows(&vec![0.0; 160_000]).unwrap().len(), 309 * 640);
    let central = LogMel::new(&LogMelParams {
        windows_per_clip: 4,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(central.windows(&vec![0.0; 160_000]).unwrap().len(), 4 * 640);
    for bad in [
        LogMelParams {
            n_fft: 1023,
            ..Default::default()
        },
        LogMelParams {
            hop: 0,
            ..Default::default()
        },
        LogMelParams {
            f_max: 9000.0,
            ..Default::default()
        },
        LogMelParams {
            frames: 0,
            ..Default::default()
        },
    ] {
        assert!(LogMel::new(&bad).is_err(), "{bad:?}");
    }
}
