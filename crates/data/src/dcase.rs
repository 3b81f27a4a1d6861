//! `dcase2020`: machine sounds in the DCASE 2020 task 2 layout (ToyADMOS ToyCar /
//! ToyConveyor and MIMII fan / pump / slider / valve, the MLPerf Tiny anomaly-detection data):
//! `<root>/<machine_type>/train/normal_id_XX_*.wav` and
//! `<root>/<machine_type>/test/{normal,anomaly}_id_XX_*.wav`, 16-bit mono 16 kHz WAV. The
//! source is a folder holding `<machine_type>/train` (at depth ≤ 2), a `.tar.gz` / `.tar`
//! archive, or a URL with its sha256 (see [`crate::source`]; the official zip files must be
//! unpacked first).
//!
//! Training: normal clips only (per ID at most `train_clips`, a seeded choice; 0 = all), of
//! which a seeded `val_fraction` per ID (at least one clip stays in training) forms the
//! validation split. Test: per ID the normal and the anomalous clips (each at most
//! `test_clips`, a seeded choice; 0 = all). Clips are ordered by ID, then (test) normal before
//! anomalous, then file name. Every clip becomes log-mel windows ([`crate::logmel`]); `y` is
//! the clip's label (0 normal, 1 anomaly), `group` its machine ID (`groups` = `id_XX`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::logmel::{ClipLabel, LogMel, LogMelParams, clip_split, machine_dataset};
use crate::seed::item_rng;
use crate::{Dataset, Progress, source, wav};

/// Parameters of the `dcase2020` source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DcaseParams {
    /// Folder, `.tar.gz` / `.tar` archive, or http(s) URL.
    pub source: String,
    /// SHA-256 of the archive (required for URLs; checked for local archives when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The machine type folder, e.g. `ToyCar`, `fan`.
    pub machine_type: String,
    /// Machine IDs to use (the XX of `id_XX`); empty = every ID of the training folder.
    #[serde(default)]
    pub ids: Vec<u32>,
    /// Normal training clips per ID before the validation hold-out (0 = all).
    #[serde(default)]
    pub train_clips: usize,
    /// Test clips per ID and label (0 = all).
    #[serde(default)]
    pub test_clips: usize,
    /// Fraction of each ID's training clips held out for validation.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
}

fn default_val_fraction() -> f64 {
    0.1
}

impl DcaseParams {
    /// Checks the fields that can be checked without reading the data.
    pub fn validate(&self) -> Result<()> {
        if self.source.is_empty() {
            bail!("dataset.source must name a folder, an archive or a URL");
        }
        source::check_sha256("dataset.sha256", &self.sha256)?;
        if self.machine_type.is_empty()
            || self.machine_type.contains(['/', '\\'])
            || self.machine_type.starts_with('.')
        {
            bail!(
                "dataset.machine_type must be a folder name such as \"ToyCar\" or \"fan\", got {:?}",
                self.machine_type
            );
        }
        let mut ids = self.ids.clone();
        ids.sort();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            bail!("dataset.ids has duplicates: {:?}", self.ids);
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            bail!(
                "dataset.val_fraction must be in [0, 1), got {}",
                self.val_fraction
            );
        }
        Ok(())
    }
}

/// The label and machine ID in a DCASE file name (`normal_id_00_00000000.wav`).
pub fn parse_name(path: &Path) -> Result<(u32, u32)> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let bad = || {
        anyhow::anyhow!(
            "{}: file name not in the DCASE form normal_id_XX_*.wav / anomaly_id_XX_*.wav",
            path.display()
        )
    };
    let stem = name
        .strip_suffix(".wav")
        .or_else(|| name.strip_suffix(".WAV"))
        .ok_or_else(bad)?;
    let (label, rest) = if let Some(r) = stem.strip_prefix("normal_id_") {
        (0, r)
    } else if let Some(r) = stem.strip_prefix("anomaly_id_") {
        (1, r)
    } else {
        return Err(bad());
    };
    let (id, tail) = rest.split_once('_').ok_or_else(bad)?;
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) || tail.is_empty() {
        return Err(bad());
    }
    Ok((label, id.parse().map_err(|_| bad())?))
}

/// The WAV files of `dir` by (label, id), each list sorted by name.
fn scan(dir: &Path) -> Result<BTreeMap<(u32, u32), Vec<PathBuf>>> {
    if !dir.is_dir() {
        bail!("folder {} is missing", dir.display());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")))
        .collect();
    files.sort();
    let mut out: BTreeMap<(u32, u32), Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        let key = parse_name(&f)?;
        out.entry(key).or_default().push(f);
    }
    Ok(out)
}

