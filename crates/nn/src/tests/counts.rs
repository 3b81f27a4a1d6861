//! Parameter and MAC counts of the reference models against hand counts, and config parsing.

use crate::config::*;
use crate::graph::LayerKind;

#[test]
fn dscnn_counts_match_hand_count() {
    let g = ModelConfig::DsCnn(DsCnnConfig::reference())
        .build()
        .unwrap();
    // conv0 1→64 k10×4: 64·40 + 64 = 2,624 params; output H=(49+10−10)/2+1=25,
    //   W=(10+2−4)/2+1=5 → 125 positions · 64 · 40 = 320,000 MACs.
    // bn0: 128 params.
    // per block: dw 64·9+64 = 640, BN 128, pw 64·64+64 = 4,160, BN 128 → 5,056 params;
    //   MACs dw 125·64·9 = 72,000 + pw 125·64·64 = 512,000 → 584,000.
    // 4 blocks: 20,224 params, 2,336,000 MACs.
    // fc 64→12: 780 params, 768 MACs.
    // total params 2,624 + 128 + 20,224 + 780 = 23,756; MACs 320,000 + 2,336,000 + 768 = 2,656,768.
    assert_eq!(g.params(), 23_756);
    assert_eq!(g.macs(), 2_656_768);
    let layers = g.layers();
    let conv0 = &layers[0];
    assert_eq!(
        (conv0.name.as_str(), conv0.out_shape.as_slice(), conv0.macs),
        ("conv0", &[64, 25, 5][..], 320_000)
    );
    let dw = layers.iter().find(|l| l.name == "blocks.0.dw").unwrap();
    assert_eq!(
        (dw.kind, dw.groups, dw.params, dw.macs),
        (LayerKind::DepthwiseConv2d, 64, 640, 72_000)
    );
}

#[test]
fn resnet8_counts_match_hand_count() {
    let g = ModelConfig::ResNet(ResNetConfig::resnet8())
        .build()
        .unwrap();
    // conv0 3→16 3×3: 432+16 = 448 params, 1024·16·27 = 442,368 MACs; bn0 32.
    // stack 0 (16, s1, no shortcut conv): c1 2,320 + BN 32 + c2 2,320 + BN 32 = 4,704 params;
    //   MACs 2 · 1024·16·144 = 4,718,592.
    // stack 1 (32, s2, 16×16): c1 4,608+32 = 4,640, BN 64, c2 9,216+32 = 9,248, BN 64,
    //   sc 16·32+32 = 544 → 14,560 params; MACs 256·32·144 = 1,179,648 + 256·32·288 = 2,359,296
    //   + 256·32·16 = 131,072 → 3,670,016.
    // stack 2 (64, s2, 8×8): c1 18,432+64 = 18,496, BN 128, c2 36,864+64 = 36,928, BN 128,
    //   sc 32·64+64 = 2,112 → 57,792 params; MACs 64·64·288 = 1,179,648 + 64·64·576 = 2,359,296
    //   + 64·64·32 = 131,072 → 3,670,016.
    // fc 64→10: 650 params, 640 MACs.
    // total params 448+32+4,704+14,560+57,792+650 = 78,186;
    // MACs 442,368 + 4,718,592 + 3,670,016 + 3,670,016 + 640 = 12,501,632.
    assert_eq!(g.params(), 78_186);
    assert_eq!(g.macs(), 12_501_632);
    assert!(g.nodes.iter().all(|n| n.name != "stacks.0.sc"));
    assert!(g.nodes.iter().any(|n| n.name == "stacks.1.sc"));
}

#[test]
fn tcn_bench_counts_match_hand_count() {
    let g = ModelConfig::Tcn(TcnConfig::bench(64)).build().unwrap();
    // conv 10→64 k3: 1,920+64 = 1,984; 6 × (64·64·3+64 = 12,352) = 74,112; fc 64·12+12 = 780.
    // params 1,984 + 74,112 + 780 = 76,876. 'same' padding keeps 49 steps:
    // MACs 49·64·30 = 94,080 + 6·49·64·192 = 3,612,672 + 768 = 3,707,520.
    assert_eq!(g.params(), 76_876);
    assert_eq!(g.macs(), 3_707_520);
    assert!(
        g.nodes
            .iter()
            .all(|n| n.out_shape.len() != 2 || n.out_shape[1] == 49)
    );
}

#[test]
fn tcn_residual_uses_projection_only_when_channels_change() {
    let mut c = TcnConfig::seed(16);
    c.layers[1].channels = 16;
    c.layers[3].channels = 24; // block 1 (layers 2,3) goes 16 → 24: projection
    c.layers[5].channels = 24; // block 2 (layers 4,5) goes 24 → 24: identity
    let g = ModelConfig::Tcn(c).build().unwrap();
    let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    assert!(
        names.contains(&"proj.1"),
        "first block 10→16 needs a projection: {names:?}"
    );
    assert!(names.contains(&"proj.3"));
    assert!(
        !names.contains(&"proj.5"),
        "block 2 is 24→24: identity skip"
    );
    let add = g.nodes.iter().find(|n| n.name == "add.5").unwrap();
    assert_eq!(add.out_shape, vec![24, 49]);
}

#[test]
fn mobilenet_quarter_width_and_autoencoder_counts() {
    let m = MobileNetV1Config::with_width(0.25, [3, 96, 96], 2);
    assert_eq!(m.stem.channels, 8);
    assert_eq!(m.blocks.last().unwrap().channels, 256);
    let g = ModelConfig::MobileNetV1(m).build().unwrap();
    // output of the last block: 96 /2 (stem) /2 /2 /2 /2 = 3×3.
    let last = g
        .nodes
        .iter()
        .rev()
        .find(|n| n.name == "blocks.12.pw")
        .unwrap();
    assert_eq!(last.out_shape, vec![256, 3, 3]);
    // AE 640-128×4-8-128×4-640 with BN: linear params 640·128+128 = 82,048; 3 × 16,512 = 49,536;
    // 128·8+8 = 1,032; 8·128+128 = 1,152; 3 × 16,512 = 49,536; out 128·640+640 = 82,560;
    // BN 2·(8·128 + 8) = 2,064. Total 82,048+49,536+1,032+1,152+49,536+82,560+2,064 = 267,928.
    let ae = ModelConfig::AutoEncoder(AutoEncoderConfig::reference())
        .build()
        .unwrap();
    assert_eq!(ae.params(), 267_928);
    // MACs: linear in·out: 81,920 + 3·16,384 + 1,024 + 1,024 + 3·16,384 + 81,920 = 264,192.
    assert_eq!(ae.macs(), 264_192);
}

#[test]
fn config_round_trips_through_toml_and_rejects_bad_shapes() {
    let text = r#"
        arch = "tcn"
        input_channels = 10
        input_len = 49
        classes = 12
        residual_every = 2
        layers = [ { channels = 32, kernel = 3 }, { channels = 20, kernel = 5, dilation = 2 } ]
    "#;
    let c: ModelConfig = toml::from_str(text).unwrap();
    let ModelConfig::Tcn(t) = &c else {
        panic!("wrong arch")
    };
    assert_eq!(t.layers[1].dilation, 2);
    assert!(t.batch_norm);
    let back: ModelConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    // a kernel larger than the padded input is a clear error naming the layer.
    let mut bad = DsCnnConfig::reference();
    bad.input = [1, 6, 10];
    bad.stem.padding = [0, 0];
    let err = ModelConfig::DsCnn(bad).build().unwrap_err().to_string();
    assert!(err.contains("conv0"), "{err}");
}
