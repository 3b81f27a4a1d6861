//! `002`'s CIFAR architectures (WideResNet, MnasNet, ShuffleNetV1/V2, MobileNetV1's CIFAR
//! layout, explicit inverted-residual lists) counted by hand, and one training epoch each on
//! tiny synthetic images.

use super::archs::{images, one_epoch};
use crate::arch::cifar::*;
use crate::config::*;
use crate::data::DataSet;
use crate::graph::Op;
use crate::model::Model;
use crate::train::*;

fn count(c: ModelConfig) -> (u64, u64) {
    let g = c.build().unwrap();
    assert_eq!(g.nodes.last().unwrap().out_shape, [10]);
    (g.params(), g.macs())
}

#[test]
fn wrn_16_1_counts_by_hand() {
    // Convs 3×3 without bias, BN 2 per channel; widths 16, 32, 64, n = 2 blocks each.
    //   conv0 3·16·9 = 432.
    //   subnetwork 1: 2 × (bn 32 + 16·16·9 = 2,304 + bn 32 + 2,304) = 9,344.
    //   subnetwork 2: (bn 32 + 16·32·9 = 4,608 + bn 64 + 32·32·9 = 9,216 + 1×1 shortcut 512)
    //     = 14,432, then bn 64 + 9,216 + 64 + 9,216 = 18,560 → 32,992.
    //   subnetwork 3: 64 + 18,432 + 128 + 36,864 + 2,048 = 57,536, then 128 + 36,864 + 128 +
    //     36,864 = 73,984 → 131,520.
    //   final bn 128, fc 64·10 + 10 = 650.  Σ = 175,066.
    // MACs: conv0 1,024·16·27 = 442,368; subnetwork 1: 4 × 1,024·16·144 = 9,437,184;
    //   subnetwork 2 (16×16): 256·32·144 + 256·32·288 + 256·32·16 + 2·256·32·288 = 8,388,608;
    //   subnetwork 3 (8×8): 64·64·288 + 64·64·576 + 64·64·32 + 2·64·64·576 = 8,388,608;
    //   fc 640.  Σ = 26,657,408.
    let (p, m) = count(ModelConfig::Wrn(WrnConfig::new(16, 1.0, 0)));
    assert_eq!(p, 432 + 9_344 + 32_992 + 131_520 + 128 + 650);
    assert_eq!(m, 442_368 + 9_437_184 + 8_388_608 + 8_388_608 + 640);
    // SE (r = 2) in the five stride-1 blocks: SE(c) = c·c/2 + c/2 + c/2·c + c params:
    // 2·SE(16) = 2·280, SE(32) = 1,072, SE(64) = 4,192 → +5,824; MACs 2·256 + 1,024 + 4,096.
    let (p, m) = count(ModelConfig::Wrn(WrnConfig::new(16, 1.0, 2)));
    assert_eq!(p, 175_066 + 2 * 280 + 1_072 + 4_192);
    assert_eq!(m, 26_657_408 + 2 * 256 + 1_024 + 4_096);
    // WRN-40-2 (002's pruning subject): 2,243,546 parameters, the paper's 2.2 M.
    let g = ModelConfig::Wrn(WrnConfig::new(40, 2.0, 0))
        .build()
        .unwrap();
    assert_eq!(g.params(), 2_243_546);
    let e = ModelConfig::Wrn(WrnConfig::new(15, 1.0, 0))
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("`depth`") && e.contains("15"), "{e}");
}

#[test]
fn mnasnet_is_mobilenet_v2_with_5x5_kernels_and_half_first_expansion() {
    // From MobileNetV2's 117,738 / 18,866,816 (w 16, 9 blocks, expansion 4):
    //   block 0 at expansion 2 instead of 1: ex 16·32 + 64, dw 32·9 + 64, pr 32·16 + 32 = 1,472
    //     instead of 464; MACs 1,024·(512 + 288 + 512) = 1,343,488 instead of 409,600.
    //   5×5 depthwise in blocks 3, 4 (hidden 64, 128) and 6, 7 (128, 256): +16 weights per
    //     channel: 16·(64 + 128 + 128 + 256) = 9,216; MACs 16·(256·64 + 256·128 + 64·128 +
    //     64·256) = 1,179,648.
    let c = McunetConfig::mnasnet([3, 32, 32], 10, 16, 9, 4, 0, 0.2).unwrap();
    let k: Vec<usize> = c.blocks.iter().map(|b| b.kernel).collect();
    assert_eq!(k, [3, 3, 3, 5, 5, 3, 5, 5, 3]);
    assert_eq!(c.blocks[0].expand, 2);
    let (p, m) = count(ModelConfig::Mcunet(c));
    assert_eq!(p, 117_738 - 464 + 1_472 + 9_216);
    assert_eq!(m, 18_866_816 - 409_600 + 1_343_488 + 1_179_648);
}

