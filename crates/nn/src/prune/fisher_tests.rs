//! Fisher pruning tests: Δ against a hand computation and against finite differences of the
//! per-sample loss in a shared (residual) group mask; exact removal counts with coupled groups
//! kept consistent; zero-importance channels go first; the exported network computes the
//! masked original; seeded runs repeat bit for bit.

use super::fisher::{FisherConfig, FisherHooks, batch_fisher, fisher_prune};
use super::masked::{self, Mask};
use super::*;
use crate::config::{DsCnnConfig, ModelConfig, TcnConfig, TcnLayerConfig, TcnPadding};
use crate::data::{Split, Targets};
use crate::loss::LossKind;
use crate::optim::OptimizerConfig;
use candle_core::{Device, Tensor};
use std::collections::HashMap;

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

/// Deterministic pseudo-random inputs with labels that depend on them (so training helps).
fn data(n: usize, shape: &[usize], classes: u32) -> Split {
    let per: usize = shape.iter().product();
    let mut x = Vec::with_capacity(n * per);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let k = (i as u32) % classes;
        for j in 0..per {
            let noise = (((i * per + j) * 2654435761usize) % 1000) as f32 / 1000.0 - 0.5;
            x.push(
                noise
                    + if j % classes as usize == k as usize {
                        0.8
                    } else {
                        0.0
                    },
            );
        }
        y.push(k);
    }
    Split::classes(x, shape, y).unwrap()
}

fn cfg(ratio: f64) -> FisherConfig {
    let mut c = FisherConfig::new(ratio, 16, 1e-2, OptimizerConfig::adam(0.0));
    c.seed = 3;
    c
}

fn tcn_seed(ch: usize) -> Model {
    Model::new(ModelConfig::Tcn(TcnConfig::seed(ch)), 5).unwrap()
}

/// One Conv1d (1→2, k=1, no BN) → ReLU → pool → FC 2→2 with hand-set weights.
fn two_channel_net() -> Model {
    let c = TcnConfig {
        input_channels: 1,
        input_len: 2,
        classes: 2,
        layers: vec![TcnLayerConfig {
            channels: 2,
            kernel: 1,
            dilation: 1,
        }],
        batch_norm: false,
        residual_every: 0,
        padding: TcnPadding::Same,
        bias: true,
    };
    let m = Model::new(ModelConfig::Tcn(c), 0).unwrap();
    let mut s = HashMap::new();
    s.insert("convs.0.weight".to_string(), t(&[1.0, -0.5], &[2, 1, 1]));
    s.insert("convs.0.bias".to_string(), t(&[0.0, 0.25], &[2]));
    s.insert("fc.weight".to_string(), t(&[1.0, 2.0, -1.0, 0.5], &[2, 2]));
    s.insert("fc.bias".to_string(), t(&[0.1, -0.2], &[2]));
    m.load_state(&s).unwrap();
    m
}

