//! `synthetic_kws`: a deterministic generator of one-second 16 kHz "spoken word" waveforms for
//! the 12 Speech Commands classes. Each word is a sequence of phone-like segments rendered by a
//! small source–filter (Klatt-style) synthesiser: a glottal pulse train with a pitch contour
//! and aspiration noise through three cascaded formant resonators (vowels, glides, nasals), and
//! band-pass noise bursts (fricatives, stop bursts). Each clip varies speaker pitch, speaking
//! rate, per-segment durations, formant scale (vocal-tract length), time offset, loudness and
//! background noise (white / pink / brown / hum) at a random SNR. `_silence_` is background
//! noise only; `_unknown_` is one of 24 other pseudo-words. Clip i of class c in split s is
//! generated from its own random stream (seed, s, c, i): bit-identical for any thread count.

use anyhow::{Result, bail};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::features::featurise_parallel;
use crate::mfcc::{CLIP_SAMPLES, Mfcc, SAMPLE_RATE};
use crate::seed::item_rng;

/// The 12 classes, in label order.
pub const CLASSES: [&str; 12] = [
    "yes",
    "no",
    "up",
    "down",
    "left",
    "right",
    "on",
    "off",
    "stop",
    "go",
    "_silence_",
    "_unknown_",
];

/// Parameters of the `synthetic_kws` source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticKwsParams {
    /// Clips per class in the training split.
    pub train_per_class: usize,
    /// Clips per class in the validation split.
    pub val_per_class: usize,
    /// Clips per class in the test split.
    pub test_per_class: usize,
    /// Signal-to-noise ratio range (dB) of the background noise under words, drawn uniformly.
    pub snr_db: [f64; 2],
    /// Speaking-rate factor range (durations are divided by it).
    pub rate: [f64; 2],
    /// Formant scale range (vocal-tract length).
    pub formant_scale: [f64; 2],
    /// Speaker base pitch range (Hz).
    pub pitch_hz: [f64; 2],
}

impl Default for SyntheticKwsParams {
    fn default() -> Self {
        Self {
            train_per_class: 800,
            val_per_class: 100,
            test_per_class: 200,
            snr_db: [-3.0, 20.0],
            rate: [0.7, 1.35],
            formant_scale: [0.82, 1.22],
            pitch_hz: [80.0, 260.0],
        }
    }
}

impl SyntheticKwsParams {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        let ranges = [
            ("snr_db", self.snr_db, -40.0, 80.0),
            ("rate", self.rate, 0.3, 3.0),
            ("formant_scale", self.formant_scale, 0.5, 2.0),
            ("pitch_hz", self.pitch_hz, 40.0, 600.0),
        ];
        for (name, [lo, hi], min, max) in ranges {
            if !(lo <= hi && lo >= min && hi <= max) {
                bail!("dataset.{name}: need {min} <= low <= high <= {max}, got [{lo}, {hi}]");
            }
        }
        if self.train_per_class == 0 {
            bail!("dataset.train_per_class must be at least 1");
        }
        Ok(())
    }
}

/// One phone-like segment.
#[derive(Clone, Copy, Debug)]
struct Seg {
    /// Nominal duration (ms).
    dur: f64,
    /// Voicing amplitude.
    av: f64,
    /// Aspiration amplitude (noise through the formant cascade).
    asp: f64,
    /// Frication amplitude (band-pass noise).
    af: f64,
    /// Formants at the start and end of the segment (Hz); `None` = take the neighbouring vowel's.
    f: Option<([f64; 3], [f64; 3])>,
    /// Frication band centre and bandwidth (Hz).
    fric: (f64, f64),
}

const fn seg(dur: f64, av: f64, asp: f64, af: f64) -> Seg {
    Seg {
        dur,
        av,
        asp,
        af,
        f: None,
        fric: (3000.0, 2000.0),
    }
}

fn vowel(f: [f64; 3], dur: f64) -> Vec<Seg> {
    vec![Seg {
        f: Some((f, f)),
        ..seg(dur, 1.0, 0.0, 0.0)
    }]
}

fn diph(a: [f64; 3], b: [f64; 3], dur: f64) -> Vec<Seg> {
    vec![Seg {
        f: Some((a, b)),
        ..seg(dur, 1.0, 0.0, 0.0)
    }]
}

