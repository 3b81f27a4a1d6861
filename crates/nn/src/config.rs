//! Model configurations (serde, so an experiment TOML can express them) and their lowering to
//! a [`Graph`]. Every per-layer channel count, kernel size and dilation is explicit, so pruned
//! and searched networks are instances of the same builders as the reference models.

use crate::arch::cifar::{
    McunetConfig, ShuffleNetV1Config, ShuffleNetV2Config, WrnConfig, classifier, conv,
};
use crate::arch::node_list::NodeListConfig;
use crate::graph::{Graph, GraphBuilder, Op};
use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

/// Any supported architecture; the `arch` key selects it in TOML/JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "snake_case")]
pub enum ModelConfig {
    DsCnn(DsCnnConfig),
    Tcn(TcnConfig),
    #[serde(rename = "resnet")]
    ResNet(ResNetConfig),
    #[serde(rename = "mobilenet_v1")]
    MobileNetV1(MobileNetV1Config),
    #[serde(rename = "mobilenet_v2")]
    MobileNetV2(MobileNetV2Config),
    #[serde(rename = "autoencoder")]
    AutoEncoder(AutoEncoderConfig),
    /// A network written node by node ([`crate::arch::node_list`]).
    #[serde(rename = "graph")]
    Graph(NodeListConfig),
    /// WRN-d-k ([`crate::arch::cifar`]).
    Wrn(WrnConfig),
    #[serde(rename = "shufflenet_v1")]
    ShuffleNetV1(ShuffleNetV1Config),
    #[serde(rename = "shufflenet_v2")]
    ShuffleNetV2(ShuffleNetV2Config),
    /// An explicit list of inverted residual blocks (also `002`'s MnasNet).
    Mcunet(McunetConfig),
}

fn yes() -> bool {
    true
}

/// First conv of DS-CNN / MobileNet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StemConfig {
    pub channels: usize,
    pub kernel: [usize; 2],
    pub stride: usize,
    pub padding: [usize; 2],
}

/// One depthwise-separable block: depthwise k×k on the incoming channels (stride `stride`),
/// then pointwise 1×1 to `channels`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DsBlockConfig {
    pub channels: usize,
    #[serde(default = "k3")]
    pub kernel: [usize; 2],
    #[serde(default = "one")]
    pub stride: usize,
}

fn k3() -> [usize; 2] {
    [3, 3]
}
pub(crate) fn one() -> usize {
    1
}

/// DS-CNN (MLPerf Tiny KWS): stem conv → BN → ReLU, blocks of [dw → BN → ReLU → pw → BN → ReLU],
/// global average pool, FC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DsCnnConfig {
    /// Per-sample input (C, H, W).
    pub input: [usize; 3],
    pub classes: usize,
    pub stem: StemConfig,
    pub blocks: Vec<DsBlockConfig>,
    /// Conv biases (PyTorch default true; redundant before BN but counted in the 24 k).
    #[serde(default = "yes")]
    pub bias: bool,
    /// The thesis-era (`000`) block: depthwise → pointwise 1×1 → BN → ReLU → extra 1×1 → BN →
    /// ReLU (no batch norm between the depthwise and the pointwise conv).
    #[serde(default, skip_serializing_if = "is_false")]
    pub pointwise_extra: bool,
    /// Dropout after the stem's ReLU and before the pool (training only; `000`: 0.2 and 0.4).
    #[serde(default, skip_serializing_if = "no_dropout")]
    pub dropout: [f64; 2],
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn no_dropout(d: &[f64; 2]) -> bool {
    d == &[0.0, 0.0]
}

impl DsCnnConfig {
    /// The spec §2 reference: 1×49×10 input, 64 channels, 4 blocks, 12 classes.
    pub fn reference() -> Self {
        Self {
            input: [1, 49, 10],
            classes: 12,
            stem: StemConfig {
                channels: 64,
                kernel: [10, 4],
                stride: 2,
                padding: [5, 1],
            },
            blocks: (0..4)
                .map(|_| DsBlockConfig {
                    channels: 64,
                    kernel: [3, 3],
                    stride: 1,
                })
                .collect(),
            bias: true,
            pointwise_extra: false,
            dropout: [0.0, 0.0],
        }
    }

    /// The thesis DS-CNN of `000` (40,396 parameters): the reference with the extra 1×1 conv
    /// per block and dropout 0.2 / 0.4.
    pub fn thesis() -> Self {
        Self {
            pointwise_extra: true,
            dropout: [0.2, 0.4],
            ..Self::reference()
        }
    }
}

