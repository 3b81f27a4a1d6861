//! `cifar10`: the CIFAR-10 binary batches (`data_batch_1..5.bin`, `test_batch.bin`; each
//! record is 1 label byte + 3072 bytes: 1024 R, 1024 G, 1024 B, row-major 32×32) from a
//! folder, an archive or a URL with checksum. The validation split is carved from the
//! training batches by a seeded, stratified choice of `val_per_class` images per class; both
//! keep the original record order. Pixels are scaled to [0, 1]; items are (3, 32, 32).

use std::path::Path;

use anyhow::{Context, Result, bail};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::seed::item_rng;
use crate::{Dataset, Progress, Split, source};

/// Default class names (used when `batches.meta.txt` is absent).
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const RECORD: usize = 1 + 3072;

/// Parameters of the `cifar10` source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cifar10Params {
    /// Folder, `.tar.gz` archive, or http(s) URL of the binary version.
    pub source: String,
    /// SHA-256 of the archive (required for URLs; checked for local archives when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Training images per class moved to the validation split.
    #[serde(default = "default_val")]
    pub val_per_class: usize,
}

fn default_val() -> usize {
    500
}

impl Cifar10Params {
    /// Checks the fields that can be checked without reading the data.
    pub fn validate(&self) -> Result<()> {
        if self.source.is_empty() {
            bail!("dataset.source must name a folder, an archive or a URL");
        }
        source::check_sha256("dataset.sha256", &self.sha256)
    }
}

/// Reads one batch file: (pixels scaled to [0, 1], labels).
pub fn read_batch(path: &Path) -> Result<(Vec<f32>, Vec<u32>)> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading CIFAR-10 batch {}", path.display()))?;
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        bail!(
            "{}: {} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (truncated?)",
            path.display(),
            bytes.len()
        );
    }
    let mut x = Vec::with_capacity(bytes.len() / RECORD * 3072);
    let mut y = Vec::with_capacity(bytes.len() / RECORD);
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] > 9 {
            bail!(
                "{}: record {i} has label {} (CIFAR-10 labels are 0..9)",
                path.display(),
                rec[0]
            );
        }
        y.push(rec[0] as u32);
        x.extend(rec[1..].iter().map(|&b| b as f32 / 255.0));
    }
    Ok((x, y))
}

fn class_names(root: &Path) -> Result<Vec<String>> {
    let meta = root.join("batches.meta.txt");
    if !meta.is_file() {
        return Ok(CLASSES.iter().map(|s| s.to_string()).collect());
    }
    let text =
        std::fs::read_to_string(&meta).with_context(|| format!("reading {}", meta.display()))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != 10 {
        bail!(
            "{}: expected 10 class names, found {}",
            meta.display(),
            names.len()
        );
    }
    Ok(names)
}

fn take(x: &[f32], y: &[u32], idx: &[usize]) -> Result<Split> {
    let mut xs = Vec::with_capacity(idx.len() * 3072);
    for &i in idx {
        xs.extend_from_slice(&x[i * 3072..(i + 1) * 3072]);
    }
    if idx.is_empty() {
        return Ok(Split::empty(&[3, 32, 32]));
    }
    Split::new(xs, &[3, 32, 32], idx.iter().map(|&i| y[i]).collect())
}

/// Builds the three splits.
pub fn build(
    p: &Cifar10Params,
    seed: u64,
    downloads: &Path,
    progress: Progress,
) -> Result<Dataset> {
    let src = source::open(
        &p.source,
        p.sha256.as_deref(),
        downloads,
        "data_batch_1.bin",
        progress,
    )?;
    let root = &src.root;
    let classes = class_names(root)?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for b in 1..=5 {
        let (bx, by) = read_batch(&root.join(format!("data_batch_{b}.bin")))?;
        x.extend(bx);
        y.extend(by);
        progress("read", b, 6);
    }
    let (tx, ty) = read_batch(&root.join("test_batch.bin"))?;
    progress("read", 6, 6);
    let mut val = Vec::new();
    let mut train = Vec::new();
    for c in 0..10u32 {
        let mut idx: Vec<usize> = (0..y.len()).filter(|&i| y[i] == c).collect();
        if idx.is_empty() {
            bail!(
                "{}: class '{}' has no training images in data_batch_1..5.bin",
                root.display(),
                classes[c as usize]
            );
        }
        if idx.len() <= p.val_per_class {
            bail!(
                "{}: class '{}' has {} training images, too few to move val_per_class = {} to validation",
                root.display(),
                classes[c as usize],
                idx.len(),
                p.val_per_class
            );
        }
        idx.shuffle(&mut item_rng(seed, &[0x6369_6661, c as u64]));
        val.extend_from_slice(&idx[..p.val_per_class]);
        train.extend_from_slice(&idx[p.val_per_class..]);
    }
    val.sort_unstable();
    train.sort_unstable();
    let test_idx: Vec<usize> = (0..ty.len()).collect();
    Ok(Dataset {
        train: take(&x, &y, &train)?,
        val: take(&x, &y, &val)?,
        test: take(&tx, &ty, &test_idx)?,
        classes,
        input_shape: vec![3, 32, 32],
        layout: "channels,height,width".into(),
        normalization: None,
        description: serde_json::json!({"kind": "cifar10", "note": "CIFAR-10 binary batches, RGB planes in [0, 1]"}),
        ..Default::default()
    })
}