/// A seeded choice of at most `n` (0 = all) of `files`, back in name order.
fn choose(files: &[PathBuf], n: usize, seed: u64, tags: &[u64]) -> Vec<PathBuf> {
    let mut v = files.to_vec();
    if n > 0 && n < v.len() {
        v.shuffle(&mut item_rng(seed, tags));
        v.truncate(n);
        v.sort();
    }
    v
}

/// Builds the three splits.
pub fn build(
    p: &DcaseParams,
    features: &LogMelParams,
    seed: u64,
    downloads: &Path,
    progress: Progress,
) -> Result<Dataset> {
    let lm = LogMel::new(features)?;
    let marker = format!("{}/train", p.machine_type);
    let src = source::open(&p.source, p.sha256.as_deref(), downloads, &marker, progress)?;
    let base = src.root.join(&p.machine_type);
    let (train_dir, test_dir) = (base.join("train"), base.join("test"));
    let train_files = scan(&train_dir)?;
    let test_files = scan(&test_dir)?;
    if let Some(((_, id), f)) = train_files.iter().find(|((l, _), _)| *l == 1) {
        bail!(
            "{}: anomalous clip (id_{id:02}) in the training folder, which holds normal clips only",
            f[0].display()
        );
    }
    let ids: Vec<u32> = if p.ids.is_empty() {
        train_files.keys().map(|&(_, id)| id).collect()
    } else {
        p.ids.clone()
    };
    if ids.is_empty() {
        bail!(
            "{}: no training clips normal_id_XX_*.wav",
            train_dir.display()
        );
    }
    let mut sets: [Vec<(ClipLabel, PathBuf)>; 3] = Default::default();
    for (g, &id) in ids.iter().enumerate() {
        let group = g as u32;
        let Some(train) = train_files.get(&(0, id)) else {
            bail!(
                "{}: no training clips normal_id_{id:02}_*.wav for machine ID {id}",
                train_dir.display()
            );
        };
        let mut train = choose(train, p.train_clips, seed, &[0x6463_7472, id as u64]);
        let n_val = ((train.len() as f64 * p.val_fraction).round() as usize).min(train.len() - 1);
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut item_rng(seed, &[0x6463_7661, id as u64]));
        let mut val_idx: Vec<usize> = order[..n_val].to_vec();
        val_idx.sort();
        let val: Vec<PathBuf> = val_idx.iter().map(|&i| train[i].clone()).collect();
        train = (0..train.len())
            .filter(|i| !val_idx.contains(i))
            .map(|i| train[i].clone())
            .collect();
        let normal = ClipLabel { label: 0, group };
        sets[0].extend(train.into_iter().map(|f| (normal, f)));
        sets[1].extend(val.into_iter().map(|f| (normal, f)));
        for label in [0, 1] {
            let Some(test) = test_files.get(&(label, id)) else {
                bail!(
                    "{}: no {} test clips {}_id_{id:02}_*.wav for machine ID {id}",
                    test_dir.display(),
                    if label == 0 { "normal" } else { "anomalous" },
                    if label == 0 { "normal" } else { "anomaly" },
                );
            };
            let chosen = choose(
                test,
                p.test_clips,
                seed,
                &[0x6463_7465, id as u64, label as u64],
            );
            sets[2].extend(chosen.into_iter().map(|f| (ClipLabel { label, group }, f)));
        }
    }
    let mut splits = Vec::new();
    for (set, name) in sets.iter().zip(["train", "val", "test"]) {
        let labels: Vec<ClipLabel> = set.iter().map(|(l, _)| *l).collect();
        let total = set.len() as u64;
        splits.push(clip_split(
            &labels,
            &lm,
            &mut |d| progress(name, d, total),
            &|i| set[i].1.display().to_string(),
            |i| wav::read(&set[i].1),
        )?);
    }
    let [train, val, test]: [crate::Split; 3] = splits.try_into().expect("three splits");
    Ok(machine_dataset(
        train,
        val,
        test,
        ids.iter().map(|id| format!("id_{id:02}")).collect(),
        &lm,
        serde_json::json!({
            "kind": "dcase2020",
            "machine_type": p.machine_type,
            "note": "DCASE 2020 task 2 layout WAVs, log-mel windows (frames, mels)",
        }),
    ))
}
