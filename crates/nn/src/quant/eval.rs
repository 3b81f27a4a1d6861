//! Eval-mode forward of a network under a precision format (spec §6): batch norm folded first,
//! weights rounded (float formats) or fake-quantized per output channel (int8, k-bit
//! weight-only), and every value passed between nodes rounded (float formats) or
//! fake-quantized per tensor with ranges from calibration data (int8). Under int8 the biases
//! of convolutions and linear layers are put on the int32 grid of the exported files (scale
//! s_in·s_w per output channel, round half to even), so this evaluation is the network the
//! ONNX QDQ and C exports hold; other formats keep fp32 biases.

use super::float::FloatFormat;
use super::format::Format;
use super::int::{Affine, Observer, fake_quantize_per_channel};
use crate::graph::{Graph, Op};
use crate::interp::{self, Hook};
use crate::model::Model;
use anyhow::{Context, Result, ensure};
use candle_core::{Device, Tensor, Var};
use std::collections::HashMap;

/// Which observer collects int8 activation ranges.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ObserverKind {
    MinMax,
    /// Percentile of each tail, e.g. 99.99.
    Percentile(f64),
}

impl ObserverKind {
    fn make(&self) -> Observer {
        match self {
            ObserverKind::MinMax => Observer::min_max(),
            ObserverKind::Percentile(p) => Observer::percentile(*p),
        }
    }
}

/// Options of post-training quantization.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantOptions {
    pub observer: ObserverKind,
    /// For k-bit weight-only formats: keep the first and last conv/linear layer at 8 bits.
    pub keep_first_last_8bit: bool,
    /// Batch size of calibration passes.
    pub batch_size: usize,
}

impl Default for QuantOptions {
    fn default() -> Self {
        Self {
            observer: ObserverKind::MinMax,
            keep_first_last_8bit: true,
            batch_size: 100,
        }
    }
}

/// The transform applied to one value (an activation tensor).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ActQuant {
    Identity,
    Float(FloatFormat),
    Affine(Affine),
}

impl ActQuant {
    fn apply(&self, t: &Tensor) -> Result<Tensor> {
        match self {
            ActQuant::Identity => Ok(t.clone()),
            ActQuant::Float(f) if *f == FloatFormat::FP32 => Ok(t.clone()),
            ActQuant::Float(f) => {
                // In place on one owned copy, with the rounding inlined (the grid evaluates
                // every value of every network once per format).
                let mut v: Vec<f32> = t.flatten_all()?.to_vec1::<f32>()?;
                f.round_slice(&mut v);
                Ok(Tensor::from_vec(v, t.dims(), &Device::Cpu)?)
            }
            ActQuant::Affine(a) => map_tensor(t, &|x| a.fake(x)),
        }
    }
}

fn map_tensor(t: &Tensor, f: &dyn Fn(f32) -> f32) -> Result<Tensor> {
    let v: Vec<f32> = t.flatten_all()?.to_vec1::<f32>()?;
    let v: Vec<f32> = v.into_iter().map(f).collect();
    Ok(Tensor::from_vec(v, t.dims(), &Device::Cpu)?)
}

/// Bits of each conv/linear weight tensor under `format`, by node name, in graph order.
pub fn weight_bits_per_layer(
    graph: &Graph,
    format: Format,
    keep_first_last_8bit: bool,
) -> Vec<(String, u32)> {
    let names: Vec<&str> = graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv { .. } | Op::Linear { .. }))
        .map(|n| n.name.as_str())
        .collect();
    let last = names.len().saturating_sub(1);
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let bits = match format {
                Format::WeightOnly(k) if keep_first_last_8bit && (i == 0 || i == last) => k.max(8),
                f => f.weight_bits(),
            };
            (n.to_string(), bits)
        })
        .collect()
}

/// Stored size in bytes of a network's parameters under `format` (spec §6): conv/linear
/// weights at the format's bits (first/last layer at 8 bits for k-bit weight-only when asked),
/// biases and batch-norm parameters at 32 bits. Quantizer scales are not counted.
pub fn weight_bytes(graph: &Graph, format: Format, keep_first_last_8bit: bool) -> u64 {
    let bits: HashMap<String, u32> = weight_bits_per_layer(graph, format, keep_first_last_8bit)
        .into_iter()
        .collect();
    let mut total_bits = 0u64;
    for n in &graph.nodes {
        for (suffix, shape, _) in n.op.params() {
            let elems = shape.iter().product::<usize>() as u64;
            let b = match (suffix, bits.get(&n.name)) {
                ("weight", Some(&b)) => b as u64,
                _ => 32,
            };
            total_bits += elems * b;
        }
    }
    total_bits.div_ceil(8)
}

