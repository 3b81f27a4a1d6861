//! `synthetic_machine`: built-in machine sounds for anomaly detection, a small stand-in for
//! ToyADMOS / MIMII that goes through the same log-mel window path as the `dcase2020` loader.
//!
//! Each machine ID (drawn from (seed, ID)) has a characteristic hum: a fundamental in
//! 60–320 Hz with 10 harmonics of fixed relative amplitudes and phases, a slow amplitude
//! modulation (rotation), a resonant "whine" band and a low-passed noise floor. A normal clip
//! varies the fundamental by ±0.5 %, the loudness, and the noise level (`snr_db`, hum to
//! noise). An anomalous clip adds one of the `anomalies`: `clicks` (a jittered train of
//! decaying high-frequency impulses, a chipped gear tooth), `bearing` (bursts of band-pass
//! noise), `drift` (the fundamental drifting by `drift_percent` over the clip with one
//! harmonic changed in level); clicks and bearing noise have RMS `anomaly_db` relative to the
//! hum. Training and validation hold normal clips only; the test split holds
//! `test_normal_clips` normal and `test_anomalous_clips` anomalous clips per ID. Clip order:
//! by ID, then normal before anomalous. Clip `i` of (split, ID, label) comes from its own
//! random stream, so the data are bit-identical for any thread count.

use anyhow::{Result, bail};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::logmel::{ClipLabel, LogMel, LogMelParams, clip_split};
use crate::mfcc::SAMPLE_RATE;
use crate::seed::item_rng;
use crate::synth_kws::Noise;
use crate::{Dataset, Progress};

/// The anomaly kinds.
pub const ANOMALIES: [&str; 3] = ["clicks", "bearing", "drift"];

/// Parameters of the `synthetic_machine` source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticMachineParams {
    /// Number of machine IDs (`id_00`, `id_01`, …).
    pub machine_ids: usize,
    /// Clip length in seconds.
    pub clip_seconds: f64,
    /// Normal training clips per ID.
    pub train_clips: usize,
    /// Normal validation clips per ID.
    pub val_clips: usize,
    /// Normal test clips per ID.
    pub test_normal_clips: usize,
    /// Anomalous test clips per ID.
    pub test_anomalous_clips: usize,
    /// Hum-to-noise ratio range (dB), drawn per clip.
    pub snr_db: [f64; 2],
    /// Click and bearing-noise RMS relative to the hum (dB), drawn per clip.
    pub anomaly_db: [f64; 2],
    /// Size of the frequency drift (% of the fundamental over the clip), drawn per clip.
    pub drift_percent: [f64; 2],
    /// Which anomalies occur (each anomalous clip draws one uniformly).
    pub anomalies: Vec<String>,
}

