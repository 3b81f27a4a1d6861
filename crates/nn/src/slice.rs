//! Elastic-width slices of a trained network (`003` §4.1, after Once-for-All): the channels of
//! every prunable channel group (the groups of the PIT [`crate::pit::plan::Plan`], so residual-
//! coupled layers stay consistent and the output layer is kept whole) are ranked once by L1
//! importance (mean |w| of the output filters, summed over coupled layers), and a slice at width
//! fraction `w` keeps the `max(1, round(w·C))` most important channels of each group, with their
//! trained weights. Slices at smaller widths keep subsets of the channels of larger ones (the
//! ranking does not depend on `w`), so every slice shares its weights with the full network.
//!
//! A slice sees different activation statistics than the full network, so its batch norms'
//! running statistics are re-estimated on a calibration set ([`recalibrate_bn`]): one
//! train-mode pass per calibration batch (batch statistics normalise, as in training), and each
//! batch norm's running mean and variance set to the mean over the batches of the batch mean
//! and unbiased batch variance. Dropout is off during the passes and no weight changes.

use crate::graph::{Graph, Op};
use crate::interp::{self, NoHook, Tensors};
use crate::model::Model;
use crate::pit::plan::plan;
use crate::pit::{Keep, LayerChange, export};
use crate::prune::{Method, Scope, scores, select};
use anyhow::{Result, ensure};
use candle_core::Tensor;
use std::cell::RefCell;
use std::collections::HashMap;

/// The slice of `model` at width fraction `width` (0 < width ≤ 1), BN statistics as trained
/// (not yet re-calibrated), and the per-layer change list.
pub fn slice(model: &Model, width: f64) -> Result<(Model, Vec<LayerChange>)> {
    ensure!(
        width > 0.0 && width <= 1.0,
        "a slice width must be in (0, 1], got {width}"
    );
    ensure!(
        !model.bn_folded(),
        "slicing needs the batch norms of the trained network (this one has them folded)"
    );
    let p = plan(model.graph(), false)?;
    let s = scores(model, &p, Method::L1, 0)?;
    let channels = select(&p, &s, 1.0 - width, Scope::Layer)?;
    let keep = Keep {
        channels,
        taps: vec![None; model.graph().nodes.len()],
    };
    export(model, &p, &keep, &s)
}

/// Model tensors for the interpreter, with batch-norm running-statistic writes captured (and
/// summed per name) instead of applied.
struct Capture<'a> {
    model: &'a Model,
    sums: RefCell<HashMap<String, Tensor>>,
}

impl Tensors for Capture<'_> {
    fn get(&self, name: &str) -> Result<&Tensor> {
        Ok(self.model.get(name)?.as_tensor())
    }
    fn set(&self, name: &str, value: &Tensor) -> Result<()> {
        let mut sums = self.sums.borrow_mut();
        let v = match sums.remove(name) {
            Some(s) => (s + value)?,
            None => value.clone(),
        };
        sums.insert(name.to_string(), v);
        Ok(())
    }
}

/// The graph the calibration passes run: every batch norm with momentum 1 (its running
/// statistics become the batch's), every dropout with p = 0.
fn calibration_graph(g: &Graph) -> Graph {
    let mut g = g.clone();
    for n in &mut g.nodes {
        match &mut n.op {
            Op::BatchNorm { momentum, .. } => *momentum = 1.0,
            Op::Dropout { p } => *p = 0.0,
            _ => {}
        }
    }
    g
}

/// Re-estimates every batch norm's running mean and variance of `model` (in place) as the mean
/// over `batches` (each (N, input...)) of the batch statistics, with batch-statistics
/// normalisation during the passes. Returns the number of batch norms updated.
pub fn recalibrate_bn(model: &Model, batches: &[Tensor]) -> Result<usize> {
    ensure!(
        !model.bn_folded(),
        "batch-norm re-calibration needs unfolded batch norms"
    );
    ensure!(
        !batches.is_empty(),
        "batch-norm re-calibration needs at least one calibration batch"
    );
    let g = calibration_graph(model.graph());
    let cap = Capture {
        model,
        sums: RefCell::new(HashMap::new()),
    };
    for x in batches {
        ensure!(
            x.dim(0)? >= 2,
            "batch-norm re-calibration needs batches of at least 2 items"
        );
        interp::forward(&g, &cap, x, true, &mut NoHook)?;
    }
    let sums = cap.sums.into_inner();
    let k = batches.len() as f64;
    for (name, sum) in &sums {
        model.get(name)?.set(&(sum / k)?)?;
    }
    Ok(sums.len() / 2)
}

