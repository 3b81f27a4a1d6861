//! How an experiment names a network to train: a short form per architecture
//! (`model = { arch = "tcn", channels = 64, dilations = [1, 1, 2, 2, 4, 4, 8] }`) whose input
//! shape and class count come from the data set at run time, or a full nn configuration
//! (`model = { arch = "full", config = { arch = "tcn", … } }`) for any per-layer shape, or a
//! network written node by node (`model = { arch = "graph", nodes = [...] }`).

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use whittle_engine::ParamError;
use whittle_nn::ModelConfig;
use whittle_nn::arch::cifar::{
    IrBlockConfig, McunetConfig, ShuffleNetV1Config, ShuffleNetV2Config, WrnConfig,
};
use whittle_nn::arch::node_list::{NodeError, NodeListConfig, parse_nodes};
use whittle_nn::config::{
    AutoEncoderConfig, DsBlockConfig, DsCnnConfig, MobileNetV1Config, MobileNetV2Config,
    ResNetConfig, StemConfig, TcnConfig, TcnLayerConfig, TcnPadding,
};

/// A network description in an experiment file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// Stacked dilated Conv1d with residual adds (the PIT seed); MFCC as 10 channels × 49 steps.
    Tcn {
        #[serde(default = "c64")]
        channels: usize,
        #[serde(default = "k3")]
        kernel: usize,
        #[serde(default = "tcn_dilations")]
        dilations: Vec<usize>,
        #[serde(default = "yes")]
        batch_norm: bool,
        /// 0 = no residual adds; n = a skip around every n layers.
        #[serde(default = "two")]
        residual_every: usize,
        /// `same` (symmetric) or `causal` (all on the left; PIT can then also search each
        /// layer's receptive field and dilation).
        #[serde(default)]
        padding: TcnPadding,
    },
    /// DS-CNN (MLPerf Tiny KWS): stem 10×4 stride 2, `blocks` depthwise-separable blocks.
    DsCnn {
        #[serde(default = "c64")]
        channels: usize,
        #[serde(default = "four")]
        blocks: usize,
        /// `000`'s block (an extra 1×1 conv; 40,396 parameters at the defaults).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pointwise_extra: bool,
        /// Dropout after the stem and before the pool; defaults to `000`'s [0.2, 0.4] with
        /// `pointwise_extra`, else none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dropout: Option<[f64; 2]>,
    },
    /// ResNet-8 (MLPerf Tiny IC) with widths (16, 32, 64)·`width`.
    #[serde(rename = "resnet8")]
    ResNet8 {
        #[serde(default = "one_f")]
        width: f64,
    },
    /// MobileNetV1 with width multiplier `alpha`, or with `layout = "cifar"` `002`'s CIFAR
    /// layout: `blocks` (15) depthwise-separable blocks in three subnetworks at widths (w, 2w,
    /// 4w) for `width` w (32). `se = r`: squeeze-and-excitation at the end of stride-1 blocks.
    MobilenetV1 {
        #[serde(default = "quarter")]
        alpha: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layout: Option<V1Layout>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blocks: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        se: Option<usize>,
    },
    /// WRN-`depth`-`widen` (`002`'s CIFAR WideResNet; 40-4 with SE was its distillation
    /// teacher).
    Wrn {
        #[serde(default = "forty")]
        depth: usize,
        #[serde(default = "two_f")]
        widen: f64,
        #[serde(default)]
        se: usize,
    },
    /// `002`'s MnasNet: its CIFAR MobileNetV2 with 5×5 depthwise kernels in subnetworks 2–3
    /// (but their last block) and half the expansion in the first block.
    Mnasnet {
        #[serde(default = "sixteen")]
        width: usize,
        #[serde(default = "nine")]
        blocks: usize,
        #[serde(default = "four")]
        expand: usize,
        #[serde(default)]
        se: usize,
        #[serde(default = "point_two")]
        dropout: f64,
    },
    /// ShuffleNetV2 in `002`'s layout (channel split, concat, shuffle).
    ShufflenetV2 {
        #[serde(default = "c64")]
        width: usize,
        #[serde(default = "twelve")]
        blocks: usize,
        #[serde(default)]
        se: usize,
    },
    /// ShuffleNetV1 in `002`'s layout (grouped 1×1 convs + shuffle; `002` chose 2 groups).
    ShufflenetV1 {
        #[serde(default = "eighty")]
        width: usize,
        #[serde(default = "nine")]
        blocks: usize,
        #[serde(default = "two")]
        groups: usize,
        #[serde(default)]
        se: usize,
    },
    /// An explicit list of inverted residual blocks (MCUNet-style): `blocks = [{ expand,
    /// kernel, stride, channels, se }, …]` after a 3×3 stem of `stem` channels.
    Mcunet {
        #[serde(default = "sixteen")]
        stem: usize,
        #[serde(default = "one")]
        stem_stride: usize,
        blocks: Vec<IrBlockConfig>,
        #[serde(default)]
        dropout: f64,
    },
    /// MobileNetV2 in `002`'s CIFAR layout: three subnetworks of `blocks / 3` inverted residual
    /// blocks at widths (w, 2w, 4w), expansion `expand`, optional squeeze-and-excitation.
    MobilenetV2 {
        #[serde(default = "sixteen")]
        width: usize,
        #[serde(default = "nine")]
        blocks: usize,
        #[serde(default = "four")]
        expand: usize,
        #[serde(default)]
        se: bool,
        #[serde(default = "point_two")]
        dropout: f64,
    },
    /// FC auto-encoder; hidden widths default to MLPerf Tiny AD's.
    Autoencoder {
        #[serde(default)]
        hidden: Option<Vec<usize>>,
    },
    /// A network written node by node (`nodes = [{ name, op, inputs, … }, …]`, see
    /// [`whittle_nn::arch::node_list`]); input shape and class count come from the data.
    Graph { nodes: Vec<serde_json::Value> },
    /// A complete nn configuration (every layer explicit); input shape and classes included.
    Full { config: ModelConfig },
}

