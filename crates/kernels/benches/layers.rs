//! Per-layer benchmark, batch 100, 2 threads: forward and forward+backward (sum loss) time of
//! candle 0.11.1's built-in op and of whittle-kernels' op on the reference models' layers,
//! measured in the same run, with the speed-up ratio. Run: `cargo bench -p whittle-kernels`.
//! Env: WHITTLE_BENCH_THREADS (default 2), WHITTLE_BENCH_REPS (default 5), WHITTLE_BENCH_FILTER
//! (only layers whose name contains it), WHITTLE_BENCH_OURS_ONLY (skip the candle baseline).

use candle_core::{D, DType, Device, Result, Tensor, Var};
use whittle_kernels as wk;

type Layer = Box<dyn Fn(&Tensor) -> Result<Tensor>>;

/// CPU time (ns) consumed so far by all threads of this process, from /proc/self/task/*/schedstat.
/// The machine is shared, so wall time is noisy; CPU time is not inflated by waiting for a core.
fn cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// Per-run CPU time in ms (all threads), averaged over at least `reps` runs and at least 300 ms
/// of CPU time (the kernel updates the counters at scheduler ticks), after one warm-up; or the
/// error the run returned. Wall time would be CPU time / threads on an idle machine.
fn time(reps: usize, f: &dyn Fn() -> Result<()>) -> std::result::Result<f64, String> {
    f().map_err(|e| e.to_string().lines().next().unwrap_or("").to_string())?;
    let c0 = cpu_ns();
    let mut runs = 0usize;
    loop {
        f().expect("succeeded in warm-up");
        runs += 1;
        let spent = cpu_ns() - c0;
        if (runs >= reps && spent >= 300_000_000) || runs >= 2000 {
            return Ok(spent as f64 / 1e6 / runs as f64);
        }
    }
}

fn fmt(r: &std::result::Result<f64, String>) -> String {
    match r {
        Ok(v) => format!("{v:9.3}"),
        Err(_) => format!("{:>9}", "FAILS"),
    }
}

fn ratio(a: &std::result::Result<f64, String>, b: &std::result::Result<f64, String>) -> String {
    match (a, b) {
        (Ok(a), Ok(b)) if *b > 0.0 => format!("{:7.1}x", a / b),
        _ => format!("{:>8}", "n/a"),
    }
}

/// Times one layer: `x` is the input (a Var when the layer's input gradient is needed).
fn bench(name: &str, reps: usize, x: &Tensor, params: &[&Var], candle: Layer, ours: Layer) {
    if let Ok(f) = std::env::var("WHITTLE_BENCH_FILTER")
        && !name.contains(&f)
    {
        return;
    }
    let skip_candle = std::env::var("WHITTLE_BENCH_OURS_ONLY").is_ok();
    let run = |f: &Layer, bwd: bool| -> Result<()> {
        let y = f(x)?;
        if bwd {
            let g = y.sum_all()?.backward()?;
            for p in params {
                g.get(p.as_tensor()).expect("parameter gradient");
            }
        }
        Ok(())
    };
    let skipped = || Err("skipped".to_string());
    let cf = if skip_candle {
        skipped()
    } else {
        time(reps, &|| run(&candle, false))
    };
    let cb = if skip_candle {
        skipped()
    } else {
        time(reps, &|| run(&candle, true))
    };
    let of = time(reps, &|| run(&ours, false));
    let ob = time(reps, &|| run(&ours, true));
    println!(
        "{name:<44} {} {} {} | {} {} {}",
        fmt(&cf),
        fmt(&of),
        ratio(&cf, &of),
        fmt(&cb),
        fmt(&ob),
        ratio(&cb, &ob)
    );
    if let (Err(e), false) = (&cb, skip_candle) {
        println!("{:<44} candle fwd+bwd error: {e}", "");
    }
}

fn randn(shape: &[usize]) -> Result<Tensor> {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
}

fn var(shape: &[usize]) -> Result<Var> {
    Var::from_tensor(&randn(shape)?.affine(0.1, 0.0)?)
}

