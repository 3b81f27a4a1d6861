//! The log-mel front end of MLPerf Tiny anomaly detection (the DCASE 2020 task 2 baseline,
//! `file_to_vector_array`): 16 kHz audio, `librosa.feature.melspectrogram(sr=16000,
//! n_fft=1024, hop_length=512, n_mels=128, power=2.0)` — a periodic Hann window of `n_fft`
//! samples, the signal centred (padded by `n_fft / 2` on both sides by reflection, librosa's
//! `center=True, pad_mode="reflect"` of the librosa versions the baseline used), the power
//! spectrum, librosa's default mel filter bank (Slaney mel scale, triangles in Hz at the FFT
//! bin frequencies, Slaney area normalisation `2 / (f[i+2] - f[i])`, over 0–8000 Hz) — then
//! `20 / power * log10(mel + ε)` with ε = 2.22e-16 (`sys.float_info.epsilon`). A clip of `N`
//! samples has `1 + N / hop` frames.
//!
//! Windows: `frames` (5) consecutive frames concatenated frame-major into one item of shape
//! (frames, n_mels) = (5, 128), i.e. 640 values; window `j` starts at frame `j * window_hop`.
//! The baseline (and [`LogMelParams::default`]) takes every window with hop 1 frame (309 per
//! 10 s clip); `windows_per_clip = k > 0` keeps only the `k` central ones (all of them when a
//! clip has fewer), which keeps large data sets small and follows `000`'s port.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

use crate::mfcc::SAMPLE_RATE;

/// Log-mel window settings (the `features` table of anomaly-detection sources, `kind =
/// "log_mel"`). Defaults are MLPerf Tiny's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogMelParams {
    /// FFT and window length (samples).
    pub n_fft: usize,
    /// Hop between frames (samples).
    pub hop: usize,
    /// Number of mel bands.
    pub n_mels: usize,
    /// Lower edge of the mel filter bank, Hz.
    pub f_min: f64,
    /// Upper edge of the mel filter bank, Hz.
    pub f_max: f64,
    /// Exponent of the magnitude spectrum (2 = power, 1 = magnitude).
    pub power: f64,
    /// Frames per window (item).
    pub frames: usize,
    /// Hop between windows, in frames.
    pub window_hop: usize,
    /// Windows kept per clip, the central ones; 0 = all.
    pub windows_per_clip: usize,
}

impl Default for LogMelParams {
    fn default() -> Self {
        Self {
            n_fft: 1024,
            hop: 512,
            n_mels: 128,
            f_min: 0.0,
            f_max: 8000.0,
            power: 2.0,
            frames: 5,
            window_hop: 1,
            windows_per_clip: 0,
        }
    }
}

/// `sys.float_info.epsilon`, the offset before the log.
pub const LOG_EPS: f64 = f64::EPSILON;

/// Slaney's mel scale (librosa `hz_to_mel(htk=False)`): linear below 1 kHz, log above.
pub fn hz_to_mel(hz: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= min_log_hz {
        min_log_hz / f_sp + (hz / min_log_hz).ln() / logstep
    } else {
        hz / f_sp
    }
}

/// Inverse of [`hz_to_mel`] (librosa `mel_to_hz(htk=False)`).
pub fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

/// librosa's `filters.mel(sr, n_fft, n_mels, fmin, fmax)` (Slaney scale and norm): `n_mels`
/// rows of `n_fft / 2 + 1` weights.
pub fn mel_filterbank(
    sr: f64,
    n_fft: usize,
    n_mels: usize,
    f_min: f64,
    f_max: f64,
) -> Vec<Vec<f64>> {
    let n_bins = n_fft / 2 + 1;
    let fft_hz: Vec<f64> = (0..n_bins)
        .map(|i| sr / 2.0 * i as f64 / (n_bins - 1) as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(f_min), hz_to_mel(f_max));
    let pts: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    (0..n_mels)
        .map(|b| {
            let (l, c, u) = (pts[b], pts[b + 1], pts[b + 2]);
            let norm = 2.0 / (u - l);
            fft_hz
                .iter()
                .map(|&f| ((f - l) / (c - l)).min((u - f) / (u - c)).max(0.0) * norm)
                .collect()
        })
        .collect()
}

