//! batch_norm_train / batch_norm_relu_train / relu / global_avg_pool against naive f64
//! references (forward, batch statistics, gradients) and central finite differences.

mod common;

use candle_core::Tensor;
use common::*;
use whittle_kernels::{batch_norm_relu_train, batch_norm_train, global_avg_pool, relu};

fn check_bn(dims: &[usize], relu_fused: bool, seed: u64) {
    let mut r = rng(seed);
    let (n, c) = (dims[0], dims[1]);
    let s: usize = dims[2..].iter().product();
    let len = n * c * s;
    // Offset and scale per element so channels have non-trivial mean and variance.
    let x: Vec<f32> = randv(&mut r, len).iter().map(|v| 3.0 * v + 0.5).collect();
    let gamma = randv(&mut r, c);
    let beta = randv(&mut r, c);
    let dy = randv(&mut r, len);
    let eps = 1e-5;
    let (xv, gv, bv) = (var(&x, dims), var(&gamma, &[c]), var(&beta, &[c]));
    let f = if relu_fused {
        batch_norm_relu_train
    } else {
        batch_norm_train
    };
    let (y, mean, bvar) = f(xv.as_tensor(), gv.as_tensor(), bv.as_tensor(), eps).unwrap();
    assert_eq!(y.dims(), dims);
    let loss = (&y * cst(&dy, dims)).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let (yr, mr, vr) = bn_forward(&x, n, c, s, &gamma, &beta, eps, relu_fused);
    let (dxr, dgr, dbr) = bn_backward(&x, n, c, s, &gamma, &beta, eps, relu_fused, &dy);
    let ctx = format!("{dims:?} relu={relu_fused}");
    assert_close(&format!("y {ctx}"), &flat(&y), &yr, 1e-4, 1e-4);
    assert_close(&format!("mean {ctx}"), &flat(&mean), &mr, 1e-5, 1e-5);
    assert_close(&format!("var {ctx}"), &flat(&bvar), &vr, 1e-5, 1e-5);
    assert_close(
        &format!("dx {ctx}"),
        &flat(g.get(xv.as_tensor()).unwrap()),
        &dxr,
        1e-4,
        1e-3,
    );
    let m = (n * s) as f64;
    assert_close(
        &format!("dgamma {ctx}"),
        &flat(g.get(gv.as_tensor()).unwrap()),
        &dgr,
        1e-5 * m,
        1e-4,
    );
    assert_close(
        &format!("dbeta {ctx}"),
        &flat(g.get(bv.as_tensor()).unwrap()),
        &dbr,
        1e-5 * m,
        1e-4,
    );
}

#[test]
fn batch_norm_matches_reference() {
    let shapes: [&[usize]; 7] = [
        &[4, 3, 5],
        &[100, 64, 49],
        &[7, 16, 5, 3],
        &[3, 64, 25, 5],
        &[2, 16, 32, 32],
        &[1, 5, 1, 1, 7],
        &[9, 2, 1],
    ];
    for (i, d) in shapes.iter().enumerate() {
        check_bn(d, false, 100 + i as u64);
        check_bn(d, true, 200 + i as u64);
    }
}

#[test]
fn batch_norm_gradients_match_finite_differences() {
    // Differences in f64 through the naive reference, which the kernel must match: the kernel
    // gradients equal the reference's analytic ones (checked above) and those equal the FD here.
    let (n, c, s) = (3, 2, 4);
    let mut r = rng(300);
    let x: Vec<f32> = randv(&mut r, n * c * s).iter().map(|v| 2.0 * v).collect();
    let gamma = randv(&mut r, c);
    let beta = randv(&mut r, c);
    let dy = randv(&mut r, n * c * s);
    for relu_fused in [false, true] {
        let dims = [n, c, s];
        let (xv, gv, bv) = (var(&x, &dims), var(&gamma, &[c]), var(&beta, &[c]));
        let f = if relu_fused {
            batch_norm_relu_train
        } else {
            batch_norm_train
        };
        let (y, _, _) = f(xv.as_tensor(), gv.as_tensor(), bv.as_tensor(), 1e-5).unwrap();
        let g = (&y * cst(&dy, &dims))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let got = [
            flat(g.get(xv.as_tensor()).unwrap()),
            flat(g.get(gv.as_tensor()).unwrap()),
            flat(g.get(bv.as_tensor()).unwrap()),
        ];
        let loss = |x: &[f32], ga: &[f32], be: &[f32]| -> f64 {
            let (y, _, _) = bn_forward(x, n, c, s, ga, be, 1e-5, relu_fused);
            y.iter().zip(&dy).map(|(a, b)| a * *b as f64).sum()
        };
        let h = 1e-3f32;
        for (which, gw) in got.iter().enumerate() {
            for i in 0..gw.len() {
                let mut a = [x.clone(), gamma.clone(), beta.clone()];
                let mut b = a.clone();
                a[which][i] += h;
                b[which][i] -= h;
                let fd = (loss(&a[0], &a[1], &a[2]) - loss(&b[0], &b[1], &b[2])) / (2.0 * h as f64);
                assert!(
                    (gw[i] as f64 - fd).abs() < 2e-3 * (1.0 + fd.abs()),
                    "relu={relu_fused} arg {which} [{i}]: {} vs fd {fd}",
                    gw[i]
                );
            }
        }
    }
}

