//! Losses and metrics: cross-entropy on logits (class-index targets), mean squared error, and
//! top-1 accuracy.

use anyhow::{Result, ensure};
use candle_core::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    #[default]
    CrossEntropy,
    Mse,
}

/// Mean cross-entropy of logits (N, C) against class indices (N) as u32.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (n, c) = logits.dims2()?;
    ensure!(
        labels.dims() == [n],
        "cross-entropy: {n} logit rows but labels of shape {:?}",
        labels.dims()
    );
    let max: u32 = labels.max(0)?.to_scalar()?;
    ensure!(
        (max as usize) < c,
        "cross-entropy: label {max} out of range for {c} classes"
    );
    Ok(candle_nn::loss::cross_entropy(logits, labels)?)
}

/// Mean squared error over all elements.
pub fn mse(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    ensure!(
        pred.dims() == target.dims(),
        "MSE: prediction {:?} vs target {:?}",
        pred.dims(),
        target.dims()
    );
    Ok(pred.sub(target)?.sqr()?.mean_all()?)
}

/// Number of rows whose arg-max equals the label.
pub fn correct(logits: &Tensor, labels: &Tensor) -> Result<u64> {
    let pred = logits.argmax(D::Minus1)?;
    Ok(pred
        .eq(labels)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()? as u64)
}