#[test]
fn importance_matches_a_hand_computation() {
    // Samples x0 = [1, 2] (label 0), x1 = [−1, 3] (label 1). Activations relu(w·x + b):
    // ch0 = [1, 2] and [0, 3], ch1 = [0, 0] and [0.75, 0]; pooled h0 = [1.5, 0],
    // h1 = [1.5, 0.375]. With L = CE(W·h + b), g_nk = Σ_t a·∂L/∂a = h_nk·Σ_j (p_j − y_j)·W_jk:
    // logits [1.6, −1.7] → g0 = [−0.1067136, 0]; logits [2.35, −1.5125] → g1 = [2.9382515,
    // 0.5509222]. Δ = (g0² + g1²)/(2·2) = [2.1611774, 0.0758788].
    let m = two_channel_net();
    let p = plan(m.graph(), false).unwrap();
    let x = t(&[1.0, 2.0, -1.0, 3.0], &[2, 1, 2]);
    let y = Targets::Classes(Tensor::from_vec(vec![0u32, 1], 2, &Device::Cpu).unwrap());
    let alive: Vec<Vec<bool>> = p.groups.iter().map(|g| vec![true; g.channels]).collect();
    let (s, n) = batch_fisher(&m, &p, &alive, &x, &y, LossKind::CrossEntropy).unwrap();
    assert_eq!(n, 2);
    let g = p.value_group[1];
    let delta: Vec<f64> = s[g].iter().map(|v| v / (2.0 * n as f64)).collect();
    for (got, want) in delta.iter().zip([2.161177391552469, 0.07587880471277444]) {
        assert!((got - want).abs() < 1e-5 * want, "Δ {got} vs {want}");
    }
    // The fixed groups (input, output layer) carry no importance.
    assert!(s[p.value_group[0]].iter().all(|&v| v == 0.0));
    // A removed channel has none either.
    let mut alive2 = alive.clone();
    alive2[g][0] = false;
    let (s2, _) = batch_fisher(&m, &p, &alive2, &x, &y, LossKind::CrossEntropy).unwrap();
    assert_eq!(s2[g][0], 0.0);
}

/// Per-sample loss of the eval-mode network with group `g`'s channel `c` scaled by `v`.
fn loss_at(m: &Model, p: &Plan, x: &Tensor, label: u32, g: usize, c: usize, v: f32) -> f64 {
    let masks: Vec<Mask> = p
        .groups
        .iter()
        .enumerate()
        .map(|(h, grp)| {
            let mut w = vec![1.0f32; grp.channels];
            if h == g {
                w[c] = v;
            }
            Mask {
                params: None,
                acts: Some(t(&w, &[1, grp.channels])),
            }
        })
        .collect();
    let out = masked::forward(m, p, &masks, x, false).unwrap();
    let l = Tensor::from_vec(vec![label], 1, &Device::Cpu).unwrap();
    crate::loss::cross_entropy(&out, &l)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64
}

#[test]
fn coupled_group_importance_is_the_derivative_of_the_shared_mask() {
    // TCN with residual blocks: the group of convs.1 also holds proj.1, convs.3 and convs.5.
    // Give the BN non-trivial statistics so eval mode is not the identity.
    let m = tcn_seed(4);
    for (n, v) in m.buffers() {
        let k = v.elem_count();
        let vals: Vec<f32> = (0..k)
            .map(|i| {
                if n.ends_with("running_var") {
                    0.5 + 0.1 * i as f32
                } else {
                    0.05 * i as f32 - 0.1
                }
            })
            .collect();
        v.set(&t(&vals, &[k])).unwrap();
    }
    // Larger output weights: gradients well above the f32 noise of the differences.
    let fc = m.get("fc.weight").unwrap();
    fc.set(&(fc.as_tensor() * 10.0).unwrap()).unwrap();
    let p = plan(m.graph(), false).unwrap();
    let split = data(3, &[10, 49], 12);
    let alive: Vec<Vec<bool>> = p.groups.iter().map(|g| vec![true; g.channels]).collect();
    let (s, n) = batch_fisher(&m, &p, &alive, &split.x, &split.y, LossKind::CrossEntropy).unwrap();
    let labels: Vec<u32> = match &split.y {
        Targets::Classes(l) => l.to_vec1().unwrap(),
        _ => unreachable!(),
    };
    let residual = p.value_group[1 + m
        .graph()
        .nodes
        .iter()
        .position(|n| n.name == "convs.1")
        .unwrap()];
    let single = p.value_group[1 + m
        .graph()
        .nodes
        .iter()
        .position(|n| n.name == "convs.2")
        .unwrap()];
    for g in [residual, single] {
        for (c, &got) in s[g].iter().enumerate() {
            let eps = 1e-2f32;
            let mut sum_sq = 0.0;
            for (i, &label) in labels.iter().enumerate().take(n) {
                let xi = split.x.narrow(0, i, 1).unwrap();
                let d = (loss_at(&m, &p, &xi, label, g, c, 1.0 + eps)
                    - loss_at(&m, &p, &xi, label, g, c, 1.0 - eps))
                    / (2.0 * eps as f64);
                sum_sq += d * d;
            }
            assert!(
                (got - sum_sq).abs() <= 2e-2 * sum_sq + 1e-6,
                "group {g} channel {c}: Σg² {got} vs finite differences {sum_sq}"
            );
        }
    }
}

