//! ops.rs against naive loops: conv2d with stride/padding/groups on mixed-parity inputs
//! (forward and that backward runs), conv1d with dilation, batch norm statistics.

use crate::ops::*;
use candle_core::{Device, Tensor, Var};

fn rand_t(shape: &[usize], seed: u64) -> Tensor {
    // Small deterministic LCG values in [-1, 1).
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Direct-loop conv2d reference.
fn naive_conv2d(x: &Tensor, w: &Tensor, cfg: &Conv2dCfg) -> Vec<f32> {
    let (n, cin, h, wd) = x.dims4().unwrap();
    let (cout, cg, kh, kw) = w.dims4().unwrap();
    let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let wv: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    let (s, p, d) = (cfg.stride, cfg.padding, cfg.dilation);
    let ho = (h + 2 * p.0 - d.0 * (kh - 1) - 1) / s.0 + 1;
    let wo = (wd + 2 * p.1 - d.1 * (kw - 1) - 1) / s.1 + 1;
    let opg = cout / cfg.groups;
    let mut out = vec![0f32; n * cout * ho * wo];
    for b in 0..n {
        for co in 0..cout {
            let g = co / opg;
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = 0f32;
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * s.0 + ky * d.0) as isize - p.0 as isize;
                                let ix = (ox * s.1 + kx * d.1) as isize - p.1 as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let c = g * cg + ci;
                                acc += xv[((b * cin + c) * h + iy as usize) * wd + ix as usize]
                                    * wv[((co * cg + ci) * kh + ky) * kw + kx];
                            }
                        }
                    }
                    out[((b * cout + co) * ho + oy) * wo + ox] = acc;
                }
            }
        }
    }
    out
}

#[test]
fn conv2d_matches_naive_and_backward_runs_on_mixed_parity() {
    let cases = [
        // DS-CNN first layer: k=(10,4), s=2, pad=(5,1) on 49×10 (the candle backward bug).
        (
            (2, 1, 49, 10),
            (8, 1, 10, 4),
            Conv2dCfg {
                stride: (2, 2),
                padding: (5, 1),
                dilation: (1, 1),
                groups: 1,
            },
        ),
        // The perf-notes minimal case: (1,1,4,5), 3×3, stride 2, padding 0.
        (
            (1, 1, 4, 5),
            (1, 1, 3, 3),
            Conv2dCfg {
                stride: (2, 2),
                padding: (0, 0),
                dilation: (1, 1),
                groups: 1,
            },
        ),
        // depthwise stride 2 with odd sizes.
        (
            (2, 4, 7, 6),
            (4, 1, 3, 3),
            Conv2dCfg {
                stride: (2, 2),
                padding: (1, 1),
                dilation: (1, 1),
                groups: 4,
            },
        ),
        // grouped, dilated.
        (
            (1, 4, 9, 8),
            (6, 2, 3, 3),
            Conv2dCfg {
                stride: (1, 1),
                padding: (2, 1),
                dilation: (2, 2),
                groups: 2,
            },
        ),
    ];
    for (i, (xs, ws, cfg)) in cases.iter().enumerate() {
        let x = Var::from_tensor(&rand_t(&[xs.0, xs.1, xs.2, xs.3], i as u64)).unwrap();
        let w = Var::from_tensor(&rand_t(&[ws.0, ws.1, ws.2, ws.3], 100 + i as u64)).unwrap();
        let y = conv2d(x.as_tensor(), w.as_tensor(), None, cfg).unwrap();
        let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        let want = naive_conv2d(x.as_tensor(), w.as_tensor(), cfg);
        assert_eq!(got.len(), want.len(), "case {i}");
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "case {i}: {a} vs {b}");
        }
        // Backward through weight and input must work and give input grads of the input's shape.
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(
            grads.get(x.as_tensor()).unwrap().dims(),
            x.dims(),
            "case {i}"
        );
        assert_eq!(
            grads.get(w.as_tensor()).unwrap().dims(),
            w.dims(),
            "case {i}"
        );
    }
}

#[test]
fn conv1d_with_dilation_and_bias_matches_hand_values() {
    // x = [1,2,3,4,5], w = [1,0,-1], dilation 2, padding 2, bias 0.5:
    // y[t] = x[t-2] - x[t+2] + 0.5 with zeros outside → [-3+.5, -4+.5, 1-5+.5, 2+.5, 3+.5].
    let x = Tensor::new(&[[[1f32, 2., 3., 4., 5.]]], &Device::Cpu).unwrap();
    let w = Tensor::new(&[[[1f32, 0., -1.]]], &Device::Cpu).unwrap();
    let b = Tensor::new(&[0.5f32], &Device::Cpu).unwrap();
    let y = conv1d(
        &x,
        &w,
        Some(&b),
        &Conv1dCfg {
            stride: 1,
            padding: 2,
            dilation: 2,
        },
    )
    .unwrap();
    let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(v, vec![-2.5, -3.5, -3.5, 2.5, 3.5]);
}

