//! The in-memory data set: three splits of plain f32 arrays with u32 labels, class names,
//! per-channel normalisation (computed on the training split only) and a JSON description.
//!
//! Anomaly-detection sets ([`Task::AnomalyDetection`]) have items that are windows of audio
//! clips: each split then also carries, per item, the index of its clip (`clip`, 0-based within
//! the split, the windows of one clip contiguous and clips in ascending order) and its machine
//! ID (`group`, an index into [`Dataset::groups`]); `y` is 0 (normal) / 1 (anomalous), the
//! label of the item's clip. Classification splits leave `clip` and `group` empty.

use std::ops::Range;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// One split: `x` is row-major with shape `shape` = (N, ...), `y[i]` the class of item i.
/// For anomaly detection, `clip[i]` / `group[i]` are the clip and machine ID of item i (both
/// empty for classification).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Split {
    pub x: Vec<f32>,
    pub shape: Vec<usize>,
    pub y: Vec<u32>,
    /// Clip index per item (anomaly detection only; empty otherwise).
    pub clip: Vec<u32>,
    /// Machine-ID index per item, into [`Dataset::groups`] (anomaly detection only).
    pub group: Vec<u32>,
}

/// The clips of an anomaly-detection split (see [`Split::clips`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipRange {
    /// Clip index within the split.
    pub clip: u32,
    /// Machine-ID index.
    pub group: u32,
    /// 0 normal, 1 anomalous.
    pub label: u32,
    /// The clip's items (windows).
    pub items: Range<usize>,
}

/// What a data set is for; decides the metric (accuracy or ROC AUC per machine ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    #[default]
    Classification,
    /// Items are windows of clips; `y` = 0 normal / 1 anomalous; training on normal clips only.
    AnomalyDetection,
}

impl Split {
    /// An empty split whose items have shape `item_shape`.
    pub fn empty(item_shape: &[usize]) -> Self {
        let mut shape = vec![0];
        shape.extend_from_slice(item_shape);
        Self {
            shape,
            ..Default::default()
        }
    }

    /// Builds a split from concatenated items, checking sizes.
    pub fn new(x: Vec<f32>, item_shape: &[usize], y: Vec<u32>) -> Result<Self> {
        let per: usize = item_shape.iter().product();
        if per == 0 || x.len() != per * y.len() {
            bail!(
                "internal: {} values for {} items of shape {:?}",
                x.len(),
                y.len(),
                item_shape
            );
        }
        let mut shape = vec![y.len()];
        shape.extend_from_slice(item_shape);
        Ok(Self {
            x,
            shape,
            y,
            ..Default::default()
        })
    }

    /// Builds an anomaly-detection split: like [`Split::new`] plus the clip and machine-ID
    /// index of every item. Checks that the windows of each clip are contiguous, clips are
    /// numbered 0, 1, … in order, and label and group are constant within a clip.
    pub fn with_clips(
        x: Vec<f32>,
        item_shape: &[usize],
        y: Vec<u32>,
        clip: Vec<u32>,
        group: Vec<u32>,
    ) -> Result<Self> {
        let mut s = if y.is_empty() && x.is_empty() {
            Self::empty(item_shape)
        } else {
            Self::new(x, item_shape, y)?
        };
        s.clip = clip;
        s.group = group;
        s.check_clips()?;
        Ok(s)
    }

    /// Checks the clip / group vectors (see [`Split::with_clips`]); empty ones pass.
    pub fn check_clips(&self) -> Result<()> {
        if self.clip.is_empty() && self.group.is_empty() {
            return Ok(());
        }
        if self.clip.len() != self.len() || self.group.len() != self.len() {
            bail!(
                "{} items but {} clip and {} group indices",
                self.len(),
                self.clip.len(),
                self.group.len()
            );
        }
        for i in 0..self.len() {
            let (c, first) = (self.clip[i], i == 0);
            let ok = if first {
                c == 0
            } else {
                let p = self.clip[i - 1];
                c == p + 1
                    || (c == p && self.y[i] == self.y[i - 1] && self.group[i] == self.group[i - 1])
            };
            if !ok {
                bail!(
                    "item {i}: clip indices must start at 0 and rise by one, with each clip's items contiguous and of one label and machine ID"
                );
            }
        }
        Ok(())
    }

