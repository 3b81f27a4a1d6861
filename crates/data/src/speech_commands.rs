//! `speech_commands`: Speech Commands v0.02 from a folder, archive or URL. Split by the
//! official `validation_list.txt` / `testing_list.txt` (everything else is training); the
//! keywords (default the 10 of MLPerf Tiny) in the given order, then `_silence_` and
//! `_unknown_`. Per split, `_unknown_` takes ceil(unknown_percentage % × keyword clips) clips
//! drawn (seeded) from the other words and `_silence_` as many (silence_percentage) 1 s cuts
//! of the `_background_noise_` files at a random gain in [0, 1) — as TensorFlow's
//! `input_data.py` does. Clips shorter than 1 s are zero-padded at the end. Optional
//! training-only augmentation: a random time shift of up to ±`time_shift_ms` (zero fill) and,
//! with probability `background_frequency`, background noise at a gain in [0,
//! `background_volume`). Items are MFCCs (49, 10).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::features::featurise_parallel;
use crate::mfcc::{CLIP_SAMPLES, Mfcc, MfccParams};
use crate::seed::item_rng;
use crate::{Dataset, Progress, Split, source, wav};

/// The MLPerf Tiny keywords.
pub const KEYWORDS: [&str; 10] = [
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
];

/// Parameters of the `speech_commands` source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeechCommandsParams {
    /// Folder, `.tar.gz` archive, or http(s) URL.
    pub source: String,
    /// SHA-256 of the archive (required for URLs; checked for local archives when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default = "default_keywords")]
    pub keywords: Vec<String>,
    /// `_unknown_` clips per split, as a percentage of that split's keyword clips.
    #[serde(default = "ten")]
    pub unknown_percentage: f64,
    /// `_silence_` clips per split, as a percentage of that split's keyword clips.
    #[serde(default = "ten")]
    pub silence_percentage: f64,
    /// Training augmentation: maximum random time shift (ms); 0 = off.
    #[serde(default)]
    pub time_shift_ms: f64,
    /// Training augmentation: probability of mixing in background noise; 0 = off.
    #[serde(default)]
    pub background_frequency: f64,
    /// Training augmentation: maximum background-noise gain.
    #[serde(default = "default_volume")]
    pub background_volume: f64,
}

impl SpeechCommandsParams {
    /// The default keyword list (MLPerf Tiny).
    pub fn default_keywords() -> Vec<String> {
        KEYWORDS.iter().map(|s| s.to_string()).collect()
    }
}

fn default_keywords() -> Vec<String> {
    KEYWORDS.iter().map(|s| s.to_string()).collect()
}
fn ten() -> f64 {
    10.0
}
fn default_volume() -> f64 {
    0.1
}

impl SpeechCommandsParams {
    /// Checks the fields that can be checked without reading the data.
    pub fn validate(&self) -> Result<()> {
        if self.source.is_empty() {
            bail!("dataset.source must name a folder, an archive or a URL");
        }
        source::check_sha256("dataset.sha256", &self.sha256)?;
        if self.keywords.is_empty() {
            bail!("dataset.keywords must not be empty");
        }
        let mut seen = HashSet::new();
        for k in &self.keywords {
            if k.is_empty() || k.starts_with('_') || k.contains(['/', '\\']) || !seen.insert(k) {
                bail!("dataset.keywords: {k:?} is empty, reserved, a path or a duplicate");
            }
        }
        for (name, v, max) in [
            ("unknown_percentage", self.unknown_percentage, 1000.0),
            ("silence_percentage", self.silence_percentage, 1000.0),
            ("time_shift_ms", self.time_shift_ms, 1000.0),
            ("background_frequency", self.background_frequency, 1.0),
            ("background_volume", self.background_volume, 1.0),
        ] {
            if !(0.0..=max).contains(&v) {
                bail!("dataset.{name} must be in [0, {max}], got {v}");
            }
        }
        Ok(())
    }
}

fn read_list(root: &Path, name: &str) -> Result<HashSet<String>> {
    let path = root.join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.trim().replace('\\', "/"))
        .filter(|l| !l.is_empty())
        .collect())
}

fn wavs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")))
        .collect();
    v.sort();
    Ok(v)
}

enum Item {
    File(PathBuf),
    Silence,
}

