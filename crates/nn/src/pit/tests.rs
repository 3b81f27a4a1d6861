//! PIT tests: the spec's worked examples, the cost check, the straight-through gradient,
//! masks at one equal the plain network, regulariser-only shrinking, and exact export.

use super::masks::*;
use super::*;
use crate::config::{ModelConfig, TcnConfig, TcnLayerConfig, TcnPadding};
use crate::data::{DataSet, Split};
use crate::optim::OptimizerConfig;
use crate::tests::max_diff;
use candle_core::{Device, Tensor};

fn t(v: &[f32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu).unwrap()
}
fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

#[test]
fn beta_worked_example() {
    let th = theta_beta(&t(&[0.25, 0.4, 0.4])).unwrap();
    close(&th.to_vec1().unwrap(), &[0.25, 0.65, 1.65]);
    assert_eq!(
        binarize(&th).unwrap().to_vec1::<f32>().unwrap(),
        [0.0, 1.0, 1.0]
    );
    close(&norm_beta(3), &[1.0, 0.5, 1.0 / 3.0]);
}

#[test]
fn gamma_worked_examples() {
    let th = theta_gamma(&t(&[0.2, 0.5]), 3).unwrap();
    close(&th.to_vec1().unwrap(), &[1.2, 0.2, 1.2]);
    assert_eq!(
        binarize(&th).unwrap().to_vec1::<f32>().unwrap(),
        [1.0, 0.0, 1.0]
    );
    let th = theta_gamma(&t(&[0.6, 0.4]), 3).unwrap();
    close(&th.to_vec1().unwrap(), &[1.6, 0.6, 1.6]);
    assert_eq!(
        binarize(&th).unwrap().to_vec1::<f32>().unwrap(),
        [1.0, 1.0, 1.0]
    );
    // The dilation pattern exports as kernel 2, dilation ×2.
    assert_eq!(kept_taps(&[1.0, 0.0, 1.0]).unwrap(), (2, 2, vec![0, 2]));
    assert!(kept_taps(&[1.0, 1.0, 0.0]).is_err());
    assert_eq!(gamma_len(3), 2);
    assert_eq!(gamma_len(8), 3);
    assert_eq!(gamma_len(9), 4);
}

#[test]
fn straight_through_gradient() {
    let x = candle_core::Var::from_tensor(&t(&[0.2, 0.7, 0.5, 0.51])).unwrap();
    let w = t(&[1.0, 2.0, 3.0, 4.0]);
    let y = binarize(x.as_tensor()).unwrap();
    assert_eq!(y.to_vec1::<f32>().unwrap(), [0.0, 1.0, 0.0, 1.0]);
    let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
    // d/dx Σ w·H(x) under the STE is w.
    assert_eq!(
        g.get(&x).unwrap().to_vec1::<f32>().unwrap(),
        [1.0, 2.0, 3.0, 4.0]
    );
    // Keep-alive: θ = |p|(1−ka)+ka has gradient sign(p)·(1−ka).
    let p = candle_core::Var::from_tensor(&t(&[-0.3, 0.2])).unwrap();
    let th = theta_keep_alive(p.as_tensor(), 0).unwrap();
    assert_eq!(th.to_vec1::<f32>().unwrap(), [1.0, 0.2]);
    let g = th.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&p).unwrap().to_vec1::<f32>().unwrap(), [0.0, 1.0]);
}

fn tcn(layers: &[(usize, usize, usize)], residual: usize, bn: bool) -> ModelConfig {
    ModelConfig::Tcn(TcnConfig {
        input_channels: 3,
        input_len: 12,
        classes: 4,
        layers: layers
            .iter()
            .map(|&(channels, kernel, dilation)| TcnLayerConfig {
                channels,
                kernel,
                dilation,
            })
            .collect(),
        batch_norm: bn,
        residual_every: residual,
        padding: TcnPadding::Causal,
        bias: false,
    })
}