impl Default for SyntheticMachineParams {
    fn default() -> Self {
        Self {
            machine_ids: 4,
            clip_seconds: 1.0,
            train_clips: 40,
            val_clips: 8,
            test_normal_clips: 12,
            test_anomalous_clips: 12,
            snr_db: [6.0, 20.0],
            anomaly_db: [-12.0, -3.0],
            drift_percent: [3.0, 8.0],
            anomalies: ANOMALIES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl SyntheticMachineParams {
    /// Checks ranges and names.
    pub fn validate(&self) -> Result<()> {
        if !(1..=100).contains(&self.machine_ids) {
            bail!(
                "dataset.machine_ids must be in [1, 100], got {}",
                self.machine_ids
            );
        }
        if !(0.1..=60.0).contains(&self.clip_seconds) {
            bail!(
                "dataset.clip_seconds must be in [0.1, 60], got {}",
                self.clip_seconds
            );
        }
        if self.train_clips == 0 {
            bail!("dataset.train_clips must be at least 1");
        }
        for (name, [lo, hi], min, max) in [
            ("snr_db", self.snr_db, -20.0, 80.0),
            ("anomaly_db", self.anomaly_db, -60.0, 20.0),
            ("drift_percent", self.drift_percent, 0.0, 50.0),
        ] {
            if !(lo <= hi && lo >= min && hi <= max) {
                bail!("dataset.{name}: need {min} <= low <= high <= {max}, got [{lo}, {hi}]");
            }
        }
        if self.anomalies.is_empty() && self.test_anomalous_clips > 0 {
            bail!("dataset.anomalies must name at least one of {ANOMALIES:?}");
        }
        for a in &self.anomalies {
            if !ANOMALIES.contains(&a.as_str()) {
                bail!("dataset.anomalies: unknown anomaly {a:?} (expected one of {ANOMALIES:?})");
            }
        }
        Ok(())
    }

    fn clip_samples(&self) -> usize {
        (self.clip_seconds * SAMPLE_RATE as f64).round() as usize
    }
}

const TABLE: usize = 4096;

/// One machine ID's sound.
struct Machine {
    f0: f64,
    /// One period of the harmonic sum, unit RMS.
    table: Vec<f64>,
    /// Harmonic amplitudes and phases (for the drift anomaly's altered table).
    harmonics: Vec<(f64, f64)>,
    am_hz: f64,
    am_depth: f64,
    whine: (f64, f64, f64),
    noise_pole: f64,
}

fn table_of(harmonics: &[(f64, f64)]) -> Vec<f64> {
    let mut t: Vec<f64> = (0..TABLE)
        .map(|n| {
            let x = 2.0 * std::f64::consts::PI * n as f64 / TABLE as f64;
            harmonics
                .iter()
                .enumerate()
                .map(|(k, &(a, ph))| a * ((k + 1) as f64 * x + ph).sin())
                .sum()
        })
        .collect();
    let rms = (t.iter().map(|v| v * v).sum::<f64>() / TABLE as f64).sqrt();
    t.iter_mut().for_each(|v| *v /= rms.max(1e-12));
    t
}

fn machine(seed: u64, id: usize) -> Machine {
    let mut rng = item_rng(seed, &[0x6d61_6368_6964, id as u64]);
    let f0 = 60.0 * rng.random_range(0.0f64..(320.0f64 / 60.0).ln()).exp();
    let tilt = rng.random_range(0.4..1.4);
    let harmonics: Vec<(f64, f64)> = (1..=10)
        .map(|k| {
            let a = rng.random_range(0.15..1.0) / (k as f64).powf(tilt);
            (a, rng.random_range(0.0..std::f64::consts::TAU))
        })
        .collect();
    Machine {
        f0,
        table: table_of(&harmonics),
        harmonics,
        am_hz: rng.random_range(2.0..9.0),
        am_depth: rng.random_range(0.02..0.2),
        whine: (
            rng.random_range(1200.0..4500.0),
            rng.random_range(80.0..300.0),
            rng.random_range(0.05..0.25),
        ),
        noise_pole: rng.random_range(0.3..0.95),
    }
}

/// Two-pole resonator with unit peak gain (approximately).
struct Reson {
    b: f64,
    c: f64,
    g: f64,
    y1: f64,
    y2: f64,
}

impl Reson {
    fn new(f: f64, bw: f64) -> Self {
        let t = 1.0 / SAMPLE_RATE as f64;
        let r = (-std::f64::consts::PI * bw * t).exp();
        Self {
            b: 2.0 * r * (std::f64::consts::TAU * f * t).cos(),
            c: -r * r,
            g: 1.0 - r,
            y1: 0.0,
            y2: 0.0,
        }
    }
    fn step(&mut self, x: f64) -> f64 {
        let y = self.g * x + self.b * self.y1 + self.c * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

fn uniform(rng: &mut ChaCha8Rng, [lo, hi]: [f64; 2]) -> f64 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

fn rms(x: &[f64]) -> f64 {
    (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64)
        .sqrt()
        .max(1e-12)
}

fn normalise(x: &mut [f64]) {
    let r = rms(x);
    x.iter_mut().for_each(|v| *v /= r);
}

/// Generates one clip of machine `id`: `split` 0 train, 1 val, 2 test; `anomalous` picks the
/// anomalous stream (test only); `index` the clip within (split, id, label).
pub fn clip(
    p: &SyntheticMachineParams,
    seed: u64,
    split: u64,
    id: usize,
    anomalous: bool,
    index: u64,
) -> Vec<f32> {
    let m = machine(seed, id);
    let mut rng = item_rng(
        seed,
        &[0x6d61_6368_636c, split, id as u64, anomalous as u64, index],
    );
    let len = p.clip_samples();
    let sr = SAMPLE_RATE as f64;
    let kind = if anomalous {
        let a = &p.anomalies[rng.random_range(0..p.anomalies.len())];
        ANOMALIES.iter().position(|k| k == a).expect("validated")
    } else {
        usize::MAX
    };
    let f0 = m.f0 * (1.0 + rng.random_range(-0.005..0.005));
    let (drift, table) = if kind == 2 {
        let d = uniform(&mut rng, p.drift_percent) / 100.0;
        let d = if rng.random::<bool>() { d } else { -d };
        let mut h = m.harmonics.clone();
        let k = rng.random_range(1..4);
        h[k].0 *= if rng.random::<bool>() {
            rng.random_range(1.8..3.0)
        } else {
            rng.random_range(0.2..0.5)
        };
        (d, table_of(&h))
    } else {
        (0.0, m.table.clone())
    };
    let mut phase = rng.random::<f64>();
    let am_phase = rng.random_range(0.0..std::f64::consts::TAU);
    let mut hum = Vec::with_capacity(len);
    for n in 0..len {
        let t = n as f64 / sr;
        let f = f0 * (1.0 + drift * n as f64 / len as f64);
        phase += f / sr;
        phase -= phase.floor();
        let pos = phase * TABLE as f64;
        let i = pos as usize % TABLE;
        let frac = pos - pos.floor();
        let v = table[i] * (1.0 - frac) + table[(i + 1) % TABLE] * frac;
        let am = 1.0 + m.am_depth * (std::f64::consts::TAU * m.am_hz * t + am_phase).sin();
        hum.push(v * am);
    }
    let mut white = Noise::new(&mut rng);
    let mut whine = Reson::new(m.whine.0, m.whine.1);
    let mut w: Vec<f64> = (0..len).map(|_| whine.step(white.next())).collect();
    normalise(&mut w);
    let mut lp = 0.0;
    let mut floor: Vec<f64> = (0..len)
        .map(|_| {
            lp = m.noise_pole * lp + (1.0 - m.noise_pole) * white.next();
            lp
        })
        .collect();
    normalise(&mut floor);
    let snr = uniform(&mut rng, p.snr_db);
    let noise_gain = 10f64.powf(-snr / 20.0);
    let mut x: Vec<f64> = (0..len)
        .map(|n| hum[n] + m.whine.2 * w[n] + noise_gain * floor[n])
        .collect();
    if kind == 0 || kind == 1 {
        let level = 10f64.powf(uniform(&mut rng, p.anomaly_db) / 20.0);
        let mut a = vec![0.0; len];
        if kind == 0 {
            // Clicks: a jittered periodic train of decaying resonant impulses.
            let rate = rng.random_range(4.0..15.0);
            let freq = rng.random_range(1500.0..5000.0);
            let decay = (-1.0 / (rng.random_range(0.001..0.004) * sr)).exp();
            let mut t = rng.random_range(0.0..1.0 / rate);
            while t < len as f64 / sr {
                let start = (t * sr) as usize;
                let amp = rng.random_range(0.6..1.0);
                let mut e = amp;
                for (k, slot) in a.iter_mut().skip(start).enumerate() {
                    if e < 1e-4 {
                        break;
                    }
                    *slot += e * (std::f64::consts::TAU * freq * k as f64 / sr).sin();
                    e *= decay;
                }
                t += (1.0 / rate) * rng.random_range(0.85..1.15);
            }
        } else {
            // Bearing noise: bursts of band-pass noise with raised-cosine envelopes.
            let mut band = Reson::new(
                rng.random_range(2000.0..6500.0),
                rng.random_range(400.0..1500.0),
            );
            let bursts = rng.random_range(2..6);
            let mut env = vec![0.0f64; len];
            for _ in 0..bursts {
                let dur = ((rng.random_range(0.05..0.25) * sr) as usize).clamp(16, len);
                let start = rng.random_range(0..=len - dur);
                for k in 0..dur {
                    let u = k as f64 / dur as f64;
                    env[start + k] += 0.5 - 0.5 * (std::f64::consts::TAU * u).cos();
                }
            }
            for (slot, e) in a.iter_mut().zip(&env) {
                *slot = band.step(white.next()) * e.min(1.0);
            }
        }
        // Scale so the anomaly's RMS over the clip is `level` × the hum's.
        let g = level * rms(&hum) / rms(&a);
        for (v, s) in x.iter_mut().zip(&a) {
            *v += g * s;
        }
    }
    let gain = 10f64.powf(rng.random_range(-1.3..-0.7)) / rms(&x);
    x.into_iter()
        .map(|v| (v * gain).clamp(-1.0, 1.0) as f32)
        .collect()
}

/// Builds the three splits.
pub fn build(
    p: &SyntheticMachineParams,
    features: &LogMelParams,
    seed: u64,
    progress: Progress,
) -> Result<Dataset> {
    let lm = LogMel::new(features)?;
    if p.clip_samples() < lm.min_samples() {
        bail!(
            "dataset.clip_seconds {} is too short for the log-mel windows (need {} samples)",
            p.clip_seconds,
            lm.min_samples()
        );
    }
    let groups: Vec<String> = (0..p.machine_ids).map(|i| format!("id_{i:02}")).collect();
    let mut splits = Vec::new();
    for (s, name, normal, anomalous) in [
        (0u64, "train", p.train_clips, 0),
        (1, "val", p.val_clips, 0),
        (2, "test", p.test_normal_clips, p.test_anomalous_clips),
    ] {
        // (id, anomalous, index) per clip, by ID then label.
        let items: Vec<(usize, bool, u64)> = (0..p.machine_ids)
            .flat_map(|id| {
                (0..normal as u64)
                    .map(move |i| (id, false, i))
                    .chain((0..anomalous as u64).map(move |i| (id, true, i)))
            })
            .collect();
        let labels: Vec<ClipLabel> = items
            .iter()
            .map(|&(id, a, _)| ClipLabel {
                label: a as u32,
                group: id as u32,
            })
            .collect();
        let total = items.len() as u64;
        let split = clip_split(
            &labels,
            &lm,
            &mut |d| progress(name, d, total),
            &|i| format!("synthetic clip {i} of the {name} split"),
            |i| {
                let (id, a, k) = items[i];
                Ok(clip(p, seed, s, id, a, k))
            },
        )?;
        splits.push(split);
    }
    let [train, val, test]: [crate::Split; 3] = splits.try_into().expect("three splits");
    Ok(crate::logmel::machine_dataset(
        train,
        val,
        test,
        groups,
        &lm,
        serde_json::json!({
            "kind": "synthetic_machine",
            "note": "synthetic machine hum + harmonics + noise; anomalies: clicks, bearing noise, frequency drift; log-mel windows (frames, mels)",
        }),
    ))
}
