//! Test networks shared by the export tests: small DS-CNN-, TCN- (symmetric and causal) and
//! ResNet-block-like graphs, a 2-D net with asymmetric padding, MobileNet-style blocks
//! (ReLU6 inverted residual, squeeze-and-excitation with sigmoid / hard sigmoid, hard swish),
//! a ShuffleNet-style unit (narrow, concat, channel shuffle) and max / average pooling in 1-D
//! and 2-D, with seeded random parameters, and seeded random inputs.

#![allow(dead_code, clippy::too_many_arguments)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use whittle_export::{Activation, Layer, Network, PoolKind, Tensor32};

pub struct Gen(ChaCha8Rng);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.0.random_range(lo..hi)).collect()
    }
    fn tensor(&mut self, shape: Vec<usize>) -> Tensor32 {
        let fan_in: usize = shape[1..].iter().product();
        let a = (3.0 / fan_in as f32).sqrt();
        let n = shape.iter().product();
        Tensor32::new(shape, self.vec(n, -a, a)).unwrap()
    }
    pub fn conv(
        &mut self,
        i: &str,
        o: &str,
        cin: usize,
        cout: usize,
        k: &[usize],
        s: usize,
        p: &[usize],
        d: usize,
        groups: usize,
    ) -> Layer {
        let pads: Vec<(usize, usize)> = p.iter().map(|&v| (v, v)).collect();
        self.conv_pads(i, o, cin, cout, k, s, &pads, d, groups)
    }
    /// Like [`Gen::conv`] with `(begin, end)` padding per spatial axis.
    pub fn conv_pads(
        &mut self,
        i: &str,
        o: &str,
        cin: usize,
        cout: usize,
        k: &[usize],
        s: usize,
        p: &[(usize, usize)],
        d: usize,
        groups: usize,
    ) -> Layer {
        let mut shape = vec![cout, cin / groups];
        shape.extend_from_slice(k);
        Layer::Conv {
            input: i.into(),
            output: o.into(),
            weight: self.tensor(shape),
            bias: Some(self.vec(cout, -0.1, 0.1)),
            stride: vec![s; k.len()],
            padding: p.to_vec(),
            dilation: vec![d; k.len()],
            groups,
        }
    }
    /// Causal Conv1d: `(k − 1)·d` zeros on the left only, stride 1.
    pub fn causal(
        &mut self,
        i: &str,
        o: &str,
        cin: usize,
        cout: usize,
        k: usize,
        d: usize,
    ) -> Layer {
        self.conv_pads(i, o, cin, cout, &[k], 1, &[((k - 1) * d, 0)], d, 1)
    }
    pub fn bn(&mut self, i: &str, o: &str, c: usize) -> Layer {
        Layer::BatchNorm {
            input: i.into(),
            output: o.into(),
            gamma: self.vec(c, 0.5, 1.5),
            beta: self.vec(c, -0.2, 0.2),
            mean: self.vec(c, -0.2, 0.2),
            var: self.vec(c, 0.5, 1.5),
            eps: 1e-5,
        }
    }
    pub fn linear(&mut self, i: &str, o: &str, cin: usize, cout: usize) -> Layer {
        Layer::Linear {
            input: i.into(),
            output: o.into(),
            weight: self.tensor(vec![cout, cin]),
            bias: Some(self.vec(cout, -0.1, 0.1)),
        }
    }
}

pub fn relu(i: &str, o: &str) -> Layer {
    Layer::Relu {
        input: i.into(),
        output: o.into(),
    }
}
pub fn add(a: &str, b: &str, o: &str) -> Layer {
    Layer::Add {
        a: a.into(),
        b: b.into(),
        output: o.into(),
    }
}
pub fn act(act: Activation, i: &str, o: &str) -> Layer {
    Layer::Activation {
        act,
        input: i.into(),
        output: o.into(),
    }
}
pub fn pool(
    kind: PoolKind,
    i: &str,
    o: &str,
    k: &[usize],
    s: usize,
    p: &[(usize, usize)],
) -> Layer {
    Layer::Pool {
        kind,
        input: i.into(),
        output: o.into(),
        kernel: k.to_vec(),
        stride: vec![s; k.len()],
        padding: p.to_vec(),
    }
}
/// Squeeze-and-excitation on `i` (c channels): global pool → linear c → r → ReLU → linear
/// r → c → `gate` → channel multiply; the result is `{o}`, the other tensors `{o}.*`.
pub fn se(g: &mut Gen, i: &str, o: &str, c: usize, r: usize, gate: Activation) -> Vec<Layer> {
    let n = |s: &str| format!("{o}.{s}");
    vec![
        Layer::GlobalAvgPool {
            input: i.into(),
            output: n("pool"),
        },
        Layer::Flatten {
            input: n("pool"),
            output: n("flat"),
        },
        g.linear(&n("flat"), &n("f1"), c, r),
        relu(&n("f1"), &n("relu")),
        g.linear(&n("relu"), &n("f2"), r, c),
        act(gate, &n("f2"), &n("gate")),
        Layer::ChannelMul {
            x: i.into(),
            s: n("gate"),
            output: o.into(),
        },
    ]
}
pub fn head(g: &mut Gen, i: &str, c: usize, classes: usize) -> Vec<Layer> {
    vec![
        Layer::GlobalAvgPool {
            input: i.into(),
            output: "pool".into(),
        },
        Layer::Flatten {
            input: "pool".into(),
            output: "flat".into(),
        },
        g.linear("flat", "logits", c, classes),
    ]
}

