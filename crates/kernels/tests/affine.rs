//! channel_affine (eval-mode batch norm, optionally fused with ReLU) against a naive f64
//! reference (forward and all three gradients) and central finite differences.

mod common;

use candle_core::Tensor;
use common::*;
use whittle_kernels::channel_affine;

fn check(dims: &[usize], relu: bool, seed: u64) {
    let mut r = rng(seed);
    let (n, c) = (dims[0], dims[1]);
    let s: usize = dims[2..].iter().product();
    let len = n * c * s;
    let x = randv(&mut r, len);
    let a: Vec<f32> = randv(&mut r, c).iter().map(|v| 2.0 * v).collect();
    let b = randv(&mut r, c);
    let dy = randv(&mut r, len);
    let (xv, av, bv) = (var(&x, dims), var(&a, &[c]), var(&b, &[c]));
    let y = channel_affine(xv.as_tensor(), av.as_tensor(), bv.as_tensor(), relu).unwrap();
    let loss = (&y * cst(&dy, dims)).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    // Naive reference.
    let (mut yr, mut dxr) = (vec![0f64; len], vec![0f64; len]);
    let (mut dar, mut dbr) = (vec![0f64; c], vec![0f64; c]);
    for i in 0..n {
        for ch in 0..c {
            for j in 0..s {
                let k = (i * c + ch) * s + j;
                let pre = x[k] as f64 * a[ch] as f64 + b[ch] as f64;
                let live = !relu || pre > 0.0;
                yr[k] = if live { pre } else { 0.0 };
                let gk = if live { dy[k] as f64 } else { 0.0 };
                dxr[k] = gk * a[ch] as f64;
                dar[ch] += gk * x[k] as f64;
                dbr[ch] += gk;
            }
        }
    }
    let ctx = format!("{dims:?} relu={relu}");
    assert_close(&format!("y {ctx}"), &flat(&y), &yr, 1e-5, 1e-5);
    let gx = flat(g.get(xv.as_tensor()).unwrap());
    assert_close(&format!("dx {ctx}"), &gx, &dxr, 1e-5, 1e-5);
    let ga = flat(g.get(av.as_tensor()).unwrap());
    assert_close(&format!("dscale {ctx}"), &ga, &dar, 1e-4, 1e-4);
    let gb = flat(g.get(bv.as_tensor()).unwrap());
    assert_close(&format!("dshift {ctx}"), &gb, &dbr, 1e-4, 1e-4);
    // Central finite differences of loss w.r.t. scale and shift (f64 loss from f32 outputs).
    let lossf = |a: &[f32], b: &[f32]| -> f64 {
        let y = channel_affine(&cst(&x, dims), &cst(a, &[c]), &cst(b, &[c]), relu).unwrap();
        flat(&y)
            .iter()
            .zip(&dy)
            .map(|(y, d)| *y as f64 * *d as f64)
            .sum()
    };
    let h = 1e-3f32;
    for ch in 0..c {
        // With ReLU, skip channels where a step of h could cross the kink (|x| < 1, so a step
        // moves any pre-activation by at most h): finite differences are invalid there.
        let near_kink = (0..n * s).any(|k| {
            let (i, j) = (k / s, k % s);
            let xk = x[(i * c + ch) * s + j] as f64;
            (xk * a[ch] as f64 + b[ch] as f64).abs() < 2.0 * h as f64
        });
        if relu && near_kink {
            continue;
        }
        for (which, got) in [(0, &ga), (1, &gb)] {
            let (mut ap, mut am, mut bp, mut bm) = (a.clone(), a.clone(), b.clone(), b.clone());
            if which == 0 {
                ap[ch] += h;
                am[ch] -= h;
            } else {
                bp[ch] += h;
                bm[ch] -= h;
            }
            let fd = (lossf(&ap, &bp) - lossf(&am, &bm)) / (2.0 * h as f64);
            let tol = 1e-2 * (1.0 + fd.abs());
            assert!(
                (got[ch] as f64 - fd).abs() < tol,
                "{ctx} param {which} ch {ch}: analytic {} vs finite difference {fd}",
                got[ch]
            );
        }
    }
}

#[test]
fn channel_affine_matches_naive_and_finite_differences() {
    for (i, dims) in [
        vec![3, 4, 5, 7],
        vec![2, 3, 9],
        vec![5, 6],
        vec![4, 16, 3, 3],
        vec![1, 2, 33],
    ]
    .into_iter()
    .enumerate()
    {
        for relu in [false, true] {
            check(&dims, relu, 11 + i as u64);
        }
    }
}

#[test]
fn channel_affine_rejects_bad_shapes() {
    let x = Tensor::zeros(
        (2, 3, 4),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let v = Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let e = channel_affine(&x, &v, &v, false).unwrap_err().to_string();
    assert!(e.contains("must both be [3]"), "{e}");
}
