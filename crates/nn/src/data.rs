//! The in-memory data interface of training: f32 inputs of shape (N, ...) with class labels
//! (u32) or regression targets (f32), split into train / validation / test.

use anyhow::{Result, ensure};
use candle_core::{DType, Device, Tensor};

/// What a split's samples are compared against.
#[derive(Clone, Debug)]
pub enum Targets {
    /// Class indices, u32, shape (N).
    Classes(Tensor),
    /// Regression targets, f32, shape (N, ...); an auto-encoder uses x itself.
    Values(Tensor),
    /// Class labels (u32, N) plus a teacher's logits (f32, N × C) for knowledge distillation.
    Distill {
        labels: Tensor,
        teacher: Tensor,
        kd: crate::distill::KdConfig,
    },
}

/// One split: inputs x (N, ...) as f32 and their targets.
#[derive(Clone, Debug)]
pub struct Split {
    pub x: Tensor,
    pub y: Targets,
}

/// Train, optional validation and optional test splits.
#[derive(Clone, Debug)]
pub struct DataSet {
    pub train: Split,
    pub val: Option<Split>,
    pub test: Option<Split>,
}

impl Split {
    /// Build from plain vectors: `x` row-major with per-sample shape `shape`, class `labels`.
    pub fn classes(x: Vec<f32>, shape: &[usize], labels: Vec<u32>) -> Result<Self> {
        let n = labels.len();
        let mut full = vec![n];
        full.extend_from_slice(shape);
        ensure!(
            x.len() == full.iter().product::<usize>(),
            "split: {} values do not fill shape {full:?}",
            x.len()
        );
        Ok(Self {
            x: Tensor::from_vec(x, full, &Device::Cpu)?,
            y: Targets::Classes(Tensor::from_vec(labels, n, &Device::Cpu)?),
        })
    }

    /// An auto-encoder split: the targets are the inputs.
    pub fn reconstruction(x: Tensor) -> Self {
        Self {
            y: Targets::Values(x.clone()),
            x,
        }
    }

    pub fn len(&self) -> usize {
        self.x.dims().first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Check dtypes and that x and targets agree on N.
    pub fn validate(&self, what: &str) -> Result<()> {
        ensure!(
            self.x.dtype() == DType::F32,
            "{what} split: inputs must be f32, got {:?}",
            self.x.dtype()
        );
        ensure!(
            self.x.rank() >= 2,
            "{what} split: inputs need shape (N, ...), got {:?}",
            self.x.dims()
        );
        ensure!(!self.is_empty(), "{what} split is empty");
        let (t, want) = match &self.y {
            Targets::Classes(t) => (t, DType::U32),
            Targets::Values(t) => (t, DType::F32),
            Targets::Distill {
                labels, teacher, ..
            } => {
                ensure!(
                    teacher.dims().first() == labels.dims().first(),
                    "{what} split: {:?} labels but teacher logits of shape {:?}",
                    labels.dims(),
                    teacher.dims()
                );
                (labels, DType::U32)
            }
        };
        ensure!(
            t.dtype() == want,
            "{what} split: targets must be {want:?}, got {:?}",
            t.dtype()
        );
        ensure!(
            t.dims().first() == Some(&self.len()),
            "{what} split: {} inputs but targets of shape {:?}",
            self.len(),
            t.dims()
        );
        Ok(())
    }

    /// Rows `idx` of inputs and targets.
    pub fn batch(&self, idx: &[u32]) -> Result<(Tensor, Targets)> {
        let i = Tensor::from_slice(idx, idx.len(), self.x.device())?;
        let x = self.x.index_select(&i, 0)?;
        let y = match &self.y {
            Targets::Classes(t) => Targets::Classes(t.index_select(&i, 0)?),
            Targets::Values(t) => Targets::Values(t.index_select(&i, 0)?),
            Targets::Distill {
                labels,
                teacher,
                kd,
            } => Targets::Distill {
                labels: labels.index_select(&i, 0)?,
                teacher: teacher.index_select(&i, 0)?,
                kd: *kd,
            },
        };
        Ok((x, y))
    }
}
