//! Optimizer updates against hand-computed PyTorch formulas, schedules against their
//! definitions, and state round trips.

use crate::optim::{Optimizer, OptimizerConfig};
use crate::schedule::ScheduleConfig;
use candle_core::{Device, Tensor, Var};

/// Run `steps` steps of minimising L = Σ c·w (gradient c) from w0, return w.
fn run(cfg: OptimizerConfig, w0: f32, c: f32, steps: usize, lr: f64) -> f32 {
    let w = Var::from_tensor(&Tensor::new(&[w0], &Device::Cpu).unwrap()).unwrap();
    let mut opt = Optimizer::new(cfg, vec![("w".into(), w.clone())]).unwrap();
    for _ in 0..steps {
        let loss = (w.as_tensor() * c as f64).unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap(), lr).unwrap();
    }
    w.to_vec1::<f32>().unwrap()[0]
}

#[test]
fn adam_first_step_moves_by_lr() {
    // Step 1: m = 0.1g, v = 0.001g², m̂ = g, v̂ = g² → w −= lr·g/(|g|+eps) ≈ lr·sign(g).
    let w = run(OptimizerConfig::adam(0.0), 1.0, 2.0, 1, 0.1);
    assert!((w - 0.9).abs() < 1e-6, "{w}");
}

#[test]
fn adam_l2_vs_adamw_decoupled_decay() {
    // Adam with L2 wd=0.5, w0=1, c=−0.25 → g = −0.25 + 0.5 = 0.25 > 0 → first step w = 0.9
    // (without the L2 term g < 0 and w would rise to 1.1).
    let w = run(OptimizerConfig::adam(0.5), 1.0, -0.25, 1, 0.1);
    assert!((w - 0.9).abs() < 1e-6, "{w}");
    let w = run(OptimizerConfig::adam(0.0), 1.0, -0.25, 1, 0.1);
    assert!((w - 1.1).abs() < 1e-6, "{w}");
    // AdamW wd=0.5, c=2: w = 1·(1 − 0.1·0.5) = 0.95, then − 0.1·2/(2+1e-8) → 0.85.
    let w = run(OptimizerConfig::adamw(0.5), 1.0, 2.0, 1, 0.1);
    assert!((w - 0.85).abs() < 1e-6, "{w}");
    // Second Adam step with constant g: m̂ = g, v̂ = g² again → another lr.
    let w = run(OptimizerConfig::adam(0.0), 1.0, 2.0, 2, 0.1);
    assert!((w - 0.8).abs() < 1e-5, "{w}");
}

#[test]
fn sgd_momentum_and_nesterov() {
    // Plain: w = 1 − 0.1·2 = 0.8.
    assert!((run(OptimizerConfig::sgd(0.0, false, 0.0), 1.0, 2.0, 1, 0.1) - 0.8).abs() < 1e-6);
    // Momentum 0.9, g=2: b1 = 2, w = 0.8; b2 = 0.9·2+2 = 3.8, w = 0.8 − 0.38 = 0.42.
    assert!((run(OptimizerConfig::sgd(0.9, false, 0.0), 1.0, 2.0, 2, 0.1) - 0.42).abs() < 1e-6);
    // Nesterov: step 1 b=2, g' = 2 + 0.9·2 = 3.8 → w = 0.62; step 2 b = 3.8, g' = 2 + 3.42 = 5.42
    // → w = 0.62 − 0.542 = 0.078.
    assert!((run(OptimizerConfig::sgd(0.9, true, 0.0), 1.0, 2.0, 2, 0.1) - 0.078).abs() < 1e-6);
    // Weight decay 0.5 with c = 1: g = 1 + 0.5·w = 1.5 → w = 1 − 0.15 = 0.85.
    assert!((run(OptimizerConfig::sgd(0.0, false, 0.5), 1.0, 1.0, 1, 0.1) - 0.85).abs() < 1e-6);
}

#[test]
fn optimizer_state_round_trip_continues_identically() {
    let make = || Var::from_tensor(&Tensor::new(&[1f32, -2., 3.], &Device::Cpu).unwrap()).unwrap();
    let step = |opt: &mut Optimizer, w: &Var| {
        let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap(), 0.05).unwrap();
    };
    let (wa, wb) = (make(), make());
    let mut a =
        Optimizer::new(OptimizerConfig::adamw(0.01), vec![("w".into(), wa.clone())]).unwrap();
    let mut b =
        Optimizer::new(OptimizerConfig::adamw(0.01), vec![("w".into(), wb.clone())]).unwrap();
    for _ in 0..3 {
        step(&mut a, &wa);
        step(&mut b, &wb);
    }
    let (n, st) = b.state().unwrap();
    let mut c =
        Optimizer::new(OptimizerConfig::adamw(0.01), vec![("w".into(), wb.clone())]).unwrap();
    c.load_state(n, &st).unwrap();
    for _ in 0..3 {
        step(&mut a, &wa);
        step(&mut c, &wb);
    }
    assert_eq!(wa.to_vec1::<f32>().unwrap(), wb.to_vec1::<f32>().unwrap());
}

#[test]
fn schedules_follow_their_definitions() {
    let s = ScheduleConfig::Step {
        step_size: 3,
        gamma: 0.5,
    };
    assert_eq!([0, 2, 3, 6].map(|e| s.lr(1.0, e)), [1.0, 1.0, 0.5, 0.25]);
    // The KWS recipe: ×0.2 at 12 and 24.
    let m = ScheduleConfig::MultiStep {
        milestones: vec![12, 24],
        gamma: 0.2,
    };
    assert_eq!(m.lr(5e-4, 11), 5e-4);
    assert!((m.lr(5e-4, 12) - 1e-4).abs() < 1e-15);
    assert!((m.lr(5e-4, 30) - 2e-5).abs() < 1e-15);
    let e = ScheduleConfig::Exponential { gamma: 0.99 };
    assert!((e.lr(1e-3, 2) - 1e-3 * 0.9801).abs() < 1e-15);
    let c = ScheduleConfig::Cosine {
        t_max: 10,
        eta_min: 0.1,
    };
    assert!((c.lr(1.1, 0) - 1.1).abs() < 1e-12);
    assert!((c.lr(1.1, 5) - 0.6).abs() < 1e-12);
    assert!((c.lr(1.1, 10) - 0.1).abs() < 1e-12);
    assert!(
        ScheduleConfig::Step {
            step_size: 0,
            gamma: 0.1
        }
        .validate()
        .is_err()
    );
}