/// Conv(1→8, k=(10,4), s=2, p=(5,1)) on 49×10 → BN → ReLU → depthwise 3×3 → BN → ReLU →
/// pointwise → BN → ReLU → pool → linear.
pub fn ds_cnn(seed: u64) -> Network {
    let mut g = Gen::new(seed);
    let mut layers = vec![
        g.conv("x", "c1", 1, 8, &[10, 4], 2, &[5, 1], 1, 1),
        g.bn("c1", "b1", 8),
        relu("b1", "r1"),
        g.conv("r1", "dw", 8, 8, &[3, 3], 1, &[1, 1], 1, 8),
        g.bn("dw", "b2", 8),
        relu("b2", "r2"),
        g.conv("r2", "pw", 8, 12, &[1, 1], 1, &[0, 0], 1, 1),
        g.bn("pw", "b3", 12),
        relu("b3", "r3"),
    ];
    layers.extend(head(&mut g, "r3", 12, 5));
    Network {
        name: "ds_cnn".into(),
        input: ("x".into(), vec![1, 1, 49, 10]),
        output: "logits".into(),
        layers,
    }
}

/// Conv1d k=3 with dilations 1, 2, 4 and residual adds on 4 channels × 20 steps.
pub fn tcn(seed: u64) -> Network {
    let mut g = Gen::new(seed);
    let mut layers = vec![
        g.conv("x", "c0", 4, 6, &[3], 1, &[1], 1, 1),
        relu("c0", "r0"),
        g.conv("r0", "c1", 6, 6, &[3], 1, &[2], 2, 1),
        g.bn("c1", "b1", 6),
        relu("b1", "r1"),
        add("r1", "r0", "s1"),
        g.conv("s1", "c2", 6, 6, &[3], 1, &[4], 4, 1),
        relu("c2", "r2"),
        add("r2", "s1", "s2"),
        g.conv("s2", "c3", 6, 6, &[3], 2, &[1], 1, 1),
        relu("c3", "r3"),
    ];
    layers.extend(head(&mut g, "r3", 6, 3));
    Network {
        name: "tcn".into(),
        input: ("x".into(), vec![1, 4, 20]),
        output: "logits".into(),
        layers,
    }
}

/// Causal TCN on 4 channels × 16 steps laid out like `whittle_nn`'s (conv → BN → [add] → ReLU),
/// k = 3 with dilations 1, 2, 4. With `residual`: the d=2, d=4 pair is a block with an
/// identity skip, followed by a k=2 causal conv to 8 channels whose skip is a 1×1 projection.
pub fn causal_tcn(seed: u64, residual: bool) -> Network {
    let mut g = Gen::new(seed);
    let mut layers = vec![
        g.causal("x", "c0", 4, 6, 3, 1),
        g.bn("c0", "b0", 6),
        relu("b0", "r0"),
        g.causal("r0", "c1", 6, 6, 3, 2),
        g.bn("c1", "b1", 6),
        relu("b1", "r1"),
        g.causal("r1", "c2", 6, 6, 3, 4),
        g.bn("c2", "b2", 6),
    ];
    let (last, c) = if residual {
        layers.extend([
            add("b2", "r0", "s2"),
            relu("s2", "r2"),
            g.causal("r2", "c3", 6, 8, 2, 1),
            g.bn("c3", "b3", 8),
            g.conv("r2", "proj", 6, 8, &[1], 1, &[0], 1, 1),
            add("b3", "proj", "s3"),
            relu("s3", "r3"),
        ]);
        ("r3", 8)
    } else {
        layers.push(relu("b2", "r2"));
        ("r2", 6)
    };
    layers.extend(head(&mut g, last, c, 3));
    Network {
        name: if residual {
            "causal_res_tcn"
        } else {
            "causal_tcn"
        }
        .into(),
        input: ("x".into(), vec![1, 4, 16]),
        output: "logits".into(),
        layers,
    }
}