    /// True when the split carries clip and machine-ID indices (anomaly detection).
    pub fn has_clips(&self) -> bool {
        !self.clip.is_empty()
    }

    /// Number of clips (0 for a classification split).
    pub fn n_clips(&self) -> usize {
        self.clip.last().map_or(0, |&c| c as usize + 1)
    }

    /// The clips in order, each with its machine ID, label and item range (empty for a
    /// classification split).
    pub fn clips(&self) -> Vec<ClipRange> {
        let mut out: Vec<ClipRange> = Vec::new();
        for i in 0..self.clip.len() {
            match out.last_mut() {
                Some(r) if r.clip == self.clip[i] => r.items.end = i + 1,
                _ => out.push(ClipRange {
                    clip: self.clip[i],
                    group: self.group[i],
                    label: self.y[i],
                    items: i..i + 1,
                }),
            }
        }
        out
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// True when the split holds no items.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Number of values per item.
    pub fn item_len(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// The values of item `i`.
    pub fn item(&self, i: usize) -> &[f32] {
        let n = self.item_len();
        &self.x[i * n..(i + 1) * n]
    }

    /// Items per class (`n_classes` entries).
    pub fn counts(&self, n_classes: usize) -> Vec<usize> {
        let mut c = vec![0; n_classes];
        for &y in &self.y {
            if let Some(slot) = c.get_mut(y as usize) {
                *slot += 1;
            }
        }
        c
    }
}

/// Per-channel normalisation statistics: `x' = (x - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormStats {
    /// Which axis of an item (0-based, excluding N) holds the channel.
    pub channel_axis: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl NormStats {
    /// Mean and (population) standard deviation per channel over the whole split, summed in
    /// f64 in a fixed order. A channel with std < 1e-8 gets std 1.
    pub fn compute(split: &Split, channel_axis: usize) -> Result<Self> {
        let item = &split.shape[1..];
        if channel_axis >= item.len() {
            bail!("internal: channel axis {channel_axis} outside item shape {item:?}");
        }
        if split.is_empty() {
            bail!("cannot compute normalisation statistics: the training split is empty");
        }
        let c = item[channel_axis];
        let inner: usize = item[channel_axis + 1..].iter().product();
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for (i, &v) in split.x.iter().enumerate() {
            let ch = (i / inner) % c;
            sum[ch] += v as f64;
            sq[ch] += (v as f64) * (v as f64);
        }
        let n = (split.x.len() / c) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| {
                let s = (q / n - m * m).max(0.0).sqrt();
                if s < 1e-8 { 1.0 } else { s as f32 }
            })
            .collect();
        Ok(Self {
            channel_axis,
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        })
    }

    /// Normalises a split in place.
    pub fn apply(&self, split: &mut Split) {
        let item = &split.shape[1..];
        let c = item[self.channel_axis];
        let inner: usize = item[self.channel_axis + 1..].iter().product();
        for (i, v) in split.x.iter_mut().enumerate() {
            let ch = (i / inner) % c;
            *v = (*v - self.mean[ch]) / self.std[ch];
        }
    }
}

/// A complete data set ready for training.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dataset {
    pub train: Split,
    pub val: Split,
    pub test: Split,
    pub classes: Vec<String>,
    /// Shape of one item, e.g. [49, 10] (MFCC: frames × coefficients) or [3, 32, 32].
    pub input_shape: Vec<usize>,
    /// What the item axes mean, e.g. "frames,mfcc" or "channels,height,width".
    pub layout: String,
    /// Set when the splits were normalised (statistics of the training split).
    pub normalization: Option<NormStats>,
    /// Free-form description of the source and parameters (saved in dataset.json).
    pub description: serde_json::Value,
    /// Classification (the default) or anomaly detection.
    pub task: Task,
    /// Anomaly detection: the machine-ID names (`id_00`, …) the splits' `group` indices
    /// refer to; empty for classification.
    pub groups: Vec<String>,
}

impl Dataset {
    /// Computes statistics on `train` and normalises all three splits with them.
    pub fn normalize(&mut self, channel_axis: usize) -> Result<()> {
        let stats = NormStats::compute(&self.train, channel_axis)?;
        for s in [&mut self.train, &mut self.val, &mut self.test] {
            stats.apply(s);
        }
        self.normalization = Some(stats);
        Ok(())
    }
}
