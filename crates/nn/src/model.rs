//! A model instance: a configuration, its graph, and the tensors (trainable parameters as
//! candle `Var`s, BN running statistics as buffers). Forward in train or eval mode, seeded
//! PyTorch-like initialisation, safetensors + JSON save/load, and BN folding for inference.

use crate::config::ModelConfig;
use crate::graph::{Graph, Init, Op};
use crate::interp::{self, NoHook, Tensors};
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

    /// Run the network on a batch x of shape (N, input_shape...) through [`interp::forward`]
    /// with every fusion. In train mode BN uses batch statistics and updates its running
    /// statistics (momentum, unbiased variance, like PyTorch).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        interp::forward(&self.graph, self, x, train, &mut NoHook)
    }

    /// [`Model::forward`]; without `fuse` no convolution absorbs the batch norm or ReLU after
    /// it (batch norms and sums still run with their ReLU): the layer-by-layer reference the
    /// fused forward is tested against.
    #[cfg(test)]
    pub(crate) fn forward_with(&self, x: &Tensor, train: bool, fuse: bool) -> Result<Tensor> {
        if fuse {
            interp::forward(&self.graph, self, x, train, &mut NoHook)
        } else {
            interp::forward(&self.graph, self, x, train, &mut UnfusedConvs(&self.graph))
        }
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
                // The folded layer always has a bias.
                if let Op::Conv { bias, .. } | Op::Linear { bias, .. } = &mut new.op {
                    *bias = true;
                }
                let (w2, b2) = interp::fold_bn_into(g, bn, i, &mut |j, s| {
                    Ok(self
                        .get(&format!("{}.{s}", g.nodes[j].name))?
                        .as_tensor()
                        .copy()?)
                })?;
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

/// Tensors of a model, by name, for the interpreter (running statistics writable).
impl Tensors for Model {
    fn get(&self, name: &str) -> Result<&Tensor> {
        Ok(Model::get(self, name)?.as_tensor())
    }
    fn set(&self, name: &str, value: &Tensor) -> Result<()> {
        Model::get(self, name)?.set(value)?;
        Ok(())
    }
}

/// Keeps every convolution's own output: no conv epilogue fusion.
#[cfg(test)]
struct UnfusedConvs<'a>(&'a Graph);
#[cfg(test)]
impl interp::Hook for UnfusedConvs<'_> {
    fn keep(&self, node: usize) -> bool {
        matches!(self.0.nodes[node].op, Op::Conv { .. })
    }
}
