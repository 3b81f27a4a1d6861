//! Export of masked networks of every architecture (`pit::export`): random channel masks →
//! the exported network's eval forward equals the masked network's (PIT masks and the pruning
//! methods' parameter masks), the coupling rules through concat offsets, channel splits,
//! shuffles, flatten and grouped convs (frozen, and said so), a PIT search step and L1 /
//! Fisher pruning followed by export on MobileNetV2-SE and ShuffleNetV2.

use super::archs::images;
use super::max_diff;
use super::models::randn;
use crate::arch::cifar::*;
use crate::arch::node_list::{NodeListConfig, parse_nodes};
use crate::config::*;
use crate::data::DataSet;
use crate::model::Model;
use crate::pit::plan::{Plan, plan};
use crate::pit::{Cost, Keep, LayerChange, PitModel, export};
use crate::prune::masked::{self, Mask};
use crate::prune::{Method, Scope, prune, scores, select};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

const INPUT: [usize; 3] = [3, 8, 8];

fn mbv2(se: bool) -> ModelConfig {
    ModelConfig::MobileNetV2(MobileNetV2Config {
        input: INPUT,
        classes: 3,
        width: 4,
        blocks: 6,
        expand: 2,
        se,
        dropout: 0.2,
    })
}

fn shufflenet_v2(se: usize) -> ModelConfig {
    ModelConfig::ShuffleNetV2(ShuffleNetV2Config {
        input: INPUT,
        classes: 3,
        width: 8,
        blocks: 6,
        se,
    })
}

fn graph(nodes: serde_json::Value, input: &[usize], classes: usize) -> ModelConfig {
    ModelConfig::Graph(NodeListConfig {
        input: input.to_vec(),
        classes,
        nodes: parse_nodes(nodes.as_array().unwrap()).unwrap(),
    })
}

/// A model with random batch-norm scales, shifts and running statistics, so a removed
/// channel that is not zeroed shows.
fn model(cfg: &ModelConfig, seed: u64) -> Model {
    let m = Model::new(cfg.clone(), seed).unwrap();
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut state = m.state().unwrap();
    let mut names: Vec<String> = state.keys().cloned().collect();
    names.sort();
    for n in names {
        let t = &state[&n];
        let (lo, hi) = if n.ends_with("running_var") || n.ends_with("weight") {
            (0.5, 1.5)
        } else {
            (-0.5, 0.5)
        };
        if !(n.ends_with("running_var")
            || n.ends_with("running_mean")
            || m.graph().nodes.iter().any(|nd| {
                matches!(nd.op, crate::graph::Op::BatchNorm { .. })
                    && n.starts_with(&format!("{}.", nd.name))
            }))
        {
            continue;
        }
        let v: Vec<f32> = (0..t.elem_count())
            .map(|_| lo + (hi - lo) * r.random::<f32>())
            .collect();
        state.insert(n, Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap());
    }
    m.load_state(&state).unwrap();
    m
}

/// Random kept channels per group (each with probability 1/2; fixed groups whole; channel 0
/// always when `keep0`, as PIT's keep-alive), topped up so no value loses every channel.
fn random_keep(p: &Plan, seed: u64, keep0: bool) -> Vec<Vec<usize>> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut keep: Vec<Vec<usize>> = p
        .groups
        .iter()
        .map(|g| {
            if g.fixed {
                return (0..g.channels).collect();
            }
            let mut k: Vec<usize> = (0..g.channels)
                .filter(|&c| (keep0 && c == 0) || r.random::<f32>() < 0.5)
                .collect();
            if k.is_empty() {
                k.push(r.random_range(0..g.channels));
            }
            k
        })
        .collect();
    loop {
        let pos = p.positions(&keep);
        let Some(v) = (1..pos.len()).find(|&v| pos[v].is_empty()) else {
            return keep;
        };
        let (g, c) = p.layout[v][0];
        keep[g].push(c);
        keep[g].sort_unstable();
    }
}

fn removed(p: &Plan, keep: &[Vec<usize>]) -> usize {
    p.groups
        .iter()
        .zip(keep)
        .map(|(g, k)| g.channels - k.len())
        .sum()
}