/// Builds the three splits.
pub fn build(
    p: &SpeechCommandsParams,
    mfcc: &MfccParams,
    seed: u64,
    downloads: &Path,
    progress: Progress,
) -> Result<Dataset> {
    let mfcc = Mfcc::new(mfcc)?;
    let src = source::open(
        &p.source,
        p.sha256.as_deref(),
        downloads,
        "testing_list.txt",
        progress,
    )?;
    let root = &src.root;
    let lists = [
        read_list(root, "validation_list.txt")?,
        read_list(root, "testing_list.txt")?,
    ];
    let split_of = |rel: &str| -> usize {
        if lists[0].contains(rel) {
            1
        } else if lists[1].contains(rel) {
            2
        } else {
            0
        }
    };
    let n_kw = p.keywords.len();
    // (split, label, path) for keyword files; (split, path) for other words.
    let mut kw_items: [Vec<(u32, PathBuf)>; 3] = Default::default();
    let mut others: [Vec<PathBuf>; 3] = Default::default();
    for (k, word) in p.keywords.iter().enumerate() {
        let dir = root.join(word);
        if !dir.is_dir() {
            bail!("keyword folder {} is missing", dir.display());
        }
        let files = wavs_in(&dir)?;
        if files.is_empty() {
            bail!(
                "class '{word}' is empty: no .wav files in {}",
                dir.display()
            );
        }
        for f in files {
            let rel = format!(
                "{word}/{}",
                f.file_name().unwrap_or_default().to_string_lossy()
            );
            kw_items[split_of(&rel)].push((k as u32, f));
        }
    }
    let mut words: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("listing {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|d| d.is_dir())
        .collect();
    words.sort();
    for d in words {
        let name = d
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if name.starts_with('_') || name.starts_with('.') || p.keywords.contains(&name) {
            continue;
        }
        for f in wavs_in(&d)? {
            let rel = format!(
                "{name}/{}",
                f.file_name().unwrap_or_default().to_string_lossy()
            );
            others[split_of(&rel)].push(f);
        }
    }
    let noise_dir = root.join("_background_noise_");
    let noise: Vec<Vec<f32>> = if noise_dir.is_dir() {
        wavs_in(&noise_dir)?
            .iter()
            .map(|f| wav::read(f))
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    let noise: Vec<Vec<f32>> = noise
        .into_iter()
        .filter(|n| n.len() >= CLIP_SAMPLES)
        .collect();
    let needs_noise = p.silence_percentage > 0.0 || p.background_frequency > 0.0;
    if needs_noise && noise.is_empty() {
        bail!(
            "{}: no background-noise .wav file of at least 1 s to cut _silence_ from (or set silence_percentage = 0 and background_frequency = 0)",
            noise_dir.display()
        );
    }
    let shape = mfcc.clip_shape();
    let mut splits = Vec::new();
    for (s, name) in ["train", "val", "test"].into_iter().enumerate() {
        let kw = std::mem::take(&mut kw_items[s]);
        let n_unknown = (kw.len() as f64 * p.unknown_percentage / 100.0).ceil() as usize;
        let n_silence = (kw.len() as f64 * p.silence_percentage / 100.0).ceil() as usize;
        let mut pool = std::mem::take(&mut others[s]);
        if n_unknown > 0 && pool.is_empty() {
            bail!(
                "{}: class '_unknown_' is empty: no words other than the keywords in the {name} split",
                root.display()
            );
        }
        pool.shuffle(&mut item_rng(seed, &[0x756e_6b6e, s as u64]));
        let mut items: Vec<(u32, Item)> = kw.into_iter().map(|(l, f)| (l, Item::File(f))).collect();
        items.extend(
            (0..n_unknown).map(|i| (n_kw as u32 + 1, Item::File(pool[i % pool.len()].clone()))),
        );
        items.extend((0..n_silence).map(|_| (n_kw as u32, Item::Silence)));
        let total = items.len() as u64;
        let augment = s == 0 && (p.time_shift_ms > 0.0 || p.background_frequency > 0.0);
        let x = featurise_parallel(items.len(), &mfcc, &mut |d| progress(name, d, total), |i| {
            let mut rng = item_rng(seed, &[0x7363_6d64, s as u64, i as u64]);
            let cut = |rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
                let n = &noise[rng.random_range(0..noise.len())];
                let off = rng.random_range(0..=n.len() - CLIP_SAMPLES);
                n[off..off + CLIP_SAMPLES].to_vec()
            };
            let mut x = match &items[i].1 {
                Item::Silence => {
                    let g: f32 = rng.random();
                    cut(&mut rng).into_iter().map(|v| v * g).collect()
                }
                Item::File(f) => wav::read_clip(f)?,
            };
            if augment && matches!(items[i].1, Item::File(_)) {
                let max = (p.time_shift_ms * 16.0) as i64;
                if max > 0 {
                    let sh = rng.random_range(-max..=max);
                    let src = x.clone();
                    for (j, v) in x.iter_mut().enumerate() {
                        let k = j as i64 - sh;
                        *v = if (0..CLIP_SAMPLES as i64).contains(&k) {
                            src[k as usize]
                        } else {
                            0.0
                        };
                    }
                }
                if rng.random::<f64>() < p.background_frequency {
                    let g = rng.random::<f32>() * p.background_volume as f32;
                    let n = cut(&mut rng);
                    for (v, b) in x.iter_mut().zip(n) {
                        *v = (*v + g * b).clamp(-1.0, 1.0);
                    }
                }
            }
            Ok(x)
        })?;
        let y = items.iter().map(|(l, _)| *l).collect();
        splits.push(if total == 0 {
            Split::empty(&shape)
        } else {
            Split::new(x, &shape, y)?
        });
    }
    if splits[0].is_empty() {
        bail!("{}: the training split is empty", root.display());
    }
    let [train, val, test]: [Split; 3] = splits.try_into().expect("three splits");
    let mut classes = p.keywords.clone();
    classes.push("_silence_".into());
    classes.push("_unknown_".into());
    Ok(Dataset {
        train,
        val,
        test,
        classes,
        input_shape: shape.to_vec(),
        layout: "frames,mfcc".into(),
        normalization: None,
        description: serde_json::json!({"kind": "speech_commands", "note": "Speech Commands WAVs, MFCC (frames, coefficients)"}),
        ..Default::default()
    })
}
