//! Pruning tests: every method on small nets with residuals and depthwise convs; coupled
//! channels stay consistent; the exported net builds, runs, and keeps the chosen filters.

use super::*;
use crate::config::{DsCnnConfig, ModelConfig, ResNetConfig, TcnConfig};
use candle_core::{Device, Tensor};

fn x(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
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

fn small_resnet() -> ModelConfig {
    let mut c = ResNetConfig::resnet8();
    c.input = [3, 8, 8];
    c.stem_channels = 8;
    for (i, s) in c.stacks.iter_mut().enumerate() {
        s.channels = 8 * (i + 1);
        s.mid_channels = 8 * (i + 1);
    }
    ModelConfig::ResNet(c)
}

#[test]
fn every_method_exports_a_running_smaller_net() {
    let tcn = ModelConfig::Tcn(TcnConfig::seed(8));
    for (cfg, shape) in [
        (tcn, vec![2, 10, 49]),
        (small_dscnn(), vec![2, 1, 49, 10]),
        (small_resnet(), vec![2, 3, 8, 8]),
    ] {
        let m = Model::new(cfg, 3).unwrap();
        for method in [Method::L1, Method::BnGamma, Method::Uniform, Method::Random] {
            for scope in [Scope::Layer, Scope::Global] {
                let (small, changes) = prune(&m, method, 0.5, scope, 1).unwrap();
                assert!(small.num_params() < m.num_params(), "{method:?} {scope:?}");
                let y = small.forward(&x(&shape), false).unwrap();
                assert_eq!(y.dims()[1], m.graph().nodes.last().unwrap().out_shape[0]);
                let fc = changes.last().unwrap();
                assert_eq!(fc.c_out, fc.c_out_before, "output layer pruned");
            }
        }
    }
}

#[test]
fn layer_ratio_halves_groups_and_couples_residuals() {
    // TCN seed: 7 layers of 8 ch, residual every 2, first block has a projection (10→8).
    let m = Model::new(ModelConfig::Tcn(TcnConfig::seed(8)), 5).unwrap();
    let (small, changes) = prune(&m, Method::L1, 0.5, Scope::Layer, 0).unwrap();
    let by = |n: &str| changes.iter().find(|c| c.name == n).unwrap().c_out;
    assert_eq!(by("convs.0"), 4);
    // convs.1, proj.1, convs.3, convs.5 and convs.6 (after the last block, the block
    // input feeds no add) — coupled ones equal.
    assert_eq!(by("convs.1"), by("proj.1"));
    assert_eq!(by("convs.1"), by("convs.3"));
    assert_eq!(by("convs.3"), by("convs.5"));
    small.graph().validate().unwrap();
}

#[test]
fn l1_keeps_the_largest_filters_and_their_weights() {
    let m = Model::new(small_dscnn(), 9).unwrap();
    let p = plan(m.graph(), false).unwrap();
    let s = scores(&m, &p, Method::L1, 0).unwrap();
    let keep = select(&p, &s, 0.5, Scope::Layer).unwrap();
    // Group of conv0 (the stem; the first depthwise conv follows it).
    let g0 = p.value_group[1];
    let w = m.get("conv0.weight").unwrap().as_tensor();
    let mags: Vec<f32> = w
        .abs()
        .unwrap()
        .flatten_from(1)
        .unwrap()
        .mean(1)
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut order: Vec<usize> = (0..8).collect();
    order.sort_by(|&a, &b| mags[b].total_cmp(&mags[a]));
    let mut want = order[..4].to_vec();
    want.sort_unstable();
    assert_eq!(keep[g0], want);
    // The exported stem holds exactly those filters; the depthwise conv its matching ones.
    let (small, _) = prune(&m, Method::L1, 0.5, Scope::Layer, 0).unwrap();
    let idx = Tensor::from_vec(
        want.iter().map(|&i| i as u32).collect::<Vec<_>>(),
        4,
        &Device::Cpu,
    )
    .unwrap();
    let a = small
        .get("conv0.weight")
        .unwrap()
        .as_tensor()
        .flatten_all()
        .unwrap();
    let b = w.index_select(&idx, 0).unwrap().flatten_all().unwrap();
    assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
    let dw = m.get("blocks.0.dw.weight").unwrap().as_tensor();
    let a = small
        .get("blocks.0.dw.weight")
        .unwrap()
        .as_tensor()
        .flatten_all()
        .unwrap();
    let b = dw.index_select(&idx, 0).unwrap().flatten_all().unwrap();
    assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
}

#[test]
fn random_is_seeded_and_uniform_keeps_leading_channels() {
    let m = Model::new(ModelConfig::Tcn(TcnConfig::bench(8)), 1).unwrap();
    let p = plan(m.graph(), false).unwrap();
    let a = select(
        &p,
        &scores(&m, &p, Method::Random, 4).unwrap(),
        0.5,
        Scope::Layer,
    )
    .unwrap();
    let b = select(
        &p,
        &scores(&m, &p, Method::Random, 4).unwrap(),
        0.5,
        Scope::Layer,
    )
    .unwrap();
    let c = select(
        &p,
        &scores(&m, &p, Method::Random, 5).unwrap(),
        0.5,
        Scope::Layer,
    )
    .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let u = select(
        &p,
        &scores(&m, &p, Method::Uniform, 0).unwrap(),
        0.25,
        Scope::Layer,
    )
    .unwrap();
    assert_eq!(u[p.value_group[1]], vec![0, 1, 2, 3, 4, 5]);
    assert!(
        select(
            &p,
            &scores(&m, &p, Method::L1, 0).unwrap(),
            1.0,
            Scope::Layer
        )
        .is_err()
    );
}