/// The pruning methods' masked network (parameter masks) in eval mode.
fn masked_eval(m: &Model, p: &Plan, keep: &[Vec<usize>], x: &Tensor) -> Tensor {
    let masks: Vec<Mask> = p
        .groups
        .iter()
        .zip(keep)
        .map(|(g, k)| {
            let mut v = vec![0f32; g.channels];
            for &c in k {
                v[c] = 1.0;
            }
            Mask {
                params: Some(Tensor::from_vec(v, g.channels, &Device::Cpu).unwrap()),
                acts: None,
            }
        })
        .collect();
    masked::forward(m, p, &masks, x, false).unwrap()
}

fn no_adjustment(changes: &[LayerChange]) {
    assert!(
        changes.iter().all(|c| !c.adjusted),
        "unexpected adjustment: {changes:?}"
    );
}

/// Random masks → export equals the masked network, through the pruning path and through
/// PIT's masks; returns (seed params, exported params).
fn check_exact(label: &str, cfg: &ModelConfig, seed: u64) -> (u64, u64) {
    let m = model(cfg, seed);
    let shape = {
        let mut s = vec![3];
        s.extend(&m.graph().input_shape);
        s
    };
    let x = randn(&shape, seed + 100);
    let p = plan(m.graph(), false).unwrap();
    // Pruning path: any channel may go.
    let keep = random_keep(&p, seed, false);
    let want = masked_eval(&m, &p, &keep, &x);
    let k = Keep {
        channels: keep.clone(),
        taps: vec![None; m.graph().nodes.len()],
    };
    let ones: Vec<Vec<f32>> = p.groups.iter().map(|g| vec![1.0; g.channels]).collect();
    let (small, changes) = export(&m, &p, &k, &ones).unwrap();
    no_adjustment(&changes);
    let d = max_diff(&small.forward(&x, false).unwrap(), &want);
    eprintln!(
        "{label}: {} of {} prunable channels removed, params {} → {}, max |export − masked| = {d:e}",
        removed(&p, &keep),
        p.groups
            .iter()
            .filter(|g| !g.fixed)
            .map(|g| g.channels)
            .sum::<usize>(),
        m.num_params(),
        small.num_params()
    );
    assert!(
        d < 1e-5,
        "{label}: export differs from the masked network by {d}"
    );
    let (before, after) = (m.num_params(), small.num_params());
    // PIT path: binary α masks (keep-alive channel 0).
    let keep = random_keep(&p, seed + 1, true);
    let pit = PitModel::new(model(cfg, seed), Cost::Size, 1e-3, false).unwrap();
    for (g, k) in keep.iter().enumerate() {
        if p.groups[g].fixed {
            continue;
        }
        let mut v = vec![0.1f32; p.groups[g].channels];
        for &c in k {
            v[c] = 0.9;
        }
        pit.set_mask(&format!("pit.alpha.{g}"), &v).unwrap();
    }
    let want = pit.forward(&x, false).unwrap();
    let (small, changes) = pit.export().unwrap();
    no_adjustment(&changes);
    let d = max_diff(&small.forward(&x, false).unwrap(), &want);
    assert!(d < 1e-5, "{label} (PIT): export differs by {d}");
    (before, after)
}

#[test]
fn every_architecture_exports_random_masks_exactly() {
    let configs: Vec<(&str, ModelConfig)> = vec![
        ("mobilenet_v2", mbv2(false)),
        ("mobilenet_v2 se", mbv2(true)),
        ("shufflenet_v2", shufflenet_v2(0)),
        ("shufflenet_v2 se", shufflenet_v2(2)),
        (
            "wrn se",
            ModelConfig::Wrn(WrnConfig {
                input: INPUT,
                classes: 3,
                depth: 10,
                widen: 0.25,
                se: 2,
            }),
        ),
        (
            "mnasnet se",
            ModelConfig::Mcunet(McunetConfig::mnasnet(INPUT, 3, 4, 3, 2, 2, 0.2).unwrap()),
        ),
        (
            "shufflenet_v1 se",
            ModelConfig::ShuffleNetV1(ShuffleNetV1Config {
                input: INPUT,
                classes: 3,
                width: 24,
                blocks: 3,
                groups: 2,
                se: 2,
            }),
        ),
        (
            "mobilenet_v1 se",
            ModelConfig::MobileNetV1(MobileNetV1Config::cifar(4, 3, 2, INPUT, 3).unwrap()),
        ),
        ("ds_cnn thesis", ModelConfig::DsCnn(DsCnnConfig::thesis())),
    ];
    for (k, (label, cfg)) in configs.iter().enumerate() {
        let (before, after) = check_exact(label, cfg, 10 + k as u64);
        // ShuffleNetV1: only the SE widths are prunable (the grouped 1×1s freeze the rest).
        assert!(after < before, "{label}: nothing was removed ({before})");
    }
}

