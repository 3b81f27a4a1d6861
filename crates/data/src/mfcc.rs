//! The MFCC front end (spec §1, MLPerf Tiny KWS): 16 kHz audio, periodic Hann window of 480
//! samples, hop 320, FFT 512 (frame zero-padded at the end), *magnitude* spectrum, 40 mel bands
//! over 20–4000 Hz built like TensorFlow's `linear_to_mel_weight_matrix` (HTK mel scale,
//! triangles in the mel domain evaluated at the FFT bin centres, DC bin zeroed, no area
//! normalisation), natural log of (mel + `log_offset`, 1e-6), orthonormal DCT-II (scipy
//! `norm="ortho"`; TF's `mfccs_from_log_mel_spectrograms` differs only by a factor √2 on
//! coefficient 0, which the per-coefficient normalisation removes), first 10 coefficients.
//! No centering/padding of the signal: a 16000-sample clip gives 1 + (16000 − 480) / 320 = 49
//! frames. Output layout per clip: row-major (frames, coefficients) = (49, 10).

use std::sync::Arc;

use anyhow::{Result, bail};
use rayon::prelude::*;
use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

/// MFCC settings (the `features` table). Defaults are the spec's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfccParams {
    /// Analysis window length in milliseconds (480 samples at 16 kHz).
    pub window_ms: f64,
    /// Hop between frames in milliseconds (320 samples at 16 kHz).
    pub hop_ms: f64,
    /// FFT length (≥ window length; the frame is zero-padded).
    pub n_fft: usize,
    /// Number of mel bands.
    pub n_mels: usize,
    /// Number of cepstral coefficients kept.
    pub n_mfcc: usize,
    /// Lower edge of the mel filter bank, Hz.
    pub f_min: f64,
    /// Upper edge of the mel filter bank, Hz.
    pub f_max: f64,
    /// Offset added to the mel energies before the log.
    pub log_offset: f64,
}

impl Default for MfccParams {
    fn default() -> Self {
        Self {
            window_ms: 30.0,
            hop_ms: 20.0,
            n_fft: 512,
            n_mels: 40,
            n_mfcc: 10,
            f_min: 20.0,
            f_max: 4000.0,
            log_offset: 1e-6,
        }
    }
}

/// The sample rate every audio source is brought to.
pub const SAMPLE_RATE: usize = 16_000;
/// Clip length in samples (1 s).
pub const CLIP_SAMPLES: usize = SAMPLE_RATE;

/// HTK mel scale, as TensorFlow uses.
pub fn hz_to_mel(hz: f64) -> f64 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