/// 2-D convs with different padding on each side of each axis (checks the ONNX `pads` order
/// [h_begin, w_begin, h_end, w_end]): 2×7×6 → (1,0)/(0,2) 3×3 → (0,2)/(1,1) 2×2 stride 2.
pub fn asym_2d(seed: u64) -> Network {
    let mut g = Gen::new(seed);
    let mut layers = vec![
        g.conv_pads("x", "c0", 2, 4, &[3, 3], 1, &[(1, 0), (0, 2)], 1, 1),
        relu("c0", "r0"),
        g.conv_pads("r0", "c1", 4, 5, &[2, 2], 2, &[(0, 2), (1, 1)], 1, 1),
        relu("c1", "r1"),
    ];
    layers.extend(head(&mut g, "r1", 5, 4));
    Network {
        name: "asym_2d".into(),
        input: ("x".into(), vec![1, 2, 7, 6]),
        output: "logits".into(),
        layers,
    }
}

/// Stem conv → stride-2 residual block with a 1×1 stride-2 conv shortcut → pool → linear.
pub fn resnet_block(seed: u64) -> Network {
    let mut g = Gen::new(seed);
    let mut layers = vec![
        g.conv("x", "c0", 3, 4, &[3, 3], 1, &[1, 1], 1, 1),
        g.bn("c0", "b0", 4),
        relu("b0", "a"),
        g.conv("a", "c1", 4, 8, &[3, 3], 2, &[1, 1], 1, 1),
        g.bn("c1", "b1", 8),
        relu("b1", "r1"),
        g.conv("r1", "c2", 8, 8, &[3, 3], 1, &[1, 1], 1, 1),
        g.bn("c2", "b2", 8),
        g.conv("a", "sc", 4, 8, &[1, 1], 2, &[0, 0], 1, 1),
        g.bn("sc", "bsc", 8),
        add("b2", "bsc", "sum"),
        relu("sum", "r2"),
    ];
    layers.extend(head(&mut g, "r2", 8, 5));
    Network {
        name: "resnet_block".into(),
        input: ("x".into(), vec![1, 3, 9, 9]),
        output: "logits".into(),
        layers,
    }
}

/// FC auto-encoder 16 → 8 → 4 → 8 → 16 with ReLUs.
pub fn fc_autoencoder(seed: u64) -> Network {
    let mut g = Gen::new(seed);
    let layers = vec![
        g.linear("x", "e1", 16, 8),
        relu("e1", "r1"),
        g.linear("r1", "code", 8, 4),
        relu("code", "r2"),
        g.linear("r2", "d1", 4, 8),
        relu("d1", "r3"),
        g.linear("r3", "recon", 8, 16),
    ];
    Network {
        name: "fc_ae".into(),
        input: ("x".into(), vec![1, 16]),
        output: "recon".into(),
        layers,
    }
}

/// MobileNetV2 stem (conv → BN → ReLU6) and an inverted residual block with
/// squeeze-and-excitation: 1×1 expand 4 → 12 → BN → ReLU6 → depthwise 3×3 → BN → ReLU6 →
/// SE (hard sigmoid gate) → 1×1 project → BN → SE (sigmoid gate) → + stem → hard swish →
/// pool → linear, on 3×8×8.
pub fn mbv2_block(seed: u64) -> Network {
    let mut g = Gen::new(seed);
    let mut layers = vec![
        g.conv("x", "c0", 3, 4, &[3, 3], 1, &[1, 1], 1, 1),
        g.bn("c0", "b0", 4),
        act(Activation::Relu6, "b0", "a0"),
        g.conv("a0", "ex", 4, 12, &[1, 1], 1, &[0, 0], 1, 1),
        g.bn("ex", "bex", 12),
        act(Activation::Relu6, "bex", "rex"),
        g.conv("rex", "dw", 12, 12, &[3, 3], 1, &[1, 1], 1, 12),
        g.bn("dw", "bdw", 12),
        act(Activation::Relu6, "bdw", "rdw"),
    ];
    layers.extend(se(&mut g, "rdw", "se1", 12, 3, Activation::HardSigmoid));
    layers.extend([
        g.conv("se1", "pr", 12, 4, &[1, 1], 1, &[0, 0], 1, 1),
        g.bn("pr", "bpr", 4),
    ]);
    layers.extend(se(&mut g, "bpr", "se2", 4, 2, Activation::Sigmoid));
    layers.extend([
        add("a0", "se2", "sum"),
        act(Activation::HardSwish, "sum", "hs"),
    ]);
    layers.extend(head(&mut g, "hs", 4, 5));
    Network {
        name: "mbv2_block".into(),
        input: ("x".into(), vec![1, 3, 8, 8]),
        output: "logits".into(),
        layers,
    }
}