/// A network prepared for evaluation under one format.
pub struct QuantModel {
    graph: Graph,
    tensors: HashMap<String, Tensor>,
    /// Transform of each value (0 = input, i + 1 = output of node i).
    acts: Vec<ActQuant>,
    format: Format,
    /// Per-output-channel weight scales of each int8 conv/linear layer, by node name.
    weight_scales: HashMap<String, Vec<f32>>,
    /// The fp32 biases (int8: put on the int32 grid once the input scales are known).
    biases: HashMap<String, Tensor>,
}

impl QuantModel {
    /// Folds batch norm (if not folded yet), quantizes the weights and, for int8, calibrates
    /// per-tensor activation ranges on `calib` (a batch of training inputs, N × input shape).
    pub fn prepare(
        model: &Model,
        format: Format,
        calib: Option<&Tensor>,
        opts: &QuantOptions,
    ) -> Result<Self> {
        let mut q = Self::prepare_weights(model, format, opts)?;
        if format == Format::Int8 {
            q.calibrate(calib.context("int8 needs calibration inputs")?, opts)?;
            q.round_biases()?;
        }
        Ok(q)
    }

    /// Like [`QuantModel::prepare`] but with given activation transforms (one per value:
    /// the input, then each node's output), e.g. the frozen ranges of quantization-aware
    /// training.
    pub fn prepare_with_activations(
        model: &Model,
        format: Format,
        acts: Vec<ActQuant>,
        opts: &QuantOptions,
    ) -> Result<Self> {
        let mut q = Self::prepare_weights(model, format, opts)?;
        ensure!(
            acts.len() == q.acts.len(),
            "{} activation quantizers given, the network has {} values",
            acts.len(),
            q.acts.len()
        );
        q.acts = acts;
        if format == Format::Int8 {
            q.round_biases()?;
        }
        Ok(q)
    }

    /// Folds batch norm and quantizes the weights; activations per format (int8: identity
    /// until calibrated).
    fn prepare_weights(model: &Model, format: Format, opts: &QuantOptions) -> Result<Self> {
        let folded;
        let m = if model.bn_folded() {
            model
        } else {
            folded = model.fold_bn().context("folding batch norm")?;
            &folded
        };
        let graph = m.graph().clone();
        let bits: HashMap<String, u32> =
            weight_bits_per_layer(&graph, format, opts.keep_first_last_8bit)
                .into_iter()
                .collect();
        let mut tensors = HashMap::new();
        let mut weight_scales = HashMap::new();
        let mut biases = HashMap::new();
        let all: Vec<&(String, Var)> = m.params().iter().chain(m.buffers().iter()).collect();
        for (name, var) in all {
            let t = var.as_tensor().copy()?;
            let layer = name.strip_suffix(".weight");
            let t = match (format, layer.and_then(|l| bits.get(l).map(|b| (l, b)))) {
                (Format::Float(f), Some(_)) if f != FloatFormat::FP32 => {
                    map_tensor(&t, &|x| f.round(x))?
                }
                (Format::Int8 | Format::WeightOnly(_), Some((l, &b))) => {
                    let mut v: Vec<f32> = t.flatten_all()?.to_vec1()?;
                    let qs = fake_quantize_per_channel(&mut v, t.dims()[0], b);
                    if format == Format::Int8 {
                        weight_scales.insert(l.to_string(), qs.iter().map(|q| q.scale).collect());
                    }
                    Tensor::from_vec(v, t.dims(), &Device::Cpu)?
                }
                _ => t,
            };
            if format == Format::Int8
                && let Some(l) = name.strip_suffix(".bias")
                && bits.contains_key(l)
            {
                biases.insert(l.to_string(), t.clone());
            }
            tensors.insert(name.clone(), t);
        }
        let n_values = graph.nodes.len() + 1;
        let acts = match format {
            // A ReLU of a rounded value is already rounded (max(x, 0) of a representable x is
            // representable), so its output is not rounded again.
            Format::Float(f) => (0..n_values)
                .map(|v| match v.checked_sub(1).map(|i| &graph.nodes[i].op) {
                    Some(Op::Relu) => ActQuant::Identity,
                    _ => ActQuant::Float(f),
                })
                .collect(),
            Format::WeightOnly(_) => vec![ActQuant::Identity; n_values],
            Format::Int8 => vec![ActQuant::Identity; n_values],
        };
        Ok(Self {
            graph,
            tensors,
            acts,
            format,
            weight_scales,
            biases,
        })
    }