/// Padding of a TCN layer: symmetric 'same' (output length = input length) or causal (all on
/// the left, so output t only sees inputs ≤ t).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TcnPadding {
    #[default]
    Same,
    Causal,
}

/// One TCN Conv1d layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcnLayerConfig {
    pub channels: usize,
    pub kernel: usize,
    #[serde(default = "one")]
    pub dilation: usize,
}

/// TCN: stacked Conv1d (+ optional BN) + ReLU, optional residual adds every `residual_every`
/// layers (identity when channels match, else a 1×1 projection), global average pool, FC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcnConfig {
    pub input_channels: usize,
    pub input_len: usize,
    pub classes: usize,
    pub layers: Vec<TcnLayerConfig>,
    #[serde(default = "yes")]
    pub batch_norm: bool,
    /// 0 = no residual connections; n = a skip around every n consecutive layers.
    #[serde(default)]
    pub residual_every: usize,
    #[serde(default)]
    pub padding: TcnPadding,
    #[serde(default = "yes")]
    pub bias: bool,
}

impl TcnConfig {
    /// The benchmark TCN of `torch_ref.py`: 7 × Conv1d k3 with `ch` channels, dilations
    /// 1,1,2,2,4,4,8, no BN, no residual, 10×49 input, 12 classes.
    pub fn bench(ch: usize) -> Self {
        Self {
            input_channels: 10,
            input_len: 49,
            classes: 12,
            layers: [1, 1, 2, 2, 4, 4, 8]
                .iter()
                .map(|&d| TcnLayerConfig {
                    channels: ch,
                    kernel: 3,
                    dilation: d,
                })
                .collect(),
            batch_norm: false,
            residual_every: 0,
            padding: TcnPadding::Same,
            bias: true,
        }
    }

    /// The KWS PIT seed: like [`TcnConfig::bench`] with BN and residual blocks of two layers.
    pub fn seed(ch: usize) -> Self {
        Self {
            batch_norm: true,
            residual_every: 2,
            ..Self::bench(ch)
        }
    }
}

/// One ResNet stack: conv k×k (stride) → BN → ReLU → conv k×k → BN, plus shortcut (1×1 conv
/// with the stride when the shape changes, identity otherwise), ReLU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResStackConfig {
    /// Channels of the first conv (prunable independently).
    pub mid_channels: usize,
    /// Channels of the second conv and the shortcut (coupled by the residual add).
    pub channels: usize,
    #[serde(default = "one")]
    pub stride: usize,
    #[serde(default = "k3s")]
    pub kernel: usize,
}

fn k3s() -> usize {
    3
}

/// ResNet (MLPerf Tiny IC ResNet-8 by default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    pub input: [usize; 3],
    pub classes: usize,
    pub stem_channels: usize,
    pub stacks: Vec<ResStackConfig>,
    #[serde(default = "yes")]
    pub bias: bool,
}

impl ResNetConfig {
    /// ResNet-8: 3×32×32, stem 16, stacks (16, s1), (32, s2), (64, s2), 10 classes.
    pub fn resnet8() -> Self {
        let st = |c, s| ResStackConfig {
            mid_channels: c,
            channels: c,
            stride: s,
            kernel: 3,
        };
        Self {
            input: [3, 32, 32],
            classes: 10,
            stem_channels: 16,
            stacks: vec![st(16, 1), st(32, 2), st(64, 2)],
            bias: true,
        }
    }
}

/// MobileNetV1: stem conv 3×3 → BN → ReLU, then depthwise-separable blocks, pool, FC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobileNetV1Config {
    pub input: [usize; 3],
    pub classes: usize,
    pub stem: StemConfig,
    pub blocks: Vec<DsBlockConfig>,
    #[serde(default)]
    pub bias: bool,
    /// Squeeze-and-excitation with reduction `se` at the end of every stride-1 block (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub se: usize,
}

pub(crate) fn is_zero(v: &usize) -> bool {
    *v == 0
}

