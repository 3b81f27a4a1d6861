//! The ops beyond conv/BN/ReLU/add/pool/linear: every forward against a naive loop, every
//! gradient against central finite differences, dropout's seeding, and depthwise convolutions
//! at stride 2 and with 5×5 / 7×7 kernels.

use super::models::randn;
use crate::graph::{GraphBuilder, Node, Op};
use crate::interp::{self, NoHook};
use candle_core::{Device, Tensor, Var};
use std::collections::HashMap;

/// A node with explicit per-sample output shape (skips the builder for multi-input ops).
fn node_with(op: Op, inputs: usize, out: &[usize]) -> Node {
    Node {
        name: "op".into(),
        op,
        inputs: (0..inputs).collect(),
        out_shape: out.to_vec(),
    }
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn run(n: &Node, xs: &[&Tensor]) -> Tensor {
    let none: HashMap<String, Tensor> = HashMap::new();
    interp::eval_node(n, xs, &none).unwrap()
}

/// Checks d(Σ y·r)/dx of `n` at `xs` against central differences on every input element.
fn check_grad(n: &Node, xs: &[Tensor], tol: f32) {
    let vars: Vec<Var> = xs.iter().map(|x| Var::from_tensor(x).unwrap()).collect();
    let ts: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
    let y = run(n, &ts);
    let r = randn(y.dims(), 99);
    let loss = |y: &Tensor| -> f64 {
        vals(y)
            .iter()
            .zip(vals(&r))
            .map(|(a, b)| (*a as f64) * (b as f64))
            .sum()
    };
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for (k, v) in vars.iter().enumerate() {
        let g = vals(grads.get(v.as_tensor()).expect("input has a gradient"));
        let base = vals(v.as_tensor());
        let eps = 1e-2f32;
        for e in 0..base.len() {
            let at = |d: f32| -> f64 {
                let mut b = base.clone();
                b[e] += d;
                let t = Tensor::from_vec(b, v.dims(), &Device::Cpu).unwrap();
                let mut inputs: Vec<Tensor> = xs.to_vec();
                inputs[k] = t;
                let refs: Vec<&Tensor> = inputs.iter().collect();
                loss(&run(n, &refs))
            };
            let fd = ((at(eps) - at(-eps)) / (2.0 * eps as f64)) as f32;
            assert!(
                (fd - g[e]).abs() <= tol * (1.0 + fd.abs()),
                "{:?} input {k} element {e}: analytic {} vs finite difference {fd}",
                n.op,
                g[e]
            );
        }
    }
}

/// Values away from the kinks at −3, 0, 3, 6 (finite differences straddle no kink).
fn smooth_input(shape: &[usize], seed: u64) -> Tensor {
    let v: Vec<f32> = vals(&randn(shape, seed))
        .iter()
        .map(|&u| {
            let x = u * 8.0;
            let near = [-3.0f32, 0.0, 3.0, 6.0]
                .iter()
                .any(|k| (x - k).abs() < 0.05);
            if near { x + 0.1 } else { x }
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn pointwise_activations_match_their_formulas_and_gradients() {
    let x = smooth_input(&[2, 3, 5], 1);
    let xv = vals(&x);
    let relu6 = |x: f32| x.clamp(0.0, 6.0);
    type Formula = Box<dyn Fn(f32) -> f32>;
    let cases: Vec<(Op, Formula)> = vec![
        (Op::Relu6, Box::new(relu6)),
        (Op::Sigmoid, Box::new(|x: f32| 1.0 / (1.0 + (-x).exp()))),
        (
            Op::HardSigmoid,
            Box::new(move |x: f32| relu6(x + 3.0) / 6.0),
        ),
        (
            Op::HardSwish,
            Box::new(move |x: f32| x * relu6(x + 3.0) / 6.0),
        ),
    ];
    for (op, f) in cases {
        let n = node_with(op, 1, &[3, 5]);
        let y = vals(&run(&n, &[&x]));
        for (a, b) in y.iter().zip(&xv) {
            assert!((a - f(*b)).abs() <= 1e-6, "{:?}: {a} vs {}", n.op, f(*b));
        }
        check_grad(&n, std::slice::from_ref(&x), 2e-3);
    }
    // Hand values: relu6(7) = 6, hard_sigmoid(0) = 0.5, hard_swish(1) = 4/6.
    let t = Tensor::new(&[[7f32, 0.0, 1.0]], &Device::Cpu).unwrap();
    assert_eq!(
        vals(&run(&node_with(Op::Relu6, 1, &[3]), &[&t])),
        [6.0, 0.0, 1.0]
    );
    assert_eq!(
        vals(&run(&node_with(Op::HardSigmoid, 1, &[3]), &[&t]))[1],
        0.5
    );
    let hs = vals(&run(&node_with(Op::HardSwish, 1, &[3]), &[&t]))[2];
    assert!((hs - 4.0 / 6.0).abs() < 1e-7);
}

#[test]
fn channel_mul_concat_narrow_shuffle_flatten_match_naive_and_gradients() {
    let x = randn(&[2, 4, 3, 2], 3);
    let s = randn(&[2, 4], 4);
    let xv = vals(&x);
    let sv = vals(&s);
    // x·s per (sample, channel).
    let n = node_with(Op::ChannelMul, 2, &[4, 3, 2]);
    let y = vals(&run(&n, &[&x, &s]));
    for (i, v) in y.iter().enumerate() {
        assert_eq!(*v, xv[i] * sv[i / 6]);
    }
    check_grad(&n, &[x.clone(), s.clone()], 2e-3);
    // Concat of (2,4,3,2) and (2,1,3,2) along channels.
    let z = randn(&[2, 1, 3, 2], 5);
    let zv = vals(&z);
    let n = node_with(Op::Concat, 2, &[5, 3, 2]);
    let y = vals(&run(&n, &[&x, &z]));
    for b in 0..2 {
        assert_eq!(&y[b * 30..b * 30 + 24], &xv[b * 24..b * 24 + 24]);
        assert_eq!(&y[b * 30 + 24..b * 30 + 30], &zv[b * 6..b * 6 + 6]);
    }
    check_grad(&n, &[x.clone(), z.clone()], 2e-3);
    // Narrow: channels 1..3.
    let n = node_with(Op::Narrow { start: 1, len: 2 }, 1, &[2, 3, 2]);
    let y = vals(&run(&n, &[&x]));
    for b in 0..2 {
        assert_eq!(&y[b * 12..b * 12 + 12], &xv[b * 24 + 6..b * 24 + 18]);
    }
    check_grad(&n, std::slice::from_ref(&x), 2e-3);
    // Shuffle with 2 groups of 2: channel order 0, 2, 1, 3.
    let n = node_with(Op::ChannelShuffle { groups: 2 }, 1, &[4, 3, 2]);
    let y = vals(&run(&n, &[&x]));
    for b in 0..2 {
        for (k, src) in [0usize, 2, 1, 3].iter().enumerate() {
            let o = b * 24 + k * 6;
            let i = b * 24 + src * 6;
            assert_eq!(&y[o..o + 6], &xv[i..i + 6]);
        }
    }
    check_grad(&n, std::slice::from_ref(&x), 2e-3);
    let n = node_with(Op::Flatten, 1, &[24]);
    let y = run(&n, &[&x]);
    assert_eq!(y.dims(), [2, 24]);
    assert_eq!(vals(&y), xv);
}

/// Naive pooling of one (H, W) plane: max ignores padding, average divides by the full window.
fn naive_pool(
    p: &[f32],
    (h, w): (usize, usize),
    max: bool,
    k: (usize, usize),
    s: (usize, usize),
    pad: ((usize, usize), (usize, usize)),
) -> Vec<f32> {
    let oh = (h + pad.0.0 + pad.0.1 - k.0) / s.0 + 1;
    let ow = (w + pad.1.0 + pad.1.1 - k.1) / s.1 + 1;
    let mut out = vec![];
    for i in 0..oh {
        for j in 0..ow {
            let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
            for a in 0..k.0 {
                for b in 0..k.1 {
                    let r = (i * s.0 + a) as isize - pad.0.0 as isize;
                    let c = (j * s.1 + b) as isize - pad.1.0 as isize;
                    let inside = r >= 0 && c >= 0 && (r as usize) < h && (c as usize) < w;
                    let v = if inside {
                        p[r as usize * w + c as usize]
                    } else {
                        0.0
                    };
                    if max {
                        if inside {
                            acc = acc.max(v);
                        }
                    } else {
                        acc += v;
                    }
                }
            }
            out.push(if max { acc } else { acc / (k.0 * k.1) as f32 });
        }
    }
    out
}

#[test]
fn max_and_average_pooling_match_naive_and_gradients() {
    // 2-d: kernel 3, stride 2, padding 1 (ResNet's stem pool) and an uneven 2×3 / (1, 2) / ((0, 1), (1, 0)).
    // Distinct values 0.037 apart, so no finite-difference step moves a window's maximum.
    let distinct = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % n) as f32 * 0.037 - 4.0)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    let x = distinct(&[2, 3, 7, 6]);
    let xv = vals(&x);
    let cases = [
        ((3, 3), (2, 2), ((1, 1), (1, 1))),
        ((2, 3), (1, 2), ((0, 1), (1, 0))),
        ((2, 2), (2, 2), ((0, 0), (0, 0))),
    ];
    for (k, s, pad) in cases {
        for max in [true, false] {
            let op = if max {
                Op::MaxPool {
                    kernel: vec![k.0, k.1],
                    stride: vec![s.0, s.1],
                    padding: vec![pad.0, pad.1],
                }
            } else {
                Op::AvgPool {
                    kernel: vec![k.0, k.1],
                    stride: vec![s.0, s.1],
                    padding: vec![pad.0, pad.1],
                }
            };
            let mut b = GraphBuilder::new(vec![3, 7, 6]);
            b.push("op", op, vec![0]).unwrap();
            let n = b.finish().nodes[0].clone();
            let y = vals(&run(&n, &[&x]));
            let mut want = vec![];
            for plane in xv.chunks(42) {
                want.extend(naive_pool(plane, (7, 6), max, k, s, pad));
            }
            assert_eq!(y.len(), want.len(), "{:?}", n.op);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-6, "{:?}: {a} vs {b}", n.op);
            }
            check_grad(&n, std::slice::from_ref(&x), 5e-3);
        }
    }
    // 1-d: kernel 3, stride 2, padding (1, 1) on (N, C, L).
    let x1 = distinct(&[2, 3, 9]);
    for op in [
        Op::MaxPool {
            kernel: vec![3],
            stride: vec![2],
            padding: vec![(1, 1)],
        },
        Op::AvgPool {
            kernel: vec![3],
            stride: vec![2],
            padding: vec![(1, 1)],
        },
    ] {
        let max = matches!(op, Op::MaxPool { .. });
        let mut b = GraphBuilder::new(vec![3, 9]);
        b.push("op", op, vec![0]).unwrap();
        let n = b.finish().nodes[0].clone();
        assert_eq!(n.out_shape, [3, 5]);
        let y = vals(&run(&n, &[&x1]));
        let mut want = vec![];
        for plane in vals(&x1).chunks(9) {
            want.extend(naive_pool(
                plane,
                (1, 9),
                max,
                (1, 3),
                (1, 2),
                ((0, 0), (1, 1)),
            ));
        }
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6, "{:?}: {a} vs {b}", n.op);
        }
        check_grad(&n, std::slice::from_ref(&x1), 5e-3);
    }
    // Shape errors name the node.
    let mut b = GraphBuilder::new(vec![3, 4, 4]);
    let e = b
        .push(
            "p",
            Op::MaxPool {
                kernel: vec![2, 2],
                stride: vec![1, 1],
                padding: vec![(2, 0), (0, 0)],
            },
            vec![0],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("max pool p") && e.contains("padding"), "{e}");
}