/// candle built-in training batch norm over dims (0, 2, ...), as a model would compose it.
fn candle_bn(x: &Tensor, g: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    let c = x.dim(1)?;
    let rank = x.rank();
    let mut bshape = vec![1usize; rank];
    bshape[1] = c;
    let xt = x.transpose(0, 1)?.flatten_from(1)?; // (C, M)
    let mean = xt.mean_keepdim(D::Minus1)?;
    let xc = xt.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
    let mut shape = x.dims().to_vec();
    shape.swap(0, 1);
    let y = xn.reshape(shape)?.transpose(0, 1)?;
    let y = y
        .broadcast_mul(&g.reshape(bshape.clone())?)?
        .broadcast_add(&b.reshape(bshape)?)?;
    if relu { y.relu() } else { Ok(y) }
}

fn main() -> Result<()> {
    let threads: usize = std::env::var("WHITTLE_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let reps: usize = std::env::var("WHITTLE_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    wk::init_threads(threads);
    println!(
        "whittle-kernels layer bench: batch 100, {threads} threads, f32, CPU ms per call summed over threads, mean of >= {reps} runs and >= 0.3 s"
    );
    println!(
        "{:<44} {:>9} {:>9} {:>8} | {:>9} {:>9} {:>8}",
        "layer", "candle", "ours", "speedup", "cand f+b", "ours f+b", "speedup"
    );
    // (m, n, k, a_rs, a_cs, b_rs, b_cs): forward, dW = dy·colᵀ, dcol = Wᵀ·dy shapes of TCN and ResNet.
    #[allow(clippy::type_complexity)]
    let shapes: [(&str, usize, usize, usize, bool, bool); 10] = [
        ("ResNet16 dWT", 144, 16, 1024, false, true),
        ("ResNet16 dcolT", 1024, 144, 16, true, false),
        ("TCN dWT", 192, 64, 539, false, true),
        ("TCN dcolT", 539, 192, 64, true, false),
        ("TCN fwd", 64, 539, 192, false, false),
        ("TCN dW", 64, 192, 539, false, true),
        ("TCN dcol", 192, 539, 64, true, false),
        ("ResNet16 fwd", 16, 1024, 144, false, false),
        ("ResNet16 dW", 16, 144, 1024, false, true),
        ("ResNet16 dcol", 144, 1024, 16, true, false),
    ];
    for (what, m, nn, k, ta, tb) in shapes {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * nn];
        let mut c = vec![0f32; m * nn];
        let (a_rs, a_cs) = if ta { (1, m) } else { (k, 1) };
        let (b_rs, b_cs) = if tb { (1, k) } else { (nn, 1) };
        let c0 = cpu_ns();
        let mut runs = 0usize;
        while cpu_ns() - c0 < 300_000_000 {
            for _ in 0..20 {
                wk::bench_support::matmul(m, nn, k, &mut c, false, &a, a_rs, a_cs, &b, b_rs, b_cs);
            }
            runs += 20;
        }
        let gflops = (2 * m * nn * k * runs) as f64 / (cpu_ns() - c0) as f64;
        println!(
            "calibration: 1-thread gemm {what:<14} {m}x{nn}x{k}: {gflops:5.1} GFLOP/s per CPU second"
        );
    }
    let n = 100;

    // conv2d layers: (name, input shape, input is a Var, cout, k, stride, padding, groups)
    #[allow(clippy::type_complexity)]
    let convs: [(
        &str,
        [usize; 4],
        bool,
        usize,
        (usize, usize),
        usize,
        (usize, usize),
        usize,
    ); 8] = [
        (
            "DS-CNN conv0 10x4 s2 1->64 on 49x10",
            [n, 1, 49, 10],
            false,
            64,
            (10, 4),
            2,
            (5, 1),
            1,
        ),
        (
            "DS-CNN depthwise 3x3 64g 25x5",
            [n, 64, 25, 5],
            true,
            64,
            (3, 3),
            1,
            (1, 1),
            64,
        ),
        (
            "DS-CNN pointwise 1x1 64->64 25x5",
            [n, 64, 25, 5],
            true,
            64,
            (1, 1),
            1,
            (0, 0),
            1,
        ),
        (
            "ResNet-8 conv3x3 3->16 32x32 (input)",
            [n, 3, 32, 32],
            false,
            16,
            (3, 3),
            1,
            (1, 1),
            1,
        ),
        (
            "ResNet-8 conv3x3 16->16 32x32",
            [n, 16, 32, 32],
            true,
            16,
            (3, 3),
            1,
            (1, 1),
            1,
        ),
        (
            "ResNet-8 conv3x3 16->32 s2 32x32",
            [n, 16, 32, 32],
            true,
            32,
            (3, 3),
            2,
            (1, 1),
            1,
        ),
        (
            "ResNet-8 conv3x3 64->64 8x8",
            [n, 64, 8, 8],
            true,
            64,
            (3, 3),
            1,
            (1, 1),
            1,
        ),
        (
            "MobileNet depthwise 3x3 s2 16g 32x32",
            [n, 16, 32, 32],
            true,
            16,
            (3, 3),
            2,
            (1, 1),
            16,
        ),
    ];
    for (name, xs, xvar, cout, k, s, p, g) in convs {
        let xv = var(&xs)?;
        let x = if xvar {
            xv.as_tensor().clone()
        } else {
            xv.as_tensor().detach()
        };
        let w = var(&[cout, xs[1] / g, k.0, k.1])?;
        let (wc, wo) = (w.as_tensor().clone(), w.as_tensor().clone());
        let cfg = wk::Conv2dCfg {
            stride: (s, s),
            padding: p,
            dilation: (1, 1),
            groups: g,
        };
        let candle: Layer = if p.0 == p.1 {
            Box::new(move |x| x.conv2d(&wc, p.0, s, 1, g))
        } else {
            // candle has one padding for both axes: pad the width explicitly.
            Box::new(move |x| x.pad_with_zeros(3, p.1, p.1)?.conv2d(&wc, p.0, s, 1, g))
        };
        let ours: Layer = Box::new(move |x| wk::conv2d(x, &wo, None, &cfg));
        bench(name, reps, &x, &[&w], candle, ours);
    }

    // TCN conv1d layers, same length 49.
    for (cin, d) in [(10usize, 1usize), (64, 1), (64, 4), (64, 8)] {
        let xv = var(&[n, cin, 49])?;
        let x = if cin == 10 {
            xv.as_tensor().detach()
        } else {
            xv.as_tensor().clone()
        };
        let w = var(&[64, cin, 3])?;
        let (wc, wo) = (w.as_tensor().clone(), w.as_tensor().clone());
        let cfg = wk::Conv1dCfg {
            stride: 1,
            padding: d,
            dilation: d,
        };
        let candle: Layer = Box::new(move |x| x.conv1d(&wc, d, 1, d, 1));
        let ours: Layer = Box::new(move |x| wk::conv1d(x, &wo, None, &cfg));
        bench(
            &format!("TCN conv1d k3 {cin}->64 d{d} L49"),
            reps,
            &x,
            &[&w],
            candle,
            ours,
        );
    }

    // Batch norm, fused BN+ReLU, ReLU, global average pooling.
    for (shape, relu) in [
        ([n, 64, 25, 5], false),
        ([n, 16, 32, 32], false),
        ([n, 64, 25, 5], true),
    ] {
        let x = var(&shape)?.as_tensor().clone();
        let (g, b) = (var(&[shape[1]])?, var(&[shape[1]])?);
        let (gc, bc, go, bo) = (
            g.as_tensor().clone(),
            b.as_tensor().clone(),
            g.as_tensor().clone(),
            b.as_tensor().clone(),
        );
        let candle: Layer = Box::new(move |x| candle_bn(x, &gc, &bc, relu));
        let ours: Layer = if relu {
            Box::new(move |x| Ok(wk::batch_norm_relu_train(x, &go, &bo, 1e-5)?.0))
        } else {
            Box::new(move |x| Ok(wk::batch_norm_train(x, &go, &bo, 1e-5)?.0))
        };
        let name = format!(
            "batch norm{} train {shape:?}",
            if relu { "+relu" } else { "" }
        );
        bench(&name, reps, &x, &[&g, &b], candle, ours);
    }
    let xv = var(&[n, 64, 25, 5])?;
    let x = xv.as_tensor().clone();
    bench(
        "ReLU (100,64,25,5)",
        reps,
        &x,
        &[&xv],
        Box::new(|x| x.relu()),
        Box::new(wk::relu),
    );
    let xv = var(&[n, 64, 8, 8])?;
    let x = xv.as_tensor().clone();
    bench(
        "global avg pool (100,64,8,8)",
        reps,
        &x,
        &[&xv],
        Box::new(|x| x.mean(D::Minus1)?.mean(D::Minus1)),
        Box::new(wk::global_avg_pool),
    );
    let _ = DType::F32;
    Ok(())
}