impl MobileNetV1Config {
    /// `002`'s CIFAR layout: stem 3×3 with 16 channels at stride 1, then three subnetworks of
    /// `blocks / 3` depthwise-separable blocks at widths (w, 2w, 4w), stride 2 in the first
    /// block of the second and third; `se` as in [`MobileNetV1Config::se`].
    pub fn cifar(
        width: usize,
        blocks: usize,
        se: usize,
        input: [usize; 3],
        classes: usize,
    ) -> Result<Self> {
        ensure!(
            blocks >= 3 && blocks.is_multiple_of(3),
            "MobileNetV1: `blocks` must be a positive multiple of 3 (three subnetworks of equal block count), got {blocks}"
        );
        ensure!(width > 0, "MobileNetV1: `width` must be ≥ 1");
        Ok(Self {
            input,
            classes,
            stem: StemConfig {
                channels: 16,
                kernel: [3, 3],
                stride: 1,
                padding: [1, 1],
            },
            blocks: (0..blocks)
                .map(|k| {
                    let (i, j) = (k / (blocks / 3), k % (blocks / 3));
                    DsBlockConfig {
                        channels: width << i,
                        kernel: [3, 3],
                        stride: if i > 0 && j == 0 { 2 } else { 1 },
                    }
                })
                .collect(),
            bias: false,
            se,
        })
    }

    /// The standard 13-block MobileNetV1 with width multiplier `alpha` (channels
    /// max(1, round(c·alpha))); `alpha = 0.25` on 3×96×96, 2 classes is the VWW reference.
    pub fn with_width(alpha: f64, input: [usize; 3], classes: usize) -> Self {
        let w = |c: usize| ((c as f64 * alpha).round() as usize).max(1);
        let plan: [(usize, usize); 13] = [
            (64, 1),
            (128, 2),
            (128, 1),
            (256, 2),
            (256, 1),
            (512, 2),
            (512, 1),
            (512, 1),
            (512, 1),
            (512, 1),
            (512, 1),
            (1024, 2),
            (1024, 1),
        ];
        Self {
            input,
            classes,
            stem: StemConfig {
                channels: w(32),
                kernel: [3, 3],
                stride: 2,
                padding: [1, 1],
            },
            blocks: plan
                .iter()
                .map(|&(c, s)| DsBlockConfig {
                    channels: w(c),
                    kernel: [3, 3],
                    stride: s,
                })
                .collect(),
            bias: false,
            se: 0,
        }
    }
}

/// MobileNetV2 in `002`'s CIFAR layout (the `MobileNetV2` of `torch_ref.py`): stem conv 3×3
/// (16 channels, stride 1) → BN → ReLU6; three subnetworks of `blocks / 3` inverted residual
/// blocks at widths (w, 2w, 4w), stride 2 in the first block of subnetworks 2 and 3, expansion 1
/// in the very first block; global average pool, dropout, FC. A block: 1×1 expand → BN → ReLU6
/// (absent at expansion 1), depthwise 3×3 → BN → ReLU6, linear 1×1 projection → BN, then with
/// `se` in stride-1 blocks squeeze-and-excitation (pool → FC C→C/2 → ReLU → FC → sigmoid →
/// channel multiply), then the identity skip when stride is 1 and the channels match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobileNetV2Config {
    #[serde(default = "cifar_input")]
    pub input: [usize; 3],
    #[serde(default = "ten")]
    pub classes: usize,
    /// Width w of the first subnetwork.
    #[serde(default = "sixteen")]
    pub width: usize,
    /// Total number of inverted residual blocks (a multiple of 3).
    #[serde(default = "nine")]
    pub blocks: usize,
    /// Expansion factor of every block but the first.
    #[serde(default = "four")]
    pub expand: usize,
    /// Squeeze-and-excitation (reduction 2) in stride-1 blocks.
    #[serde(default)]
    pub se: bool,
    /// Dropout before the classifier.
    #[serde(default = "dropout_02")]
    pub dropout: f64,
}

pub(crate) fn cifar_input() -> [usize; 3] {
    [3, 32, 32]
}
pub(crate) fn ten() -> usize {
    10
}
pub(crate) fn sixteen() -> usize {
    16
}
fn nine() -> usize {
    9
}
fn four() -> usize {
    4
}
fn dropout_02() -> f64 {
    0.2
}

impl MobileNetV2Config {
    /// `torch_ref.py`'s `mbv2` (w 16, 9 blocks, expansion 4; `se` gives `mbv2_se`).
    pub fn reference(se: bool) -> Self {
        Self {
            input: cifar_input(),
            classes: 10,
            width: 16,
            blocks: 9,
            expand: 4,
            se,
            dropout: 0.2,
        }
    }
}