/// MobileNetV2's layout as an explicit list: same graph as the preset, with and without SE.
#[test]
fn mcunet_list_reproduces_mobilenet_v2() {
    for se in [false, true] {
        let blocks = (0..9)
            .map(|k| {
                let (i, j) = (k / 3, k % 3);
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                IrBlockConfig {
                    expand: if k == 0 { 1 } else { 4 },
                    kernel: 3,
                    stride,
                    channels: 16 << i,
                    se: if se && stride == 1 { 2 } else { 0 },
                }
            })
            .collect();
        let list = McunetConfig {
            input: [3, 32, 32],
            classes: 10,
            stem: 16,
            stem_stride: 1,
            blocks,
            dropout: 0.2,
        };
        let a = ModelConfig::Mcunet(list).build().unwrap();
        let b = ModelConfig::MobileNetV2(MobileNetV2Config::reference(se))
            .build()
            .unwrap();
        assert_eq!(a.nodes, b.nodes);
        assert_eq!(a.params(), if se { 129_106 } else { 117_738 }, "se={se}");
    }
}

#[test]
fn shufflenet_v2_counts_by_hand() {
    // w 8, 6 blocks (2 per subnetwork): stem 432 + 32 = 464.
    //   block 0 (16 → 8, stride 1, both branches): left dw 144 + 32, pw 16·4 + 8 = 248; right
    //     pw 16·4 + 8, dw 36 + 8, pw 16 + 8 = 140 → 388.  block 1 (split 4 | 4): 92.
    //   block 2 (8 → 16, stride 2): left 72 + 16 + 64 + 16 = 168, right 80 + 88 + 80 = 248 →
    //     416.  block 3: 80 + 88 + 80 = 248.
    //   block 4 (16 → 32): left 176 + 288 = 464, right 288 + 176 + 288 = 752 → 1,216.
    //   block 5: 752.  fc 32·10 + 10 = 330.  Σ = 3,906.
    // MACs: stem 442,368; block 0 147,456 + 65,536 + 65,536 + 36,864 + 16,384 = 331,776;
    //   block 1 16,384 + 36,864 + 16,384 = 69,632; block 2 18,432 + 16,384 + 65,536 (1×1 at
    //   32×32) + 18,432 + 16,384 = 135,168; block 3 51,200; block 4 9,216 + 16,384 + 65,536 +
    //   9,216 + 16,384 = 116,736; block 5 41,984; fc 320.  Σ = 1,189,184.
    let c = ShuffleNetV2Config {
        input: [3, 32, 32],
        classes: 10,
        width: 8,
        blocks: 6,
        se: 0,
    };
    let (p, m) = count(ModelConfig::ShuffleNetV2(c.clone()));
    assert_eq!(p, 464 + 388 + 92 + 416 + 248 + 1_216 + 752 + 330);
    assert_eq!(
        m,
        442_368 + 331_776 + 69_632 + 135_168 + 51_200 + 116_736 + 41_984 + 320
    );
    let g = ModelConfig::ShuffleNetV2(c.clone()).build().unwrap();
    let kinds = |f: fn(&Op) -> bool| g.nodes.iter().filter(|n| f(&n.op)).count();
    assert_eq!(kinds(|o| matches!(o, Op::ChannelShuffle { groups: 2 })), 6);
    assert_eq!(kinds(|o| matches!(o, Op::Narrow { .. })), 6);
    // SE (r 2) on the convolved branch of the four stride-1 blocks, SE(c) = c·c/2 + c/2 +
    // c/2·c + c: SE(4) = 22 twice (blocks 0, 1), SE(8) = 76 (block 3), SE(16) = 280 (block 5).
    let (p, _) = count(ModelConfig::ShuffleNetV2(ShuffleNetV2Config { se: 2, ..c }));
    assert_eq!(p, 3_906 + 2 * 22 + 76 + 280);
}

#[test]
fn shufflenet_v1_counts_by_hand() {
    // w 24, 2 groups, 6 blocks; bottleneck = a quarter of the unit's output.
    //   stem 464.  block 0 (concat 16 + 8, first 1×1 not grouped): 16·2 + 4, dw 18 + 4,
    //   grouped 1×1 8·1 + 16 = 82.  block 1 (24, mid 6): 6·12 + 12, 54 + 12, 24·3 + 48 = 270.
    //   block 2 (24 → 48: pooled 24 + 24): 270.  block 3 (48, mid 12): 288 + 24 + 108 + 24 +
    //   288 + 96 = 828.  block 4 (48 → 96): 828.  block 5 (96, mid 24): 1,152 + 48 + 216 + 48
    //   + 1,152 + 192 = 2,808.  fc 96·10 + 10 = 970.  Σ = 6,520.
    // MACs: stem 442,368; block 0 32,768 + 18,432 + 8,192 = 59,392; block 1 73,728 + 55,296 +
    //   73,728 = 202,752; block 2 73,728 (at 32×32) + 13,824 + 18,432 = 105,984; block 3
    //   73,728 + 27,648 + 73,728 = 175,104; block 4 73,728 + 6,912 + 18,432 = 99,072; block 5
    //   73,728 + 13,824 + 73,728 = 161,280; fc 960.  Σ = 1,246,912.
    let c = ShuffleNetV1Config {
        input: [3, 32, 32],
        classes: 10,
        width: 24,
        blocks: 6,
        groups: 2,
        se: 0,
    };
    let (p, m) = count(ModelConfig::ShuffleNetV1(c.clone()));
    assert_eq!(p, 464 + 82 + 270 + 270 + 828 + 828 + 2_808 + 970);
    assert_eq!(
        m,
        442_368 + 59_392 + 202_752 + 105_984 + 175_104 + 99_072 + 161_280 + 960
    );
    let g = ModelConfig::ShuffleNetV1(c.clone()).build().unwrap();
    assert!(
        g.nodes
            .iter()
            .any(|n| n.name == "blocks.2.sc" && n.out_shape == [24, 16, 16])
    );
    let e = ModelConfig::ShuffleNetV1(ShuffleNetV1Config { width: 20, ..c })
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("`width`") && e.contains("`groups`"), "{e}");
}