/// MobileNetV1 block layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum V1Layout {
    /// The 13 blocks of the paper, scaled by `alpha`.
    Imagenet,
    /// `002`'s three subnetworks at widths (w, 2w, 4w).
    Cifar,
}

fn forty() -> usize {
    40
}
fn two_f() -> f64 {
    2.0
}
fn twelve() -> usize {
    12
}
fn eighty() -> usize {
    80
}
fn one() -> usize {
    1
}
fn sixteen() -> usize {
    16
}
fn nine() -> usize {
    9
}
fn point_two() -> f64 {
    0.2
}
fn c64() -> usize {
    64
}
fn k3() -> usize {
    3
}
fn two() -> usize {
    2
}
fn four() -> usize {
    4
}
fn yes() -> bool {
    true
}
fn one_f() -> f64 {
    1.0
}
fn quarter() -> f64 {
    0.25
}
fn tcn_dilations() -> Vec<usize> {
    vec![1, 1, 2, 2, 4, 4, 8]
}

impl ModelSpec {
    /// Checks what can be checked without the data.
    pub fn validate(&self) -> Result<()> {
        match self {
            ModelSpec::Tcn {
                channels,
                kernel,
                dilations,
                ..
            } => {
                if *channels == 0 || *kernel == 0 || dilations.is_empty() || dilations.contains(&0)
                {
                    bail!(
                        "model: tcn needs channels ≥ 1, kernel ≥ 1 and a non-empty list of dilations ≥ 1"
                    );
                }
            }
            ModelSpec::DsCnn {
                channels,
                blocks,
                dropout,
                ..
            } => {
                if *channels == 0 || *blocks == 0 {
                    bail!("model: ds_cnn needs channels ≥ 1 and blocks ≥ 1");
                }
                if let Some(d) = dropout
                    && d.iter().any(|p| !(0.0..1.0).contains(p))
                {
                    bail!("model: ds_cnn `dropout` values must be in [0, 1), got {d:?}");
                }
            }
            ModelSpec::ResNet8 { width } => {
                if !(width.is_finite() && *width > 0.0 && *width <= 8.0) {
                    bail!("model: width multiplier must be in (0, 8], got {width}");
                }
            }
            ModelSpec::MobilenetV1 {
                alpha,
                layout,
                width,
                blocks,
                ..
            } => {
                if !(alpha.is_finite() && *alpha > 0.0 && *alpha <= 8.0) {
                    bail!("model: width multiplier must be in (0, 8], got {alpha}");
                }
                let cifar = *layout == Some(V1Layout::Cifar);
                if !cifar && (width.is_some() || blocks.is_some()) {
                    bail!(
                        "model: mobilenet_v1 `width` and `blocks` belong to `layout = \"cifar\"`; the ImageNet layout scales with `alpha`"
                    );
                }
                if cifar && *alpha != quarter() {
                    bail!(
                        "model: mobilenet_v1 `alpha` scales the ImageNet layout; `layout = \"cifar\"` takes `width`"
                    );
                }
                self.config(&[3, 32, 32], 10)?.build()?;
            }
            ModelSpec::Wrn { .. }
            | ModelSpec::Mnasnet { .. }
            | ModelSpec::ShufflenetV1 { .. }
            | ModelSpec::ShufflenetV2 { .. }
            | ModelSpec::Mcunet { .. } => {
                // Every key is checked by the builder; 32×32 fits every stride of the layout.
                self.config(&[3, 32, 32], 10)?.build()?;
            }
            ModelSpec::MobilenetV2 {
                width,
                blocks,
                expand,
                dropout,
                ..
            } => {
                if *width == 0 {
                    bail!("model: mobilenet_v2 `width` must be ≥ 1");
                }
                if *blocks == 0 || blocks % 3 != 0 {
                    bail!(
                        "model: mobilenet_v2 `blocks` must be a positive multiple of 3 (three subnetworks of equal block count), got {blocks}"
                    );
                }
                if *expand == 0 {
                    bail!("model: mobilenet_v2 `expand` must be ≥ 1");
                }
                if !(0.0..1.0).contains(dropout) {
                    bail!("model: mobilenet_v2 `dropout` must be in [0, 1), got {dropout}");
                }
            }
            ModelSpec::Autoencoder { hidden } => {
                if hidden
                    .as_ref()
                    .is_some_and(|h| h.is_empty() || h.contains(&0))
                {
                    bail!("model: autoencoder hidden widths must be ≥ 1");
                }
            }
            ModelSpec::Graph { nodes } => {
                parse_nodes(nodes)?;
            }
            ModelSpec::Full { config } => {
                config.build()?;
            }
        }
        Ok(())
    }