#[test]
fn relu_and_pool_match_reference() {
    let mut r = rng(400);
    let dims = [3, 4, 5, 7];
    let len = 3 * 4 * 5 * 7;
    let x = randv(&mut r, len);
    let dy = randv(&mut r, len);
    let xv = var(&x, &dims);
    let y = relu(xv.as_tensor()).unwrap();
    let g = (&y * cst(&dy, &dims))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let yr: Vec<f64> = x.iter().map(|v| v.max(0.0) as f64).collect();
    let dr: Vec<f64> = x
        .iter()
        .zip(&dy)
        .map(|(a, b)| if *a > 0.0 { *b as f64 } else { 0.0 })
        .collect();
    assert_close("relu y", &flat(&y), &yr, 0.0, 0.0);
    assert_close(
        "relu dx",
        &flat(g.get(xv.as_tensor()).unwrap()),
        &dr,
        0.0,
        0.0,
    );

    let p = global_avg_pool(xv.as_tensor()).unwrap();
    assert_eq!(p.dims(), &[3, 4]);
    let dp = randv(&mut r, 12);
    let g = (&p * cst(&dp, &[3, 4]))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let pr: Vec<f64> = x
        .chunks(35)
        .map(|c| c.iter().map(|v| *v as f64).sum::<f64>() / 35.0)
        .collect();
    let dxr: Vec<f64> = (0..len).map(|i| dp[i / 35] as f64 / 35.0).collect();
    assert_close("pool y", &flat(&p), &pr, 1e-6, 1e-5);
    assert_close(
        "pool dx",
        &flat(g.get(xv.as_tensor()).unwrap()),
        &dxr,
        1e-7,
        1e-6,
    );
}

#[test]
fn bn_rejects_bad_shapes() {
    let x = Tensor::zeros(
        (2, 3, 4),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let g = Tensor::ones(4, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    assert!(batch_norm_train(&x, &g, &g, 1e-5).is_err());
}

#[test]
fn add_relu_is_relu_of_the_sum_with_the_masked_gradient_for_both_inputs() {
    let mut r = rng(33);
    let shape = [3, 4, 5, 7];
    let n: usize = shape.iter().product();
    let (a, b) = (
        var(&randv(&mut r, n), &shape),
        var(&randv(&mut r, n), &shape),
    );
    let g = randv(&mut r, n);
    let y = whittle_kernels::add_relu(a.as_tensor(), b.as_tensor()).unwrap();
    let (av, bv, yv) = (flat(a.as_tensor()), flat(b.as_tensor()), flat(&y));
    let want: Vec<f32> = av.iter().zip(&bv).map(|(x, z)| (x + z).max(0.0)).collect();
    assert_eq!(yv, want);
    assert!(yv.contains(&0.0) && yv.iter().any(|v| *v > 0.0));
    let loss = (&y * cst(&g, &shape)).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let mask: Vec<f32> = want
        .iter()
        .zip(&g)
        .map(|(y, g)| if *y > 0.0 { *g } else { 0.0 })
        .collect();
    assert_eq!(flat(grads.get(a.as_tensor()).unwrap()), mask);
    assert_eq!(flat(grads.get(b.as_tensor()).unwrap()), mask);
    let other = cst(&g[..n - 60], &[3, 4, 5, 6]);
    assert!(whittle_kernels::add_relu(a.as_tensor(), &other).is_err());
}