/// Centre frequency (Hz) of each mel band of `p`.
pub fn band_centres(p: &LogMelParams) -> Vec<f64> {
    let (lo, hi) = (hz_to_mel(p.f_min), hz_to_mel(p.f_max));
    (1..=p.n_mels)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (p.n_mels + 1) as f64))
        .collect()
}

/// A prepared log-mel computer (window and filter bank precomputed; cheap to share).
pub struct LogMel {
    params: LogMelParams,
    window: Vec<f32>,
    /// Mel weights per band, stored sparsely as (first bin, weights).
    mel: Vec<(usize, Vec<f32>)>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl LogMel {
    /// Validates the parameters and precomputes the tables.
    pub fn new(p: &LogMelParams) -> Result<Self> {
        let sr = SAMPLE_RATE as f64;
        if p.n_fft < 2 || !p.n_fft.is_multiple_of(2) || p.n_fft > 16384 {
            bail!(
                "features.n_fft must be even and in [2, 16384], got {}",
                p.n_fft
            );
        }
        if p.hop == 0 || p.hop > p.n_fft {
            bail!(
                "features.hop must be in [1, n_fft = {}], got {}",
                p.n_fft,
                p.hop
            );
        }
        if p.n_mels == 0 || p.n_mels > 512 {
            bail!("features.n_mels must be in [1, 512], got {}", p.n_mels);
        }
        if !(p.f_min >= 0.0 && p.f_min < p.f_max && p.f_max <= sr / 2.0) {
            bail!(
                "features: need 0 <= f_min ({}) < f_max ({}) <= 8000 Hz",
                p.f_min,
                p.f_max
            );
        }
        if !(p.power > 0.0 && p.power <= 4.0) {
            bail!("features.power must be in (0, 4], got {}", p.power);
        }
        if p.frames == 0 || p.frames > 64 {
            bail!("features.frames must be in [1, 64], got {}", p.frames);
        }
        if p.window_hop == 0 {
            bail!("features.window_hop must be at least 1");
        }
        let window = (0..p.n_fft)
            .map(|n| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / p.n_fft as f64).cos()) as f32
            })
            .collect();
        let mel = mel_filterbank(sr, p.n_fft, p.n_mels, p.f_min, p.f_max)
            .into_iter()
            .map(|row| {
                let first = row.iter().position(|&w| w > 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w > 0.0).map_or(0, |l| l + 1);
                let w = row[first..last.max(first)]
                    .iter()
                    .map(|&w| w as f32)
                    .collect();
                (first, w)
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(p.n_fft);
        Ok(Self {
            params: p.clone(),
            window,
            mel,
            fft,
        })
    }

    /// The parameters this computer was built from.
    pub fn params(&self) -> &LogMelParams {
        &self.params
    }

    /// Shape of one item: (frames, n_mels).
    pub fn item_shape(&self) -> [usize; 2] {
        [self.params.frames, self.params.n_mels]
    }

    /// Frames of a clip of `len` samples (centred): `1 + len / hop`.
    pub fn n_frames(&self, len: usize) -> usize {
        1 + len / self.params.hop
    }

    /// Shortest clip (samples) accepted: reflection padding needs more than `n_fft / 2`
    /// samples, and the clip must give at least one window.
    pub fn min_samples(&self) -> usize {
        let need_frames = self.params.frames.saturating_sub(1) * self.params.hop;
        (self.params.n_fft / 2 + 1).max(need_frames)
    }

    /// The first frame of every window kept for a clip of `n_frames` frames.
    pub fn window_starts(&self, n_frames: usize) -> Vec<usize> {
        let p = &self.params;
        if n_frames < p.frames {
            return Vec::new();
        }
        let all: Vec<usize> = (0..=n_frames - p.frames).step_by(p.window_hop).collect();
        if p.windows_per_clip == 0 || all.len() <= p.windows_per_clip {
            return all;
        }
        let skip = (all.len() - p.windows_per_clip) / 2;
        all[skip..skip + p.windows_per_clip].to_vec()
    }

    /// Log-mel energies (dB), row-major (frames, n_mels). Errors on clips shorter than
    /// [`LogMel::min_samples`].
    pub fn log_mel(&self, signal: &[f32]) -> Result<Vec<f32>> {
        let p = &self.params;
        let half = p.n_fft / 2;
        if signal.len() < self.min_samples() {
            bail!(
                "clip of {} samples is too short (need at least {} at n_fft {}, hop {}, {} frames per window)",
                signal.len(),
                self.min_samples(),
                p.n_fft,
                p.hop,
                p.frames
            );
        }
        let n = signal.len() as isize;
        // numpy "reflect": index -k maps to k, index n-1+k to n-1-k.
        let at = |i: isize| -> f32 {
            let j = if i < 0 {
                -i
            } else if i >= n {
                2 * (n - 1) - i
            } else {
                i
            };
            signal[j as usize]
        };
        let mut scratch = self.fft.make_scratch_vec();
        let mut input = self.fft.make_input_vec();
        let mut spec = self.fft.make_output_vec();
        let mut pow = vec![0f32; spec.len()];
        let n_frames = self.n_frames(signal.len());
        let m = p.n_mels;
        let scale = 20.0 / p.power;
        let mut out = vec![0f32; n_frames * m];
        for f in 0..n_frames {
            let start = (f * p.hop) as isize - half as isize;
            for (k, (d, &w)) in input.iter_mut().zip(&self.window).enumerate() {
                *d = at(start + k as isize) * w;
            }
            self.fft
                .process_with_scratch(&mut input, &mut spec, &mut scratch)
                .expect("FFT buffers have the planned lengths");
            for (d, c) in pow.iter_mut().zip(&spec) {
                let e = c.norm_sqr();
                *d = if p.power == 2.0 {
                    e
                } else {
                    e.powf(p.power as f32 / 2.0)
                };
            }
            for (b, (first, w)) in self.mel.iter().enumerate() {
                let e: f32 = w.iter().zip(&pow[*first..]).map(|(a, b)| a * b).sum();
                out[f * m + b] = (scale * (e as f64 + LOG_EPS).log10()) as f32;
            }
        }
        Ok(out)
    }

    /// The windows of one clip, concatenated: (windows, frames, n_mels) row-major.
    pub fn windows(&self, signal: &[f32]) -> Result<Vec<f32>> {
        let lm = self.log_mel(signal)?;
        let m = self.params.n_mels;
        let per = self.params.frames * m;
        let starts = self.window_starts(lm.len() / m);
        let mut out = Vec::with_capacity(starts.len() * per);
        for s in starts {
            out.extend_from_slice(&lm[s * m..s * m + per]);
        }
        Ok(out)
    }
}

