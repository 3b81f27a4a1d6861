//! conv1d / conv2d (dense, grouped, depthwise) against the naive f64 reference: forward and
//! input/weight/bias gradients on the reference models' shapes and on many seeded random
//! shapes, plus central finite differences on small shapes.

mod common;

use candle_core::{Tensor, Var};
use common::*;
use rand::Rng;
use whittle_kernels::{Clamp, Conv1dCfg, Conv2dCfg, conv1d, conv2d};

fn tol_of(want: &[f64], k: usize) -> f64 {
    let m = want.iter().fold(1.0f64, |a, v| a.max(v.abs()));
    2e-6 * m * (k as f64).sqrt().max(4.0)
}

/// Runs our op (as conv1d when `as_1d` and h == 1) and returns (y, dx, dw, db) with dy = r.
type Grads = (Vec<f32>, Option<Vec<f32>>, Vec<f32>, Option<Vec<f32>>);

fn run(
    c: &RefConv,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    r: &[f32],
    as_1d: bool,
    x_is_var: bool,
) -> Grads {
    let xv = var(x, &[c.n, c.cin, c.h, c.w]);
    let xt: Tensor = if x_is_var {
        xv.as_tensor().clone()
    } else {
        cst(x, &[c.n, c.cin, c.h, c.w])
    };
    let wv = var(w, &[c.cout, c.cin / c.g, c.kh, c.kw]);
    let bv = b.map(|b| var(b, &[c.cout]));
    let y = if as_1d {
        assert_eq!((c.h, c.kh, c.g), (1, 1, 1));
        let cfg = Conv1dCfg {
            stride: c.s.1,
            padding: c.p.1,
            dilation: c.d.1,
        };
        let x3 = cst(x, &[c.n, c.cin, c.w]);
        let x3 = if x_is_var {
            Var::from_tensor(&x3).unwrap().as_tensor().clone()
        } else {
            x3
        };
        let w3 = wv.as_tensor().reshape((c.cout, c.cin, c.kw)).unwrap();
        let y = conv1d(&x3, &w3, bv.as_ref().map(|v| v.as_tensor()), &cfg).unwrap();
        let (oh, ow) = c.out().unwrap();
        assert_eq!(y.dims(), &[c.n, c.cout, ow]);
        assert_eq!(oh, 1);
        let loss = (&y * cst(r, y.dims())).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        let dx = g.get(&x3).map(flat);
        assert_eq!(dx.is_some(), x_is_var);
        let dw = flat(g.get(wv.as_tensor()).unwrap());
        let db = bv.as_ref().map(|v| flat(g.get(v.as_tensor()).unwrap()));
        return (flat(&y), dx, dw, db);
    } else {
        let cfg = Conv2dCfg {
            stride: c.s,
            padding: c.p,
            dilation: c.d,
            groups: c.g,
        };
        conv2d(
            &xt,
            wv.as_tensor(),
            bv.as_ref().map(|v| v.as_tensor()),
            &cfg,
        )
        .unwrap()
    };
    let (oh, ow) = c.out().unwrap();
    assert_eq!(y.dims(), &[c.n, c.cout, oh, ow]);
    let loss = (&y * cst(r, y.dims())).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let dx = g.get(&xt).map(flat);
    assert_eq!(dx.is_some(), x_is_var);
    let dw = flat(g.get(wv.as_tensor()).unwrap());
    let db = bv.as_ref().map(|v| flat(g.get(v.as_tensor()).unwrap()));
    (flat(&y), dx, dw, db)
}