    /// int8: each conv/linear bias b becomes round_half_even(b/s)·s with s = s_w[c]·s_in (the
    /// layer's weight scale of channel c times its input's activation scale), saturated to
    /// int32, as `whittle_export::quantize_bias` stores it.
    fn round_biases(&mut self) -> Result<()> {
        for (i, node) in self.graph.nodes.iter().enumerate() {
            let (Some(b), Some(ws)) = (
                self.biases.get(&node.name),
                self.weight_scales.get(&node.name),
            ) else {
                continue;
            };
            let s_in = match self.acts[node.inputs[0]] {
                ActQuant::Affine(a) => a.scale,
                _ => continue,
            };
            let b: Vec<f32> = b.to_vec1()?;
            ensure!(
                b.len() == ws.len(),
                "node {i} (`{}`): {} biases for {} weight scales",
                node.name,
                b.len(),
                ws.len()
            );
            let v: Vec<f32> = b
                .iter()
                .zip(ws)
                .map(|(&b, &w)| {
                    let s = w * s_in;
                    (b / s)
                        .round_ties_even()
                        .clamp(i32::MIN as f32, i32::MAX as f32)
                        * s
                })
                .collect();
            let n = v.len();
            self.tensors.insert(
                format!("{}.bias", node.name),
                Tensor::from_vec(v, n, &Device::Cpu)?,
            );
        }
        Ok(())
    }

    /// Per-tensor 8-bit affine activation ranges from the observers over `calib`.
    fn calibrate(&mut self, calib: &Tensor, opts: &QuantOptions) -> Result<()> {
        ensure!(
            calib.dim(0)? > 0,
            "int8 needs at least one calibration input"
        );
        let mut obs: Vec<Observer> = (0..self.acts.len()).map(|_| opts.observer.make()).collect();
        let n = calib.dim(0)?;
        let bs = opts.batch_size.max(1);
        let mut start = 0;
        while start < n {
            let len = bs.min(n - start);
            let x = calib.narrow(0, start, len)?;
            self.run(&x, &mut |v, t| {
                obs[v].observe(&t.flatten_all()?.to_vec1::<f32>()?);
                Ok(())
            })?;
            start += len;
        }
        self.acts = obs
            .iter()
            .map(|o| {
                let (lo, hi) = o.range();
                ActQuant::Affine(Affine::asymmetric(lo, hi, 8))
            })
            .collect();
        Ok(())
    }

    pub fn format(&self) -> Format {
        self.format
    }
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    /// Transform of each value (0 = input, i + 1 = output of node i).
    pub fn activation_quantizers(&self) -> &[ActQuant] {
        &self.acts
    }
    /// The (quantized) tensor `name`.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .with_context(|| format!("quantized model has no tensor named {name}"))
    }

    /// Eval-mode forward with every value transformed by its quantizer.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run_plain(x)
    }

    /// Forward pass calling `seen(value id, value)` on every value before it is transformed.
    pub(crate) fn run(
        &self,
        x: &Tensor,
        seen: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        let mut hook = QuantHook {
            acts: &self.acts,
            seen: Some(seen),
        };
        interp::forward(&self.graph, &self.tensors, x, false, &mut hook)
    }

    /// [`QuantModel::forward`] without observers (every value that is not rounded may be
    /// fused).
    fn run_plain(&self, x: &Tensor) -> Result<Tensor> {
        let mut hook = QuantHook {
            acts: &self.acts,
            seen: None,
        };
        interp::forward(&self.graph, &self.tensors, x, false, &mut hook)
    }
}

impl ActQuant {
    /// True when [`ActQuant::apply`] returns its input unchanged.
    pub(crate) fn is_identity(&self) -> bool {
        matches!(self, ActQuant::Identity)
            || matches!(self, ActQuant::Float(f) if *f == FloatFormat::FP32)
    }
}

/// Called with every value (id, tensor) before it is transformed.
type Observe<'s> = dyn FnMut(usize, &Tensor) -> Result<()> + 's;

/// Activation quantizers (and observers) as interpreter hooks: value v is transformed by
/// `acts[v]` (0 = input, i + 1 = output of node i); a transformed or observed value is
/// computed on its own (no fusion with its consumer).
struct QuantHook<'a, 's> {
    acts: &'a [ActQuant],
    seen: Option<&'s mut Observe<'s>>,
}

impl Hook for QuantHook<'_, '_> {
    fn input(&mut self, x: Tensor) -> Result<Tensor> {
        if let Some(seen) = &mut self.seen {
            seen(0, &x)?;
        }
        self.acts[0].apply(&x)
    }
    fn output(&mut self, node: usize, y: Tensor) -> Result<Tensor> {
        if let Some(seen) = &mut self.seen {
            seen(node + 1, &y)?;
        }
        self.acts[node + 1].apply(&y)
    }
    fn keep(&self, node: usize) -> bool {
        self.seen.is_some() || !self.acts[node + 1].is_identity()
    }
}

impl crate::train::Trainable for QuantModel {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        self.forward(x)
    }
    fn trainable_vars(&self) -> Vec<(String, Var)> {
        Vec::new()
    }
    fn state_vars(&self) -> Vec<(String, Var)> {
        Vec::new()
    }
}