/// One anomaly-detection clip to featurise: its label (0 normal, 1 anomalous) and machine-ID
/// index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipLabel {
    pub label: u32,
    pub group: u32,
}

/// Clips per parallel chunk (bounds the waveforms in flight).
const CHUNK: usize = 64;

/// Produces clip `i` with `make(i)` (a 16 kHz waveform) for every entry of `clips`, turns it
/// into windows and builds an anomaly-detection split (clip indices in order). Each clip is
/// independent, so the result does not depend on the thread count; the first failing clip (in
/// order) is reported; errors of the features (a clip too short) get `name(i)` (e.g. its
/// file) as context, errors of `make` are passed on as they are (they name their file).
/// `progress(done)` is called after each chunk.
pub fn clip_split<F>(
    clips: &[ClipLabel],
    lm: &LogMel,
    progress: &mut dyn FnMut(u64),
    name: &(dyn Fn(usize) -> String + Sync),
    make: F,
) -> Result<crate::Split>
where
    F: Fn(usize) -> Result<Vec<f32>> + Sync,
{
    let shape = lm.item_shape();
    let per = shape[0] * shape[1];
    let (mut x, mut y, mut clip, mut group) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut start = 0;
    while start < clips.len() {
        let end = (start + CHUNK).min(clips.len());
        let chunk: Vec<Result<Vec<f32>>> = (start..end)
            .into_par_iter()
            .map(|i| {
                let w = make(i)?;
                lm.windows(&w).with_context(|| name(i))
            })
            .collect();
        for (i, r) in (start..end).zip(chunk) {
            let w = r?;
            let n = w.len() / per;
            x.extend_from_slice(&w);
            y.extend(std::iter::repeat_n(clips[i].label, n));
            clip.extend(std::iter::repeat_n(i as u32, n));
            group.extend(std::iter::repeat_n(clips[i].group, n));
        }
        progress(end as u64);
        start = end;
    }
    crate::Split::with_clips(x, &shape, y, clip, group)
}

