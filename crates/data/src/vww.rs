//! `vww`: MLPerf Tiny's visual wake words images in their folder layout,
//! `<root>/person/*.{jpg,jpeg,png}` and `<root>/non_person/*.{jpg,jpeg,png}` (class 1 =
//! person, 0 = non_person). The source is a folder holding `person/` and `non_person/` (at
//! depth ≤ 2), a `.tar.gz` / `.tar` archive, or a URL with its sha256 (see [`crate::source`]).
//!
//! Every image is decoded with the `image` crate (PNG / JPEG; the format is guessed from the
//! content, falling back to the extension), converted to 8-bit RGB (grey is replicated, alpha is
//! dropped, not composited), and resized to `size` × `size` with
//! `image::imageops::resize(…, FilterType::Triangle)` — bilinear, with the triangle kernel
//! widened by the scale factor when shrinking (an area-weighted average), pixel centres at
//! (i + 0.5) · in/out, results rounded to 8 bits; an image already `size` × `size` is copied.
//! The aspect ratio is not kept (no crop). Items are (3, size, size) RGB planes in [0, 1]
//! (`value / 255`); normalisation (per channel, training statistics) is done by
//! [`crate::build`].
//!
//! Files: those of each class folder ending in `.jpg`, `.jpeg` or `.png` (any case), sorted by
//! name. Anything else in a class folder (other extensions, subfolders, hidden files such as
//! `.DS_Store`) is skipped; the count is logged and recorded in the description (`skipped`).
//! Per class at most `per_class` files (a seeded choice; 0 = all), then a seeded
//! `test_fraction` and `val_fraction` of them (rounded) form the test and validation splits;
//! at least one image per class stays in training. Splits are class-major (non_person first),
//! file-name order within a class. A missing or empty class folder and an undecodable image
//! are errors naming the folder or file.
//!
//! Memory: every image is held as 3 · size² f32 (108 KiB at 96), so the full MLPerf Tiny set
//! (~110 000 images) needs ~12 GB; `per_class` bounds it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use image::RgbImage;
use image::imageops::FilterType;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::seed::item_rng;
use crate::{Dataset, Progress, Split, source};

/// Class names, in label order (folder names of the layout).
pub const CLASSES: [&str; 2] = ["non_person", "person"];

/// File extensions read (compared lower-case).
pub const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Parameters of the `vww` source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VwwParams {
    /// Folder, `.tar.gz` / `.tar` archive, or http(s) URL.
    pub source: String,
    /// SHA-256 of the archive (required for URLs; checked for local archives when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Side of the square output images.
    #[serde(default = "default_size")]
    pub size: usize,
    /// Images per class before the split (a seeded choice; 0 = all).
    #[serde(default)]
    pub per_class: usize,
    /// Fraction of each class held out for validation.
    #[serde(default = "default_fraction")]
    pub val_fraction: f64,
    /// Fraction of each class held out for testing.
    #[serde(default = "default_fraction")]
    pub test_fraction: f64,
}

pub(crate) fn default_size() -> usize {
    96
}

fn default_fraction() -> f64 {
    0.1
}

/// Checks an image side parameter.
pub(crate) fn check_size(size: usize) -> Result<()> {
    if !(8..=512).contains(&size) {
        bail!("dataset.size must be in [8, 512] pixels, got {size}");
    }
    Ok(())
}

impl VwwParams {
    /// Checks the fields that can be checked without reading the data.
    pub fn validate(&self) -> Result<()> {
        if self.source.is_empty() {
            bail!("dataset.source must name a folder, an archive or a URL");
        }
        source::check_sha256("dataset.sha256", &self.sha256)?;
        check_size(self.size)?;
        for (name, f) in [
            ("val_fraction", self.val_fraction),
            ("test_fraction", self.test_fraction),
        ] {
            if !(0.0..1.0).contains(&f) {
                bail!("dataset.{name} must be in [0, 1), got {f}");
            }
        }
        if self.val_fraction + self.test_fraction >= 1.0 {
            bail!(
                "dataset.val_fraction + dataset.test_fraction must be below 1 (some images must stay in training), got {} + {}",
                self.val_fraction,
                self.test_fraction
            );
        }
        Ok(())
    }
}

/// Resizes an RGB image to `size` × `size` (see the module doc for the exact filter) and
/// returns its (3, size, size) planes scaled to [0, 1].
pub fn to_planes(img: &RgbImage, size: usize) -> Vec<f32> {
    let s = size as u32;
    let resized = image::imageops::resize(img, s, s, FilterType::Triangle);
    let n = size * size;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in resized.pixels().enumerate() {
        for ch in 0..3 {
            out[ch * n + i] = px.0[ch] as f32 / 255.0;
        }
    }
    out
}