/// Fully-connected auto-encoder: Linear → BN → ReLU per hidden layer, final Linear back to
/// `input` features (MLPerf Tiny AD: 640-128×4-8-128×4-640).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoEncoderConfig {
    pub input: usize,
    pub hidden: Vec<usize>,
    #[serde(default = "yes")]
    pub batch_norm: bool,
}

impl AutoEncoderConfig {
    pub fn reference() -> Self {
        Self {
            input: 640,
            hidden: vec![128, 128, 128, 128, 8, 128, 128, 128, 128],
            batch_norm: true,
        }
    }
}

fn same_pad(k: usize, d: usize) -> (usize, usize) {
    let total = d * (k - 1);
    (total / 2, total - total / 2)
}

impl ModelConfig {
    /// Lower the configuration to a shape-checked graph.
    pub fn build(&self) -> Result<Graph> {
        let g = match self {
            ModelConfig::DsCnn(c) => build_separable(
                &c.input,
                c.classes,
                &c.stem,
                &c.blocks,
                c.bias,
                "DS-CNN",
                (c.pointwise_extra, c.dropout, 0),
            )?,
            ModelConfig::MobileNetV1(c) => build_separable(
                &c.input,
                c.classes,
                &c.stem,
                &c.blocks,
                c.bias,
                "MobileNetV1",
                (false, [0.0, 0.0], c.se),
            )?,
            ModelConfig::MobileNetV2(c) => build_mobilenet_v2(c)?,
            ModelConfig::Tcn(c) => build_tcn(c)?,
            ModelConfig::ResNet(c) => build_resnet(c)?,
            ModelConfig::AutoEncoder(c) => build_ae(c)?,
            ModelConfig::Graph(c) => c.build()?,
            ModelConfig::Wrn(c) => c.build()?,
            ModelConfig::ShuffleNetV1(c) => c.build()?,
            ModelConfig::ShuffleNetV2(c) => c.build()?,
            ModelConfig::Mcunet(c) => c.build()?,
        };
        Ok(g)
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> Vec<usize> {
        match self {
            ModelConfig::DsCnn(c) => c.input.to_vec(),
            ModelConfig::MobileNetV1(c) => c.input.to_vec(),
            ModelConfig::MobileNetV2(c) => c.input.to_vec(),
            ModelConfig::ResNet(c) => c.input.to_vec(),
            ModelConfig::Tcn(c) => vec![c.input_channels, c.input_len],
            ModelConfig::AutoEncoder(c) => vec![c.input],
            ModelConfig::Graph(c) => c.input.clone(),
            ModelConfig::Wrn(c) => c.input.to_vec(),
            ModelConfig::ShuffleNetV1(c) => c.input.to_vec(),
            ModelConfig::ShuffleNetV2(c) => c.input.to_vec(),
            ModelConfig::Mcunet(c) => c.input.to_vec(),
        }
    }
}

/// `(pointwise_extra, [stem dropout, head dropout])` of a DS-CNN and the squeeze-and-excitation
/// reduction of a MobileNetV1 (0: none).
type SeparableExtras = (bool, [f64; 2], usize);

fn build_separable(
    input: &[usize; 3],
    classes: usize,
    stem: &StemConfig,
    blocks: &[DsBlockConfig],
    bias: bool,
    what: &str,
    (extra, dropout, se): SeparableExtras,
) -> Result<Graph> {
    ensure!(
        classes > 0 && stem.channels > 0,
        "{what}: classes and stem channels must be > 0"
    );
    for (k, p) in ["stem", "head"].iter().zip(dropout) {
        ensure!(
            (0.0..1.0).contains(&p),
            "{what}: `dropout` ({k}) must be in [0, 1), got {p}"
        );
    }
    let mut b = GraphBuilder::new(input.to_vec());
    let s = stem.stride;
    let pad = vec![
        (stem.padding[0], stem.padding[0]),
        (stem.padding[1], stem.padding[1]),
    ];
    let mut x = b.conv(
        "conv0",
        0,
        stem.channels,
        stem.kernel.to_vec(),
        vec![s, s],
        pad,
        vec![1, 1],
        1,
        bias,
    )?;
    x = b.bn("bn0", x)?;
    x = b.relu("relu0", x)?;
    if dropout[0] > 0.0 {
        x = b.op("dropout0", Op::Dropout { p: dropout[0] }, x)?;
    }
    for (i, blk) in blocks.iter().enumerate() {
        let c = b.channels(x);
        let p = vec![same_pad(blk.kernel[0], 1), same_pad(blk.kernel[1], 1)];
        let st = vec![blk.stride, blk.stride];
        x = b.conv(
            &format!("blocks.{i}.dw"),
            x,
            c,
            blk.kernel.to_vec(),
            st,
            p,
            vec![1, 1],
            c,
            bias,
        )?;
        if !extra {
            x = b.bn(&format!("blocks.{i}.dw_bn"), x)?;
            x = b.relu(&format!("blocks.{i}.dw_relu"), x)?;
        }
        x = pointwise(&mut b, &format!("blocks.{i}.pw"), x, blk.channels, bias)?;
        x = b.bn(&format!("blocks.{i}.pw_bn"), x)?;
        x = b.relu(&format!("blocks.{i}.pw_relu"), x)?;
        if extra {
            x = pointwise(&mut b, &format!("blocks.{i}.pw2"), x, blk.channels, bias)?;
            x = b.bn(&format!("blocks.{i}.pw2_bn"), x)?;
            x = b.relu(&format!("blocks.{i}.pw2_relu"), x)?;
        }
        if se > 0 && blk.stride == 1 {
            x = crate::arch::cifar::squeeze_excite(&mut b, &format!("blocks.{i}"), x, se)?;
        }
    }
    if dropout[1] > 0.0 {
        x = b.op("dropout", Op::Dropout { p: dropout[1] }, x)?;
    }
    classifier(b, x, classes)
}

/// 1×1 conv, stride 1, no padding, to `c_out` channels.
fn pointwise(
    b: &mut GraphBuilder,
    name: &str,
    x: usize,
    c_out: usize,
    bias: bool,
) -> Result<usize> {
    b.conv(
        name,
        x,
        c_out,
        vec![1, 1],
        vec![1, 1],
        vec![(0, 0); 2],
        vec![1, 1],
        1,
        bias,
    )
}

fn build_tcn(c: &TcnConfig) -> Result<Graph> {
    ensure!(!c.layers.is_empty(), "TCN: needs at least one layer");
    let mut b = GraphBuilder::new(vec![c.input_channels, c.input_len]);
    let mut x = 0;
    let mut block_in = 0;
    for (i, l) in c.layers.iter().enumerate() {
        ensure!(
            l.kernel >= 1 && l.dilation >= 1,
            "TCN layer {i}: kernel and dilation must be ≥ 1"
        );
        let pad = match c.padding {
            TcnPadding::Same => same_pad(l.kernel, l.dilation),
            TcnPadding::Causal => (l.dilation * (l.kernel - 1), 0),
        };
        x = b.conv(
            &format!("convs.{i}"),
            x,
            l.channels,
            vec![l.kernel],
            vec![1],
            vec![pad],
            vec![l.dilation],
            1,
            c.bias,
        )?;
        if c.batch_norm {
            x = b.bn(&format!("bns.{i}"), x)?;
        }
        let closes_block = c.residual_every > 0 && (i + 1) % c.residual_every == 0;
        if closes_block {
            let skip = if b.channels(block_in) == l.channels {
                block_in
            } else {
                b.conv(
                    &format!("proj.{i}"),
                    block_in,
                    l.channels,
                    vec![1],
                    vec![1],
                    vec![(0, 0)],
                    vec![1],
                    1,
                    c.bias,
                )?
            };
            x = b.add(&format!("add.{i}"), x, skip)?;
        }
        x = b.relu(&format!("relu.{i}"), x)?;
        if closes_block {
            block_in = x;
        }
    }
    classifier(b, x, c.classes)
}

fn build_resnet(c: &ResNetConfig) -> Result<Graph> {
    let mut b = GraphBuilder::new(c.input.to_vec());
    let mut x = b.conv(
        "conv0",
        0,
        c.stem_channels,
        vec![3, 3],
        vec![1, 1],
        vec![(1, 1); 2],
        vec![1, 1],
        1,
        c.bias,
    )?;
    x = b.bn("bn0", x)?;
    x = b.relu("relu0", x)?;
    for (i, s) in c.stacks.iter().enumerate() {
        let p = same_pad(s.kernel, 1);
        let n = |l: &str| format!("stacks.{i}.{l}");
        let inp = x;
        let mut r = b.conv(
            &n("c1"),
            inp,
            s.mid_channels,
            vec![s.kernel; 2],
            vec![s.stride; 2],
            vec![p; 2],
            vec![1, 1],
            1,
            c.bias,
        )?;
        r = b.bn(&n("b1"), r)?;
        r = b.relu(&n("relu1"), r)?;
        r = b.conv(
            &n("c2"),
            r,
            s.channels,
            vec![s.kernel; 2],
            vec![1, 1],
            vec![p; 2],
            vec![1, 1],
            1,
            c.bias,
        )?;
        r = b.bn(&n("b2"), r)?;
        let sc = if s.stride != 1 || b.channels(inp) != s.channels {
            b.conv(
                &n("sc"),
                inp,
                s.channels,
                vec![1, 1],
                vec![s.stride; 2],
                vec![(0, 0); 2],
                vec![1, 1],
                1,
                c.bias,
            )?
        } else {
            inp
        };
        x = b.add(&n("add"), r, sc)?;
        x = b.relu(&n("relu2"), x)?;
    }
    classifier(b, x, c.classes)
}

fn build_ae(c: &AutoEncoderConfig) -> Result<Graph> {
    ensure!(c.input > 0, "auto-encoder: input size must be > 0");
    let mut b = GraphBuilder::new(vec![c.input]);
    let mut x = 0;
    for (i, &h) in c.hidden.iter().enumerate() {
        x = b.linear(&format!("fcs.{i}"), x, h, true)?;
        if c.batch_norm {
            x = b.bn(&format!("bns.{i}"), x)?;
        }
        x = b.relu(&format!("relus.{i}"), x)?;
    }
    b.linear("out", x, c.input, true)?;
    Ok(b.finish())
}

fn build_mobilenet_v2(c: &MobileNetV2Config) -> Result<Graph> {
    ensure!(
        c.blocks >= 3 && c.blocks.is_multiple_of(3),
        "MobileNetV2: `blocks` must be a positive multiple of 3 (three subnetworks of equal block count), got {}",
        c.blocks
    );
    ensure!(c.width > 0, "MobileNetV2: `width` must be > 0");
    ensure!(c.expand > 0, "MobileNetV2: `expand` must be > 0");
    ensure!(c.classes > 0, "MobileNetV2: `classes` must be > 0");
    ensure!(
        (0.0..1.0).contains(&c.dropout),
        "MobileNetV2: `dropout` must be in [0, 1), got {}",
        c.dropout
    );
    let mut b = GraphBuilder::new(c.input.to_vec());
    let mut x = conv(&mut b, "conv0", 0, 16, 3, 1, 1)?;
    x = b.bn("bn0", x)?;
    x = b.op("relu0", Op::Relu6, x)?;
    let mut k = 0;
    for (i, width) in [c.width, 2 * c.width, 4 * c.width].into_iter().enumerate() {
        for j in 0..c.blocks / 3 {
            let stride = if i > 0 && j == 0 { 2 } else { 1 };
            let e = if i == 0 && j == 0 { 1 } else { c.expand };
            let n = |l: &str| format!("blocks.{k}.{l}");
            let inp = x;
            let cin = b.channels(inp);
            let h = cin * e;
            let mut y = inp;
            if e != 1 {
                y = conv(&mut b, &n("ex"), y, h, 1, 1, 1)?;
                y = b.bn(&n("bex"), y)?;
                y = b.op(&n("ex_relu"), Op::Relu6, y)?;
            }
            y = conv(&mut b, &n("dw"), y, h, 3, stride, h)?;
            y = b.bn(&n("bdw"), y)?;
            y = b.op(&n("dw_relu"), Op::Relu6, y)?;
            y = conv(&mut b, &n("pr"), y, width, 1, 1, 1)?;
            y = b.bn(&n("bpr"), y)?;
            if c.se && stride == 1 {
                let r = (width / 2).max(1);
                let mut s = b.pool(&n("se.pool"), y)?;
                s = b.linear(&n("se.f1"), s, r, true)?;
                s = b.relu(&n("se.relu"), s)?;
                s = b.linear(&n("se.f2"), s, width, true)?;
                s = b.op(&n("se.sigmoid"), Op::Sigmoid, s)?;
                y = b.push(&n("se.mul"), Op::ChannelMul, vec![y, s])?;
            }
            x = if stride == 1 && cin == width {
                b.add(&n("add"), inp, y)?
            } else {
                y
            };
            k += 1;
        }
    }
    x = b.pool("pool", x)?;
    if c.dropout > 0.0 {
        x = b.op("dropout", Op::Dropout { p: c.dropout }, x)?;
    }
    b.linear("fc", x, c.classes, true)?;
    Ok(b.finish())
}