/// concat → shuffle(2) couples channel b of both halves: removing one channel of the merged
/// group removes it from both convs, and the export is again a 2-group shuffle.
#[test]
fn shuffle_prunes_in_shuffle_groups_and_concat_keeps_offsets() {
    let cfg = graph(
        json!([
            { "name": "c1", "op": "conv", "c_out": 4, "kernel": [1, 1] },
            { "name": "b1", "op": "batch_norm" },
            { "name": "c2", "op": "conv", "c_out": 4, "kernel": [1, 1], "inputs": ["input"] },
            { "name": "b2", "op": "batch_norm" },
            { "name": "cat", "op": "concat", "inputs": ["b1", "b2"] },
            { "name": "shuf", "op": "channel_shuffle", "groups": 2 },
            { "name": "c3", "op": "conv", "c_out": 3, "kernel": [3, 3], "padding": "same" },
            { "name": "pool", "op": "global_avg_pool" },
            { "name": "fc", "op": "linear" }
        ]),
        &[2, 4, 4],
        3,
    );
    let m = model(&cfg, 1);
    let p = plan(m.graph(), false).unwrap();
    let v = |n: &str| m.graph().nodes.iter().position(|x| x.name == n).unwrap() + 1;
    let g = p.value_group[v("c1")];
    assert_eq!(p.value_group[v("c2")], g, "the shuffle couples both halves");
    assert_eq!(p.groups[g].channels, 4);
    assert!(!p.groups[g].fixed);
    // Shuffled: c1_0, c2_0, c1_1, c2_1, … carry group channels 0, 0, 1, 1, …
    let chans: Vec<usize> = p.layout[v("shuf")].iter().map(|x| x.1).collect();
    assert_eq!(chans, [0, 0, 1, 1, 2, 2, 3, 3]);
    let mut keep: Vec<Vec<usize>> = p.groups.iter().map(|g| (0..g.channels).collect()).collect();
    keep[g] = vec![0, 2, 3];
    let k = Keep {
        channels: keep.clone(),
        taps: vec![None; m.graph().nodes.len()],
    };
    let ones: Vec<Vec<f32>> = p.groups.iter().map(|g| vec![1.0; g.channels]).collect();
    let (small, changes) = export(&m, &p, &k, &ones).unwrap();
    assert!(matches!(small.config(), ModelConfig::Graph(_)));
    let c_out = |n: &str| changes.iter().find(|c| c.name == n).unwrap().c_out;
    assert_eq!((c_out("c1"), c_out("c2"), c_out("c3")), (3, 3, 3));
    let sg = small.graph();
    let shuf = sg.nodes.iter().find(|n| n.name == "shuf").unwrap();
    assert_eq!(shuf.out_shape, [6, 4, 4]);
    assert_eq!(shuf.op, crate::graph::Op::ChannelShuffle { groups: 2 });
    // c3's kept input columns: shuffled positions of channels 0, 2, 3 = 0, 1, 4, 5, 6, 7.
    let w = |m: &Model| m.get("c3.weight").unwrap().as_tensor().clone();
    let cols = Tensor::from_vec(vec![0u32, 1, 4, 5, 6, 7], 6, &Device::Cpu).unwrap();
    let d = max_diff(&w(&small), &w(&m).index_select(&cols, 1).unwrap());
    assert_eq!(d, 0.0);
    let x = randn(&[2, 2, 4, 4], 5);
    let want = masked_eval(&m, &p, &keep, &x);
    let d = max_diff(&small.forward(&x, false).unwrap(), &want);
    assert!(d < 1e-5, "{d}");

    // Without the shuffle the concat's halves stay separate groups at offsets 0 and 4.
    let cfg = graph(
        json!([
            { "name": "c1", "op": "conv", "c_out": 4, "kernel": [1, 1] },
            { "name": "c2", "op": "conv", "c_out": 4, "kernel": [1, 1], "inputs": ["input"] },
            { "name": "cat", "op": "concat", "inputs": ["c1", "c2"] },
            { "name": "r", "op": "narrow", "start": 4, "len": 2 },
            { "name": "c3", "op": "conv", "c_out": 3, "kernel": [1, 1], "inputs": ["cat"] },
            { "name": "c4", "op": "conv", "c_out": 3, "kernel": [1, 1], "inputs": ["r"] },
            { "name": "sum", "op": "add", "inputs": ["c3", "c4"] },
            { "name": "flat", "op": "flatten" },
            { "name": "fc", "op": "linear" }
        ]),
        &[2, 2, 2],
        3,
    );
    let m = model(&cfg, 2);
    let p = plan(m.graph(), false).unwrap();
    let v = |n: &str| m.graph().nodes.iter().position(|x| x.name == n).unwrap() + 1;
    let (g1, g2) = (p.value_group[v("c1")], p.value_group[v("c2")]);
    assert_ne!(g1, g2);
    let cat: Vec<(usize, usize)> = p.layout[v("cat")].clone();
    assert_eq!(cat[4], (g2, 0));
    assert_eq!(p.layout[v("r")], [(g2, 0), (g2, 1)]);
    // Flatten: each channel of `sum` repeated over its 2×2 positions.
    let gs = p.value_group[v("sum")];
    assert_eq!(
        p.layout[v("flat")][..5],
        [(gs, 0), (gs, 0), (gs, 0), (gs, 0), (gs, 1)]
    );
    let mut keep: Vec<Vec<usize>> = p.groups.iter().map(|g| (0..g.channels).collect()).collect();
    keep[g2] = vec![1, 3];
    keep[gs] = vec![0, 2];
    let k = Keep {
        channels: keep.clone(),
        taps: vec![None; m.graph().nodes.len()],
    };
    let ones: Vec<Vec<f32>> = p.groups.iter().map(|g| vec![1.0; g.channels]).collect();
    let (small, changes) = export(&m, &p, &k, &ones).unwrap();
    no_adjustment(&changes);
    let cols = Tensor::from_vec(vec![0u32, 1, 2, 3, 5, 7], 6, &Device::Cpu).unwrap();
    let w = |m: &Model, n: &str| m.get(n).unwrap().as_tensor().clone();
    let d = max_diff(
        &w(&small, "c3.weight"),
        &w(&m, "c3.weight")
            .index_select(&Tensor::new(&[0u32, 2], &Device::Cpu).unwrap(), 0)
            .unwrap()
            .index_select(&cols, 1)
            .unwrap(),
    );
    assert_eq!(d, 0.0, "concat offsets");
    // fc reads channels 0 and 2 of `sum`: features 0..4 and 8..12.
    assert_eq!(small.get("fc.weight").unwrap().dims(), [3, 8]);
    let x = randn(&[2, 2, 2, 2], 6);
    let d = max_diff(
        &small.forward(&x, false).unwrap(),
        &masked_eval(&m, &p, &keep, &x),
    );
    assert!(d < 1e-5, "{d}");
    // A split that would keep nothing gets its best channel back, and says so.
    keep[g2] = vec![2, 3];
    let k = Keep {
        channels: keep.clone(),
        taps: vec![None; m.graph().nodes.len()],
    };
    let mut scores = ones.clone();
    scores[g2] = vec![0.1, 0.7, 0.9, 0.9];
    let (small, changes) = export(&m, &p, &k, &scores).unwrap();
    let c2 = changes.iter().find(|c| c.name == "c2").unwrap();
    assert!(c2.adjusted && c2.c_out == 3, "{c2:?}");
    let r = small.graph().nodes.iter().find(|n| n.name == "r").unwrap();
    assert_eq!(r.out_shape, [1, 2, 2]);
    assert_eq!(r.op, crate::graph::Op::Narrow { start: 4, len: 1 });
}