/// Calibration batches of at most `batch` items from the first `n` rows of `x` (N, ...).
pub fn batches_of(x: &Tensor, n: usize, batch: usize) -> Result<Vec<Tensor>> {
    let n = n.min(x.dim(0)?);
    let batch = batch.max(2);
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let len = batch.min(n - i);
        if len >= 2 {
            out.push(x.narrow(0, i, len)?);
        }
        i += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DsBlockConfig, DsCnnConfig, ModelConfig};
    use crate::data::{DataSet, Split};
    use crate::optim::OptimizerConfig;
    use crate::schedule::ScheduleConfig;
    use crate::train::{Hooks, Monitor, TrainConfig, evaluate, train};
    use rand::{Rng, SeedableRng};

    /// Class k (of 3) lights up rows 16k..16k+16 of a 1×49×10 item.
    fn synthetic(n: usize, seed: u64) -> Split {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::with_capacity(n * 490);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let k = (i % 3) as u32;
            for j in 0..490 {
                let on = (j / 10) / 16 == k as usize;
                x.push(r.random::<f32>() - 0.5 + if on { 1.5 } else { 0.0 });
            }
            y.push(k);
        }
        Split::classes(x, &[1, 49, 10], y).unwrap()
    }

    fn dscnn(ch: usize) -> ModelConfig {
        let mut c = DsCnnConfig::reference();
        c.stem.channels = ch;
        c.blocks = vec![
            DsBlockConfig {
                channels: ch,
                kernel: [3, 3],
                stride: 1,
            };
            2
        ];
        c.classes = 3;
        ModelConfig::DsCnn(c)
    }

    fn trained() -> (Model, DataSet) {
        let m = Model::new(dscnn(16), 0).unwrap();
        let d = DataSet {
            train: synthetic(90, 1),
            val: Some(synthetic(30, 2)),
            test: Some(synthetic(150, 3)),
        };
        let cfg = TrainConfig {
            augment: Default::default(),
            epochs: 4,
            batch_size: 10,
            lr: 2e-2,
            optimizer: OptimizerConfig::adam(0.0),
            schedule: ScheduleConfig::Constant,
            loss: crate::loss::LossKind::CrossEntropy,
            patience: None,
            monitor: Monitor::ValLoss,
            keep_best: true,
            seed: 7,
        };
        train(&m, &d, &cfg, Hooks::default()).unwrap();
        (m, d)
    }

    fn acc(m: &Model, s: &Split) -> f64 {
        evaluate(m, s, crate::loss::LossKind::CrossEntropy, 50)
            .unwrap()
            .accuracy
            .unwrap()
    }

    #[test]
    fn slices_are_nested_and_recalibration_restores_accuracy() {
        let (m, d) = trained();
        let test = d.test.as_ref().unwrap();
        let full = acc(&m, test);
        assert!(full >= 0.9, "full network accuracy {full}");
        let (half, changes) = slice(&m, 0.5).unwrap();
        let (quarter, _) = slice(&m, 0.25).unwrap();
        // 16 channels → 8 and 4 in every sliced layer; the classifier keeps its 3 outputs.
        let by = |c: &[LayerChange], n: &str| c.iter().find(|l| l.name == n).unwrap().c_out;
        assert_eq!(by(&changes, "conv0"), 8);
        assert_eq!(changes.last().unwrap().c_out, 3);
        assert!(quarter.num_params() < half.num_params() && half.num_params() < m.num_params());
        // Width 1 is the network itself.
        let (same, _) = slice(&m, 1.0).unwrap();
        assert_eq!(same.num_params(), m.num_params());
        // Nested: the quarter's stem filters are among the half's (same trained weights).
        let rows = |mm: &Model| -> Vec<Vec<f32>> {
            mm.get("conv0.weight")
                .unwrap()
                .as_tensor()
                .flatten_from(1)
                .unwrap()
                .to_vec2()
                .unwrap()
        };
        let (h, q) = (rows(&half), rows(&quarter));
        assert!(q.iter().all(|r| h.contains(r)));
        // Re-calibration of the BN statistics on 90 training items restores the half slice
        // (measured: 0.33 → 0.95; the trained statistics no longer match its activations).
        let before = acc(&half, test);
        let xs = batches_of(&d.train.x, 90, 30).unwrap();
        assert_eq!(xs.len(), 3);
        let n = recalibrate_bn(&half, &xs).unwrap();
        assert_eq!(n, 5); // stem + 2 × (dw, pw)
        let after = acc(&half, test);
        assert!(
            after > before + 0.3 && after >= 0.85,
            "slice accuracy {before} → {after} after BN re-calibration (full {full})"
        );
    }

    #[test]
    fn recalibrated_statistics_are_the_batch_means() {
        // One conv → BN: after re-calibration on one batch, the running mean/var are the
        // batch's per-channel mean and unbiased variance of the conv output.
        let m = Model::new(dscnn(4), 3).unwrap();
        let x = synthetic(6, 9).x;
        recalibrate_bn(&m, std::slice::from_ref(&x)).unwrap();
        let g = m.graph();
        let conv0 = &g.nodes[0];
        let w = m.get("conv0.weight").unwrap().as_tensor();
        let b = m.get("conv0.bias").unwrap().as_tensor();
        let Op::Conv {
            stride, padding, ..
        } = &conv0.op
        else {
            panic!()
        };
        let x = x.pad_with_zeros(2, padding[0].0, padding[0].1).unwrap();
        let x = x.pad_with_zeros(3, padding[1].0, padding[1].1).unwrap();
        let y = x
            .conv2d(w, 0, stride[0], 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
            .unwrap();
        let y = y.transpose(0, 1).unwrap().flatten_from(1).unwrap(); // (4, N·H·W)
        let n = y.dim(1).unwrap() as f64;
        let mean = y.mean(1).unwrap();
        let var = (y
            .broadcast_sub(&mean.unsqueeze(1).unwrap())
            .unwrap()
            .sqr()
            .unwrap())
        .sum(1)
        .unwrap()
        .affine(1.0 / (n - 1.0), 0.0)
        .unwrap();
        let rm: Vec<f32> = m
            .get("bn0.running_mean")
            .unwrap()
            .as_tensor()
            .to_vec1()
            .unwrap();
        let rv: Vec<f32> = m
            .get("bn0.running_var")
            .unwrap()
            .as_tensor()
            .to_vec1()
            .unwrap();
        for (a, e) in rm.iter().zip(mean.to_vec1::<f32>().unwrap()) {
            assert!((a - e).abs() < 1e-4, "mean {a} vs {e}");
        }
        for (a, e) in rv.iter().zip(var.to_vec1::<f32>().unwrap()) {
            assert!((a - e).abs() < 1e-3 * e.max(1.0), "var {a} vs {e}");
        }
    }
}