#[test]
fn single_conv_cost_is_90() {
    // conv 3→10, k=3, then the (fixed) output layer 10→4.
    let m = Model::new(tcn(&[(10, 3, 1)], 0, false), 1).unwrap();
    let pit = PitModel::new(m, Cost::Size, 1.0, true).unwrap();
    let costs = pit.layer_costs().unwrap();
    assert_eq!(costs[0].name, "convs.0");
    assert!((costs[0].size - 90.0).abs() < 1e-4, "{costs:?}");
    assert!((costs[0].macs - 90.0 * 12.0).abs() < 1e-3);
    assert!((costs[1].size - 40.0).abs() < 1e-4);
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| r.random::<f32>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn masks_at_one_equal_the_plain_network() {
    let cfg = tcn(&[(8, 3, 1), (8, 3, 2), (6, 3, 4)], 2, true);
    let x = randn(&[5, 3, 12], 3);
    let plain = Model::new(cfg.clone(), 7).unwrap();
    // The masked network runs the layers one by one: compare with the plain network's unfused
    // eval forward (its default folds batch norms into the convolutions, equal within rounding).
    let want = plain.forward_with(&x, false, false).unwrap();
    let pit = PitModel::new(Model::new(cfg, 7).unwrap(), Cost::Size, 1e-3, true).unwrap();
    assert!(!pit.mask_vars().is_empty());
    let got = pit.forward(&x, false).unwrap();
    assert_eq!(max_diff(&want, &got), 0.0);
    // Train mode too (batch statistics).
    let want = plain.forward(&x, true).unwrap();
    let got = pit.forward(&x, true).unwrap();
    assert_eq!(max_diff(&want, &got), 0.0);
}

/// A random masking of a residual TCN with BN: channels, receptive field and dilation.
fn masked_tcn() -> PitModel {
    let cfg = tcn(&[(8, 3, 1), (8, 3, 1), (6, 5, 1), (6, 3, 2)], 2, true);
    let m = Model::new(cfg, 11).unwrap();
    // Make BN statistics non-trivial.
    for _ in 0..3 {
        m.forward(&randn(&[16, 3, 12], 5), true).unwrap();
    }
    let pit = PitModel::new(m, Cost::Size, 1e-3, true).unwrap();
    let names: Vec<String> = pit.mask_vars().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"convs.2.pit_beta".to_string()), "{names:?}");
    for (n, v) in pit.mask_vars() {
        let k = v.elem_count();
        let vals: Vec<f32> = if n.starts_with("pit.alpha") {
            (0..k).map(|i| if i % 3 == 1 { 0.1 } else { 0.9 }).collect()
        } else if n == "convs.2.pit_beta" {
            vec![0.3, 0.0, 0.3, 0.2, 1.0] // θ = [.3,.3,.6,.8,1.8] → oldest 2 taps dropped
        } else if n == "convs.2.pit_gamma" {
            vec![0.1, 0.5, 0.0] // θ_γ: r=0,4 1.6, r=2 0.6, r odd 0.1 → dilation ×2
        } else {
            vec![1.0; k]
        };
        pit.set_mask(&n, &vals).unwrap();
    }
    pit
}

#[test]
fn export_equals_masked_network() {
    let pit = masked_tcn();
    let (small, changes) = pit.export().unwrap();
    let x = randn(&[4, 3, 12], 9);
    let want = pit.forward(&x, false).unwrap();
    let got = small.forward(&x, false).unwrap();
    assert!(
        max_diff(&want, &got) < 1e-5,
        "diff {}",
        max_diff(&want, &got)
    );
    assert!(small.num_params() < pit.model().num_params());
    // convs.2: taps kept r ∈ {0, 2} of k=5 → kernel 2, dilation 2.
    let c2 = changes.iter().find(|c| c.name == "convs.2").unwrap();
    assert_eq!((c2.kernel.clone(), c2.dilation.clone()), (vec![2], vec![2]));
    assert_eq!(c2.c_out_before, 6);
    assert_eq!(c2.c_out, 4); // channels 1 and 4 dropped
    // Residual coupling: convs.1 (identity skip from convs.0's block) shares convs.0's group.
    let c0 = changes.iter().find(|c| c.name == "convs.0").unwrap();
    let c1 = changes.iter().find(|c| c.name == "convs.1").unwrap();
    assert_eq!(c0.c_out, c1.c_out);
    // Output layer untouched.
    let fc = changes.iter().find(|c| c.name == "fc").unwrap();
    assert_eq!(fc.c_out, 4);
    // Saved and loaded, the exported model still computes the same function.
    let dir = tempfile::tempdir().unwrap();
    small.save(dir.path()).unwrap();
    let back = Model::load(dir.path()).unwrap();
    assert_eq!(max_diff(&got, &back.forward(&x, false).unwrap()), 0.0);
}

