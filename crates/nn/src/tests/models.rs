//! Forward passes of every architecture, seeded initialisation, BN folding and save/load.

use crate::config::*;
use crate::model::Model;
use candle_core::{Device, Tensor};

pub(crate) fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| r.random::<f32>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub(crate) fn small_dscnn() -> ModelConfig {
    let mut c = DsCnnConfig::reference();
    c.stem.channels = 8;
    c.blocks = vec![
        DsBlockConfig {
            channels: 12,
            kernel: [3, 3],
            stride: 1,
        },
        DsBlockConfig {
            channels: 6,
            kernel: [3, 3],
            stride: 1,
        },
    ];
    c.classes = 3;
    ModelConfig::DsCnn(c)
}

pub(crate) fn small_tcn() -> ModelConfig {
    let mut c = TcnConfig::seed(8);
    c.layers.truncate(4);
    c.layers[2].channels = 6;
    c.layers[3] = TcnLayerConfig {
        channels: 5,
        kernel: 5,
        dilation: 3,
    };
    c.classes = 3;
    ModelConfig::Tcn(c)
}

fn all_small() -> Vec<(ModelConfig, Vec<usize>)> {
    let mut r = ResNetConfig::resnet8();
    r.input = [3, 12, 10];
    r.stem_channels = 4;
    r.stacks = vec![
        ResStackConfig {
            mid_channels: 3,
            channels: 4,
            stride: 1,
            kernel: 3,
        },
        ResStackConfig {
            mid_channels: 5,
            channels: 6,
            stride: 2,
            kernel: 3,
        },
    ];
    let mut m = MobileNetV1Config::with_width(0.125, [3, 17, 15], 4);
    m.blocks.truncate(4);
    let mut causal = TcnConfig::bench(4);
    causal.padding = TcnPadding::Causal;
    causal.layers.truncate(3);
    vec![
        (small_dscnn(), vec![1, 49, 10]),
        (small_tcn(), vec![10, 49]),
        (ModelConfig::Tcn(causal), vec![10, 49]),
        (ModelConfig::ResNet(r), vec![3, 12, 10]),
        (ModelConfig::MobileNetV1(m), vec![3, 17, 15]),
        (
            ModelConfig::AutoEncoder(AutoEncoderConfig {
                input: 20,
                hidden: vec![8, 3, 8],
                batch_norm: true,
            }),
            vec![20],
        ),
    ]
}

#[test]
fn every_architecture_runs_forward_with_the_graph_shapes() {
    for (cfg, input) in all_small() {
        let m = Model::new(cfg.clone(), 1).unwrap();
        assert_eq!(m.config().input_shape(), input);
        let mut shape = vec![5];
        shape.extend(&input);
        let x = randn(&shape, 2);
        let y = m.forward(&x, true).unwrap();
        let out = &m.graph().nodes.last().unwrap().out_shape;
        assert_eq!(y.dims()[0], 5);
        assert_eq!(&y.dims()[1..], out.as_slice(), "{cfg:?}");
        let pcount: usize = m.params().iter().map(|(_, v)| v.elem_count()).sum();
        assert_eq!(pcount as u64, m.num_params(), "{cfg:?}");
        // Wrong input shape is an error, not a panic.
        assert!(m.forward(&randn(&[2, 3], 0), false).is_err());
    }
}

