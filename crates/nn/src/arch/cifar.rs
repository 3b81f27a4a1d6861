//! The CIFAR architectures of `002` in its WideResNet layout: a plain 3×3 stem conv with 16
//! channels, three subnetworks of equal block count at widths (w, 2w, 4w) with stride 2 in the
//! first block of the second and third, global average pooling and a fully-connected layer.
//! WideResNet (pre-activation basic blocks), ShuffleNetV1 (grouped 1×1 convs + channel
//! shuffle), ShuffleNetV2 (channel split, concat, shuffle) and an explicit list of inverted
//! residual blocks (MCUNet-style; `002`'s MnasNet is one such list, see
//! [`McunetConfig::mnasnet`]). Squeeze-and-excitation (`se = r`: pool → FC C→C/r → ReLU → FC →
//! sigmoid → channel multiply) goes after the last conv of each stride-1 block, as in `002`.
//! Convolutions have no bias (batch norm follows each one).

use crate::config::{cifar_input, is_zero, one, sixteen, ten};
use crate::graph::{Graph, GraphBuilder, Op};
use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

fn three() -> usize {
    3
}

/// Square conv without bias, padding (k − 1)/2.
pub(crate) fn conv(
    b: &mut GraphBuilder,
    name: &str,
    x: usize,
    c_out: usize,
    k: usize,
    s: usize,
    groups: usize,
) -> Result<usize> {
    let p = (k - 1) / 2;
    b.conv(
        name,
        x,
        c_out,
        vec![k, k],
        vec![s, s],
        vec![(p, p); 2],
        vec![1, 1],
        groups,
        false,
    )
}

/// The stem of the ShuffleNets: 3×3 conv to 16 channels → BN → ReLU (`conv0`, `bn0`, `relu0`).
fn stem16(b: &mut GraphBuilder) -> Result<usize> {
    let x = conv(b, "conv0", 0, 16, 3, 1, 1)?;
    let x = b.bn("bn0", x)?;
    b.relu("relu0", x)
}

/// Global average pooling and the fully-connected classifier (`pool`, `fc`); the finished graph.
pub(crate) fn classifier(mut b: GraphBuilder, x: usize, classes: usize) -> Result<Graph> {
    let x = b.pool("pool", x)?;
    b.linear("fc", x, classes, true)?;
    Ok(b.finish())
}

/// Squeeze-and-excitation with reduction `r` on value `x`, named `{prefix}.se.*`.
pub(crate) fn squeeze_excite(
    b: &mut GraphBuilder,
    prefix: &str,
    x: usize,
    r: usize,
) -> Result<usize> {
    let c = b.channels(x);
    let n = |l: &str| format!("{prefix}.se.{l}");
    let mut s = b.pool(&n("pool"), x)?;
    s = b.linear(&n("f1"), s, (c / r).max(1), true)?;
    s = b.relu(&n("relu"), s)?;
    s = b.linear(&n("f2"), s, c, true)?;
    s = b.op(&n("sigmoid"), Op::Sigmoid, s)?;
    b.push(&n("mul"), Op::ChannelMul, vec![x, s])
}

/// Strides of the three-subnetwork layout: (subnetwork, block in it, stride).
fn layout(blocks: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..3).flat_map(move |i| {
        (0..blocks / 3).map(move |j| (i, j, if i > 0 && j == 0 { 2 } else { 1 }))
    })
}

fn check_common(what: &str, classes: usize, blocks: Option<usize>) -> Result<()> {
    ensure!(classes > 0, "{what}: `classes` must be > 0");
    if let Some(n) = blocks {
        ensure!(
            n >= 3 && n.is_multiple_of(3),
            "{what}: `blocks` must be a positive multiple of 3 (three subnetworks of equal block count), got {n}"
        );
    }
    Ok(())
}

/// WRN-d-k (Zagoruyko & Komodakis, CIFAR): (d − 4)/6 pre-activation basic blocks per
/// subnetwork at widths 16k, 32k, 64k: BN → ReLU → conv 3×3 (stride) → BN → ReLU → conv 3×3,
/// plus the input (identity) or, when the shape changes, a 1×1 conv (stride) of the activated
/// input; a final BN → ReLU before the pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrnConfig {
    #[serde(default = "cifar_input")]
    pub input: [usize; 3],
    #[serde(default = "ten")]
    pub classes: usize,
    /// d: 6n + 4 for n blocks per subnetwork.
    pub depth: usize,
    /// k: widths round(16k), round(32k), round(64k).
    pub widen: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub se: usize,
}