/// A grouped (non-depthwise) conv freezes its input and output channels, and the plan, the
/// layer changes and the export say so; a gate used as more than a scale freezes its input.
#[test]
fn grouped_convs_and_free_gates_are_frozen_and_named() {
    let cfg = graph(
        json!([
            { "name": "c1", "op": "conv", "c_out": 4, "kernel": [1, 1] },
            { "name": "g", "op": "conv", "c_out": 4, "kernel": [1, 1], "groups": 2 },
            { "name": "c2", "op": "conv", "c_out": 4, "kernel": [1, 1] },
            { "name": "s", "op": "sigmoid" },
            { "name": "c3", "op": "conv", "c_out": 4, "kernel": [1, 1] },
            { "name": "pool", "op": "global_avg_pool" },
            { "name": "fc", "op": "linear" }
        ]),
        &[2, 4, 4],
        3,
    );
    let m = model(&cfg, 3);
    let p = plan(m.graph(), false).unwrap();
    let names: Vec<&str> = p.frozen.iter().map(|f| f.node.as_str()).collect();
    assert_eq!(names, ["g", "s"]);
    assert!(
        p.frozen[0].reason.contains("2-group conv"),
        "{:?}",
        p.frozen
    );
    assert!(p.frozen[1].reason.contains("1/2"), "{:?}", p.frozen);
    let v = |n: &str| m.graph().nodes.iter().position(|x| x.name == n).unwrap() + 1;
    for n in ["c1", "g", "c2"] {
        assert!(p.groups[p.value_group[v(n)]].fixed, "{n}");
    }
    let g3 = p.value_group[v("c3")];
    assert!(!p.groups[g3].fixed);
    let mut keep: Vec<Vec<usize>> = p.groups.iter().map(|g| (0..g.channels).collect()).collect();
    keep[g3] = vec![1, 2];
    let k = Keep {
        channels: keep.clone(),
        taps: vec![None; m.graph().nodes.len()],
    };
    let ones: Vec<Vec<f32>> = p.groups.iter().map(|g| vec![1.0; g.channels]).collect();
    let (small, changes) = export(&m, &p, &k, &ones).unwrap();
    let ch = |n: &str| changes.iter().find(|c| c.name == n).unwrap().clone();
    assert!(
        ch("g")
            .frozen
            .as_deref()
            .unwrap()
            .starts_with("g: 2-group conv")
    );
    assert!(
        ch("c2")
            .frozen
            .as_deref()
            .unwrap()
            .starts_with("s: sigmoid")
    );
    assert_eq!(ch("c3").frozen, None);
    assert_eq!(ch("c3").c_out, 2);
    // The reason is in the layer record, and a record without one reads as before.
    let j = serde_json::to_string(&ch("c3")).unwrap();
    assert!(!j.contains("frozen"), "{j}");
    let x = randn(&[2, 2, 4, 4], 7);
    let d = max_diff(
        &small.forward(&x, false).unwrap(),
        &masked_eval(&m, &p, &keep, &x),
    );
    assert!(d < 1e-5, "{d}");
    // ShuffleNetV1 without SE: the grouped 1×1s freeze everything; PIT still runs and
    // exports the same network.
    let cfg = ModelConfig::ShuffleNetV1(ShuffleNetV1Config {
        input: INPUT,
        classes: 3,
        width: 24,
        blocks: 3,
        groups: 2,
        se: 0,
    });
    let pit = PitModel::new(model(&cfg, 4), Cost::Size, 1e-3, false).unwrap();
    assert!(pit.plan().groups.iter().all(|g| g.fixed));
    assert!(pit.mask_vars().is_empty());
    let frozen: Vec<&str> = pit.plan().frozen.iter().map(|f| f.node.as_str()).collect();
    assert_eq!(
        frozen,
        [
            "blocks.0.pw2",
            "blocks.1.pw1",
            "blocks.1.pw2",
            "blocks.2.pw1",
            "blocks.2.pw2"
        ]
    );
    let (small, changes) = pit.export().unwrap();
    assert_eq!(small.num_params(), pit.model().num_params());
    assert!(changes.iter().all(|c| c.frozen.is_some() || c.name == "fc"));
    let x = randn(&[2, 3, 8, 8], 8);
    let d = max_diff(
        &small.forward(&x, false).unwrap(),
        &pit.model().forward(&x, false).unwrap(),
    );
    assert!(d < 1e-5, "{d}");
}