#[test]
fn removes_exactly_the_requested_channels_and_keeps_groups_consistent() {
    let m = tcn_seed(8);
    let p = plan(m.graph(), false).unwrap();
    let prunable: usize = p
        .groups
        .iter()
        .filter(|g| !g.fixed)
        .map(|g| g.channels)
        .sum();
    assert_eq!(prunable, 40);
    let train = data(64, &[10, 49], 12);
    let mut c = cfg(0.5);
    c.channels_per_step = 3;
    c.finetune_steps = 2;
    let r = fisher_prune(&m, &train, &c, FisherHooks::default()).unwrap();
    let removed: usize = r.steps.iter().map(|s| s.removed.len()).sum();
    assert_eq!(removed, 20);
    assert_eq!(r.steps.len(), 7); // 6 × 3 + 2
    assert_eq!(r.steps.last().unwrap().removed.len(), 2);
    let kept: usize = p
        .groups
        .iter()
        .zip(&r.kept)
        .filter(|(g, _)| !g.fixed)
        .map(|(_, k)| k.len())
        .sum();
    assert_eq!(kept, 20);
    // Every removed channel is absent from its group's kept list, removed once.
    let mut seen = std::collections::HashSet::new();
    for s in &r.steps {
        for x in &s.removed {
            assert!(seen.insert((x.group, x.channel)));
            assert!(!r.kept[x.group].contains(&x.channel));
            assert!(!p.groups[x.group].fixed);
        }
    }
    let by = |n: &str| r.changes.iter().find(|c| c.name == n).unwrap().clone();
    let res = by("convs.1");
    for n in ["proj.1", "convs.3", "convs.5"] {
        assert_eq!(
            by(n).c_out,
            res.c_out,
            "{n} differs from its residual partners"
        );
    }
    let g1 = p.value_group[1 + m
        .graph()
        .nodes
        .iter()
        .position(|n| n.name == "convs.1")
        .unwrap()];
    if !res.adjusted {
        assert_eq!(res.c_out, r.kept[g1].len());
    }
    let fc = r.changes.last().unwrap();
    assert_eq!(fc.c_out, fc.c_out_before);
    r.model.graph().validate().unwrap();

    // Layer scope: every group loses its own half.
    let mut c = cfg(0.5);
    c.scope = Scope::Layer;
    c.finetune_steps = 1;
    let r = fisher_prune(&m, &train, &c, FisherHooks::default()).unwrap();
    for (g, k) in p.groups.iter().zip(&r.kept) {
        assert_eq!(k.len(), if g.fixed { g.channels } else { 4 });
    }
}

/// Channel (g, c) was removed with Δ = 0 before any channel of positive Δ (other channels of
/// Δ = 0, e.g. ReLUs that never fire on the data, may go with it).
fn goes_first(steps: &[super::fisher::FisherStep], g: usize, c: usize) {
    let order: Vec<_> = steps.iter().flat_map(|s| s.removed.iter()).collect();
    let at = order
        .iter()
        .position(|r| (r.group, r.channel) == (g, c))
        .unwrap_or_else(|| panic!("channel {c} of group {g} was not removed: {order:?}"));
    assert_eq!(order[at].importance, 0.0);
    assert!(order[..at].iter().all(|r| r.importance == 0.0), "{order:?}");
}

