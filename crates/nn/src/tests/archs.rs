//! The architectures built from the new ops: MobileNetV2 (`002`'s CIFAR layout) counted
//! against `torch_ref.py`, with and without squeeze-and-excitation, and one training epoch.

use super::models::randn;
use crate::config::*;
use crate::data::{DataSet, Split};
use crate::graph::Op;
use crate::model::Model;
use crate::train::*;

#[test]
fn mobilenet_v2_counts_match_torch_ref() {
    // `torch_ref.py mbv2` prints params=117738 macs=18866816. By hand (w 16, 9 blocks,
    // expansion 4; no conv biases, BN 2 per channel):
    //   stem 3→16 3×3: 432 + BN 32 = 464 params; 1024·16·27 = 442,368 MACs.
    //   subnetwork 1 (32×32): block 0 (expansion 1) dw 144 + 32 + pr 256 + 32 = 464;
    //     blocks 1–2: ex 1,024 + 128 + dw 576 + 128 + pr 1,024 + 32 = 2,912 each.
    //   subnetwork 2: block 3 (stride 2) 3,968; blocks 4–5 9,920 each.
    //   subnetwork 3: block 6 (stride 2) 14,080; blocks 7–8 36,224 each.
    //   fc 64→10: 650.  Σ = 464 + 6,288 + 23,808 + 86,528 + 650 = 117,738.
    let g = ModelConfig::MobileNetV2(MobileNetV2Config::reference(false))
        .build()
        .unwrap();
    assert_eq!(g.params(), 117_738);
    assert_eq!(g.macs(), 18_866_816);
    assert_eq!(g.nodes.last().unwrap().out_shape, [10]);
    // Stride 2 at the start of subnetworks 2 and 3: 32 → 16 → 8.
    let shape = |n: &str| {
        g.nodes
            .iter()
            .find(|x| x.name == n)
            .unwrap()
            .out_shape
            .clone()
    };
    assert_eq!(shape("blocks.3.dw"), [64, 16, 16]);
    assert_eq!(shape("blocks.6.dw"), [128, 8, 8]);
    assert!(g.nodes.iter().all(|n| !matches!(n.op, Op::Relu)));
    assert_eq!(
        g.nodes.iter().filter(|n| matches!(n.op, Op::Add)).count(),
        7
    );
    assert!(
        g.nodes
            .iter()
            .any(|n| matches!(n.op, Op::Dropout { p } if p == 0.2))
    );
    // `mbv2_se` (SE(c): 1×1 convs c→c/2 and c/2→c with bias on the pooled 1×1 map, in the
    // seven stride-1 blocks): SE(16) = 16·8+8 + 8·16+16 = 280, SE(32) = 1,072, SE(64) =
    // 4,192 params → 3·280 + 2·1,072 + 2·4,192 = 11,368 more: 129,106. MACs (one position):
    // 2·c·c/2 = 256, 1,024, 4,096 → 3·256 + 2·1,024 + 2·4,096 = 11,008 more: 18,877,824.
    let g = ModelConfig::MobileNetV2(MobileNetV2Config::reference(true))
        .build()
        .unwrap();
    assert_eq!(g.params(), 129_106);
    assert_eq!(g.macs(), 18_877_824);
    assert_eq!(
        g.nodes
            .iter()
            .filter(|n| matches!(n.op, Op::ChannelMul))
            .count(),
        7
    );
    // Errors name the key.
    let mut c = MobileNetV2Config::reference(false);
    c.blocks = 4;
    let e = ModelConfig::MobileNetV2(c).build().unwrap_err().to_string();
    assert!(e.contains("`blocks`") && e.contains('4'), "{e}");
}

/// Class k (of 3) brightens colour plane k.
/// One epoch of Adam at lr 1e-2, batch 10, seed 3: the one-epoch training tests' recipe.
pub(super) fn one_epoch() -> TrainConfig {
    TrainConfig {
        augment: Default::default(),
        epochs: 1,
        batch_size: 10,
        lr: 1e-2,
        optimizer: crate::optim::OptimizerConfig::adam(0.0),
        schedule: crate::schedule::ScheduleConfig::Constant,
        loss: crate::loss::LossKind::CrossEntropy,
        patience: None,
        monitor: Monitor::ValLoss,
        keep_best: false,
        seed: 3,
    }
}

pub(super) fn images(n: usize, seed: u64) -> Split {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (c, h, w) = (3, 8, 8);
    let mut x = Vec::with_capacity(n * c * h * w);
    let mut y = vec![];
    for i in 0..n {
        let k = i % 3;
        for ch in 0..c {
            for _ in 0..h * w {
                x.push(r.random::<f32>() - 0.5 + if ch == k { 1.0 } else { 0.0 });
            }
        }
        y.push(k as u32);
    }
    Split::classes(x, &[c, h, w], y).unwrap()
}

fn tiny_mbv2(se: bool) -> ModelConfig {
    ModelConfig::MobileNetV2(MobileNetV2Config {
        input: [3, 8, 8],
        classes: 3,
        width: 4,
        blocks: 3,
        expand: 2,
        se,
        dropout: 0.2,
    })
}