fn voiced(f: [f64; 3], dur: f64, av: f64) -> Vec<Seg> {
    vec![Seg {
        f: Some((f, f)),
        ..seg(dur, av, 0.0, 0.0)
    }]
}

fn fric(centre: f64, bw: f64, dur: f64, af: f64, av: f64) -> Vec<Seg> {
    vec![Seg {
        fric: (centre, bw),
        ..seg(dur, av, 0.0, af)
    }]
}

/// Stop: closure (silent, or a weak voice bar), burst, aspiration (voiceless only).
fn stop(centre: f64, bw: f64, voiced: bool) -> Vec<Seg> {
    let bar = if voiced { 0.12 } else { 0.0 };
    let mut v = vec![seg(if voiced { 45.0 } else { 60.0 }, bar, 0.0, 0.0)];
    v.push(Seg {
        fric: (centre, bw),
        ..seg(if voiced { 10.0 } else { 15.0 }, 0.0, 0.0, 0.7)
    });
    if !voiced {
        v.push(seg(35.0, 0.0, 0.35, 0.0));
    }
    v
}

/// Phone inventory (formant values: adult averages, rounded).
fn phone(p: &str) -> Vec<Seg> {
    const I: [f64; 3] = [280.0, 2250.0, 2900.0];
    const IH: [f64; 3] = [400.0, 1900.0, 2550.0];
    const EH: [f64; 3] = [580.0, 1800.0, 2500.0];
    const EY: [f64; 3] = [450.0, 2050.0, 2650.0];
    const AE: [f64; 3] = [680.0, 1700.0, 2400.0];
    const AA: [f64; 3] = [750.0, 1100.0, 2450.0];
    const AO: [f64; 3] = [600.0, 900.0, 2400.0];
    const OW: [f64; 3] = [480.0, 920.0, 2400.0];
    const UW: [f64; 3] = [320.0, 900.0, 2250.0];
    const AH: [f64; 3] = [620.0, 1200.0, 2450.0];
    const ER: [f64; 3] = [480.0, 1350.0, 1650.0];
    match p {
        "i" => vowel(I, 150.0),
        "ih" => vowel(IH, 110.0),
        "eh" => vowel(EH, 140.0),
        "ey" => diph(EY, I, 200.0),
        "ae" => vowel(AE, 160.0),
        "aa" => vowel(AA, 170.0),
        "ao" => vowel(AO, 170.0),
        "ow" => diph(OW, UW, 210.0),
        "uw" => vowel(UW, 160.0),
        "ah" => vowel(AH, 110.0),
        "er" => vowel(ER, 160.0),
        "ay" => diph(AA, [400.0, 2000.0, 2600.0], 220.0),
        "aw" => diph([720.0, 1200.0, 2450.0], [450.0, 900.0, 2300.0], 220.0),
        "y" => voiced([300.0, 2200.0, 3000.0], 60.0, 0.6),
        "w" => voiced([320.0, 700.0, 2300.0], 60.0, 0.6),
        "l" => voiced([380.0, 1100.0, 2700.0], 70.0, 0.6),
        "r" => voiced([420.0, 1250.0, 1650.0], 70.0, 0.6),
        "m" => voiced([250.0, 1000.0, 2200.0], 75.0, 0.3),
        "n" => voiced([250.0, 1500.0, 2500.0], 75.0, 0.3),
        "s" => fric(4500.0, 2500.0, 120.0, 0.5, 0.0),
        "z" => fric(4500.0, 2500.0, 100.0, 0.35, 0.3),
        "sh" => fric(2700.0, 1200.0, 120.0, 0.5, 0.0),
        "f" => fric(2500.0, 6000.0, 100.0, 0.15, 0.0),
        "v" => fric(2500.0, 6000.0, 70.0, 0.1, 0.35),
        "th" => fric(3200.0, 5000.0, 90.0, 0.1, 0.0),
        "h" => vec![seg(70.0, 0.0, 0.45, 0.0)],
        "p" => stop(800.0, 1500.0, false),
        "t" => stop(3800.0, 1500.0, false),
        "k" => stop(1800.0, 600.0, false),
        "b" => stop(700.0, 1200.0, true),
        "d" => stop(3300.0, 1500.0, true),
        "g" => stop(1600.0, 500.0, true),
        _ => unreachable!("unknown phone {p}"),
    }
}