#[test]
fn dropout_is_seeded_scaled_and_off_in_eval() {
    let mut b = GraphBuilder::new(vec![64]);
    let x0 = b.linear("fc", 0, 64, false).unwrap();
    b.op("drop", Op::Dropout { p: 0.25 }, x0).unwrap();
    let g = b.finish();
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut eye = vec![0f32; 64 * 64];
    for i in 0..64 {
        eye[i * 65] = 1.0;
    }
    t.insert(
        "fc.weight".into(),
        Tensor::from_vec(eye, (64, 64), &Device::Cpu).unwrap(),
    );
    let x = (randn(&[8, 64], 3).abs().unwrap() + 0.5).unwrap();
    let run =
        |x: &Tensor, train: bool| vals(&interp::forward(&g, &t, x, train, &mut NoHook).unwrap());
    // Eval: the identity.
    assert_eq!(run(&x, false), vals(&x));
    // Train: each element 0 or x/(1 − p); about a quarter dropped; same input → same bits.
    let y = run(&x, true);
    let xv = vals(&x);
    let mut dropped = 0;
    for (a, b) in y.iter().zip(&xv) {
        if *a == 0.0 {
            dropped += 1;
        } else {
            assert_eq!(*a, b * (1.0 / 0.75f32));
        }
    }
    assert!((80..=176).contains(&dropped), "{dropped} of 512 dropped");
    assert_eq!(
        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        run(&x, true)
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
    // Another batch draws another mask.
    let x2 = (&x + 1.0).unwrap();
    let z: Vec<bool> = run(&x2, true).iter().map(|v| *v == 0.0).collect();
    let z1: Vec<bool> = y.iter().map(|v| *v == 0.0).collect();
    assert_ne!(z, z1);
}

#[test]
fn depthwise_convolutions_at_stride_2_and_kernels_5_and_7_match_naive_and_gradients() {
    for (k, stride) in [(3usize, 2usize), (5, 1), (5, 2), (7, 1), (7, 2)] {
        let c = 4;
        let mut b = GraphBuilder::new(vec![c, 11, 10]);
        let p = (k - 1) / 2;
        b.conv(
            "dw",
            0,
            c,
            vec![k, k],
            vec![stride, stride],
            vec![(p, p); 2],
            vec![1, 1],
            c,
            true,
        )
        .unwrap();
        let g = b.finish();
        let n = g.nodes[0].clone();
        let x = randn(&[2, c, 11, 10], k as u64);
        let w = randn(&[c, 1, k, k], 10 + k as u64);
        let bias = randn(&[c], 20 + k as u64);
        let mut t: HashMap<String, Tensor> = HashMap::new();
        t.insert("dw.weight".into(), w.clone());
        t.insert("dw.bias".into(), bias.clone());
        let y = interp::eval_node(&n, &[&x], &t).unwrap();
        let (oh, ow) = (n.out_shape[1], n.out_shape[2]);
        assert_eq!(y.dims(), [2, c, oh, ow]);
        let (xv, wv, bv, yv) = (vals(&x), vals(&w), vals(&bias), vals(&y));
        for s in 0..2 {
            for ch in 0..c {
                for i in 0..oh {
                    for j in 0..ow {
                        let mut acc = bv[ch] as f64;
                        for a in 0..k {
                            for bb in 0..k {
                                let r = (i * stride + a) as isize - p as isize;
                                let q = (j * stride + bb) as isize - p as isize;
                                if r >= 0 && q >= 0 && r < 11 && q < 10 {
                                    acc += (xv[((s * c + ch) * 11 + r as usize) * 10 + q as usize]
                                        * wv[(ch * k + a) * k + bb])
                                        as f64;
                                }
                            }
                        }
                        let got = yv[((s * c + ch) * oh + i) * ow + j];
                        assert!(
                            (got as f64 - acc).abs() < 1e-4,
                            "k{k} s{stride}: {got} vs {acc}"
                        );
                    }
                }
            }
        }
        // Gradients in input and weight by finite differences (weight through a Var).
        let wv_ = Var::from_tensor(&w).unwrap();
        let xv_ = Var::from_tensor(&x).unwrap();
        let mut t2: HashMap<String, Tensor> = HashMap::new();
        t2.insert("dw.weight".into(), wv_.as_tensor().clone());
        t2.insert("dw.bias".into(), bias.clone());
        let y = interp::eval_node(&n, &[xv_.as_tensor()], &t2).unwrap();
        let r = randn(y.dims(), 77);
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let loss = |x: &Tensor, w: &Tensor| -> f64 {
            let mut t3: HashMap<String, Tensor> = HashMap::new();
            t3.insert("dw.weight".into(), w.clone());
            t3.insert("dw.bias".into(), bias.clone());
            let y = interp::eval_node(&n, &[x], &t3).unwrap();
            vals(&y)
                .iter()
                .zip(vals(&r))
                .map(|(a, b)| *a as f64 * b as f64)
                .sum()
        };
        let eps = 1e-2f32;
        let bump = |t: &Tensor, e: usize, d: f32| {
            let mut v = vals(t);
            v[e] += d;
            Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap()
        };
        let gx = vals(grads.get(xv_.as_tensor()).unwrap());
        for e in (0..x.elem_count()).step_by(37) {
            let fd =
                (loss(&bump(&x, e, eps), &w) - loss(&bump(&x, e, -eps), &w)) / (2.0 * eps as f64);
            assert!(
                (fd as f32 - gx[e]).abs() < 5e-3 * (1.0 + fd.abs() as f32),
                "k{k} s{stride} dx[{e}]: {} vs {fd}",
                gx[e]
            );
        }
        let gw = vals(grads.get(wv_.as_tensor()).unwrap());
        for e in (0..w.elem_count()).step_by(5) {
            let fd =
                (loss(&x, &bump(&w, e, eps)) - loss(&x, &bump(&w, e, -eps))) / (2.0 * eps as f64);
            assert!(
                (fd as f32 - gw[e]).abs() < 5e-3 * (1.0 + fd.abs() as f32),
                "k{k} s{stride} dw[{e}]: {} vs {fd}",
                gw[e]
            );
        }
    }
}