impl WrnConfig {
    pub fn new(depth: usize, widen: f64, se: usize) -> Self {
        Self {
            input: cifar_input(),
            classes: 10,
            depth,
            widen,
            se,
        }
    }

    pub fn build(&self) -> Result<Graph> {
        ensure!(
            self.depth >= 10 && (self.depth - 4).is_multiple_of(6),
            "WideResNet: `depth` must be 6n + 4 with n ≥ 1 (10, 16, 22, 28, 40, …), got {}",
            self.depth
        );
        ensure!(
            self.widen.is_finite() && self.widen > 0.0 && self.widen <= 16.0,
            "WideResNet: `widen` must be in (0, 16], got {}",
            self.widen
        );
        check_common("WideResNet", self.classes, None)?;
        let n = (self.depth - 4) / 6;
        let w = |c: f64| ((c * self.widen).round() as usize).max(1);
        let widths = [w(16.0), w(32.0), w(64.0)];
        let mut b = GraphBuilder::new(self.input.to_vec());
        let mut x = conv(&mut b, "conv0", 0, 16, 3, 1, 1)?;
        for (k, (i, _, stride)) in layout(3 * n).enumerate() {
            let p = |l: &str| format!("blocks.{k}.{l}");
            let (cin, cout) = (b.channels(x), widths[i]);
            let mut a = b.bn(&p("bn1"), x)?;
            a = b.relu(&p("relu1"), a)?;
            let mut y = conv(&mut b, &p("conv1"), a, cout, 3, stride, 1)?;
            y = b.bn(&p("bn2"), y)?;
            y = b.relu(&p("relu2"), y)?;
            y = conv(&mut b, &p("conv2"), y, cout, 3, 1, 1)?;
            if self.se > 0 && stride == 1 {
                y = squeeze_excite(&mut b, &format!("blocks.{k}"), y, self.se)?;
            }
            let skip = if cin == cout && stride == 1 {
                x
            } else {
                conv(&mut b, &p("sc"), a, cout, 1, stride, 1)?
            };
            x = b.add(&p("add"), y, skip)?;
        }
        x = b.bn("bn", x)?;
        x = b.relu("relu", x)?;
        classifier(b, x, self.classes)
    }
}

/// ShuffleNetV2 in `002`'s layout (width w = the block outputs of the first subnetwork). A
/// stride-1 block splits the channels in halves, keeps the first and passes the second through
/// 1×1 → BN → ReLU → depthwise 3×3 → BN → 1×1 → BN → ReLU, concatenates and shuffles (2
/// groups). The first block of each subnetwork (stride 2, or 1 in the first, changing the
/// channels) feeds the whole input to both branches, the left one being depthwise 3×3 → BN →
/// 1×1 → BN → ReLU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShuffleNetV2Config {
    #[serde(default = "cifar_input")]
    pub input: [usize; 3],
    #[serde(default = "ten")]
    pub classes: usize,
    pub width: usize,
    pub blocks: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub se: usize,
}

impl ShuffleNetV2Config {
    pub fn build(&self) -> Result<Graph> {
        check_common("ShuffleNetV2", self.classes, Some(self.blocks))?;
        ensure!(
            self.width >= 2 && self.width.is_multiple_of(2),
            "ShuffleNetV2: `width` must be even (the channel split halves it), got {}",
            self.width
        );
        let mut b = GraphBuilder::new(self.input.to_vec());
        let mut x = stem16(&mut b)?;
        for (k, (i, j, stride)) in layout(self.blocks).enumerate() {
            let p = |l: &str| format!("blocks.{k}.{l}");
            let half = (self.width << i) / 2;
            let cin = b.channels(x);
            let (left, right_in) = if j == 0 {
                let mut l = conv(&mut b, &p("l.dw"), x, cin, 3, stride, cin)?;
                l = b.bn(&p("l.bdw"), l)?;
                l = conv(&mut b, &p("l.pw"), l, half, 1, 1, 1)?;
                l = b.bn(&p("l.bpw"), l)?;
                (b.relu(&p("l.relu"), l)?, x)
            } else {
                let l = b.op(
                    &p("split.l"),
                    Op::Narrow {
                        start: 0,
                        len: half,
                    },
                    x,
                )?;
                let r = b.op(
                    &p("split.r"),
                    Op::Narrow {
                        start: half,
                        len: half,
                    },
                    x,
                )?;
                (l, r)
            };
            let mut r = conv(&mut b, &p("r.pw1"), right_in, half, 1, 1, 1)?;
            r = b.bn(&p("r.b1"), r)?;
            r = b.relu(&p("r.relu1"), r)?;
            r = conv(&mut b, &p("r.dw"), r, half, 3, stride, half)?;
            r = b.bn(&p("r.bdw"), r)?;
            r = conv(&mut b, &p("r.pw2"), r, half, 1, 1, 1)?;
            r = b.bn(&p("r.b2"), r)?;
            r = b.relu(&p("r.relu2"), r)?;
            if self.se > 0 && stride == 1 {
                r = squeeze_excite(&mut b, &p("r"), r, self.se)?;
            }
            x = b.push(&p("cat"), Op::Concat, vec![left, r])?;
            x = b.op(&p("shuffle"), Op::ChannelShuffle { groups: 2 }, x)?;
        }
        classifier(b, x, self.classes)
    }
}

