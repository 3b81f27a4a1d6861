//! A model instance: a configuration, its graph, and the tensors (trainable parameters as
//! candle `Var`s, BN running statistics as buffers). Forward in train or eval mode, seeded
//! PyTorch-like initialisation, safetensors + JSON save/load, and BN folding for inference.

use crate::config::ModelConfig;
use crate::graph::{Graph, Init, Op};
use crate::ops;
use anyhow::{Context, Result, bail, ensure};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// File names inside a saved-model folder.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const CONFIG_FILE: &str = "model.json";

/// What `model.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedModel {
    config: ModelConfig,
    /// True when batch norms were folded into the preceding convolutions.
    bn_folded: bool,
}

/// A network ready to run: config + graph + named tensors.
pub struct Model {
    config: ModelConfig,
    graph: Graph,
    bn_folded: bool,
    params: Vec<(String, Var)>,
    buffers: Vec<(String, Var)>,
    index: HashMap<String, Var>,
}

impl Model {
    /// Build from a configuration with seeded initialisation: conv/linear weights and biases
    /// U(−1/√fan_in, 1/√fan_in) (PyTorch's defaults), BN γ = 1, β = 0, running mean 0, var 1.
    /// Values are drawn in parameter order from ChaCha8(seed): same seed → same bits.
    pub fn new(config: ModelConfig, seed: u64) -> Result<Self> {
        let graph = config.build()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut make = |spec: &crate::graph::ParamSpec| -> Result<Var> {
            let n: usize = spec.shape.iter().product();
            let data: Vec<f32> = match spec.init {
                Init::Ones => vec![1.0; n],
                Init::Zeros => vec![0.0; n],
                Init::Uniform { fan_in } => {
                    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
                    (0..n)
                        .map(|_| rng.random::<f32>() * 2.0 * bound - bound)
                        .collect()
                }
            };
            Ok(Var::from_tensor(&Tensor::from_vec(
                data,
                spec.shape.as_slice(),
                &Device::Cpu,
            )?)?)
        };
        let params = graph
            .param_specs()
            .iter()
            .map(|s| Ok((s.name.clone(), make(s)?)))
            .collect::<Result<Vec<_>>>()?;
        let buffers = graph
            .buffer_specs()
            .iter()
            .map(|s| Ok((s.name.clone(), make(s)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::assemble(config, graph, false, params, buffers))
    }

    fn assemble(
        config: ModelConfig,
        graph: Graph,
        bn_folded: bool,
        params: Vec<(String, Var)>,
        buffers: Vec<(String, Var)>,
    ) -> Self {
        let index = params
            .iter()
            .chain(buffers.iter())
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        Self {
            config,
            graph,
            bn_folded,
            params,
            buffers,
            index,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    pub fn bn_folded(&self) -> bool {
        self.bn_folded
    }
    /// Trainable parameters in graph order.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }
    /// BN running statistics in graph order.
    pub fn buffers(&self) -> &[(String, Var)] {
        &self.buffers
    }
    /// Number of trainable parameters.
    pub fn num_params(&self) -> u64 {
        self.graph.params()
    }
    /// Multiply-accumulates per sample.
    pub fn macs(&self) -> u64 {
        self.graph.macs()
    }
    pub fn layers(&self) -> Vec<crate::graph::LayerInfo> {
        self.graph.layers()
    }

    /// Look up a tensor (parameter or buffer) by name.
    pub fn get(&self, name: &str) -> Result<&Var> {
        self.index
            .get(name)
            .with_context(|| format!("model has no tensor named {name}"))
    }

    /// Every tensor (parameters then buffers) as a name → tensor map, copied.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        self.params
            .iter()
            .chain(self.buffers.iter())
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
            .collect()
    }

    /// Overwrite every tensor from `state` (names and shapes must match exactly).
    pub fn load_state(&self, state: &HashMap<String, Tensor>) -> Result<()> {
        for (n, v) in self.params.iter().chain(self.buffers.iter()) {
            let t = state
                .get(n)
                .with_context(|| format!("state has no tensor {n}"))?;
            ensure!(
                t.dims() == v.dims(),
                "tensor {n}: saved shape {:?}, model shape {:?}",
                t.dims(),
                v.dims()
            );
            v.set(&t.to_dtype(DType::F32)?)?;
        }
        ensure!(
            state.len() == self.params.len() + self.buffers.len(),
            "state has {} tensors, model has {}",
            state.len(),
            self.params.len() + self.buffers.len()
        );
        Ok(())
    }

    /// Run the network on a batch x of shape (N, input_shape...). In train mode BN uses batch
    /// statistics and updates its running statistics (momentum, unbiased variance, like PyTorch).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, train, true)
    }

    /// [`Model::forward`]; `fuse` applies a ReLU that follows a convolution in the
    /// convolution's output pass and, in eval mode, folds a batch norm that follows a
    /// convolution into its weights (one pass over the activations instead of three).
    pub(crate) fn forward_with(&self, x: &Tensor, train: bool, fuse: bool) -> Result<Tensor> {
        let want = &self.graph.input_shape;
        ensure!(
            x.rank() == want.len() + 1 && &x.dims()[1..] == want.as_slice(),
            "model input: expected (N, {want:?}), got {:?}",
            x.dims()
        );
        // A plain (non-Var) input: the first layer then skips its input gradient.
        let x = x.detach();
        let fused = self.bn_relu_pairs();
        let epilogues = if !fuse {
            Vec::new()
        } else {
            self.conv_epilogues(&fused, train)
        };
        // Nodes whose result an earlier op already produced (its output is passed on).
        let mut absorbed = vec![false; self.graph.nodes.len()];
        let mut vals: Vec<Tensor> = Vec::with_capacity(self.graph.nodes.len() + 1);
        vals.push(x);
        for (i, node) in self.graph.nodes.iter().enumerate() {
            let a = &vals[node.inputs[0]];
            if (i > 0 && fused[i - 1]) || absorbed[i] {
                // This ReLU was applied inside the preceding batch-norm op (or this batch norm
                // / ReLU inside the preceding convolution).
                let y = a.clone();
                vals.push(y);
                continue;
            }
            let p = |s: &str| {
                self.get(&format!("{}.{s}", node.name))
                    .map(|v| v.as_tensor())
            };
            let y = match &node.op {
                Op::Conv {
                    kernel,
                    stride,
                    padding,
                    dilation,
                    groups,
                    bias,
                    ..
                } => {
                    let w = p("weight")?;
                    let b = if *bias { Some(p("bias")?) } else { None };
                    let ep = epilogues.get(i).copied().unwrap_or_default();
                    let (w, b) = match ep.bn {
                        Some(j) => {
                            absorbed[j] = true;
                            let (w, b) = self.fold_eval_bn(&self.graph.nodes[j], w, b)?;
                            (w, Some(b))
                        }
                        None => (w.clone(), b.cloned()),
                    };
                    if let Some(r) = ep.relu {
                        absorbed[r] = true;
                    }
                    conv_act(
                        a,
                        &w,
                        b.as_ref(),
                        kernel.len(),
                        (stride, padding, dilation),
                        *groups,
                        ep.relu.is_some(),
                    )
                    .with_context(|| format!("conv {}", node.name))?
                }
                Op::BatchNorm { eps, momentum, .. } => {
                    let bn = BnArgs {
                        eps: *eps,
                        momentum: *momentum,
                        train,
                        relu: fused[i],
                    };
                    self.batch_norm(&node.name, a, p("weight")?, p("bias")?, bn)?
                }
                Op::Relu => ops::relu(a)?,
                Op::Add if fused[i] => ops::add_relu(a, &vals[node.inputs[1]])?,
                Op::Add => (a + &vals[node.inputs[1]])?,
                Op::GlobalAvgPool => ops::global_avg_pool(a)?,
                Op::Linear { bias, .. } => {
                    let w = p("weight")?;
                    let y = a.matmul(&w.t()?)?;
                    if *bias {
                        y.broadcast_add(p("bias")?)?
                    } else {
                        y
                    }
                }
            };
            vals.push(y);
        }
        Ok(vals.pop().expect("graph has nodes"))
    }

    /// Batch-norm node `name` on `a` with scale `g` and shift `bt` (the node's own or
    /// derived from them): train mode normalises with the batch statistics and updates the
    /// node's running statistics (momentum, unbiased variance, like PyTorch); eval mode
    /// applies the running statistics. `relu` applies a ReLU in the same op.
    pub(crate) fn batch_norm(
        &self,
        name: &str,
        a: &Tensor,
        g: &Tensor,
        bt: &Tensor,
        bn: BnArgs,
    ) -> Result<Tensor> {
        let rm = self.get(&format!("{name}.running_mean"))?;
        let rv = self.get(&format!("{name}.running_var"))?;
        if !bn.train {
            let scale = (g / (rv.as_tensor() + bn.eps)?.sqrt()?)?;
            let shift = (bt - (rm.as_tensor() * &scale)?)?;
            return Ok(ops::channel_affine(a, &scale, &shift, bn.relu)?);
        }
        let (y, mean, var) = if bn.relu {
            ops::batch_norm_relu_train(a, g, bt, bn.eps)?
        } else {
            ops::batch_norm_train(a, g, bt, bn.eps)?
        };
        let m = bn.momentum;
        let n = (a.elem_count() / a.dim(1)?) as f64;
        let unbiased = (var.detach() * (n / (n - 1.0).max(1.0)))?;
        rm.set(&((rm.as_tensor() * (1.0 - m))? + (mean.detach() * m)?)?)?;
        rv.set(&((rv.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
        Ok(y)
    }

    /// Per conv node: the batch norm folded into it (eval mode only; the next node, the conv's
    /// only consumer) and the ReLU applied in its output pass (after the conv or the folded
    /// batch norm, their only consumer).
    pub(crate) fn conv_epilogues(&self, fused: &[bool], train: bool) -> Vec<Epilogue> {
        let nodes = &self.graph.nodes;
        let uses = self.graph.value_uses();
        // Node j consumes node i's output alone.
        let only_next = |i: usize, j: usize| {
            uses[i + 1] == 1 && nodes.get(j).is_some_and(|n| n.inputs[0] == i + 1)
        };
        (0..nodes.len())
            .map(|i| {
                let mut ep = Epilogue::default();
                if !matches!(nodes[i].op, Op::Conv { .. }) {
                    return ep;
                }
                let mut last = i;
                // Training keeps batch norms (batch statistics): only a direct ReLU joins.
                if !train && only_next(i, i + 1) && matches!(nodes[i + 1].op, Op::BatchNorm { .. })
                {
                    ep.bn = Some(i + 1);
                    last = i + 1;
                    if fused[i + 1] {
                        ep.relu = Some(i + 2);
                        return ep;
                    }
                }
                if only_next(last, last + 1) && matches!(nodes[last + 1].op, Op::Relu) {
                    ep.relu = Some(last + 1);
                }
                ep
            })
            .collect()
    }

    /// Conv weight and bias with the eval-mode batch norm `bn` folded in:
    /// `w·s`, `(b − mean)·s + β` with `s = γ / √(var + ε)`.
    fn fold_eval_bn(
        &self,
        bn: &crate::graph::Node,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let Op::BatchNorm { eps, .. } = bn.op else {
            bail!("{} is not a batch norm", bn.name);
        };
        let get = |s: &str| {
            self.get(&format!("{}.{s}", bn.name))
                .map(|v| v.as_tensor().clone())
        };
        let (g, bt, rm, rv) = (
            get("weight")?,
            get("bias")?,
            get("running_mean")?,
            get("running_var")?,
        );
        let scale = (g / (rv + eps)?.sqrt()?)?;
        let mut shape = vec![1usize; w.rank()];
        shape[0] = scale.dim(0)?;
        let w2 = w.broadcast_mul(&scale.reshape(shape)?)?;
        let b0 = match b {
            Some(b) => b.clone(),
            None => scale.zeros_like()?,
        };
        let b2 = (((b0 - rm)? * &scale)? + bt)?;
        Ok((w2, b2))
    }

    /// `fused[i]` is true when node i is a batch norm or a residual sum whose only consumer is
    /// the ReLU at node i + 1: forward then applies both in one op.
    pub(crate) fn bn_relu_pairs(&self) -> Vec<bool> {
        let nodes = &self.graph.nodes;
        let uses = self.graph.value_uses();
        (0..nodes.len())
            .map(|i| {
                matches!(nodes[i].op, Op::BatchNorm { .. } | Op::Add)
                    && uses[i + 1] == 1
                    && nodes
                        .get(i + 1)
                        .is_some_and(|r| matches!(r.op, Op::Relu) && r.inputs[0] == i + 1)
            })
            .collect()
    }

    /// Save weights (safetensors) and configuration (JSON) into folder `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let saved = SavedModel {
            config: self.config.clone(),
            bn_folded: self.bn_folded,
        };
        std::fs::write(dir.join(CONFIG_FILE), serde_json::to_string_pretty(&saved)?)
            .with_context(|| format!("writing {}", dir.join(CONFIG_FILE).display()))?;
        let path = dir.join(WEIGHTS_FILE);
        candle_core::safetensors::save(&self.state()?, &path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Load a model saved by [`Model::save`].
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("reading {}", cfg_path.display()))?;
        let saved: SavedModel = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", cfg_path.display()))?;
        let mut model = Model::new(saved.config, 0)?;
        if saved.bn_folded {
            model = model.fold_bn()?;
        }
        let path = dir.join(WEIGHTS_FILE);
        let state = candle_core::safetensors::load(&path, &Device::Cpu)
            .with_context(|| format!("reading {}", path.display()))?;
        model
            .load_state(&state)
            .with_context(|| format!("loading {}", path.display()))?;
        Ok(model)
    }

    /// A copy with every BatchNorm that directly follows a conv or linear layer (and is its
    /// only consumer) folded into it: W' = W·γ/√(σ²+ε) per output channel,
    /// b' = (b − μ)·γ/√(σ²+ε) + β. The result computes the eval-mode function of `self`.
    pub fn fold_bn(&self) -> Result<Model> {
        if self.bn_folded {
            bail!("batch norms are already folded");
        }
        let g = &self.graph;
        let n = g.nodes.len();
        // Which BN nodes fold into which producer.
        let uses = g.value_uses();
        let mut fold_into = vec![None; n]; // bn node index -> producer node index
        for (i, node) in g.nodes.iter().enumerate() {
            if let Op::BatchNorm { .. } = node.op {
                let src = node.inputs[0];
                if src > 0
                    && uses[src] == 1
                    && matches!(g.nodes[src - 1].op, Op::Conv { .. } | Op::Linear { .. })
                {
                    fold_into[i] = Some(src - 1);
                }
            }
        }
        let folded_producers: HashMap<usize, usize> = fold_into
            .iter()
            .enumerate()
            .filter_map(|(bn, p)| p.map(|p| (p, bn)))
            .collect();
        let mut remap = vec![0usize; n + 1];
        let mut nodes = vec![];
        let mut params: Vec<(String, Var)> = vec![];
        let mut buffers: Vec<(String, Var)> = vec![];
        for (i, node) in g.nodes.iter().enumerate() {
            if let Some(p) = fold_into[i] {
                remap[i + 1] = remap[p + 1];
                continue;
            }
            let mut new = node.clone();
            new.inputs = node.inputs.iter().map(|&v| remap[v]).collect();
            let t = |s: &str| -> Result<Tensor> {
                Ok(self
                    .get(&format!("{}.{s}", node.name))?
                    .as_tensor()
                    .copy()?)
            };
            if let Some(&bn) = folded_producers.get(&i) {
                let bn_node = &g.nodes[bn];
                let has_bias = match &mut new.op {
                    Op::Conv { bias, .. } | Op::Linear { bias, .. } => {
                        std::mem::replace(bias, true)
                    }
                    _ => unreachable!(),
                };
                let b0 = if has_bias { Some(t("bias")?) } else { None };
                let (w2, b2) = self.fold_eval_bn(bn_node, &t("weight")?, b0.as_ref())?;
                params.push((format!("{}.weight", node.name), Var::from_tensor(&w2)?));
                params.push((format!("{}.bias", node.name), Var::from_tensor(&b2)?));
            } else {
                for (s, _, _) in node.op.params() {
                    params.push((format!("{}.{s}", node.name), Var::from_tensor(&t(s)?)?));
                }
                for (s, _, _) in node.op.buffers() {
                    buffers.push((format!("{}.{s}", node.name), Var::from_tensor(&t(s)?)?));
                }
            }
            nodes.push(new);
            remap[i + 1] = nodes.len();
        }
        let graph = Graph {
            input_shape: g.input_shape.clone(),
            nodes,
        };
        graph.validate()?;
        Ok(Model::assemble(
            self.config.clone(),
            graph,
            true,
            params,
            buffers,
        ))
    }
}

/// How [`Model::batch_norm`] runs: ε, momentum of the running statistics, batch statistics
/// (`train`) or running ones, and a fused ReLU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BnArgs {
    pub(crate) eps: f64,
    pub(crate) momentum: f64,
    pub(crate) train: bool,
    pub(crate) relu: bool,
}

/// What an eval-mode conv absorbs: the batch-norm node folded into its weights and the ReLU
/// node applied in its output pass.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Epilogue {
    pub(crate) bn: Option<usize>,
    pub(crate) relu: Option<usize>,
}

/// Dispatch a graph convolution to `ops`, padding explicitly when low ≠ high.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    nd: usize,
    stride: &[usize],
    padding: &[(usize, usize)],
    dilation: &[usize],
    groups: usize,
) -> Result<Tensor> {
    conv_act(x, w, b, nd, (stride, padding, dilation), groups, false)
}