/// Assembles an anomaly-detection [`crate::Dataset`] from its splits: classes `normal` /
/// `anomaly`, items (frames, n_mels) with layout `frames,mels`, machine-ID names `groups`.
pub fn machine_dataset(
    train: crate::Split,
    val: crate::Split,
    test: crate::Split,
    groups: Vec<String>,
    lm: &LogMel,
    description: serde_json::Value,
) -> crate::Dataset {
    crate::Dataset {
        train,
        val,
        test,
        classes: vec!["normal".into(), "anomaly".into()],
        input_shape: lm.item_shape().to_vec(),
        layout: "frames,mels".into(),
        normalization: None,
        description,
        task: crate::Task::AnomalyDetection,
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_scale_known_points() {
        // Linear part: 1000 Hz / (200/3) = 15 mel; log part: 6400 Hz = 15 + 27 mel.
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(500.0) - 7.5).abs() < 1e-12);
        assert!((hz_to_mel(6400.0) - 42.0).abs() < 1e-9);
        for hz in [0.0, 123.0, 999.0, 1000.0, 4321.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9);
        }
    }

    #[test]
    fn filterbank_triangles_have_slaney_area() {
        // 2 bands over 0–1500 Hz at sr 16000, n_fft 32 (bins every 500 Hz); band edges at
        // mel(1500) · k / 3 for k = 0..3.
        let fb = mel_filterbank(16000.0, 32, 2, 0.0, 1500.0);
        // By hand: mel(1500) = 15 + ln 1.5 / (ln 6.4 / 27) = 20.8975; edges 0, 464.389,
        // 928.779, 1500 Hz. Bin 1 (500 Hz) is on band 0's falling edge:
        // (928.779 − 500) / 464.389 · 2 / 928.779 = 0.00198824; bin 2 (1000 Hz) on band 1's
        // falling edge: (1500 − 1000) / 571.221 · 2 / 1035.611 = 0.00169044.
        assert!((hz_to_mel(1500.0) - 20.897_521_8).abs() < 1e-6);
        assert!((fb[0][1] - 0.001_988_24).abs() < 1e-8, "{}", fb[0][1]);
        assert!((fb[1][2] - 0.001_690_44).abs() < 1e-8, "{}", fb[1][2]);
        assert_eq!(fb[0][0], 0.0);
        assert_eq!(fb[1][10], 0.0);
    }

    #[test]
    fn window_selection() {
        let lm = LogMel::new(&LogMelParams::default()).unwrap();
        // 10 s: 1 + 160000 / 512 = 313 frames, 309 windows (the baseline's count).
        assert_eq!(lm.n_frames(160_000), 313);
        assert_eq!(lm.window_starts(313).len(), 309);
        let central = LogMel::new(&LogMelParams {
            windows_per_clip: 3,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(central.window_starts(313), vec![153, 154, 155]);
        assert_eq!(central.window_starts(6), vec![0, 1]);
        let hop2 = LogMel::new(&LogMelParams {
            window_hop: 2,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(hop2.window_starts(10), vec![0, 2, 4]);
        assert!(lm.window_starts(4).is_empty());
    }
}