#[test]
fn regulariser_alone_shrinks_to_one_channel_and_kernel_one() {
    let cfg = tcn(&[(6, 3, 1), (6, 3, 1), (5, 4, 1)], 0, true);
    let pit = PitModel::new(Model::new(cfg, 2).unwrap(), Cost::Size, 1.0, true).unwrap();
    let mut opt =
        crate::optim::Optimizer::new(OptimizerConfig::adam(0.0), pit.mask_vars()).unwrap();
    for _ in 0..200 {
        let r = crate::train::Trainable::regularizer(&pit).unwrap().unwrap();
        let g = r.backward().unwrap();
        opt.step(&g, 0.02).unwrap();
    }
    let (small, changes) = pit.export().unwrap();
    for c in &changes {
        if c.name == "fc" {
            continue;
        }
        assert_eq!(c.c_out, 1, "{c:?}");
        assert_eq!(c.kernel, vec![1], "{c:?}");
    }
    assert!(small.forward(&randn(&[2, 3, 12], 1), false).is_ok());
}

/// A small TCN under PIT (λ = 0.05), a 32-sample data set used as train and validation, and
/// an 8-epoch search configuration.
fn search_fixture(restore_best: bool) -> (PitModel, DataSet, SearchConfig) {
    let cfg = tcn(&[(8, 3, 1), (8, 3, 2)], 0, true);
    let pit = PitModel::new(Model::new(cfg, 4).unwrap(), Cost::Size, 0.05, true).unwrap();
    let x = randn(&[32, 3, 12], 8);
    let labels: Vec<u32> = (0..32).map(|i| i % 4).collect();
    let split = Split::classes(
        x.flatten_all().unwrap().to_vec1().unwrap(),
        &[3, 12],
        labels,
    )
    .unwrap();
    let data = DataSet {
        train: split.clone(),
        val: Some(split),
        test: None,
    };
    let scfg = SearchConfig {
        epochs: 8,
        batch_size: 8,
        lr_weights: 1e-3,
        lr_masks: 0.05,
        schedule: Default::default(),
        optimizer: OptimizerConfig::adam(0.0),
        mask_optimizer: OptimizerConfig::adam(0.0),
        patience: None,
        restore_best,
        seed: 1,
        augment: Default::default(),
    };
    (pit, data, scfg)
}

#[test]
fn search_loop_runs_and_shrinks_with_large_lambda() {
    let (pit, data, scfg) = search_fixture(false);
    let before = pit.cost().unwrap().to_scalar::<f32>().unwrap();
    let r = search(&pit, &data, &scfg, &|| false, &mut |_, _| {}).unwrap();
    assert_eq!(r.history.len(), 8);
    // without restore_best the model keeps the last epoch's masks
    let now = pit.cost().unwrap().to_scalar::<f32>().unwrap() as f64;
    assert_eq!(now, *r.cost_history.last().unwrap());
    assert!(
        r.cost_history.last().unwrap() < &(before as f64 * 0.8),
        "{:?}",
        r.cost_history
    );
}

#[test]
fn restore_best_brings_back_the_masks_of_the_best_validation_epoch() {
    let (pit, data, scfg) = search_fixture(true);
    let r = search(&pit, &data, &scfg, &|| false, &mut |_, _| {}).unwrap();
    let best = r.best_epoch.unwrap() as usize;
    let losses: Vec<f64> = r.history.iter().map(|h| h.val.unwrap().loss).collect();
    let min = losses.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(losses[best], min);
    let now = pit.cost().unwrap().to_scalar::<f32>().unwrap() as f64;
    assert_eq!(
        now, r.cost_history[best],
        "{:?} best {best}",
        r.cost_history
    );
}

#[test]
fn export_equals_masked_dscnn_with_depthwise() {
    let mut c = crate::config::DsCnnConfig::reference();
    c.stem.channels = 8;
    for b in &mut c.blocks {
        b.channels = 6;
    }
    c.blocks.truncate(2);
    let m = Model::new(ModelConfig::DsCnn(c), 3).unwrap();
    for _ in 0..2 {
        m.forward(&randn(&[8, 1, 49, 10], 2), true).unwrap();
    }
    let pit = PitModel::new(m, Cost::Macs, 1e-6, true).unwrap();
    for (n, v) in pit.mask_vars() {
        let k = v.elem_count();
        let vals: Vec<f32> = (0..k).map(|i| if i % 2 == 1 { 0.2 } else { 0.8 }).collect();
        pit.set_mask(&n, &vals).unwrap();
    }
    let (small, changes) = pit.export().unwrap();
    let x = randn(&[3, 1, 49, 10], 4);
    let d = max_diff(
        &pit.forward(&x, false).unwrap(),
        &small.forward(&x, false).unwrap(),
    );
    assert!(d < 1e-5, "diff {d}");
    let dw = changes.iter().find(|c| c.name == "blocks.0.dw").unwrap();
    assert_eq!((dw.c_out_before, dw.c_out), (8, 4));
}