#[test]
fn mobilenet_v1_cifar_layout_counts_by_hand_and_keeps_the_imagenet_serialisation() {
    // w 8, 3 blocks (one per subnetwork), no biases: stem 432 + 32 = 464; block 0 (16 → 8):
    // dw 144 + 32, pw 128 + 16 = 320; block 1 (8 → 16, stride 2): 72 + 16 + 128 + 32 = 248;
    // block 2 (16 → 32, stride 2): 144 + 32 + 512 + 64 = 752; fc 330.  Σ = 2,114.
    // MACs: 442,368 + 147,456 + 131,072 + 18,432 + 32,768 + 9,216 + 32,768 + 320 = 814,400.
    let c = MobileNetV1Config::cifar(8, 3, 0, [3, 32, 32], 10).unwrap();
    assert_eq!(
        count(ModelConfig::MobileNetV1(c)),
        (464 + 320 + 248 + 752 + 330, 814_400)
    );
    // SE only in the stride-1 block 0: SE(8) = 32 + 4 + 32 + 8 = 76 params, 64 MACs.
    let c = MobileNetV1Config::cifar(8, 3, 2, [3, 32, 32], 10).unwrap();
    assert_eq!(count(ModelConfig::MobileNetV1(c)), (2_190, 814_464));
    // The ImageNet layout serialises as before (no `se` key).
    let v1 = ModelConfig::MobileNetV1(MobileNetV1Config::with_width(0.25, [3, 96, 96], 2));
    let json = serde_json::to_value(&v1).unwrap();
    assert!(json.get("se").is_none(), "{json}");
    let back: ModelConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, v1);
    assert!(MobileNetV1Config::cifar(8, 4, 0, [3, 32, 32], 10).is_err());
}

#[test]
fn cifar_architectures_train_one_epoch() {
    let d = DataSet {
        train: images(20, 1),
        val: Some(images(10, 2)),
        test: None,
    };
    let tc = one_epoch();
    let input = [3, 8, 8];
    let configs = [
        ModelConfig::Wrn(WrnConfig {
            input,
            classes: 3,
            depth: 10,
            widen: 0.25,
            se: 2,
        }),
        ModelConfig::Mcunet(McunetConfig::mnasnet(input, 3, 4, 3, 2, 2, 0.2).unwrap()),
        ModelConfig::ShuffleNetV2(ShuffleNetV2Config {
            input,
            classes: 3,
            width: 4,
            blocks: 6,
            se: 2,
        }),
        ModelConfig::ShuffleNetV1(ShuffleNetV1Config {
            input,
            classes: 3,
            width: 24,
            blocks: 6,
            groups: 2,
            se: 2,
        }),
        ModelConfig::MobileNetV1(MobileNetV1Config::cifar(4, 3, 2, input, 3).unwrap()),
        ModelConfig::Mcunet(McunetConfig {
            input,
            classes: 3,
            stem: 4,
            stem_stride: 1,
            blocks: vec![
                IrBlockConfig {
                    expand: 1,
                    kernel: 3,
                    stride: 1,
                    channels: 4,
                    se: 2,
                },
                IrBlockConfig {
                    expand: 3,
                    kernel: 5,
                    stride: 2,
                    channels: 8,
                    se: 0,
                },
                IrBlockConfig {
                    expand: 2,
                    kernel: 7,
                    stride: 1,
                    channels: 8,
                    se: 4,
                },
            ],
            dropout: 0.0,
        }),
    ];
    for cfg in configs {
        let run = || {
            let m = Model::new(cfg.clone(), 0).unwrap();
            let before = weights(&m);
            let r = train(&m, &d, &tc, Hooks::default()).unwrap();
            (r, before, weights(&m))
        };
        let (r, before, w1) = run();
        let (_, _, w2) = run();
        assert_ne!(before, w1, "{cfg:?}: training changed no weight");
        assert_eq!(w1, w2, "{cfg:?}: same seed, different weights");
        assert!(r.history[0].train.loss.is_finite(), "{cfg:?}");
    }
}

fn weights(m: &Model) -> Vec<u32> {
    m.params()
        .iter()
        .flat_map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .map(f32::to_bits)
        .collect()
}