    /// [`ModelSpec::validate`] as a stage parameter error at `key` (e.g. `model`): a node-list
    /// error points at its node and key (`model.nodes.3.inputs`).
    pub fn validate_at(&self, key: &str) -> Result<(), ParamError> {
        self.validate().map_err(|e| {
            let mut p = param_error(&e, key);
            if matches!(self, ModelSpec::Full { .. }) && p.path.len() > 1 {
                p.path.insert(1, "config".into());
            }
            p
        })
    }

    /// Short architecture name for reports.
    pub fn arch(&self) -> String {
        match self {
            ModelSpec::Full { config } => arch_of(config).to_string(),
            ModelSpec::Tcn { .. } => "tcn".into(),
            ModelSpec::DsCnn { .. } => "ds_cnn".into(),
            ModelSpec::ResNet8 { .. } => "resnet8".into(),
            ModelSpec::MobilenetV1 { .. } => "mobilenet_v1".into(),
            ModelSpec::Wrn { .. } => "wrn".into(),
            ModelSpec::Mnasnet { .. } => "mnasnet".into(),
            ModelSpec::ShufflenetV1 { .. } => "shufflenet_v1".into(),
            ModelSpec::ShufflenetV2 { .. } => "shufflenet_v2".into(),
            ModelSpec::Mcunet { .. } => "mcunet".into(),
            ModelSpec::MobilenetV2 { .. } => "mobilenet_v2".into(),
            ModelSpec::Autoencoder { .. } => "autoencoder".into(),
            ModelSpec::Graph { .. } => "graph".into(),
        }
    }