#[test]
fn zero_importance_channels_go_first() {
    // (a) A channel whose activations are zero: conv weights and bias 0, no BN (relu(0) = 0).
    let mut tc = TcnConfig::bench(6);
    tc.layers.truncate(3);
    tc.classes = 4;
    let m = Model::new(ModelConfig::Tcn(tc), 2).unwrap();
    let mut s = m.state().unwrap();
    let w = s["convs.1.weight"].to_vec3::<f32>().unwrap();
    let mut flat: Vec<f32> = w.into_iter().flatten().flatten().collect();
    let per = 6 * 3;
    flat[4 * per..5 * per].fill(0.0);
    s.insert("convs.1.weight".into(), t(&flat, &[6, 6, 3]));
    let mut b = s["convs.1.bias"].to_vec1::<f32>().unwrap();
    b[4] = 0.0;
    s.insert("convs.1.bias".into(), t(&b, &[6]));
    m.load_state(&s).unwrap();
    let p = plan(m.graph(), false).unwrap();
    let train = data(32, &[10, 49], 4);
    let mut c = cfg(1.0 / 18.0);
    c.channels_per_step = 1;
    let r = fisher_prune(&m, &train, &c, FisherHooks::default()).unwrap();
    assert_eq!(r.steps.len(), 1);
    goes_first(&r.steps, p.value_group[3], 4);

    // (b) With batch norms: channel 2 of convs.2 feeds convs.3 through zero weights only.
    let m = tcn_seed(6);
    let mut s = m.state().unwrap();
    let w = s["convs.3.weight"].to_vec3::<f32>().unwrap();
    let mut flat: Vec<f32> = w.into_iter().flatten().flatten().collect();
    for o in 0..6 {
        for k in 0..3 {
            flat[o * 18 + 2 * 3 + k] = 0.0;
        }
    }
    s.insert("convs.3.weight".into(), t(&flat, &[6, 6, 3]));
    m.load_state(&s).unwrap();
    let p = plan(m.graph(), false).unwrap();
    let g2 = p.value_group[1 + m
        .graph()
        .nodes
        .iter()
        .position(|n| n.name == "convs.2")
        .unwrap()];
    let train = data(32, &[10, 49], 12);
    let mut c = cfg(0.1);
    c.channels_per_step = 1;
    c.finetune_steps = 0;
    let r = fisher_prune(&m, &train, &c, FisherHooks::default()).unwrap();
    goes_first(&r.steps, g2, 2);
}

/// Zeroed channel outputs (activation masks), or the same through parameter masks.
fn masks_of(p: &Plan, kept: &[Vec<usize>], on_params: bool) -> Vec<Mask> {
    p.groups
        .iter()
        .zip(kept)
        .map(|(g, k)| {
            let v: Vec<f32> = (0..g.channels)
                .map(|c| if k.contains(&c) { 1.0 } else { 0.0 })
                .collect();
            if on_params {
                Mask {
                    params: Some(t(&v, &[g.channels])),
                    acts: None,
                }
            } else {
                Mask {
                    params: None,
                    acts: Some(t(&v, &[1, g.channels])),
                }
            }
        })
        .collect()
}