/// ShuffleNetV1 in `002`'s layout (`002` chose 2 groups). A unit: grouped 1×1 to a quarter of
/// its output → BN → ReLU → channel shuffle → depthwise 3×3 (stride) → BN → grouped 1×1 → BN,
/// then ReLU(input + unit) in stride-1 units. The first unit of each subnetwork concatenates
/// the input (3×3 average-pooled with stride 2, as is in the first subnetwork) with a unit
/// giving the remaining channels; the very first unit's first 1×1 is not grouped (16 input
/// channels), as in the paper.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShuffleNetV1Config {
    #[serde(default = "cifar_input")]
    pub input: [usize; 3],
    #[serde(default = "ten")]
    pub classes: usize,
    pub width: usize,
    pub blocks: usize,
    pub groups: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub se: usize,
}

impl ShuffleNetV1Config {
    pub fn build(&self) -> Result<Graph> {
        check_common("ShuffleNetV1", self.classes, Some(self.blocks))?;
        let (w, g) = (self.width, self.groups);
        ensure!(g >= 1, "ShuffleNetV1: `groups` must be ≥ 1");
        ensure!(
            w > 16 && w.is_multiple_of(4 * g) && (w - 16).is_multiple_of(4 * g),
            "ShuffleNetV1: `width` must exceed the stem's 16 channels, and `width` and `width` − 16 must be multiples of 4·`groups` (= {}) so every unit's 1×1 convs split into groups; got width {w}",
            4 * g
        );
        let mut b = GraphBuilder::new(self.input.to_vec());
        let mut x = stem16(&mut b)?;
        for (k, (i, j, stride)) in layout(self.blocks).enumerate() {
            let p = |l: &str| format!("blocks.{k}.{l}");
            let cin = b.channels(x);
            let out = w << i;
            let main = if j == 0 { out - cin } else { out };
            let g1 = if k == 0 { 1 } else { g };
            let mut y = conv(&mut b, &p("pw1"), x, main / 4, 1, 1, g1)?;
            y = b.bn(&p("b1"), y)?;
            y = b.relu(&p("relu1"), y)?;
            if g > 1 {
                y = b.op(&p("shuffle"), Op::ChannelShuffle { groups: g }, y)?;
            }
            y = conv(&mut b, &p("dw"), y, main / 4, 3, stride, main / 4)?;
            y = b.bn(&p("bdw"), y)?;
            y = conv(&mut b, &p("pw2"), y, main, 1, 1, g)?;
            y = b.bn(&p("b2"), y)?;
            if self.se > 0 && stride == 1 {
                y = squeeze_excite(&mut b, &format!("blocks.{k}"), y, self.se)?;
            }
            x = if j == 0 {
                let sc = if stride == 2 {
                    b.op(
                        &p("sc"),
                        Op::AvgPool {
                            kernel: vec![3, 3],
                            stride: vec![2, 2],
                            padding: vec![(1, 1); 2],
                        },
                        x,
                    )?
                } else {
                    x
                };
                b.push(&p("cat"), Op::Concat, vec![sc, y])?
            } else {
                b.add(&p("add"), x, y)?
            };
            x = b.relu(&p("relu"), x)?;
        }
        classifier(b, x, self.classes)
    }
}

/// One inverted residual block: 1×1 expand to `expand`·C_in → BN → ReLU6 (absent at
/// expansion 1), depthwise k×k (stride) → BN → ReLU6, 1×1 projection to `channels` → BN, SE
/// (reduction `se`, stride 1 only), identity skip when stride is 1 and the channels match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrBlockConfig {
    pub expand: usize,
    #[serde(default = "three")]
    pub kernel: usize,
    #[serde(default = "one")]
    pub stride: usize,
    pub channels: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub se: usize,
}