    /// The full configuration for a data set whose items have `item_shape` and `classes` classes.
    /// Keyword MFCCs (49 frames × 10 coefficients) become 10 channels × 49 steps for a TCN and a
    /// 1×49×10 image for the 2-d networks.
    pub fn config(&self, item_shape: &[usize], classes: usize) -> Result<ModelConfig> {
        let image = |what: &str| -> Result<[usize; 3]> {
            match item_shape {
                [c, h, w] => Ok([*c, *h, *w]),
                [h, w] => Ok([1, *h, *w]),
                _ => bail!(
                    "model: {what} needs 2-d or 3-d items, the data has items of shape {item_shape:?}"
                ),
            }
        };
        let w = |c: usize, f: f64| ((c as f64 * f).round() as usize).max(1);
        Ok(match self {
            ModelSpec::Full { config } => config.clone(),
            ModelSpec::Graph { nodes } => {
                let input = match item_shape {
                    [h, w] => vec![1, *h, *w],
                    s => s.to_vec(),
                };
                ModelConfig::Graph(NodeListConfig {
                    input,
                    classes,
                    nodes: parse_nodes(nodes)?,
                })
            }
            ModelSpec::Tcn {
                channels,
                kernel,
                dilations,
                batch_norm,
                residual_every,
                padding,
            } => {
                let (input_channels, input_len) = match item_shape {
                    [frames, coeffs] => (*coeffs, *frames),
                    _ => bail!(
                        "model: tcn needs (steps, features) items, the data has items of shape {item_shape:?}"
                    ),
                };
                ModelConfig::Tcn(TcnConfig {
                    input_channels,
                    input_len,
                    classes,
                    layers: dilations
                        .iter()
                        .map(|&d| TcnLayerConfig {
                            channels: *channels,
                            kernel: *kernel,
                            dilation: d,
                        })
                        .collect(),
                    batch_norm: *batch_norm,
                    residual_every: *residual_every,
                    padding: *padding,
                    ..TcnConfig::bench(*channels)
                })
            }
            ModelSpec::DsCnn {
                channels,
                blocks,
                pointwise_extra,
                dropout,
            } => {
                let mut c = DsCnnConfig::reference();
                c.pointwise_extra = *pointwise_extra;
                c.dropout = dropout.unwrap_or(if *pointwise_extra {
                    DsCnnConfig::thesis().dropout
                } else {
                    [0.0, 0.0]
                });
                c.input = image("ds_cnn")?;
                c.classes = classes;
                c.stem = StemConfig {
                    channels: *channels,
                    ..c.stem
                };
                c.blocks = (0..*blocks)
                    .map(|_| DsBlockConfig {
                        channels: *channels,
                        kernel: [3, 3],
                        stride: 1,
                    })
                    .collect();
                ModelConfig::DsCnn(c)
            }
            ModelSpec::ResNet8 { width } => {
                let mut c = ResNetConfig::resnet8();
                c.input = image("resnet8")?;
                c.classes = classes;
                c.stem_channels = w(c.stem_channels, *width);
                for s in &mut c.stacks {
                    s.channels = w(s.channels, *width);
                    s.mid_channels = w(s.mid_channels, *width);
                }
                ModelConfig::ResNet(c)
            }
            ModelSpec::MobilenetV1 {
                alpha,
                layout,
                width,
                blocks,
                se,
            } => {
                let input = image("mobilenet_v1")?;
                let mut c = if *layout == Some(V1Layout::Cifar) {
                    MobileNetV1Config::cifar(
                        width.unwrap_or(32),
                        blocks.unwrap_or(15),
                        0,
                        input,
                        classes,
                    )?
                } else {
                    MobileNetV1Config::with_width(*alpha, input, classes)
                };
                c.se = se.unwrap_or(0);
                ModelConfig::MobileNetV1(c)
            }
            ModelSpec::Wrn { depth, widen, se } => ModelConfig::Wrn(WrnConfig {
                input: image("wrn")?,
                classes,
                depth: *depth,
                widen: *widen,
                se: *se,
            }),
            ModelSpec::Mnasnet {
                width,
                blocks,
                expand,
                se,
                dropout,
            } => ModelConfig::Mcunet(McunetConfig::mnasnet(
                image("mnasnet")?,
                classes,
                *width,
                *blocks,
                *expand,
                *se,
                *dropout,
            )?),
            ModelSpec::ShufflenetV2 { width, blocks, se } => {
                ModelConfig::ShuffleNetV2(ShuffleNetV2Config {
                    input: image("shufflenet_v2")?,
                    classes,
                    width: *width,
                    blocks: *blocks,
                    se: *se,
                })
            }
            ModelSpec::ShufflenetV1 {
                width,
                blocks,
                groups,
                se,
            } => ModelConfig::ShuffleNetV1(ShuffleNetV1Config {
                input: image("shufflenet_v1")?,
                classes,
                width: *width,
                blocks: *blocks,
                groups: *groups,
                se: *se,
            }),
            ModelSpec::Mcunet {
                stem,
                stem_stride,
                blocks,
                dropout,
            } => ModelConfig::Mcunet(McunetConfig {
                input: image("mcunet")?,
                classes,
                stem: *stem,
                stem_stride: *stem_stride,
                blocks: blocks.clone(),
                dropout: *dropout,
            }),
            ModelSpec::MobilenetV2 {
                width,
                blocks,
                expand,
                se,
                dropout,
            } => ModelConfig::MobileNetV2(MobileNetV2Config {
                input: image("mobilenet_v2")?,
                classes,
                width: *width,
                blocks: *blocks,
                expand: *expand,
                se: *se,
                dropout: *dropout,
            }),
            ModelSpec::Autoencoder { hidden } => {
                let mut c = AutoEncoderConfig::reference();
                c.input = item_shape.iter().product();
                if let Some(h) = hidden {
                    c.hidden = h.clone();
                }
                ModelConfig::AutoEncoder(c)
            }
        })
    }
}