/// The ten keywords.
const KEYWORDS: [&str; 10] = [
    "y eh s", "n ow", "ah p", "d aw n", "l eh f t", "r ay t", "aa n", "ao f", "s t aa p", "g ow",
];

/// Other pseudo-words for `_unknown_` (Speech Commands' auxiliary words and digits).
const UNKNOWN: [&str; 24] = [
    "b eh d",
    "b er d",
    "k ae t",
    "d ao g",
    "h ae p i",
    "h aw s",
    "m aa r v ih n",
    "sh i l ah",
    "t r i",
    "w aw",
    "z ih r ow",
    "w ah n",
    "t uw",
    "th r i",
    "f ao r",
    "f ay v",
    "s ih k s",
    "s eh v ah n",
    "ey t",
    "n ay n",
    "l er n",
    "f aa l ow",
    "f ao r w er d",
    "b ae k w er d",
];

fn word(spec: &str) -> Vec<Seg> {
    let mut segs: Vec<Seg> = spec.split(' ').flat_map(phone).collect();
    // Segments without formants (fricatives, stops, aspiration) take the next voiced
    // segment's starting formants (coarticulation), or the previous one's at the word end.
    let n = segs.len();
    for i in 0..n {
        if segs[i].f.is_none() {
            let next = segs[i + 1..].iter().find_map(|s| s.f.map(|f| f.0));
            let prev = segs[..i].iter().rev().find_map(|s| s.f.map(|f| f.1));
            let f = next.or(prev).unwrap_or([500.0, 1500.0, 2500.0]);
            segs[i].f = Some((f, f));
        }
    }
    segs
}

/// Two-pole resonator (Klatt): unity gain at DC.
#[derive(Default, Clone, Copy)]
struct Reson {
    a: f64,
    b: f64,
    c: f64,
    y1: f64,
    y2: f64,
}

