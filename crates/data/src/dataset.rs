//! The in-memory data set: three splits of plain f32 arrays with u32 labels, class names,
//! per-channel normalisation (computed on the training split only) and a JSON description.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// One split: `x` is row-major with shape `shape` = (N, ...), `y[i]` the class of item i.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Split {
    pub x: Vec<f32>,
    pub shape: Vec<usize>,
    pub y: Vec<u32>,
}

impl Split {
    /// An empty split whose items have shape `item_shape`.
    pub fn empty(item_shape: &[usize]) -> Self {
        let mut shape = vec![0];
        shape.extend_from_slice(item_shape);
        Self {
            x: Vec::new(),
            shape,
            y: Vec::new(),
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
        Ok(Self { x, shape, y })
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
#[derive(Debug, Clone, PartialEq)]
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