/// Decodes an image file to 8-bit RGB; errors name the file.
pub fn decode(path: &Path) -> Result<RgbImage> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("opening image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading image {}", path.display()))?
        .decode()
        .map_err(|e| anyhow::anyhow!("{}: cannot decode image: {e}", path.display()))?;
    Ok(img.to_rgb8())
}

/// The image files of a class folder (sorted) and the number of other entries skipped.
fn scan(dir: &Path) -> Result<(Vec<PathBuf>, usize)> {
    if !dir.is_dir() {
        bail!(
            "{}: class folder missing (the visual wake words layout has person/ and non_person/)",
            dir.display()
        );
    }
    let mut files = Vec::new();
    let mut skipped = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = e
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if path.is_file() && !name.starts_with('.') && EXTENSIONS.contains(&ext.as_str()) {
            files.push(path);
        } else {
            skipped += 1;
        }
    }
    files.sort();
    if files.is_empty() {
        bail!(
            "{}: no images (*.jpg, *.jpeg, *.png) in this class folder",
            dir.display()
        );
    }
    Ok((files, skipped))
}

/// Builds a two-class (non_person, person) image data set from its three splits.
pub(crate) fn vww_dataset(
    train: Split,
    val: Split,
    test: Split,
    size: usize,
    description: serde_json::Value,
) -> Dataset {
    Dataset {
        train,
        val,
        test,
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        input_shape: vec![3, size, size],
        layout: "channels,height,width".into(),
        normalization: None,
        description,
        ..Default::default()
    }
}

/// Decodes and resizes `files` (in parallel, in chunks, reporting progress on this thread);
/// the first undecodable file in order is the error.
fn read_split(
    files: &[(u32, PathBuf)],
    size: usize,
    name: &str,
    progress: Progress,
) -> Result<Split> {
    let shape = [3, size, size];
    if files.is_empty() {
        return Ok(Split::empty(&shape));
    }
    let mut x = Vec::with_capacity(files.len() * 3 * size * size);
    let total = files.len() as u64;
    for (k, chunk) in files.chunks(256).enumerate() {
        let imgs: Vec<Result<Vec<f32>>> = chunk
            .par_iter()
            .map(|(_, f)| decode(f).map(|img| to_planes(&img, size)))
            .collect();
        for img in imgs {
            x.extend(img?);
        }
        progress(name, (k * 256 + chunk.len()) as u64, total);
    }
    Split::new(x, &shape, files.iter().map(|(y, _)| *y).collect())
}

/// Builds the three splits.
pub fn build(p: &VwwParams, seed: u64, downloads: &Path, progress: Progress) -> Result<Dataset> {
    let src = source::open(
        &p.source,
        p.sha256.as_deref(),
        downloads,
        "non_person",
        progress,
    )?;
    let mut sets: [Vec<(u32, PathBuf)>; 3] = Default::default();
    let mut skipped = serde_json::Map::new();
    for (c, class) in CLASSES.iter().enumerate() {
        let dir = src.root.join(class);
        let (mut files, n_skip) = scan(&dir)?;
        if n_skip > 0 {
            tracing::warn!(
                "{}: skipped {n_skip} entries that are not .jpg / .jpeg / .png files",
                dir.display()
            );
        }
        skipped.insert(class.to_string(), n_skip.into());
        if p.per_class > 0 && p.per_class < files.len() {
            files.shuffle(&mut item_rng(seed, &[0x7677_7763, c as u64]));
            files.truncate(p.per_class);
            files.sort();
        }
        let n = files.len();
        let n_test = ((n as f64 * p.test_fraction).round() as usize).min(n - 1);
        let n_val = ((n as f64 * p.val_fraction).round() as usize).min(n - 1 - n_test);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut item_rng(seed, &[0x7677_7773, c as u64]));
        let mut which = vec![0usize; n]; // 0 train, 1 val, 2 test
        for &i in &order[..n_test] {
            which[i] = 2;
        }
        for &i in &order[n_test..n_test + n_val] {
            which[i] = 1;
        }
        for (i, f) in files.into_iter().enumerate() {
            sets[which[i]].push((c as u32, f));
        }
    }
    let mut splits = Vec::new();
    for (set, name) in sets.iter().zip(["train", "val", "test"]) {
        splits.push(read_split(set, p.size, name, progress)?);
    }
    let [train, val, test]: [Split; 3] = splits.try_into().expect("three splits");
    Ok(vww_dataset(
        train,
        val,
        test,
        p.size,
        serde_json::json!({
            "kind": "vww",
            "note": "visual wake words person/non_person images, Triangle-filter resize, RGB planes in [0, 1]",
            "skipped": skipped,
        }),
    ))
}