fn masked_reference(m: &Model, kept: &[Vec<usize>], x: &Tensor) -> Vec<f32> {
    let p = plan(m.graph(), false).unwrap();
    masked::forward(m, &p, &masks_of(&p, kept, false), x, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn parameter_masks_equal_activation_masks_in_both_modes() {
    for (cfg, shape) in [
        (ModelConfig::Tcn(TcnConfig::seed(6)), vec![10, 49]),
        (ModelConfig::Tcn(TcnConfig::bench(6)), vec![10, 49]),
        (small_dscnn(), vec![1, 49, 10]),
    ] {
        let m = Model::new(cfg, 8).unwrap();
        let p = plan(m.graph(), false).unwrap();
        let kept: Vec<Vec<usize>> = p
            .groups
            .iter()
            .map(|g| {
                if g.fixed {
                    (0..g.channels).collect()
                } else {
                    (0..g.channels).filter(|c| c % 3 != 1).collect()
                }
            })
            .collect();
        let x = data(6, &shape, 12).x;
        for train in [false, true] {
            let run = |on: bool| -> Vec<f32> {
                masked::forward(&m, &p, &masks_of(&p, &kept, on), &x, train)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            let (a, b) = (run(true), run(false));
            for (u, v) in a.iter().zip(&b) {
                assert!((u - v).abs() <= 1e-5 * (1.0 + v.abs()), "{u} vs {v}");
            }
        }
    }
}

fn small_dscnn() -> ModelConfig {
    let mut c = DsCnnConfig::reference();
    c.stem.channels = 8;
    for b in &mut c.blocks {
        b.channels = 8;
    }
    c.blocks.truncate(2);
    ModelConfig::DsCnn(c)
}

#[test]
fn without_finetuning_the_export_computes_the_masked_original() {
    for (m, shape) in [
        (tcn_seed(8), vec![10, 49]),
        (Model::new(small_dscnn(), 4).unwrap(), vec![1, 49, 10]),
    ] {
        let train = data(24, &shape, 12);
        let mut c = cfg(0.4);
        c.finetune_steps = 0;
        let r = fisher_prune(&m, &train, &c, FisherHooks::default()).unwrap();
        assert!(r.changes.iter().all(|c| !c.adjusted));
        assert!(r.model.num_params() < m.num_params());
        let x = data(5, &shape, 12).x;
        let want = masked_reference(&m, &r.kept, &x);
        let got: Vec<f32> = r
            .model
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}

#[test]
fn seeded_runs_repeat_and_the_seed_network_is_untouched() {
    let m = tcn_seed(6);
    let before = m.state().unwrap();
    let train = data(40, &[10, 49], 12);
    let c = cfg(0.5);
    let a = fisher_prune(&m, &train, &c, FisherHooks::default()).unwrap();
    let b = fisher_prune(&m, &train, &c, FisherHooks::default()).unwrap();
    assert_eq!(a.steps, b.steps);
    let (sa, sb) = (a.model.state().unwrap(), b.model.state().unwrap());
    for (k, v) in &sa {
        let (x, y) = (
            v.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            sb[k].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(x, y, "{k}");
    }
    for (k, v) in m.state().unwrap() {
        assert_eq!(
            v.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            before[&k].flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
    // Fine-tuning changed the copy's weights, and the training loss is reported.
    assert!(
        a.steps
            .iter()
            .all(|s| s.finetune_loss.is_some_and(f64::is_finite))
    );
}

#[test]
fn bad_settings_are_errors() {
    let m = tcn_seed(4);
    let train = data(8, &[10, 49], 12);
    let edits: [fn(&mut FisherConfig); 5] = [
        |c: &mut FisherConfig| c.ratio = 1.0,
        |c: &mut FisherConfig| c.channels_per_step = 0,
        |c: &mut FisherConfig| c.fisher_batches = 0,
        |c: &mut FisherConfig| c.lr = -1.0,
        |c: &mut FisherConfig| c.loss = LossKind::Mse,
    ];
    for f in edits {
        let mut c = cfg(0.5);
        f(&mut c);
        assert!(fisher_prune(&m, &train, &c, FisherHooks::default()).is_err());
    }
    assert!(prune(&m, Method::Fisher, 0.5, Scope::Global, 0).is_err());
}

/// Timing on the flagship shape (TCN 64 × 7, 2,400 clips of 10×49, ratio 0.5):
/// `cargo test --release -p whittle-nn fisher_flagship_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn fisher_flagship_timing() {
    crate::set_threads(2);
    let mut tc = TcnConfig::seed(64);
    tc.padding = TcnPadding::Causal;
    let m = Model::new(ModelConfig::Tcn(tc), 1).unwrap();
    let train = data(2400, &[10, 49], 12);
    // Per-pass costs: a plain training step, a masked one, a Fisher estimate (batch 100).
    let idx: Vec<u32> = (0..100).collect();
    let (x, y) = train.batch(&idx).unwrap();
    let Targets::Classes(lab) = &y else {
        unreachable!()
    };
    let p = plan(m.graph(), false).unwrap();
    let alive: Vec<Vec<bool>> = p.groups.iter().map(|g| vec![true; g.channels]).collect();
    let ones: Vec<Mask> = p
        .groups
        .iter()
        .map(|g| Mask {
            params: Some(Tensor::ones(g.channels, candle_core::DType::F32, &Device::Cpu).unwrap()),
            acts: None,
        })
        .collect();
    for _ in 0..2 {
        let s = std::time::Instant::now();
        let l = crate::loss::cross_entropy(&m.forward(&x, true).unwrap(), lab).unwrap();
        l.backward().unwrap();
        let t0 = s.elapsed().as_secs_f64();
        let s = std::time::Instant::now();
        let out = masked::forward(&m, &p, &ones, &x, true).unwrap();
        crate::loss::cross_entropy(&out, lab)
            .unwrap()
            .backward()
            .unwrap();
        let t1 = s.elapsed().as_secs_f64();
        let s = std::time::Instant::now();
        batch_fisher(&m, &p, &alive, &x, &y, LossKind::CrossEntropy).unwrap();
        let t2 = s.elapsed().as_secs_f64();
        println!("plain step {t0:.3} s, masked step {t1:.3} s, fisher estimate {t2:.3} s");
    }
    let mut c = FisherConfig::new(0.5, 100, 5e-4, OptimizerConfig::adam(1e-4));
    c.seed = 1;
    // CPU seconds of this process (user + system, Linux), to read past a busy machine.
    let cpu = || -> f64 {
        let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let f: Vec<&str> = s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (tick(11) + tick(12)) / 100.0
    };
    let (start, cpu0) = (std::time::Instant::now(), cpu());
    let r = fisher_prune(&m, &train, &c, FisherHooks::default()).unwrap();
    println!(
        "fisher ratio 0.5: {} steps, {} → {} params in {:.2} s wall, {:.2} s CPU",
        r.steps.len(),
        m.num_params(),
        r.model.num_params(),
        start.elapsed().as_secs_f64(),
        cpu() - cpu0
    );
}

#[test]
fn on_a_trained_net_fisher_loses_less_than_random_pruning() {
    // Train a small TCN, prune half its channels without any fine-tuning, compare the
    // training loss of the results: the greedy Fisher choice must beat random channels.
    let m = tcn_seed(12);
    let train = data(96, &[10, 49], 4);
    let set = crate::DataSet {
        train: train.clone(),
        val: None,
        test: None,
    };
    let tc = crate::TrainConfig {
        augment: Default::default(),
        epochs: 8,
        batch_size: 16,
        lr: 1e-2,
        optimizer: OptimizerConfig::adam(0.0),
        schedule: Default::default(),
        loss: LossKind::CrossEntropy,
        patience: None,
        monitor: Default::default(),
        keep_best: false,
        seed: 1,
    };
    crate::train(&m, &set, &tc, Default::default()).unwrap();
    let loss = |net: &Model| {
        crate::train::evaluate(net, &train, LossKind::CrossEntropy, 32)
            .unwrap()
            .loss
    };
    let mut c = cfg(0.5);
    c.finetune_steps = 0;
    c.channels_per_step = 2;
    let fisher = loss(
        &fisher_prune(&m, &train, &c, FisherHooks::default())
            .unwrap()
            .model,
    );
    let random: Vec<f64> = (0..3)
        .map(|s| loss(&prune(&m, Method::Random, 0.5, Scope::Global, s).unwrap().0))
        .collect();
    let base = loss(&m);
    assert!(
        random.iter().all(|&r| fisher < r),
        "seed {base:.4}, fisher {fisher:.4}, random {random:?}"
    );
}
