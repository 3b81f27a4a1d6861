//! Bit-identical outputs and gradients across repeated calls and across rayon pool sizes.

mod common;

use common::*;
use whittle_kernels::{Conv1dCfg, Conv2dCfg, batch_norm_relu_train, conv1d, conv2d};

/// One fwd+bwd of a small conv → BN-ReLU stack (dense, depthwise, conv1d), all results flattened.
fn step() -> Vec<Vec<f32>> {
    let mut r = rng(500);
    let (n, c) = (37, 8);
    let x = randv(&mut r, n * 3 * 13 * 11);
    let w0 = var(&randv(&mut r, c * 3 * 9), &[c, 3, 3, 3]);
    let w1 = var(&randv(&mut r, c * 9), &[c, 1, 3, 3]);
    let w2 = var(&randv(&mut r, c * c * 3), &[c, c, 3]);
    let g = var(&randv(&mut r, c), &[c]);
    let b = var(&randv(&mut r, c), &[c]);
    let xv = var(&x, &[n, 3, 13, 11]);
    let cfg = Conv2dCfg {
        stride: (2, 1),
        padding: (1, 1),
        ..Default::default()
    };
    let y = conv2d(xv.as_tensor(), w0.as_tensor(), None, &cfg).unwrap();
    let (y, _, _) = batch_norm_relu_train(&y, g.as_tensor(), b.as_tensor(), 1e-5).unwrap();
    let cfg = Conv2dCfg {
        padding: (1, 1),
        groups: c,
        ..Default::default()
    };
    let y = conv2d(&y, w1.as_tensor(), Some(b.as_tensor()), &cfg).unwrap();
    let (d0, d1) = (y.dim(2).unwrap(), y.dim(3).unwrap());
    let y = y.reshape((n, c, d0 * d1)).unwrap();
    let cfg = Conv1dCfg {
        stride: 1,
        padding: 2,
        dilation: 2,
    };
    let y = conv1d(&y, w2.as_tensor(), None, &cfg).unwrap();
    let loss = y.sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let mut out = vec![flat(&y)];
    for v in [&xv, &w0, &w1, &w2, &g, &b] {
        out.push(flat(grads.get(v.as_tensor()).unwrap()));
    }
    out
}

#[test]
fn repeated_calls_and_thread_counts_are_bit_identical() {
    let base = step();
    assert_eq!(base, step(), "repeated call in the same pool");
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let other = pool.install(step);
        for (i, (a, b)) in base.iter().zip(&other).enumerate() {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "result {i} differs with {threads} threads");
        }
    }
}