impl Reson {
    fn set(&mut self, f: f64, bw: f64) {
        let t = 1.0 / SAMPLE_RATE as f64;
        let f = f.min(7600.0);
        self.c = -(-2.0 * std::f64::consts::PI * bw * t).exp();
        self.b = 2.0
            * (-std::f64::consts::PI * bw * t).exp()
            * (2.0 * std::f64::consts::PI * f * t).cos();
        self.a = 1.0 - self.b - self.c;
    }
    fn step(&mut self, x: f64) -> f64 {
        let y = self.a * x + self.b * self.y1 + self.c * self.y2;
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

/// Fast per-sample white noise (xorshift64*, seeded from the clip's ChaCha stream): unit
/// variance, uniform amplitude distribution.
pub(crate) struct Noise(u64);

impl Noise {
    pub(crate) fn new(rng: &mut ChaCha8Rng) -> Self {
        Noise(rng.random::<u64>() | 1)
    }
    pub(crate) fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let u = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        (u * 2.0 - 1.0) * 3f64.sqrt()
    }
}

/// A background-noise clip of `len` samples with unit RMS: white, pink, brown or mains hum.
fn background(rng: &mut ChaCha8Rng, len: usize) -> Vec<f64> {
    let kind = rng.random_range(0..4u32);
    let hum_f = if rng.random::<bool>() { 50.0 } else { 60.0 };
    let mut white = Noise::new(rng);
    // Hum harmonics by the sine recurrence s[n+1] = 2 cos(w) s[n] - s[n-1].
    let mut hum: Vec<(f64, f64, f64)> = (1..=6)
        .map(|k| {
            let w = 2.0 * std::f64::consts::PI * hum_f * k as f64 / SAMPLE_RATE as f64;
            (2.0 * w.cos(), 0.0, -w.sin())
        })
        .collect();
    let mut out = Vec::with_capacity(len);
    let (mut b0, mut b1, mut b2, mut br) = (0.0, 0.0, 0.0, 0.0);
    for _ in 0..len {
        let w = white.next();
        let v = match kind {
            0 => w,
            1 => {
                // Paul Kellet's economy pink filter.
                b0 = 0.99765 * b0 + w * 0.0990460;
                b1 = 0.96300 * b1 + w * 0.2965164;
                b2 = 0.57000 * b2 + w * 1.0526913;
                b0 + b1 + b2 + w * 0.1848
            }
            2 => {
                br = 0.995 * br + w;
                br
            }
            _ => {
                let mut h = 0.0;
                for (k, (c, s1, s0)) in hum.iter_mut().enumerate() {
                    let next = *c * *s1 - *s0;
                    *s0 = *s1;
                    *s1 = next;
                    h += next / (k + 1) as f64;
                }
                h + 0.3 * w
            }
        };
        out.push(v);
    }
    let rms = (out.iter().map(|v| v * v).sum::<f64>() / len as f64)
        .sqrt()
        .max(1e-12);
    out.iter_mut().for_each(|v| *v /= rms);
    out
}

/// Renders one word into a 1 s clip; returns the clip and the active (speech) sample range.
fn render(segs: &[Seg], p: &SyntheticKwsParams, rng: &mut ChaCha8Rng) -> (Vec<f64>, usize, usize) {
    let sr = SAMPLE_RATE as f64;
    let mut rate = uniform(rng, p.rate);
    let fscale = uniform(rng, p.formant_scale);
    let f0_base = uniform(rng, p.pitch_hz);
    let slope = rng.random_range(-0.3..0.15);
    let durs: Vec<f64> = segs
        .iter()
        .map(|s| s.dur * rng.random_range(0.8..1.25))
        .collect();
    let total_ms: f64 = durs.iter().sum();
    if total_ms / rate > 900.0 {
        rate = total_ms / 900.0;
    }
    let lens: Vec<usize> = durs
        .iter()
        .map(|d| (d / rate * sr / 1000.0).round() as usize)
        .collect();
    let active: usize = lens.iter().sum();
    let start = rng.random_range(0..=CLIP_SAMPLES - active);
    let formant_jitter: [f64; 3] = std::array::from_fn(|_| rng.random_range(0.95..1.05));
    let bws = [
        70.0 + rng.random_range(0.0..40.0),
        90.0 + rng.random_range(0.0..50.0),
        140.0,
    ];
    let vibrato_hz = rng.random_range(3.0..7.0);
    let vibrato = rng.random_range(0.0..0.03);

    let mut out = vec![0.0; CLIP_SAMPLES];
    let mut cascade = [Reson::default(); 3];
    let mut fricf = Reson::default();
    let (mut av, mut asp, mut af) = (0.0, 0.0, 0.0);
    let mut fs = segs[0].f.map(|f| f.0).unwrap_or([500.0, 1500.0, 2500.0]);
    let mut phase = 0.0;
    let (mut g1, mut g2) = (0.0, 0.0);
    let tilt = (-2.0 * std::f64::consts::PI * 400.0 / sr).exp();
    let smooth_a = 1.0 - (-1.0 / (0.006 * sr)).exp();
    let smooth_f = 1.0 - (-1.0 / (0.012 * sr)).exp();
    let mut white = Noise::new(rng);
    let mut f0 = f0_base;
    let mut n = start;
    for (s, &len) in segs.iter().zip(&lens) {
        let (fa, fb) = s.f.expect("filled by word()");
        fricf.set(s.fric.0, s.fric.1);
        for k in 0..len {
            let u = k as f64 / len.max(1) as f64;
            // Smoothed control trajectories (coarticulation, soft onsets).
            av += smooth_a * (s.av - av);
            asp += smooth_a * (s.asp - asp);
            af += smooth_a * (s.af - af);
            for j in 0..3 {
                let target = (fa[j] + (fb[j] - fa[j]) * u) * fscale * formant_jitter[j];
                fs[j] += smooth_f * (target - fs[j]);
            }
            if k % 16 == 0 {
                for j in 0..3 {
                    cascade[j].set(fs[j], bws[j]);
                }
                let t = (n - start) as f64 / active as f64;
                f0 = f0_base
                    * (1.0 + slope * t)
                    * (1.0
                        + vibrato
                            * (2.0 * std::f64::consts::PI * vibrato_hz * n as f64 / sr).sin());
            }
            phase += f0 / sr;
            let mut pulse = 0.0;
            if phase >= 1.0 {
                phase -= 1.0;
                pulse = 1.0;
            }
            // Glottal pulse: impulse through two one-pole low-passes (spectral tilt).
            g1 = tilt * g1 + pulse;
            g2 = tilt * g2 + g1;
            let src = av * g2 * 0.02 + asp * white.next();
            let mut y = src;
            for r in cascade.iter_mut() {
                y = r.step(y);
            }
            let fr = af * fricf.step(white.next()) * 2.0;
            out[n] = y + fr;
            n += 1;
        }
    }
    (out, start, start + active)
}

/// Generates clip `index` of class `class` (index into [`CLASSES`]) of split `split`.
pub fn clip(p: &SyntheticKwsParams, seed: u64, split: u64, class: usize, index: u64) -> Vec<f32> {
    let mut rng = item_rng(seed, &[0x006b_7773, split, class as u64, index]);
    let noise = background(&mut rng, CLIP_SAMPLES);
    let level = 10f64.powf(rng.random_range(-2.0..-0.5)); // speech RMS 0.01 .. 0.32
    let mut x: Vec<f64> = if CLASSES[class] == "_silence_" {
        noise
            .iter()
            .map(|v| v * level * rng.random_range(0.1..1.0))
            .collect()
    } else {
        let spec = if CLASSES[class] == "_unknown_" {
            UNKNOWN[rng.random_range(0..UNKNOWN.len())]
        } else {
            KEYWORDS[class]
        };
        let (speech, a, b) = render(&word(spec), p, &mut rng);
        let p_speech = speech[a..b].iter().map(|v| v * v).sum::<f64>() / (b - a).max(1) as f64;
        let gain = level / p_speech.sqrt().max(1e-12);
        let snr = uniform(&mut rng, p.snr_db);
        let noise_rms = level / 10f64.powf(snr / 20.0);
        speech
            .iter()
            .zip(&noise)
            .map(|(s, n)| s * gain + n * noise_rms)
            .collect()
    };
    for v in x.iter_mut() {
        *v = v.clamp(-1.0, 1.0);
    }
    x.into_iter().map(|v| v as f32).collect()
}

/// Generates `per_class` clips of every class for `split` (0 train, 1 val, 2 test), in
/// class-major order, and featurises them in parallel chunks; returns (features, labels).
pub fn generate(
    p: &SyntheticKwsParams,
    seed: u64,
    split: u64,
    per_class: usize,
    mfcc: &Mfcc,
    progress: &mut dyn FnMut(u64),
) -> (Vec<f32>, Vec<u32>) {
    let ids: Vec<(usize, u64)> = (0..CLASSES.len())
        .flat_map(|c| (0..per_class as u64).map(move |i| (c, i)))
        .collect();
    let x = featurise_parallel(ids.len(), mfcc, progress, |k| {
        let (c, i) = ids[k];
        Ok(clip(p, seed, split, c, i))
    })
    .expect("generation cannot fail");
    (x, ids.iter().map(|&(c, _)| c as u32).collect())
}

/// Builds the three splits.
pub fn build(
    p: &SyntheticKwsParams,
    mfcc: &crate::MfccParams,
    seed: u64,
    progress: crate::Progress,
) -> Result<crate::Dataset> {
    let mfcc = Mfcc::new(mfcc)?;
    let shape = mfcc.clip_shape();
    let mut splits = Vec::new();
    for (s, (name, n)) in [
        ("train", p.train_per_class),
        ("val", p.val_per_class),
        ("test", p.test_per_class),
    ]
    .into_iter()
    .enumerate()
    {
        let total = (n * CLASSES.len()) as u64;
        let (x, y) = generate(p, seed, s as u64, n, &mfcc, &mut |d| {
            progress(name, d, total)
        });
        splits.push(crate::Split::new(x, &shape, y)?);
    }
    let [train, val, test]: [crate::Split; 3] = splits.try_into().expect("three splits");
    Ok(crate::Dataset {
        train,
        val,
        test,
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        input_shape: shape.to_vec(),
        layout: "frames,mfcc".into(),
        normalization: None,
        description: serde_json::json!({
            "kind": "synthetic_kws",
            "note": "source-filter synthesised pseudo-words, 1 s at 16 kHz, MFCC (frames, coefficients)",
        }),
        ..Default::default()
    })
}