fn data() -> DataSet {
    DataSet {
        train: images(20, 1),
        val: Some(images(10, 2)),
        test: None,
    }
}

#[test]
fn pit_search_then_export_on_mobilenet_v2_se_and_shufflenet_v2() {
    use crate::optim::OptimizerConfig;
    use crate::pit::{SearchConfig, search};
    for (label, cfg) in [("mbv2 se", mbv2(true)), ("shufflenet_v2", shufflenet_v2(2))] {
        let m = Model::new(cfg, 4).unwrap();
        let before = m.num_params();
        let pit = PitModel::new(m, Cost::Size, 5e-3, false).unwrap();
        let sc = SearchConfig {
            epochs: 3,
            batch_size: 10,
            lr_weights: 1e-2,
            lr_masks: 0.2,
            schedule: Default::default(),
            optimizer: OptimizerConfig::adam(0.0),
            mask_optimizer: OptimizerConfig::adam(0.0),
            patience: None,
            restore_best: false,
            seed: 1,
            augment: Default::default(),
        };
        let r = search(&pit, &data(), &sc, &|| false, &mut |_, _| {}).unwrap();
        assert_eq!(r.history.len(), 3);
        let (small, changes) = pit.export().unwrap();
        assert!(matches!(small.config(), ModelConfig::Graph(_)));
        let x = randn(&[4, 3, 8, 8], 9);
        let want = pit.forward(&x, false).unwrap();
        let d = max_diff(&small.forward(&x, false).unwrap(), &want);
        let adjusted = changes.iter().filter(|c| c.adjusted).count();
        eprintln!(
            "{label}: PIT params {before} → {}, {adjusted} adjusted layers, max |export − masked| = {d:e}",
            small.num_params()
        );
        assert!(small.num_params() < before, "{label}");
        if adjusted == 0 {
            assert!(d < 1e-5, "{label}: {d}");
        }
        // The exported node list saves and loads like any model.
        let dir = std::env::temp_dir().join(format!("whittle-pit-export-{}", std::process::id()));
        small.save(&dir).unwrap();
        let back = Model::load(&dir).unwrap();
        assert_eq!(
            max_diff(
                &back.forward(&x, false).unwrap(),
                &small.forward(&x, false).unwrap()
            ),
            0.0
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn l1_and_fisher_pruning_export_mobilenet_v2_se_and_shufflenet_v2() {
    use crate::prune::fisher::{FisherConfig, FisherHooks, fisher_prune};
    for (label, cfg) in [("mbv2 se", mbv2(true)), ("shufflenet_v2", shufflenet_v2(2))] {
        let m = model(&cfg, 5);
        let (small, changes) = prune(&m, Method::L1, 0.5, Scope::Layer, 0).unwrap();
        let p = plan(m.graph(), false).unwrap();
        let s = scores(&m, &p, Method::L1, 0).unwrap();
        let keep = select(&p, &s, 0.5, Scope::Layer).unwrap();
        let x = randn(&[3, 3, 8, 8], 11);
        let d = max_diff(
            &small.forward(&x, false).unwrap(),
            &masked_eval(&m, &p, &keep, &x),
        );
        let adjusted = changes.iter().filter(|c| c.adjusted).count();
        eprintln!(
            "{label}: L1 0.5 params {} → {}, {adjusted} adjusted, max |export − masked| = {d:e}",
            m.num_params(),
            small.num_params()
        );
        assert!(small.num_params() < m.num_params());
        if adjusted == 0 {
            assert!(d < 1e-5, "{label}: {d}");
        }
        let mut fc = FisherConfig::new(0.3, 10, 1e-2, crate::optim::OptimizerConfig::adam(0.0));
        fc.channels_per_step = 6;
        fc.fisher_batches = 1;
        fc.finetune_steps = 1;
        let r = fisher_prune(&m, &images(20, 3), &fc, FisherHooks::default()).unwrap();
        let removed: usize = r.steps.iter().map(|s| s.removed.len()).sum();
        eprintln!(
            "{label}: Fisher 0.3 removed {removed} channels, params {} → {}",
            m.num_params(),
            r.model.num_params()
        );
        assert!(removed > 0 && r.model.num_params() < m.num_params());
        let out = r.model.forward(&x, false).unwrap();
        assert!(
            out.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .all(|v| v.is_finite())
        );
    }
}