#[test]
fn batch_norm_train_statistics_and_output() {
    // Channel 0 over (N=2, L=2): [1,3,5,7] → mean 4, biased var 5.
    // Channel 1: [2,2,2,2] → mean 2, var 0 → y = beta.
    let x = Tensor::new(
        &[[[1f32, 3.], [2., 2.]], [[5., 7.], [2., 2.]]],
        &Device::Cpu,
    )
    .unwrap();
    let g = Tensor::new(&[2f32, 1.], &Device::Cpu).unwrap();
    let b = Tensor::new(&[0.5f32, -1.], &Device::Cpu).unwrap();
    let (y, m, v) = batch_norm_train(&x, &g, &b, 0.0).unwrap();
    assert_eq!(m.to_vec1::<f32>().unwrap(), vec![4.0, 2.0]);
    assert_eq!(v.to_vec1::<f32>().unwrap(), vec![5.0, 0.0]);
    let y: Vec<f32> = y.i_ch(0);
    let s = 5f32.sqrt();
    let want = [
        (1. - 4.) / s * 2. + 0.5,
        (3. - 4.) / s * 2. + 0.5,
        (5. - 4.) / s * 2. + 0.5,
        (7. - 4.) / s * 2. + 0.5,
    ];
    for (a, b) in y.iter().zip(want) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

trait Ch0 {
    fn i_ch(&self, c: usize) -> Vec<f32>;
}
impl Ch0 for Tensor {
    fn i_ch(&self, c: usize) -> Vec<f32> {
        self.narrow(1, c, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }
}

/// Sum of squares of conv1d output, gradient w.r.t. the input vs finite differences.
fn conv1d_input_grad_error(k: usize, d: usize, p: usize, l: usize) -> f32 {
    let x = Var::from_tensor(&rand_t(&[1, 2, l], 1)).unwrap();
    let w = rand_t(&[3, 2, k], 2);
    let cfg = Conv1dCfg {
        stride: 1,
        padding: p,
        dilation: d,
    };
    let f = |x: &Tensor| {
        conv1d(x, &w, None, &cfg)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let g: Vec<f32> = f(x.as_tensor())
        .backward()
        .unwrap()
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let x0: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let mut worst = 0f32;
    for i in 0..x0.len() {
        let at = |h: f32| {
            let mut v = x0.clone();
            v[i] += h;
            f(&Tensor::from_vec(v, (1, 2, l), &Device::Cpu).unwrap())
                .to_scalar::<f32>()
                .unwrap()
        };
        let fd = (at(1e-2) - at(-1e-2)) / 2e-2;
        worst = worst.max((fd - g[i]).abs() / g[i].abs().max(1.0));
    }
    worst
}

#[test]
fn conv1d_input_gradient_with_dilation_matches_finite_differences() {
    for (k, d, p, l) in [(3, 1, 1, 9), (3, 2, 2, 9), (5, 3, 6, 17), (3, 4, 4, 12)] {
        let e = conv1d_input_grad_error(k, d, p, l);
        assert!(e < 1e-2, "k={k} d={d} p={p} L={l}: relative error {e}");
    }
}

/// Relative error of d/dw and d/dx of Σ y² against central differences, batch 2.
fn weight_and_input_grad_error(
    x: Tensor,
    w: Tensor,
    f: &dyn Fn(&Tensor, &Tensor) -> Tensor,
) -> f32 {
    let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
    let loss = |x: &Tensor, w: &Tensor| f(x, w).sqr().unwrap().sum_all().unwrap();
    let g = loss(xv.as_tensor(), wv.as_tensor()).backward().unwrap();
    let mut worst = 0f32;
    for (which, t) in [(0, &x), (1, &w)] {
        let grad: Vec<f32> = g
            .get(if which == 0 {
                xv.as_tensor()
            } else {
                wv.as_tensor()
            })
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let v0: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        for i in (0..v0.len()).step_by(v0.len().div_ceil(40)) {
            let at = |h: f32| {
                let mut v = v0.clone();
                v[i] += h;
                let p = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
                let (a, b) = if which == 0 {
                    (p, w.clone())
                } else {
                    (x.clone(), p)
                };
                loss(&a, &b).to_scalar::<f32>().unwrap()
            };
            let fd = (at(1e-2) - at(-1e-2)) / 2e-2;
            worst = worst.max((fd - grad[i]).abs() / grad[i].abs().max(1.0));
        }
    }
    worst
}

#[test]
fn conv_weight_and_input_gradients_match_finite_differences_with_batches() {
    for (k, d, p, l) in [(3, 1, 1, 9), (5, 3, 6, 11), (1, 1, 0, 7)] {
        let cfg = Conv1dCfg {
            stride: 1,
            padding: p,
            dilation: d,
        };
        let e =
            weight_and_input_grad_error(rand_t(&[2, 3, l], 1), rand_t(&[4, 3, k], 2), &|x, w| {
                conv1d(x, w, None, &cfg).unwrap()
            });
        assert!(e < 1e-2, "conv1d k={k} d={d} p={p}: relative error {e}");
    }
    let c2 = [
        (
            (2, 1, 13, 6),
            (4, 1, 10, 4),
            Conv2dCfg {
                stride: (2, 2),
                padding: (5, 1),
                dilation: (1, 1),
                groups: 1,
            },
        ),
        (
            (2, 3, 6, 5),
            (3, 1, 3, 3),
            Conv2dCfg {
                stride: (1, 1),
                padding: (1, 1),
                dilation: (1, 1),
                groups: 3,
            },
        ),
        (
            (2, 3, 7, 6),
            (4, 3, 1, 1),
            Conv2dCfg {
                stride: (1, 1),
                padding: (0, 0),
                dilation: (1, 1),
                groups: 1,
            },
        ),
        (
            (2, 2, 7, 8),
            (3, 2, 3, 3),
            Conv2dCfg {
                stride: (2, 2),
                padding: (1, 1),
                dilation: (1, 1),
                groups: 1,
            },
        ),
    ];
    for (xs, ws, cfg) in c2 {
        let e = weight_and_input_grad_error(
            rand_t(&[xs.0, xs.1, xs.2, xs.3], 3),
            rand_t(&[ws.0, ws.1, ws.2, ws.3], 4),
            &|x, w| conv2d(x, w, None, &cfg).unwrap(),
        );
        assert!(e < 1e-2, "conv2d {xs:?} {ws:?} {cfg:?}: relative error {e}");
    }
}
