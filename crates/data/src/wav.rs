//! Reading WAV files: only 16-bit integer PCM, mono, 16 kHz is accepted (the Speech Commands
//! format); anything else is an error naming the file and what it found. Samples are scaled
//! to [-1, 1) by 1/32768.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::mfcc::{CLIP_SAMPLES, SAMPLE_RATE};

/// All samples of a 16-bit mono 16 kHz WAV file.
pub fn read(path: &Path) -> Result<Vec<f32>> {
    let mut r = hound::WavReader::open(path)
        .with_context(|| format!("{}: not a readable WAV file", path.display()))?;
    let s = r.spec();
    if s.channels != 1
        || s.sample_rate != SAMPLE_RATE as u32
        || s.bits_per_sample != 16
        || s.sample_format != hound::SampleFormat::Int
    {
        bail!(
            "{}: expected 16-bit PCM mono 16000 Hz WAV, found {}-bit {} with {} channel(s) at {} Hz",
            path.display(),
            s.bits_per_sample,
            if s.sample_format == hound::SampleFormat::Int {
                "PCM"
            } else {
                "float"
            },
            s.channels,
            s.sample_rate
        );
    }
    r.samples::<i16>()
        .map(|v| v.map(|v| v as f32 / 32768.0))
        .collect::<Result<Vec<f32>, _>>()
        .with_context(|| format!("{}: truncated or corrupt WAV data", path.display()))
}

/// A 1 s clip: shorter files are zero-padded at the end, longer ones cut to the first second.
pub fn read_clip(path: &Path) -> Result<Vec<f32>> {
    let mut x = read(path)?;
    x.resize(CLIP_SAMPLES, 0.0);
    Ok(x)
}
