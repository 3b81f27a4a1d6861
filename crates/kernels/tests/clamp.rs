//! The ReLU6 clamp fused into batch norm (train) and the channel affine (eval) against the
//! unfused op followed by `activation(Relu6)`, and `channel_mul` against candle's broadcast
//! multiply and a naive f64 reference (forward and both gradients).

mod common;

use candle_core::{Tensor, Var};
use common::*;
use whittle_kernels::{
    Act, Clamp, activation, batch_norm_act_train, batch_norm_train, channel_affine, channel_mul,
};

/// Forward and the gradients of `Σ y·dy` with respect to `vars`.
fn grads(y: &Tensor, dy: &[f32], vars: &[&Var]) -> (Vec<f32>, Vec<Vec<f32>>) {
    let loss = (y * cst(dy, y.dims())).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let gs = vars
        .iter()
        .map(|v| flat(g.get(v.as_tensor()).unwrap()))
        .collect();
    (flat(y), gs)
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let want: Vec<f64> = want.iter().map(|v| *v as f64).collect();
    assert_close(what, got, &want, tol, tol);
}

/// Inputs spread over (−4, 8) so that both clamp bounds of ReLU6 are hit.
fn wide(r: &mut rand_chacha::ChaCha8Rng, n: usize) -> Vec<f32> {
    randv(r, n).iter().map(|v| 6.0 * v + 2.0).collect()
}

#[test]
fn batch_norm_relu6_equals_batch_norm_then_relu6() {
    for (i, dims) in [[4usize, 3, 5, 6], [2, 5, 1, 17]].iter().enumerate() {
        let mut r = rng(40 + i as u64);
        let (c, len) = (dims[1], dims.iter().product::<usize>());
        let x = var(&wide(&mut r, len), dims);
        // Large gammas push the normalised values past 6 and below 0.
        let g = var(
            &randv(&mut r, c).iter().map(|v| 4.0 * v).collect::<Vec<_>>(),
            &[c],
        );
        let b = var(&wide(&mut r, c), &[c]);
        let dy = randv(&mut r, len);
        let (xt, gt, bt) = (x.as_tensor(), g.as_tensor(), b.as_tensor());
        let fused = batch_norm_act_train(xt, gt, bt, 1e-5, Clamp::Relu6).unwrap();
        let plain = batch_norm_train(xt, gt, bt, 1e-5).unwrap();
        let (yf, gf) = grads(&fused.0, &dy, &[&x, &g, &b]);
        let unfused = activation(&plain.0, Act::Relu6).unwrap();
        let (yu, gu) = grads(&unfused, &dy, &[&x, &g, &b]);
        assert!(yf.contains(&0.0) && yf.contains(&6.0) && yf.iter().any(|v| *v > 0.0 && *v < 6.0));
        assert_eq!(yf, yu, "forward {dims:?}");
        for (k, what) in ["dx", "dgamma", "dbeta"].iter().enumerate() {
            close(&format!("{what} {dims:?}"), &gf[k], &gu[k], 1e-4);
        }
        assert_eq!(flat(&fused.1), flat(&plain.1), "batch mean");
    }
}

#[test]
fn channel_affine_relu6_equals_affine_then_relu6() {
    let dims = [3usize, 4, 7, 5];
    let mut r = rng(50);
    let (c, len) = (dims[1], dims.iter().product::<usize>());
    let x = var(&wide(&mut r, len), &dims);
    let a = var(
        &randv(&mut r, c).iter().map(|v| 2.0 * v).collect::<Vec<_>>(),
        &[c],
    );
    let b = var(&randv(&mut r, c), &[c]);
    let dy = randv(&mut r, len);
    let (xt, at, bt) = (x.as_tensor(), a.as_tensor(), b.as_tensor());
    let fused = channel_affine(xt, at, bt, Clamp::Relu6).unwrap();
    let (yf, gf) = grads(&fused, &dy, &[&x, &a, &b]);
    let unfused = activation(&channel_affine(xt, at, bt, false).unwrap(), Act::Relu6).unwrap();
    let (yu, gu) = grads(&unfused, &dy, &[&x, &a, &b]);
    assert!(yf.contains(&0.0) && yf.contains(&6.0));
    assert_eq!(yf, yu);
    for (k, what) in ["dx", "dscale", "dshift"].iter().enumerate() {
        close(what, &gf[k], &gu[k], 1e-5);
    }
}

#[test]
fn channel_mul_matches_the_naive_product_and_its_gradients() {
    // Planes of 1, 5, 40 and 1024 elements (chunking by whole samples and within samples).
    for (i, dims) in [
        vec![3usize, 4],
        vec![2, 3, 5],
        vec![3, 6, 5, 8],
        vec![2, 3, 32, 32],
    ]
    .iter()
    .enumerate()
    {
        let mut r = rng(60 + i as u64);
        let (n, c) = (dims[0], dims[1]);
        let len: usize = dims.iter().product();
        let p = len / (n * c);
        let (xv, sv) = (randv(&mut r, len), randv(&mut r, n * c));
        let dy = randv(&mut r, len);
        let (x, s) = (var(&xv, dims), var(&sv, &[n, c]));
        let y = if dims.len() == 2 {
            // (N, C) times (N, C): the plane is one element.
            channel_mul(&x.as_tensor().unsqueeze(2).unwrap(), s.as_tensor())
                .unwrap()
                .squeeze(2)
                .unwrap()
        } else {
            channel_mul(x.as_tensor(), s.as_tensor()).unwrap()
        };
        let (yk, gk) = grads(&y, &dy, &[&x, &s]);
        let (mut yr, mut dxr, mut dsr) = (vec![0f64; len], vec![0f64; len], vec![0f64; n * c]);
        for k in 0..len {
            let q = k / p;
            yr[k] = xv[k] as f64 * sv[q] as f64;
            dxr[k] = dy[k] as f64 * sv[q] as f64;
            dsr[q] += dy[k] as f64 * xv[k] as f64;
        }
        assert_close(&format!("y {dims:?}"), &yk, &yr, 1e-6, 1e-6);
        assert_close(&format!("dx {dims:?}"), &gk[0], &dxr, 1e-6, 1e-6);
        assert_close(&format!("ds {dims:?}"), &gk[1], &dsr, 1e-4, 1e-4);
        // The forward is the same single product as candle's broadcast multiply.
        let mut shape = vec![n, c];
        shape.resize(dims.len(), 1);
        let want = x
            .as_tensor()
            .broadcast_mul(&s.as_tensor().reshape(shape).unwrap())
            .unwrap();
        assert_eq!(yk, flat(&want), "forward {dims:?}");
    }
}

#[test]
fn channel_mul_rejects_mismatched_shapes() {
    let x = cst(&[0.0; 24], &[2, 3, 4]);
    for bad in [&[2usize, 4][..], &[3, 3], &[2, 3, 1]] {
        let s = cst(&vec![0.0; bad.iter().product()], bad);
        let e = channel_mul(&x, &s).unwrap_err().to_string();
        assert!(e.contains("channel_mul") && e.contains("(N, C)"), "{e}");
    }
}