#[test]
fn initialisation_is_seeded_and_pytorch_like() {
    let a = Model::new(small_tcn(), 7).unwrap();
    let b = Model::new(small_tcn(), 7).unwrap();
    let c = Model::new(small_tcn(), 8).unwrap();
    let (sa, sb, sc) = (a.state().unwrap(), b.state().unwrap(), c.state().unwrap());
    let w = |s: &std::collections::HashMap<String, Tensor>, k: &str| {
        s[k].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(w(&sa, "convs.0.weight"), w(&sb, "convs.0.weight"));
    assert_ne!(w(&sa, "convs.0.weight"), w(&sc, "convs.0.weight"));
    // convs.0: fan_in = 10·3 = 30 → |w| ≤ 1/√30 ≈ 0.1826, and spread over the range.
    let v = w(&sa, "convs.0.weight");
    let bound = 1.0 / 30f32.sqrt();
    assert!(v.iter().all(|x| x.abs() <= bound));
    assert!(v.iter().cloned().fold(0f32, f32::max) > 0.9 * bound);
    assert_eq!(w(&sa, "bns.0.weight"), vec![1.0; 8]);
    assert_eq!(w(&sa, "bns.0.running_var"), vec![1.0; 8]);
}

#[test]
fn bn_running_stats_follow_pytorch_momentum_rule() {
    let cfg = ModelConfig::AutoEncoder(AutoEncoderConfig {
        input: 2,
        hidden: vec![1],
        batch_norm: true,
    });
    let m = Model::new(cfg, 0).unwrap();
    // Set the first linear to identity on feature 0: h = x0.
    m.get("fcs.0.weight")
        .unwrap()
        .set(&Tensor::new(&[[1f32, 0.]], &Device::Cpu).unwrap())
        .unwrap();
    m.get("fcs.0.bias")
        .unwrap()
        .set(&Tensor::new(&[0f32], &Device::Cpu).unwrap())
        .unwrap();
    let x = Tensor::new(&[[1f32, 9.], [3., 9.], [5., 9.], [7., 9.]], &Device::Cpu).unwrap();
    m.forward(&x, true).unwrap();
    // batch mean 4, unbiased var 20/3 → running mean 0.9·0 + 0.1·4 = 0.4,
    // running var 0.9·1 + 0.1·20/3 = 1.5666…
    let rm = m
        .get("bns.0.running_mean")
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    let rv = m
        .get("bns.0.running_var")
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    assert!((rm - 0.4).abs() < 1e-6, "{rm}");
    assert!((rv - (0.9 + 2.0 / 3.0)).abs() < 1e-5, "{rv}");
}

#[test]
fn folded_model_matches_unfolded_eval_output() {
    for (cfg, input) in all_small() {
        let m = Model::new(cfg.clone(), 3).unwrap();
        let mut shape = vec![6];
        shape.extend(&input);
        // A few train-mode passes on shifted data make the running statistics non-trivial,
        // and random γ/β make the affine part non-trivial.
        for i in 0..3 {
            m.forward(
                &(randn(&shape, 10 + i) * 3.0)
                    .unwrap()
                    .affine(1.0, 0.5)
                    .unwrap(),
                true,
            )
            .unwrap();
        }
        for (i, (name, v)) in m.params().iter().enumerate() {
            if name.contains("bn") && (name.ends_with(".weight") || name.ends_with(".bias")) {
                v.set(&(randn(v.dims(), 50 + i as u64) + 1.0).unwrap())
                    .unwrap();
            }
        }
        let f = m.fold_bn().unwrap();
        assert!(
            f.graph()
                .nodes
                .iter()
                .all(|n| !matches!(n.op, crate::graph::Op::BatchNorm { .. })),
            "{cfg:?}"
        );
        let has_bn = m
            .graph()
            .nodes
            .iter()
            .any(|n| matches!(n.op, crate::graph::Op::BatchNorm { .. }));
        assert!(f.num_params() < m.num_params() || !has_bn);
        let x = randn(&shape, 99);
        let a: Vec<f32> = m
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = f
            .forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (p, q) in a.iter().zip(&b) {
            assert!(
                (p - q).abs() <= 1e-5 * (1.0 + p.abs()),
                "{cfg:?}: {p} vs {q}"
            );
        }
    }
}

#[test]
fn save_and_load_round_trip_gives_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::new(small_dscnn(), 5).unwrap();
    let x = randn(&[3, 1, 49, 10], 4);
    m.forward(&x, true).unwrap(); // non-trivial running stats
    m.save(&dir.path().join("plain")).unwrap();
    let l = Model::load(&dir.path().join("plain")).unwrap();
    assert_eq!(l.config(), m.config());
    let out = |m: &Model| {
        m.forward(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(out(&l), out(&m));
    let f = m.fold_bn().unwrap();
    f.save(&dir.path().join("folded")).unwrap();
    let lf = Model::load(&dir.path().join("folded")).unwrap();
    assert!(lf.bn_folded());
    assert_eq!(out(&lf), out(&f));
    // A missing folder is an error naming the file.
    let err = Model::load(&dir.path().join("nope"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.json"), "{err}");
}

#[test]
fn eval_forward_with_conv_epilogues_matches_the_unfused_layers() {
    for (cfg, input) in all_small() {
        let m = Model::new(cfg.clone(), 5).unwrap();
        let mut shape = vec![4];
        shape.extend(&input);
        // Non-trivial running statistics and affine parameters.
        m.forward(&(randn(&shape, 7) * 2.0).unwrap(), true).unwrap();
        for (i, (name, v)) in m.params().iter().enumerate() {
            if name.contains("bn") {
                v.set(&(randn(v.dims(), 80 + i as u64) + 1.0).unwrap())
                    .unwrap();
            }
        }
        let x = randn(&shape, 11);
        let out = |fuse: bool| -> Vec<f32> {
            m.forward_with(&x, false, fuse)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        // Every convolutional model here has a convolution followed by a batch norm or a ReLU.
        let g = m.graph();
        let steps = crate::interp::steps(g, false, &crate::interp::NoHook);
        let has_conv = g
            .nodes
            .iter()
            .any(|n| matches!(n.op, crate::graph::Op::Conv { .. }));
        assert_eq!(
            steps.iter().any(
                |s| matches!(g.nodes[s.node].op, crate::graph::Op::Conv { .. })
                    && (s.bn.is_some() || s.relu.is_some())
            ),
            has_conv,
            "{cfg:?}"
        );
        let (fused, plain) = (out(true), out(false));
        let scale = plain.iter().fold(1f32, |a, v| a.max(v.abs()));
        for (p, q) in fused.iter().zip(&plain) {
            assert!((p - q).abs() <= 1e-4 * scale, "{cfg:?}: {p} vs {q}");
        }
    }
}