fn check(c: RefConv, bias: bool, seed: u64, as_1d: bool) {
    let mut r = rng(seed);
    let (oh, ow) = c.out().expect("valid geometry");
    let x = randv(&mut r, c.n * c.cin * c.h * c.w);
    let w = randv(&mut r, c.cout * (c.cin / c.g) * c.kh * c.kw);
    let b = bias.then(|| randv(&mut r, c.cout));
    let dy = randv(&mut r, c.n * c.cout * oh * ow);
    let (y, dx, dw, db) = run(&c, &x, &w, b.as_deref(), &dy, as_1d, true);
    let k = (c.cin / c.g) * c.kh * c.kw;
    let yr = c.forward(&x, &w, b.as_deref());
    let (dxr, dwr, dbr) = c.backward(&x, &w, &dy);
    let ctx = format!("{c:?} bias={bias} 1d={as_1d}");
    assert_close(&format!("y {ctx}"), &y, &yr, tol_of(&yr, k), 1e-5);
    assert_close(
        &format!("dx {ctx}"),
        &dx.unwrap(),
        &dxr,
        tol_of(&dxr, c.cout * c.kh * c.kw),
        1e-5,
    );
    assert_close(
        &format!("dw {ctx}"),
        &dw,
        &dwr,
        tol_of(&dwr, c.n * oh * ow),
        1e-5,
    );
    if let Some(db) = db {
        assert_close(
            &format!("db {ctx}"),
            &db,
            &dbr,
            tol_of(&dbr, c.n * oh * ow),
            1e-5,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn rc(
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
    d: (usize, usize),
    g: usize,
) -> RefConv {
    RefConv {
        n,
        cin,
        h,
        w,
        cout,
        kh: k.0,
        kw: k.1,
        s,
        p,
        d,
        g,
    }
}

#[test]
fn dscnn_first_layer_with_input_gradient() {
    // Conv2d 1→64, k=(10,4), stride 2, padding (5,1) on 49×10: candle 0.11.1's backward fails here.
    let c = rc(2, 1, 49, 10, 64, (10, 4), (2, 2), (5, 1), (1, 1), 1);
    assert_eq!(c.out(), Some((25, 5)));
    check(c, true, 1, false);
    // The minimal failing case of candle's own backward.
    check(
        rc(1, 1, 4, 5, 1, (3, 3), (2, 2), (0, 0), (1, 1), 1),
        false,
        2,
        false,
    );
}

#[test]
fn reference_model_layers() {
    let cases = [
        // DS-CNN depthwise + pointwise at 25×5 (batch 3 exercises sub-batching)
        (
            rc(3, 64, 25, 5, 64, (3, 3), (1, 1), (1, 1), (1, 1), 64),
            true,
        ),
        (
            rc(3, 64, 25, 5, 64, (1, 1), (1, 1), (0, 0), (1, 1), 1),
            false,
        ),
        // ResNet-8
        (
            rc(2, 3, 32, 32, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1),
            false,
        ),
        (
            rc(2, 16, 32, 32, 32, (3, 3), (2, 2), (1, 1), (1, 1), 1),
            false,
        ),
        (
            rc(2, 16, 32, 32, 32, (1, 1), (2, 2), (0, 0), (1, 1), 1),
            true,
        ),
        (
            rc(2, 64, 8, 8, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1),
            false,
        ),
        // MobileNetV1-0.25: first layer and stride-2 depthwise
        (
            rc(2, 3, 32, 32, 8, (3, 3), (2, 2), (1, 1), (1, 1), 1),
            false,
        ),
        (
            rc(2, 16, 16, 16, 16, (3, 3), (2, 2), (1, 1), (1, 1), 16),
            false,
        ),
        (
            rc(2, 16, 16, 16, 16, (3, 3), (1, 1), (1, 1), (1, 1), 16),
            true,
        ),
    ];
    for (i, (c, b)) in cases.into_iter().enumerate() {
        check(c, b, 10 + i as u64, false);
    }
}

#[test]
fn tcn_conv1d_dilations() {
    for (i, d) in [1usize, 2, 4, 8].into_iter().enumerate() {
        let cin = if i == 0 { 10 } else { 64 };
        check(
            rc(3, cin, 1, 49, 64, (1, 3), (1, 1), (0, d), (1, d), 1),
            true,
            20 + i as u64,
            true,
        );
    }
    // Stride-2 and unpadded conv1d.
    check(
        rc(2, 5, 1, 20, 7, (1, 4), (1, 2), (0, 0), (1, 1), 1),
        false,
        30,
        true,
    );
}

#[test]
fn batch_larger_than_the_chunk_partition() {
    check(
        rc(19, 6, 7, 5, 10, (3, 2), (1, 1), (1, 1), (1, 1), 1),
        true,
        40,
        false,
    );
    check(
        rc(19, 12, 7, 5, 12, (3, 3), (2, 1), (1, 2), (1, 1), 12),
        true,
        41,
        false,
    );
    check(
        rc(23, 4, 1, 9, 6, (1, 3), (1, 1), (0, 2), (1, 2), 1),
        true,
        42,
        true,
    );
}

#[test]
fn random_shapes() {
    let mut r = rng(7);
    let mut done = 0;
    while done < 80 {
        let n = r.random_range(1..=5);
        let kind = r.random_range(0..4); // 0,1 dense; 2 depthwise; 3 grouped / multiplier
        let g = match kind {
            0 | 1 => 1,
            _ => r.random_range(1..=4),
        };
        let cin = g * r.random_range(1..=4);
        let cout = match kind {
            2 => cin,
            3 => g * r.random_range(1..=3),
            _ => r.random_range(1..=9),
        };
        let g = if kind == 2 { cin } else { g };
        let c = rc(
            n,
            cin,
            r.random_range(1..=13),
            r.random_range(1..=13),
            cout,
            (r.random_range(1..=4), r.random_range(1..=4)),
            (r.random_range(1..=3), r.random_range(1..=3)),
            (r.random_range(0..=3), r.random_range(0..=3)),
            (r.random_range(1..=3), r.random_range(1..=3)),
            g,
        );
        if c.out().is_none() || !c.cin.is_multiple_of(c.g) || !c.cout.is_multiple_of(c.g) {
            continue;
        }
        check(c, r.random_bool(0.5), 1000 + done, false);
        done += 1;
    }
}

#[test]
fn first_layer_input_gradient_is_skipped_but_weights_are_right() {
    let c = rc(3, 2, 9, 6, 4, (3, 2), (2, 1), (1, 0), (1, 1), 1);
    let mut r = rng(50);
    let (oh, ow) = c.out().unwrap();
    let x = randv(&mut r, c.n * c.cin * c.h * c.w);
    let w = randv(&mut r, c.cout * c.cin * c.kh * c.kw);
    let dy = randv(&mut r, c.n * c.cout * oh * ow);
    let (_, dx, dw, _) = run(&c, &x, &w, None, &dy, false, false);
    assert!(dx.is_none());
    let (_, dwr, _) = c.backward(&x, &w, &dy);
    assert_close("dw", &dw, &dwr, 1e-4, 1e-5);
}

/// Central finite differences of loss = Σ y·r through our own f32 forward.
#[test]
fn gradients_match_finite_differences() {
    let cases = [
        rc(2, 3, 6, 5, 4, (3, 2), (2, 1), (1, 2), (1, 2), 1),
        rc(2, 4, 5, 7, 4, (3, 3), (2, 2), (1, 1), (1, 1), 4),
        rc(2, 4, 6, 6, 6, (2, 3), (1, 2), (0, 1), (2, 1), 2),
    ];
    for (ci, c) in cases.into_iter().enumerate() {
        let mut r = rng(60 + ci as u64);
        let (oh, ow) = c.out().unwrap();
        let x = randv(&mut r, c.n * c.cin * c.h * c.w);
        let w = randv(&mut r, c.cout * (c.cin / c.g) * c.kh * c.kw);
        let b = randv(&mut r, c.cout);
        let dy = randv(&mut r, c.n * c.cout * oh * ow);
        let (_, dx, dw, db) = run(&c, &x, &w, Some(&b), &dy, false, true);
        let cfg = Conv2dCfg {
            stride: c.s,
            padding: c.p,
            dilation: c.d,
            groups: c.g,
        };
        let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
            let y = conv2d(
                &cst(x, &[c.n, c.cin, c.h, c.w]),
                &cst(w, &[c.cout, c.cin / c.g, c.kh, c.kw]),
                Some(&cst(b, &[c.cout])),
                &cfg,
            )
            .unwrap();
            flat(&y)
                .iter()
                .zip(&dy)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum()
        };
        let eps = 1e-2f32;
        let fd = |which: usize, i: usize| -> f64 {
            let (mut xp, mut wp, mut bp) = (x.clone(), w.clone(), b.clone());
            let (mut xm, mut wm, mut bm) = (x.clone(), w.clone(), b.clone());
            match which {
                0 => {
                    xp[i] += eps;
                    xm[i] -= eps;
                }
                1 => {
                    wp[i] += eps;
                    wm[i] -= eps;
                }
                _ => {
                    bp[i] += eps;
                    bm[i] -= eps;
                }
            }
            (loss(&xp, &wp, &bp) - loss(&xm, &wm, &bm)) / (2.0 * eps as f64)
        };
        for (which, got) in [(0, dx.unwrap()), (1, dw), (2, db.unwrap())] {
            for i in (0..got.len()).step_by((got.len() / 7).max(1)) {
                let want = fd(which, i);
                assert!(
                    (got[i] as f64 - want).abs() < 5e-3 * (1.0 + want.abs()),
                    "case {ci} arg {which} [{i}]: {} vs fd {want}",
                    got[i]
                );
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let x = Tensor::zeros(
        (1, 3, 4, 4),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let w = Tensor::zeros(
        (2, 2, 3, 3),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(conv2d(&x, &w, None, &Conv2dCfg::default()).is_err());
    let w = Tensor::zeros(
        (2, 3, 9, 3),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(conv2d(&x, &w, None, &Conv2dCfg::default()).is_err());
    let x64 = x.to_dtype(candle_core::DType::F64).unwrap();
    let w = Tensor::zeros(
        (2, 3, 3, 3),
        candle_core::DType::F64,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let e = conv2d(&x64, &w, None, &Conv2dCfg::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("f32"), "{e}");
}

#[test]
fn fused_relu_and_relu6_equal_the_unfused_activation_forward_and_backward() {
    use rand::SeedableRng;
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    // (n, cin, h, w, cout, k, stride, pad, groups): dense wide, dense strided, depthwise, 1-D.
    for &(n, cin, h, w, cout, k, s, p, g) in &[
        (3, 4, 7, 6, 5, 3, 1, 1, 1),
        (2, 3, 9, 8, 4, 3, 2, 1, 1),
        (2, 4, 6, 5, 4, 3, 1, 1, 4),
        (3, 5, 1, 11, 6, 3, 1, 0, 1),
    ] {
        let xs: Vec<f32> = randv(&mut r, n * cin * h * w)
            .iter()
            .map(|v| 4.0 * v)
            .collect();
        let x = var(&xs, &[n, cin, h, w]);
        let kh = if h == 1 { 1 } else { k };
        let wt = var(
            &randv(&mut r, cout * (cin / g) * kh * k),
            &[cout, cin / g, kh, k],
        );
        let b = var(&randv(&mut r, cout), &[cout]);
        let cfg = Conv2dCfg {
            stride: (s, s),
            padding: (if h == 1 { 0 } else { p }, p),
            dilation: (1, 1),
            groups: g,
        };
        let dy = randv(&mut r, 4096);
        let grads = |fused: bool, clamp: Clamp| {
            let y = if fused {
                whittle_kernels::conv2d_act(
                    x.as_tensor(),
                    wt.as_tensor(),
                    Some(b.as_tensor()),
                    &cfg,
                    clamp,
                )
            } else {
                let y = conv2d(x.as_tensor(), wt.as_tensor(), Some(b.as_tensor()), &cfg);
                match clamp {
                    Clamp::Relu6 => {
                        y.and_then(|y| whittle_kernels::activation(&y, whittle_kernels::Act::Relu6))
                    }
                    _ => y.and_then(|y| whittle_kernels::relu(&y)),
                }
            }
            .unwrap();
            let loss = (&y * cst(&dy[..y.elem_count()], y.dims()))
                .unwrap()
                .sum_all()
                .unwrap();
            let gs = loss.backward().unwrap();
            let get = |v: &Var| flat(gs.get(v.as_tensor()).unwrap());
            (flat(&y), get(&x), get(&wt), get(&b))
        };
        for clamp in [Clamp::Relu, Clamp::Relu6] {
            let (a, b2) = (grads(true, clamp), grads(false, clamp));
            assert!(a.0.contains(&0.0) && a.0.iter().any(|v| *v > 0.0));
            if clamp == Clamp::Relu6 {
                assert!(a.0.contains(&6.0), "{clamp:?}: no output reaches 6");
            }
            assert_eq!(
                a.0, b2.0,
                "forward {clamp:?} {n} {cin} {h} {w} {cout} {k} {s} {p} {g}"
            );
            assert_eq!(a.1, b2.1, "dx {clamp:?}");
            assert_eq!(a.2, b2.2, "dw {clamp:?}");
            assert_eq!(a.3, b2.3, "db {clamp:?}");
        }
    }
}

#[test]
fn wide_channel_counts_strides_and_groups() {
    // Channel counts past the microkernels' tiles (8 output rows forward; 16·4 channels and up
    // to 14 taps per weight-gradient tile), strided input gradients, groups, 1-D.
    let cases = [
        rc(3, 20, 9, 7, 70, (3, 3), (2, 2), (1, 1), (1, 1), 1),
        rc(2, 33, 8, 11, 17, (2, 3), (2, 1), (0, 2), (1, 2), 1),
        rc(2, 24, 6, 6, 40, (3, 3), (1, 1), (1, 1), (1, 1), 2),
        rc(2, 12, 10, 9, 36, (3, 3), (3, 2), (2, 1), (1, 1), 3),
        rc(3, 40, 5, 5, 90, (1, 1), (1, 1), (0, 0), (1, 1), 1),
        rc(2, 16, 9, 9, 24, (1, 1), (2, 2), (0, 0), (1, 1), 1),
        rc(2, 48, 1, 30, 65, (1, 5), (1, 1), (0, 4), (1, 2), 1),
        // Pointwise with whole 16 × 16 blocks (the weight gradient reads x and dy in place).
        rc(11, 24, 8, 8, 32, (1, 1), (1, 1), (0, 0), (1, 1), 1),
        rc(10, 32, 4, 8, 32, (1, 1), (1, 1), (0, 0), (1, 1), 2),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        let as_1d = c.h == 1 && c.kh == 1 && c.g == 1;
        check(c, i % 2 == 0, 300 + i as u64, as_1d);
    }
}

/// Re-runs this binary's shape tests in a child process with the AVX-512 direct kernels
/// switched off, so the portable im2col + GEMM path stays checked on machines that have them.
#[test]
fn portable_gemm_path_passes_the_same_checks() {
    if std::env::var_os("WHITTLE_KERNELS_NO_DIRECT").is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .env("WHITTLE_KERNELS_NO_DIRECT", "1")
        .args([
            "--exact",
            "random_shapes",
            "reference_model_layers",
            "wide_channel_counts_strides_and_groups",
            "dscnn_first_layer_with_input_gradient",
            "fused_relu_and_relu6_equal_the_unfused_activation_forward_and_backward",
            "--test-threads=2",
        ])
        .output()
        .expect("running the test binary");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("5 passed"),
        "portable path failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