/// A prepared MFCC computer: window, mel matrix and DCT matrix precomputed; cheap to share.
pub struct Mfcc {
    params: MfccParams,
    window: Vec<f32>,
    hop: usize,
    /// Mel weights, one row of `n_fft/2+1` per band, stored sparsely as (first bin, weights).
    mel: Vec<(usize, Vec<f32>)>,
    /// DCT-II orthonormal, `n_mfcc` rows × `n_mels` columns.
    dct: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for Mfcc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mfcc")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Mfcc {
    /// Validates the parameters and precomputes the tables.
    pub fn new(params: &MfccParams) -> Result<Self> {
        let sr = SAMPLE_RATE as f64;
        let win = params.window_ms * sr / 1000.0;
        let hop = params.hop_ms * sr / 1000.0;
        if win.fract() != 0.0 || win < 1.0 || hop.fract() != 0.0 || hop < 1.0 {
            bail!(
                "features: window_ms ({}) and hop_ms ({}) must be whole, positive numbers of samples at 16 kHz",
                params.window_ms,
                params.hop_ms
            );
        }
        let (win, hop) = (win as usize, hop as usize);
        if win > CLIP_SAMPLES {
            bail!(
                "features: window_ms {} is longer than the 1 s clip",
                params.window_ms
            );
        }
        if params.n_fft < win {
            bail!(
                "features: n_fft ({}) must be at least the window length ({win} samples)",
                params.n_fft
            );
        }
        if params.n_mels == 0 || params.n_mfcc == 0 || params.n_mfcc > params.n_mels {
            bail!(
                "features: need 0 < n_mfcc ({}) <= n_mels ({})",
                params.n_mfcc,
                params.n_mels
            );
        }
        if !(params.f_min >= 0.0 && params.f_min < params.f_max && params.f_max <= sr / 2.0) {
            bail!(
                "features: need 0 <= f_min ({}) < f_max ({}) <= 8000 Hz",
                params.f_min,
                params.f_max
            );
        }
        if params.log_offset.is_nan() || params.log_offset <= 0.0 {
            bail!(
                "features: log_offset must be > 0, got {}",
                params.log_offset
            );
        }
        let window = (0..win)
            .map(|n| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / win as f64).cos()) as f32
            })
            .collect();
        let n_bins = params.n_fft / 2 + 1;
        let mel = mel_matrix(params.n_mels, n_bins, sr, params.f_min, params.f_max)
            .into_iter()
            .map(|row| {
                let first = row.iter().position(|&w| w > 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w > 0.0).map_or(0, |l| l + 1);
                let weights = row[first..last.max(first)]
                    .iter()
                    .map(|&w| w as f32)
                    .collect();
                (first, weights)
            })
            .collect();
        let (m, k) = (params.n_mels, params.n_mfcc);
        let mut dct = vec![0f32; k * m];
        for i in 0..k {
            let scale = if i == 0 {
                (1.0 / m as f64).sqrt()
            } else {
                (2.0 / m as f64).sqrt()
            };
            for j in 0..m {
                let c =
                    (std::f64::consts::PI * i as f64 * (2 * j + 1) as f64 / (2 * m) as f64).cos();
                dct[i * m + j] = (scale * c) as f32;
            }
        }
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(params.n_fft);
        Ok(Self {
            params: params.clone(),
            window,
            hop,
            mel,
            dct,
            fft,
        })
    }

    /// Number of frames for a clip of `len` samples (no centering).
    pub fn n_frames(&self, len: usize) -> usize {
        if len < self.window.len() {
            0
        } else {
            1 + (len - self.window.len()) / self.hop
        }
    }

    /// The per-clip output shape (frames, coefficients) for a 1 s clip.
    pub fn clip_shape(&self) -> [usize; 2] {
        [self.n_frames(CLIP_SAMPLES), self.params.n_mfcc]
    }

    /// The parameters this computer was built from.
    pub fn params(&self) -> &MfccParams {
        &self.params
    }

    /// Log-mel energies, row-major (frames, n_mels).
    pub fn log_mel(&self, signal: &[f32]) -> Vec<f32> {
        let mut scratch = self.fft.make_scratch_vec();
        let mut input = self.fft.make_input_vec();
        let mut spec = self.fft.make_output_vec();
        let mut mag = vec![0f32; spec.len()];
        let n_frames = self.n_frames(signal.len());
        let m = self.params.n_mels;
        let mut out = vec![0f32; n_frames * m];
        for f in 0..n_frames {
            let frame = &signal[f * self.hop..f * self.hop + self.window.len()];
            input.fill(0.0);
            for ((d, &s), &w) in input.iter_mut().zip(frame).zip(&self.window) {
                *d = s * w;
            }
            self.fft
                .process_with_scratch(&mut input, &mut spec, &mut scratch)
                .expect("FFT buffers have the planned lengths");
            for (d, c) in mag.iter_mut().zip(&spec) {
                *d = c.norm();
            }
            for (b, (first, w)) in self.mel.iter().enumerate() {
                let e: f32 = w.iter().zip(&mag[*first..]).map(|(a, b)| a * b).sum();
                out[f * m + b] = (e as f64 + self.params.log_offset).ln() as f32;
            }
        }
        out
    }

    /// MFCCs of one clip, row-major (frames, n_mfcc).
    pub fn compute(&self, signal: &[f32]) -> Vec<f32> {
        let lm = self.log_mel(signal);
        let (m, k) = (self.params.n_mels, self.params.n_mfcc);
        let mut out = Vec::with_capacity(lm.len() / m * k);
        for row in lm.chunks_exact(m) {
            for i in 0..k {
                out.push(
                    self.dct[i * m..(i + 1) * m]
                        .iter()
                        .zip(row)
                        .map(|(a, b)| a * b)
                        .sum(),
                );
            }
        }
        out
    }

    /// MFCCs of many 1 s clips in parallel (each clip independent, so the result does not
    /// depend on the thread count); concatenated (clips, frames, n_mfcc).
    pub fn compute_batch(&self, clips: &[Vec<f32>]) -> Vec<f32> {
        let per: Vec<Vec<f32>> = clips.par_iter().map(|c| self.compute(c)).collect();
        per.concat()
    }
}

/// TensorFlow's `linear_to_mel_weight_matrix`, transposed: `n_mels` rows of `n_bins` weights.
fn mel_matrix(n_mels: usize, n_bins: usize, sr: f64, f_min: f64, f_max: f64) -> Vec<Vec<f64>> {
    let nyquist = sr / 2.0;
    // Bin centre frequencies, DC bin excluded (weight 0), as in TF (`bands_to_zero = 1`).
    let bin_mel: Vec<f64> = (0..n_bins)
        .map(|i| hz_to_mel(nyquist * i as f64 / (n_bins - 1) as f64))
        .collect();
    let (lo, hi) = (hz_to_mel(f_min), hz_to_mel(f_max));
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| lo + (hi - lo) * i as f64 / (n_mels + 1) as f64)
        .collect();
    (0..n_mels)
        .map(|b| {
            let (l, c, u) = (edges[b], edges[b + 1], edges[b + 2]);
            (0..n_bins)
                .map(|i| {
                    if i == 0 {
                        return 0.0;
                    }
                    let x = bin_mel[i];
                    ((x - l) / (c - l)).min((u - x) / (u - c)).max(0.0)
                })
                .collect()
        })
        .collect()
}

/// Centre frequency (Hz) of each mel band.
pub fn mel_band_centres(params: &MfccParams) -> Vec<f64> {
    let (lo, hi) = (hz_to_mel(params.f_min), hz_to_mel(params.f_max));
    (1..=params.n_mels)
        .map(|i| {
            let mel = lo + (hi - lo) * i as f64 / (params.n_mels + 1) as f64;
            700.0 * ((mel / 1127.0).exp() - 1.0)
        })
        .collect()
}