/// Short architecture name of a full configuration.
pub fn arch_of(config: &ModelConfig) -> &'static str {
    match config {
        ModelConfig::Tcn(_) => "tcn",
        ModelConfig::DsCnn(_) => "ds_cnn",
        ModelConfig::ResNet(_) => "resnet",
        ModelConfig::MobileNetV1(_) => "mobilenet_v1",
        ModelConfig::MobileNetV2(_) => "mobilenet_v2",
        ModelConfig::AutoEncoder(_) => "autoencoder",
        ModelConfig::Graph(_) => "graph",
        ModelConfig::Wrn(_) => "wrn",
        ModelConfig::ShuffleNetV1(_) => "shufflenet_v1",
        ModelConfig::ShuffleNetV2(_) => "shufflenet_v2",
        ModelConfig::Mcunet(_) => "mcunet",
    }
}

/// A model error as a stage parameter error under `key`; a node-list error keeps its path.
pub fn param_error(e: &anyhow::Error, key: &str) -> ParamError {
    match e.downcast_ref::<NodeError>() {
        Some(n) => {
            let mut path = vec![key.to_string(), "nodes".into()];
            path.extend(n.at.iter().cloned());
            ParamError::new(path, n.message.clone())
        }
        None => ParamError::new([key], format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kws_shapes_and_reference_counts() {
        let tcn = ModelSpec::Tcn {
            channels: 64,
            kernel: 3,
            dilations: tcn_dilations(),
            batch_norm: true,
            residual_every: 2,
            padding: TcnPadding::Causal,
        };
        let ModelConfig::Tcn(c) = tcn.config(&[49, 10], 12).unwrap() else {
            panic!()
        };
        assert_eq!(
            (c.input_channels, c.input_len, c.classes, c.layers.len()),
            (10, 49, 12, 7)
        );
        let ds = ModelSpec::DsCnn {
            channels: 64,
            blocks: 4,
            pointwise_extra: false,
            dropout: None,
        }
        .config(&[49, 10], 12)
        .unwrap();
        assert_eq!(ds.input_shape(), vec![1, 49, 10]);
        // DS-CNN reference: stem 64·(1·10·4) + 64 = 2,624; per block dw 64·9 + 64 = 640, pw 64·64 + 64
        // = 4,160, two BNs 2·128 = 256 → 5,056 ×4 = 20,224; stem BN 128; FC 64·12 + 12 = 780.
        assert_eq!(ds.build().unwrap().params(), 2_624 + 128 + 20_224 + 780);
        assert!(
            ModelSpec::DsCnn {
                channels: 8,
                blocks: 1,
                pointwise_extra: false,
                dropout: None,
            }
            .config(&[5], 3)
            .is_err()
        );
    }

    #[test]
    fn mobilenet_v2_from_toml_matches_torch_ref_and_names_bad_keys() {
        let spec: ModelSpec =
            toml::from_str("arch = \"mobilenet_v2\"\nwidth = 16\nblocks = 9\nexpand = 4").unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.arch(), "mobilenet_v2");
        let g = spec.config(&[3, 32, 32], 10).unwrap().build().unwrap();
        assert_eq!((g.params(), g.macs()), (117_738, 18_866_816));
        let se: ModelSpec = toml::from_str("arch = \"mobilenet_v2\"\nse = true").unwrap();
        let g = se.config(&[3, 32, 32], 10).unwrap().build().unwrap();
        assert_eq!(g.params(), 129_106);
        for (text, key) in [
            ("blocks = 8", "`blocks`"),
            ("width = 0", "`width`"),
            ("expand = 0", "`expand`"),
            ("dropout = 1.0", "`dropout`"),
        ] {
            let spec: ModelSpec =
                toml::from_str(&format!("arch = \"mobilenet_v2\"\n{text}")).unwrap();
            let e = spec.validate().unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("mobilenet_v2"), "{text}: {e}");
        }
        let thesis: ModelSpec =
            toml::from_str("arch = \"ds_cnn\"\npointwise_extra = true").unwrap();
        thesis.validate().unwrap();
        let ModelConfig::DsCnn(c) = thesis.config(&[49, 10], 12).unwrap() else {
            panic!()
        };
        assert_eq!(c.dropout, [0.2, 0.4]);
        assert_eq!(ModelConfig::DsCnn(c).build().unwrap().params(), 40_396);
        let bad: ModelSpec = toml::from_str("arch = \"ds_cnn\"\ndropout = [0.2, 1.5]").unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("`dropout`"), "{e}");
        let e = toml::from_str::<ModelSpec>("arch = \"mobilenet_v2\"\nwidht = 8")
            .unwrap_err()
            .to_string();
        assert!(e.contains("widht"), "{e}");
    }
}