/// An explicit list of inverted residual blocks (MCUNet-style): stem conv 3×3 (`stem`
/// channels, `stem_stride`) → BN → ReLU6, the blocks, global average pool, dropout, FC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McunetConfig {
    #[serde(default = "cifar_input")]
    pub input: [usize; 3],
    #[serde(default = "ten")]
    pub classes: usize,
    #[serde(default = "sixteen")]
    pub stem: usize,
    #[serde(default = "one")]
    pub stem_stride: usize,
    pub blocks: Vec<IrBlockConfig>,
    #[serde(default)]
    pub dropout: f64,
}

impl McunetConfig {
    /// `002`'s MnasNet: its CIFAR MobileNetV2 (see [`crate::config::MobileNetV2Config`]) with
    /// 5×5 depthwise kernels in the blocks of the second and third subnetworks except their
    /// last, and half the expansion (at least 1) in the very first block.
    #[allow(clippy::too_many_arguments)]
    pub fn mnasnet(
        input: [usize; 3],
        classes: usize,
        width: usize,
        blocks: usize,
        expand: usize,
        se: usize,
        dropout: f64,
    ) -> Result<Self> {
        check_common("MnasNet", classes, Some(blocks))?;
        ensure!(
            width > 0 && expand > 0,
            "MnasNet: `width` and `expand` must be ≥ 1"
        );
        let n = blocks / 3;
        let blocks = layout(blocks)
            .map(|(i, j, stride)| IrBlockConfig {
                expand: if i == 0 && j == 0 {
                    (expand / 2).max(1)
                } else {
                    expand
                },
                kernel: if i > 0 && j + 1 < n { 5 } else { 3 },
                stride,
                channels: width << i,
                se: if stride == 1 { se } else { 0 },
            })
            .collect();
        Ok(Self {
            input,
            classes,
            stem: 16,
            stem_stride: 1,
            blocks,
            dropout,
        })
    }

    pub fn build(&self) -> Result<Graph> {
        check_common("MCUNet", self.classes, None)?;
        ensure!(!self.blocks.is_empty(), "MCUNet: needs at least one block");
        ensure!(
            self.stem > 0 && self.stem_stride > 0,
            "MCUNet: `stem` and `stem_stride` must be ≥ 1"
        );
        ensure!(
            (0.0..1.0).contains(&self.dropout),
            "MCUNet: `dropout` must be in [0, 1), got {}",
            self.dropout
        );
        for (k, blk) in self.blocks.iter().enumerate() {
            ensure!(
                blk.expand >= 1 && blk.channels >= 1 && blk.stride >= 1,
                "MCUNet block {k}: `expand`, `channels` and `stride` must be ≥ 1"
            );
            ensure!(
                blk.kernel % 2 == 1,
                "MCUNet block {k}: `kernel` must be odd (centred padding), got {}",
                blk.kernel
            );
        }
        let mut b = GraphBuilder::new(self.input.to_vec());
        let mut x = conv(&mut b, "conv0", 0, self.stem, 3, self.stem_stride, 1)?;
        x = b.bn("bn0", x)?;
        x = b.op("relu0", Op::Relu6, x)?;
        for (k, blk) in self.blocks.iter().enumerate() {
            let n = |l: &str| format!("blocks.{k}.{l}");
            let inp = x;
            let cin = b.channels(inp);
            let h = cin * blk.expand;
            let mut y = inp;
            if blk.expand != 1 {
                y = conv(&mut b, &n("ex"), y, h, 1, 1, 1)?;
                y = b.bn(&n("bex"), y)?;
                y = b.op(&n("ex_relu"), Op::Relu6, y)?;
            }
            y = conv(&mut b, &n("dw"), y, h, blk.kernel, blk.stride, h)?;
            y = b.bn(&n("bdw"), y)?;
            y = b.op(&n("dw_relu"), Op::Relu6, y)?;
            y = conv(&mut b, &n("pr"), y, blk.channels, 1, 1, 1)?;
            y = b.bn(&n("bpr"), y)?;
            if blk.se > 0 && blk.stride == 1 {
                y = squeeze_excite(&mut b, &format!("blocks.{k}"), y, blk.se)?;
            }
            x = if blk.stride == 1 && cin == blk.channels {
                b.add(&n("add"), inp, y)?
            } else {
                y
            };
        }
        x = b.pool("pool", x)?;
        if self.dropout > 0.0 {
            x = b.op("dropout", Op::Dropout { p: self.dropout }, x)?;
        }
        b.linear("fc", x, self.classes, true)?;
        Ok(b.finish())
    }
}