#[test]
fn mobilenet_v2_trains_one_epoch_deterministically() {
    for se in [false, true] {
        let d = DataSet {
            train: images(30, 1),
            val: Some(images(12, 2)),
            test: None,
        };
        let cfg = one_epoch();
        let run = || {
            let m = Model::new(tiny_mbv2(se), 0).unwrap();
            let before = m.state().unwrap();
            let r = train(&m, &d, &cfg, Hooks::default()).unwrap();
            let after: Vec<u32> = m
                .params()
                .iter()
                .flat_map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .map(f32::to_bits)
                .collect();
            let moved = m.params().iter().any(|(n, v)| {
                (v.as_tensor() - &before[n])
                    .unwrap()
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0
            });
            (r, after, moved)
        };
        let (r1, w1, moved) = run();
        let (_, w2, _) = run();
        assert!(moved, "se={se}: training changed no weight");
        assert!(r1.history.iter().all(|e| e.train.loss.is_finite()));
        assert_eq!(w1, w2, "se={se}: same seed, different weights");
        // Eval is deterministic and dropout-free: two passes agree bit for bit.
        let m = Model::new(tiny_mbv2(se), 0).unwrap();
        let x = randn(&[4, 3, 8, 8], 5);
        let a: Vec<f32> = m
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = m
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn thesis_dscnn_has_40396_parameters() {
    // `000`'s DS-CNN: the reference (stem 2,624 + BN 128, FC 780) with blocks of depthwise
    // 640 → pointwise 4,160 → BN 128 → ReLU → extra 1×1 4,160 → BN 128 → ReLU = 9,216 each:
    // 2,752 + 4·9,216 + 780 = 40,396 (spec §2). MACs: stem 320,000 + 4·(72,000 + 2·512,000)
    // + FC 768 = 4,704,768.
    let g = ModelConfig::DsCnn(DsCnnConfig::thesis()).build().unwrap();
    assert_eq!(g.params(), 40_396);
    assert_eq!(g.macs(), 4_704_768);
    let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    let dw = names.iter().position(|n| *n == "blocks.0.dw").unwrap();
    assert_eq!(
        &names[dw..dw + 7],
        [
            "blocks.0.dw",
            "blocks.0.pw",
            "blocks.0.pw_bn",
            "blocks.0.pw_relu",
            "blocks.0.pw2",
            "blocks.0.pw2_bn",
            "blocks.0.pw2_relu"
        ]
    );
    let drops: Vec<f64> = g
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::Dropout { p } => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(drops, [0.2, 0.4]);
    // The reference serialises as before (no new keys), so its cache keys do not move.
    let json = serde_json::to_string(&ModelConfig::DsCnn(DsCnnConfig::reference())).unwrap();
    assert!(
        !json.contains("pointwise_extra") && !json.contains("dropout"),
        "{json}"
    );
    // Thesis DS-CNN trains and evaluates (dropout in train mode only).
    let m = Model::new(ModelConfig::DsCnn(DsCnnConfig::thesis()), 0).unwrap();
    let x = randn(&[2, 1, 49, 10], 3);
    let a = m.forward(&x, false).unwrap();
    let b = m.forward(&x, false).unwrap();
    assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    m.forward(&x, true).unwrap();
}

#[test]
fn pit_masks_mobilenet_v2_with_and_without_squeeze_excitation() {
    use crate::pit::{Cost, PitModel};
    let m = Model::new(tiny_mbv2(false), 1).unwrap();
    let x = randn(&[4, 3, 8, 8], 2);
    let plain = m.forward(&x, true).unwrap();
    let pit = PitModel::new(
        Model::new(tiny_mbv2(false), 1).unwrap(),
        Cost::Size,
        1e-3,
        false,
    )
    .unwrap();
    // Masks at one: the same function (train mode, so dropout draws the same mask too).
    let got = pit.forward(&x, true).unwrap();
    let d = super::max_diff(&got, &plain);
    assert!(d < 1e-5, "{d}");
    // With squeeze-and-excitation: the gate's producer shares the block's group.
    let m = Model::new(tiny_mbv2(true), 1).unwrap();
    let plain = m.forward(&x, false).unwrap();
    let pit = PitModel::new(m, Cost::Size, 1e-3, false).unwrap();
    let g = pit.model().graph();
    let plan = pit.plan();
    let id = |n: &str| g.nodes.iter().position(|x| x.name == n).unwrap() + 1;
    assert_eq!(
        plan.value_group[id("blocks.0.se.f2")],
        plan.value_group[id("blocks.0.bpr")]
    );
    assert_ne!(
        plan.value_group[id("blocks.0.se.f1")],
        plan.value_group[id("blocks.0.bpr")]
    );
    let d = super::max_diff(&pit.forward(&x, false).unwrap(), &plain);
    assert!(d < 1e-5, "{d}");
    // Concat is followed: each input keeps its own group, at its offset.
    let mut b = crate::graph::GraphBuilder::new(vec![2, 4, 4]);
    let conv = |b: &mut crate::graph::GraphBuilder, n: &str, c| {
        b.conv(
            n,
            0,
            c,
            vec![1, 1],
            vec![1, 1],
            vec![(0, 0); 2],
            vec![1, 1],
            1,
            true,
        )
        .unwrap()
    };
    let (c1, c2) = (conv(&mut b, "c1", 3), conv(&mut b, "c2", 2));
    b.push("cat", Op::Concat, vec![c1, c2]).unwrap();
    let p = crate::pit::plan::plan(&b.finish(), false).unwrap();
    let (g1, g2) = (p.value_group[c1], p.value_group[c2]);
    assert_ne!(g1, g2);
    let want: Vec<(usize, usize)> = (0..3)
        .map(|c| (g1, c))
        .chain((0..2).map(|c| (g2, c)))
        .collect();
    assert_eq!(p.layout[c1 + 2], want);
}