/// Stride, (low, high) padding and dilation per spatial axis.
type ConvGeom<'a> = (&'a [usize], &'a [(usize, usize)], &'a [usize]);

/// [`conv`] with the ReLU applied in the convolution's output pass when `relu`.
fn conv_act(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    nd: usize,
    (stride, padding, dilation): ConvGeom,
    groups: usize,
    relu: bool,
) -> Result<Tensor> {
    let mut x = x.clone();
    let mut sym = vec![0usize; nd];
    for (i, &(lo, hi)) in padding.iter().enumerate() {
        if lo == hi {
            sym[i] = lo;
        } else {
            x = x.pad_with_zeros(i + 2, lo, hi)?;
        }
    }
    Ok(match nd {
        1 => {
            ensure!(
                groups == 1 || groups == x.dim(1)?,
                "grouped conv1d needs groups = channels"
            );
            ops::conv1d_act(
                &x,
                w,
                b,
                &ops::Conv1dCfg {
                    stride: stride[0],
                    padding: sym[0],
                    dilation: dilation[0],
                },
                relu,
            )?
        }
        2 => ops::conv2d_act(
            &x,
            w,
            b,
            &ops::Conv2dCfg {
                stride: (stride[0], stride[1]),
                padding: (sym[0], sym[1]),
                dilation: (dilation[0], dilation[1]),
                groups,
            },
            relu,
        )?,
        _ => bail!("convolution with {nd} spatial dims is not supported"),
    })
}