/// ShuffleNetV2 unit on 8×6×6: stem conv → channel split by two narrows → right half 1×1 →
/// ReLU → depthwise 3×3 → 1×1 → ReLU → concat with the left half → channel shuffle (2
/// groups) → 3×3 max pool stride 2 pad 1 → pool → linear.
pub fn shuffle_unit(seed: u64) -> Network {
    let mut g = Gen::new(seed);
    let narrow = |i: &str, o: &str, start, len| Layer::Narrow {
        input: i.into(),
        output: o.into(),
        start,
        len,
    };
    let mut layers = vec![
        g.conv("x", "c0", 2, 8, &[3, 3], 1, &[1, 1], 1, 1),
        relu("c0", "r0"),
        narrow("r0", "left", 0, 4),
        narrow("r0", "right", 4, 4),
        g.conv("right", "p1", 4, 4, &[1, 1], 1, &[0, 0], 1, 1),
        relu("p1", "rp1"),
        g.conv("rp1", "dw", 4, 4, &[3, 3], 1, &[1, 1], 1, 4),
        g.conv("dw", "p2", 4, 4, &[1, 1], 1, &[0, 0], 1, 1),
        relu("p2", "rp2"),
        Layer::Concat {
            inputs: vec!["left".into(), "rp2".into()],
            output: "cat".into(),
        },
        Layer::ChannelShuffle {
            input: "cat".into(),
            output: "shuf".into(),
            groups: 2,
        },
        pool(PoolKind::Max, "shuf", "mp", &[3, 3], 2, &[(1, 1), (1, 1)]),
    ];
    layers.extend(head(&mut g, "mp", 8, 4));
    Network {
        name: "shuffle_unit".into(),
        input: ("x".into(), vec![1, 2, 6, 6]),
        output: "logits".into(),
        layers,
    }
}

/// Pooling: 2-D conv → max pool 2×2 stride 2 → conv → average pool 3×3 stride 1 with
/// asymmetric padding (1, 0) / (0, 2) (padded zeros count) → concat of a three-input list
/// (the pool, its ReLU6 and its hard swish) → pool → linear, on 2×9×8.
pub fn pools_2d(seed: u64) -> Network {
    let mut g = Gen::new(seed);
    let mut layers = vec![
        g.conv("x", "c0", 2, 4, &[3, 3], 1, &[1, 1], 1, 1),
        relu("c0", "r0"),
        pool(PoolKind::Max, "r0", "mp", &[2, 2], 2, &[(0, 0), (0, 0)]),
        g.conv("mp", "c1", 4, 4, &[3, 3], 1, &[1, 1], 1, 1),
        pool(PoolKind::Avg, "c1", "ap", &[3, 3], 1, &[(1, 0), (0, 2)]),
        act(Activation::Relu6, "ap", "ap6"),
        act(Activation::HardSwish, "ap", "aphs"),
        Layer::Concat {
            inputs: vec!["ap".into(), "ap6".into(), "aphs".into()],
            output: "cat".into(),
        },
    ];
    layers.extend(head(&mut g, "cat", 12, 4));
    Network {
        name: "pools_2d".into(),
        input: ("x".into(), vec![1, 2, 9, 8]),
        output: "logits".into(),
        layers,
    }
}

/// 1-D pooling on 4 channels × 21 steps: conv k=3 → ReLU → max pool k=3 stride 2 pad 1 →
/// conv → average pool k=4 stride 2 pad (2, 1) → SE with a hard sigmoid gate → pool → linear.
pub fn pools_1d(seed: u64) -> Network {
    let mut g = Gen::new(seed);
    let mut layers = vec![
        g.conv("x", "c0", 4, 6, &[3], 1, &[1], 1, 1),
        relu("c0", "r0"),
        pool(PoolKind::Max, "r0", "mp", &[3], 2, &[(1, 1)]),
        g.conv("mp", "c1", 6, 6, &[3], 1, &[1], 1, 1),
        pool(PoolKind::Avg, "c1", "ap", &[4], 2, &[(2, 1)]),
    ];
    layers.extend(se(&mut g, "ap", "se", 6, 3, Activation::HardSigmoid));
    layers.extend(head(&mut g, "se", 6, 3));
    Network {
        name: "pools_1d".into(),
        input: ("x".into(), vec![1, 4, 21]),
        output: "logits".into(),
        layers,
    }
}

pub fn all(seed: u64) -> Vec<Network> {
    vec![
        ds_cnn(seed),
        tcn(seed + 1),
        resnet_block(seed + 2),
        fc_autoencoder(seed + 3),
        causal_tcn(seed + 4, false),
        causal_tcn(seed + 5, true),
        asym_2d(seed + 6),
        mbv2_block(seed + 7),
        shuffle_unit(seed + 8),
        pools_2d(seed + 9),
        pools_1d(seed + 10),
    ]
}

pub fn input(net: &Network, seed: u64) -> Vec<f32> {
    let n = net.input.1.iter().product();
    Gen::new(seed).vec(n, -1.0, 1.0)
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
