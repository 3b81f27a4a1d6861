//! ONNX nodes → [`Layer`]s. Every ONNX value is a folded constant, a data tensor (a network
//! tensor seen through the file's shape: a global-pool output (N, C, 1, 1) may be held as the
//! network's (N, C) vector, a (N, C, H·W) reshape as the (N, C, H, W) map), the raw input
//! (until a `Transpose` makes it the layout or another op reads it) or a zero `Pad` waiting
//! for the convolution or average pool it merges into. Patterns mapped across nodes: a 1×1
//! conv on a pooled vector is a linear layer, MatMul + Add and Conv + Add of a constant are
//! one layer with a bias, x · HardSigmoid(x) is hard swish, x · s with s (N, C, 1, 1) is a
//! channel multiply (squeeze-and-excitation), Reshape (N, C, −1) + ReduceMean(2) and
//! ReduceMean(H, W) are a global average pool, x · s + b with constants s, b (one value, or
//! one per channel: TensorFlow's batch norm as Mul + Add, Keras' Rescaling / Normalization)
//! folds into the layer before or is a layer of its own ([`affine`]), Reshape
//! (N, g, C/g, …) → Transpose (0, 2, 1, …) → Reshape (N, C, …) is a channel shuffle, and a
//! Softmax / LogSoftmax computing the graph output is dropped (the network gives logits; the
//! argmax is the same; [`super::Imported::final_softmax`] says so).

use super::fold::{self, Const, Data};
use super::proto::{self, AttributeProto, GraphProto, NodeProto};
use super::{ImportOptions, SUPPORTED_OPS};
use crate::network::{Activation, Layer, Network, PoolKind, Tensor32, conv_out_len};
use anyhow::{Context, Result, anyhow, bail, ensure};
use std::collections::{HashMap, HashSet};

mod affine;
mod layers;
mod views;

use affine::Affine;

/// A data tensor: network tensor `net` of shape `net_shape`, seen with the file's `shape`
/// (batch 1 first in both).
#[derive(Clone, Debug)]
pub struct Dyn {
    pub net: String,
    pub net_shape: Vec<usize>,
    pub shape: Vec<usize>,
}

#[derive(Clone, Debug)]
enum Val {
    C(Const),
    T(Dyn),
    /// The data input before any op read it.
    Input,
    /// The data input times a constant plus a constant ([`Affine`], file axes), waiting for
    /// the Transpose or Reshape that sets the layout or the first op that reads it; `single`:
    /// nothing else read the input or a step of the map.
    InputAffine {
        a: Affine,
        single: bool,
    },
    /// `src` with zeros around its spatial axes, from Pad node `node`.
    Padded {
        src: Dyn,
        pads: Vec<(usize, usize)>,
        node: String,
    },
    /// `src`'s channels seen as (groups, C/groups) (`swapped`: after the Transpose to
    /// (C/groups, groups)), waiting for the Reshape back that makes it a channel shuffle.
    Grouped {
        src: Dyn,
        groups: usize,
        swapped: bool,
        shape: Vec<usize>,
        node: String,
    },
}

/// (1, C) or (1, C, 1, …, 1).
fn vectorish(s: &[usize]) -> bool {
    s.len() >= 2 && s[0] == 1 && s[2..].iter().all(|&d| d == 1)
}

pub struct Importer<'a> {
    file: &'a str,
    opset: i64,
    vals: HashMap<String, Val>,
    uses: HashMap<String, usize>,
    layers: Vec<Layer>,
    /// Network tensor → its layer, and ONNX value → the layer that wrote it directly.
    producer: HashMap<String, usize>,
    direct: HashMap<String, usize>,
    /// Flatten already made for a network tensor.
    flat: HashMap<String, String>,
    names: HashSet<String>,
    input_name: String,
    file_shape: Vec<usize>,
    net_input_shape: Vec<usize>,
    input_perm: Option<Vec<usize>>,
    /// The graph's outputs, and the Softmax / LogSoftmax dropped before one.
    outputs: HashSet<String>,
    final_softmax: Option<String>,
    /// Values of the constants folded so far, and the most they may hold together
    /// ([`FOLD_BASE`] + [`FOLD_PER_WEIGHT`] × the initializers' values), so that a small file
    /// cannot make the folding allocate gigabytes (ConstantOfShape, broadcasting, Gather).
    folded: usize,
    fold_budget: usize,
}

/// Folded values always allowed (shape arithmetic, pads, small masks).
pub const FOLD_BASE: usize = 1 << 22;
/// Folded values allowed per initializer value (weights transposed, cast or scaled by an
/// export without constant folding).
pub const FOLD_PER_WEIGHT: usize = 4;

/// The network, the file's per-sample input shape, the absorbed input permutation and the
/// dropped final softmax.
pub type Out = (Network, Vec<usize>, Option<Vec<usize>>, Option<String>);
/// Slice's starts, ends, axes and steps.
type SliceArgs = (Vec<i64>, Vec<i64>, Option<Vec<i64>>, Option<Vec<i64>>);

impl<'a> Importer<'a> {
    /// Maps `graph`; returns the network, the file's per-sample input shape and the absorbed
    /// input permutation.
    /// The initializers' data is moved out of `graph` (each weight is held once).
    pub fn run(
        graph: &mut GraphProto,
        opset: i64,
        file: &'a str,
        opts: &ImportOptions,
    ) -> Result<Out> {
        let mut vals = HashMap::new();
        let mut weights = 0usize;
        for t in &mut graph.initializer {
            let c =
                fold::from_proto(t).with_context(|| format!("{file}: initializer `{}`", t.name))?;
            t.raw_data = Vec::new();
            t.float_data = Vec::new();
            weights = weights.saturating_add(c.len());
            vals.insert(t.name.clone(), Val::C(c));
        }
        let graph = &*graph;
        let candidates: Vec<&proto::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !vals.contains_key(&i.name))
            .collect();
        let input = match &opts.input {
            Some(want) => candidates.iter().find(|i| &i.name == want).with_context(|| {
                format!(
                    "{file}: the model has no data input `{want}`; its inputs without initializer are: {}",
                    names_of(&candidates)
                )
            })?,
            None => match candidates.as_slice() {
                [one] => one,
                [] => bail!("{file}: the graph has no input (every input has an initializer)"),
                _ => bail!(
                    "{file}: the model has several inputs ({}); set `input` to the data input",
                    names_of(&candidates)
                ),
            },
        };
        let file_shape =
            input_shape(input).with_context(|| format!("{file}: input `{}`", input.name))?;
        let mut names = HashSet::new();
        names.insert(input.name.clone());
        vals.insert(input.name.clone(), Val::Input);
        let mut uses: HashMap<String, usize> = HashMap::new();
        for n in &graph.node {
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                *uses.entry(i.clone()).or_default() += 1;
            }
        }
        for o in &graph.output {
            *uses.entry(o.name.clone()).or_default() += 1;
        }
        let mut im = Importer {
            file,
            opset,
            vals,
            uses,
            layers: vec![],
            producer: HashMap::new(),
            direct: HashMap::new(),
            flat: HashMap::new(),
            names,
            input_name: input.name.clone(),
            net_input_shape: file_shape.clone(),
            file_shape,
            input_perm: None,
            outputs: graph.output.iter().map(|o| o.name.clone()).collect(),
            final_softmax: None,
            folded: 0,
            fold_budget: FOLD_BASE.saturating_add(weights.saturating_mul(FOLD_PER_WEIGHT)),
        };
        for (i, n) in graph.node.iter().enumerate() {
            let label = if n.name.is_empty() {
                format!("#{i} (unnamed)")
            } else {
                format!("`{}`", n.name)
            };
            im.node(n)
                .with_context(|| format!("{file}: node {label} ({})", n.op_type))?;
        }
        ensure!(
            graph.output.len() == 1,
            "{file}: the graph has {} outputs ({}); whittle imports networks with one output",
            graph.output.len(),
            graph
                .output
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let out_name = &graph.output[0].name;
        let d = match im.vals.get(out_name) {
            Some(Val::T(d)) => d.clone(),
            Some(Val::Input | Val::InputAffine { .. }) => {
                bail!("{file}: the output `{out_name}` is the input itself (or scaled)")
            }
            Some(Val::C(_)) => {
                bail!("{file}: the output `{out_name}` does not depend on the input")
            }
            Some(_) => bail!(
                "{file}: the output `{out_name}` is an unfinished view (a Pad, or a Reshape to channel groups)"
            ),
            None => bail!("{file}: the output `{out_name}` is produced by no node"),
        };
        ensure!(
            vectorish(&d.shape),
            "{file}: the output `{out_name}` has shape {:?} (batch first); whittle imports classifiers whose output is (N, classes)",
            d.shape
        );
        let out = im
            .vector(&d)
            .with_context(|| format!("{file}: output `{out_name}`"))?;
        let network = im.finish(&graph.name, &out)?;
        network
            .shapes()
            .with_context(|| format!("{file}: the imported network is inconsistent"))?;
        Ok((network, im.file_shape, im.input_perm, im.final_softmax))
    }

    fn finish(&mut self, name: &str, out: &str) -> Result<Network> {
        // Keep the layers the output depends on.
        let mut need: HashSet<String> = HashSet::from([out.to_string()]);
        let mut keep = vec![false; self.layers.len()];
        for (i, l) in self.layers.iter().enumerate().rev() {
            if need.contains(l.output()) {
                keep[i] = true;
                need.extend(l.inputs().into_iter().map(str::to_string));
            }
        }
        let layers: Vec<Layer> = std::mem::take(&mut self.layers)
            .into_iter()
            .zip(keep)
            .filter_map(|(l, k)| k.then_some(l))
            .collect();
        ensure!(
            !layers.is_empty(),
            "{}: the output does not pass through any layer",
            self.file
        );
        let mut shape = vec![1];
        shape.extend(&self.net_input_shape);
        Ok(Network {
            name: if name.is_empty() {
                "imported".into()
            } else {
                name.to_string()
            },
            input: (self.input_name.clone(), shape),
            output: out.to_string(),
            layers,
        })
    }

    // ---- values -------------------------------------------------------------------------

    fn val(&self, name: &str) -> Result<&Val> {
        self.vals.get(name).with_context(|| {
            format!("reads `{name}`, which no earlier node, initializer or graph input provides")
        })
    }

    /// Optional constant input `k`.
    fn konst(&self, n: &NodeProto, k: usize) -> Result<Option<Const>> {
        match n.input.get(k).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(name) => match self.val(name)? {
                Val::C(c) => Ok(Some(c.clone())),
                _ => bail!(
                    "input {k} (`{name}`) must be a constant (an initializer or computed from constants), it depends on the data"
                ),
            },
        }
    }

    /// Constant input `k` (a weight), moved out of the values when `n` is its only reader.
    fn take_konst(&mut self, n: &NodeProto, k: usize, what: &str) -> Result<Const> {
        if let Some(name) = n.input.get(k)
            && self.uses.get(name).copied().unwrap_or(0) == 1
            && matches!(self.vals.get(name), Some(Val::C(_)))
            && let Some(Val::C(c)) = self.vals.remove(name)
        {
            return Ok(c);
        }
        self.need_konst(n, k, what)
    }

    fn need_konst(&self, n: &NodeProto, k: usize, what: &str) -> Result<Const> {
        self.konst(n, k)?
            .with_context(|| format!("missing input {k} ({what})"))
    }

    /// Data input `k`.
    fn data(&mut self, n: &NodeProto, k: usize) -> Result<Dyn> {
        let name = n
            .input
            .get(k)
            .filter(|s| !s.is_empty())
            .with_context(|| format!("missing input {k}"))?
            .clone();
        match self.val(&name)?.clone() {
            Val::T(d) => Ok(d),
            Val::Input => Ok(self.input_dyn()),
            Val::InputAffine { a, .. } => {
                let d = self.input_dyn();
                let d = self.resolve_input_affine(&a, d, &name, None)?;
                self.vals.insert(name, Val::T(d.clone()));
                Ok(d)
            }
            Val::Padded { node, .. } => bail!(
                "Pad `{node}` feeds this {}; a zero Pad is imported only before Conv or AveragePool",
                n.op_type
            ),
            Val::Grouped { node, .. } => bail!(
                "`{name}` is the grouped view of Reshape `{node}`; it is imported only as a channel shuffle (Reshape (N, g, C/g, …) → Transpose (0, 2, 1, …) → Reshape (N, C, …)), not read by {}",
                n.op_type
            ),
            Val::C(_) => bail!("input {k} (`{name}`) is a constant where data is expected"),
        }
    }

    fn input_dyn(&self) -> Dyn {
        let mut s = vec![1];
        s.extend(&self.net_input_shape);
        Dyn {
            net: self.input_name.clone(),
            net_shape: s.clone(),
            shape: s,
        }
    }

    fn is_const(&self, n: &NodeProto) -> bool {
        n.input
            .iter()
            .filter(|i| !i.is_empty())
            .all(|i| matches!(self.vals.get(i), Some(Val::C(_))))
    }

    fn set(&mut self, n: &NodeProto, k: usize, v: Val) -> Result<()> {
        let name = n
            .output
            .get(k)
            .filter(|s| !s.is_empty())
            .with_context(|| format!("has no output {k}"))?;
        ensure!(
            !self.vals.contains_key(name),
            "output `{name}` is already defined by another node or an initializer"
        );
        self.vals.insert(name.clone(), v);
        Ok(())
    }

    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// Appends `layer` (its output name already fresh) with network shape `net_shape`.
    fn push(&mut self, layer: Layer) -> usize {
        let i = self.layers.len();
        self.producer.insert(layer.output().to_string(), i);
        self.layers.push(layer);
        i
    }

    /// Appends a layer computing node output 0 (named after it) and binds the output.
    fn emit(
        &mut self,
        n: &NodeProto,
        make: impl FnOnce(String) -> Layer,
        net_shape: Vec<usize>,
        shape: Vec<usize>,
    ) -> Result<()> {
        let onnx = n
            .output
            .first()
            .filter(|s| !s.is_empty())
            .context("has no output")?
            .clone();
        let net = self.fresh(&onnx);
        let i = self.push(make(net.clone()));
        self.direct.insert(onnx, i);
        self.set(
            n,
            0,
            Val::T(Dyn {
                net,
                net_shape,
                shape,
            }),
        )
    }

    /// The network tensor of `d` as a (1, C) vector (a Flatten is added for a pooled map).
    fn vector(&mut self, d: &Dyn) -> Result<String> {
        ensure!(
            vectorish(&d.shape),
            "expected a (N, C) vector or a pooled (N, C, 1, …) map, got shape {:?}",
            d.shape
        );
        if d.net_shape.len() == 2 {
            return Ok(d.net.clone());
        }
        ensure!(
            vectorish(&d.net_shape),
            "tensor of shape {:?} cannot be read as a vector",
            d.shape
        );
        if let Some(f) = self.flat.get(&d.net) {
            return Ok(f.clone());
        }
        let out = self.fresh(&format!("{}/flat", d.net));
        self.push(Layer::Flatten {
            input: d.net.clone(),
            output: out.clone(),
        });
        self.flat.insert(d.net.clone(), out.clone());
        Ok(out)
    }

    /// The network tensor of `d` when it has the file's shape.
    fn plain(&self, d: &Dyn) -> Result<String> {
        ensure!(
            d.net_shape == d.shape,
            "a tensor of shape {:?} is held as {:?} in the graph IR and cannot be used so here",
            d.shape,
            d.net_shape
        );
        Ok(d.net.clone())
    }

    // ---- attributes ---------------------------------------------------------------------

    fn attr<'n>(n: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
        n.attribute.iter().find(|a| a.name == name)
    }
    fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
        Self::attr(n, name).map_or(default, |a| a.i)
    }
    fn attr_f(n: &NodeProto, name: &str, default: f32) -> f32 {
        Self::attr(n, name).map_or(default, |a| a.f)
    }
    fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
        Self::attr(n, name).map(|a| a.ints.clone())
    }
    fn attr_s(n: &NodeProto, name: &str) -> String {
        Self::attr(n, name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
            .unwrap_or_default()
    }

    /// Integers from input `k` (newer opsets) or attribute `name` (older ones).
    fn ints_in_or_attr(&self, n: &NodeProto, k: usize, name: &str) -> Result<Option<Vec<i64>>> {
        if let Some(c) = self.konst(n, k)? {
            return Ok(Some(c.i64s()?));
        }
        Ok(Self::attr_ints(n, name))
    }

    // ---- nodes --------------------------------------------------------------------------

    fn node(&mut self, n: &NodeProto) -> Result<()> {
        ensure!(
            n.domain.is_empty() || n.domain == "ai.onnx",
            "op `{}` of domain `{}` is not a standard ONNX op; the importer reads the default domain only",
            n.op_type,
            n.domain
        );
        ensure!(!n.output.is_empty(), "has no outputs");
        let op = n.op_type.as_str();
        if op == "Constant" {
            return self.constant(n);
        }
        if op == "Shape" {
            return self.shape_of(n);
        }
        let foldable = [
            "Identity",
            "Cast",
            "Gather",
            "Unsqueeze",
            "Squeeze",
            "Concat",
            "Reshape",
            "Slice",
            "Transpose",
            "ConstantOfShape",
            "Add",
            "Sub",
            "Mul",
            "Div",
            "Flatten",
        ];
        if foldable.contains(&op) && self.is_const(n) && !n.input.is_empty() {
            let c = self.fold(n)?;
            self.fold_room(c.len())?;
            self.folded += c.len();
            return self.set(n, 0, Val::C(c));
        }
        match op {
            "Conv" => self.conv(n),
            "BatchNormalization" => self.batch_norm(n),
            "Relu" => self.pointwise(n, None),
            "Sigmoid" => self.pointwise(n, Some(Activation::Sigmoid)),
            "HardSwish" => self.pointwise(n, Some(Activation::HardSwish)),
            "HardSigmoid" => {
                let (a, b) = (Self::attr_f(n, "alpha", 0.2), Self::attr_f(n, "beta", 0.5));
                ensure!(
                    (a - 1.0 / 6.0).abs() < 1e-6 && (b - 0.5).abs() < 1e-6,
                    "HardSigmoid(alpha = {a}, beta = {b}): only alpha = 1/6, beta = 1/2 (PyTorch's hardsigmoid, relu6(x + 3) / 6) maps to the graph IR"
                );
                self.pointwise(n, Some(Activation::HardSigmoid))
            }
            "Clip" => self.clip(n),
            "Identity" | "Dropout" => {
                if op == "Dropout"
                    && let Some(m) = n.output.get(1).filter(|m| !m.is_empty())
                {
                    ensure!(
                        self.uses.get(m).copied().unwrap_or(0) == 0,
                        "the dropout mask `{m}` is used; only inference graphs are imported"
                    );
                }
                let v = self
                    .val(n.input.first().context("missing input 0")?)?
                    .clone();
                self.set(n, 0, v)
            }
            "Cast" => {
                let to = Self::attr_i(n, "to", 0);
                ensure!(
                    to as i32 == proto::FLOAT,
                    "Cast of data to {} (only float32 is imported)",
                    fold::type_name(to as i32)
                );
                let d = self.data(n, 0)?;
                self.set(n, 0, Val::T(d))
            }
            "Add" | "Sub" | "Mul" | "Div" if self.const_binary(n)? => Ok(()),
            "Add" => self.add(n),
            "Mul" => self.mul(n),
            "Sub" | "Div" => bail!(
                "{op} of two data tensors is not imported (the graph IR has no element-wise {op}; by a constant it is a scale or shift)"
            ),
            "Concat" => self.concat(n),
            "GlobalAveragePool" => {
                let d = self.data(n, 0)?;
                self.global_pool(n, d, true)
            }
            "ReduceMean" => self.reduce_mean(n),
            "AveragePool" | "MaxPool" => self.pool(n),
            "Pad" => self.pad(n),
            "Flatten" => {
                let d = self.data(n, 0)?;
                let a = fold::axis(Self::attr_i(n, "axis", 1), d.shape.len().max(1))?;
                ensure!(
                    a == 1,
                    "Flatten with axis {a}: only axis 1 (keep the batch) is imported"
                );
                let target = vec![1, d.shape[1..].iter().product()];
                self.reshape_dyn(n, d, target)
            }
            "Reshape" => self.reshape(n),
            "Squeeze" | "Unsqueeze" => {
                let d = self.data(n, 0)?;
                let axes = self.ints_in_or_attr(n, 1, "axes")?;
                let dims = if op == "Squeeze" {
                    fold::squeeze_dims(&d.shape, axes.as_deref())?
                } else {
                    fold::unsqueeze_dims(&d.shape, &axes.context("Unsqueeze without axes")?)?
                };
                self.reshape_dyn(n, d, dims)
            }
            "Gemm" => self.gemm(n),
            "MatMul" => self.matmul(n),
            "Transpose" => self.transpose(n),
            "Slice" => self.slice(n),
            "Split" => self.split(n),
            "Softmax" | "LogSoftmax" => self.final_softmax(n),
            _ => bail!(
                "unsupported op `{op}`; the importer maps {}",
                SUPPORTED_OPS.join(", ")
            ),
        }
    }

    fn constant(&mut self, n: &NodeProto) -> Result<()> {
        let a = n
            .attribute
            .first()
            .context("Constant without a value attribute")?;
        let c = match a.name.as_str() {
            "value" => fold::from_proto(a.t.as_ref().context("`value` holds no tensor")?)?,
            "value_float" => Const {
                dims: vec![],
                data: Data::F(vec![a.f]),
            },
            "value_floats" => Const {
                dims: vec![a.floats.len()],
                data: Data::F(a.floats.clone()),
            },
            "value_int" => Const::ints(vec![], vec![a.i]),
            "value_ints" => Const::ints(vec![a.ints.len()], a.ints.clone()),
            other => bail!(
                "Constant with attribute `{other}` is not supported (value, value_float(s), value_int(s) are)"
            ),
        };
        self.set(n, 0, Val::C(c))
    }

    fn shape_of(&mut self, n: &NodeProto) -> Result<()> {
        let name = n.input.first().context("missing input 0")?;
        let dims: Vec<usize> = match self.val(name)? {
            Val::C(c) => c.dims.clone(),
            Val::T(d) => d.shape.clone(),
            Val::Input | Val::InputAffine { .. } => self.input_dyn().shape,
            Val::Padded { src, pads, .. } => {
                let mut s = src.shape.clone();
                for (i, p) in pads.iter().enumerate() {
                    s[i + 2] += p.0 + p.1;
                }
                s
            }
            Val::Grouped { shape, .. } => shape.clone(),
        };
        let r = dims.len() as i64;
        let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let start = clampi(Self::attr_i(n, "start", 0));
        let end = clampi(Self::attr_i(n, "end", r));
        let v: Vec<i64> = dims[start..end.max(start)]
            .iter()
            .map(|&d| d as i64)
            .collect();
        self.set(n, 0, Val::C(Const::ints(vec![v.len()], v)))
    }

    /// Constant input `k` of a node being folded, not copied.
    fn konst_ref(&self, n: &NodeProto, k: usize) -> Result<&Const> {
        match n
            .input
            .get(k)
            .filter(|s| !s.is_empty())
            .map(|i| self.vals.get(i))
        {
            Some(Some(Val::C(c))) => Ok(c),
            _ => bail!("missing constant input {k}"),
        }
    }

    /// Refuses a folded constant of `k` values beyond the folding budget.
    fn fold_room(&self, k: usize) -> Result<()> {
        ensure!(
            self.folded.saturating_add(k) <= self.fold_budget,
            "constant folding would make a constant of {k} values ({} folded before, at most {} for a file with these weights); the importer folds shape arithmetic, not tensors this large",
            self.folded,
            self.fold_budget
        );
        Ok(())
    }

    fn fold(&self, n: &NodeProto) -> Result<Const> {
        let x = self.need_konst(n, 0, "data")?;
        // Ops whose output may be larger than their inputs: check before computing it.
        match n.op_type.as_str() {
            "Gather" => {
                let ids = self.konst_ref(n, 1)?;
                let a = fold::axis(Self::attr_i(n, "axis", 0), x.dims.len())?;
                let per = x.len().checked_div(x.dims[a]).unwrap_or(0);
                self.fold_room(per.saturating_mul(ids.len()))?;
            }
            "Concat" => {
                let mut k = 0usize;
                for i in 0..n.input.len() {
                    k = k.saturating_add(self.konst_ref(n, i)?.len());
                }
                self.fold_room(k)?;
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let y = self.konst_ref(n, 1)?;
                let dims = fold::broadcast(&x.dims, &y.dims)?;
                self.fold_room(fold::numel(&dims)?)?;
            }
            "ConstantOfShape" => {
                let dims: Vec<usize> = x
                    .i64s()?
                    .iter()
                    .map(|&d| usize::try_from(d).map_err(|_| anyhow!("negative size {d}")))
                    .collect::<Result<_>>()?;
                self.fold_room(fold::numel(&dims)?)?;
            }
            _ => {}
        }
        Ok(match n.op_type.as_str() {
            "Identity" => x,
            "Cast" => fold::cast(&x, Self::attr_i(n, "to", 1))?,
            "Gather" => fold::gather(
                &x,
                &self.need_konst(n, 1, "indices")?,
                Self::attr_i(n, "axis", 0),
            )?,
            "Unsqueeze" => {
                let axes = self
                    .ints_in_or_attr(n, 1, "axes")?
                    .context("Unsqueeze without axes")?;
                Const {
                    dims: fold::unsqueeze_dims(&x.dims, &axes)?,
                    data: x.data,
                }
            }
            "Squeeze" => {
                let axes = self.ints_in_or_attr(n, 1, "axes")?;
                Const {
                    dims: fold::squeeze_dims(&x.dims, axes.as_deref())?,
                    data: x.data,
                }
            }
            "Flatten" => {
                let a = fold::axis(Self::attr_i(n, "axis", 1), x.dims.len().max(1))?;
                let outer: usize = x.dims[..a.min(x.dims.len())].iter().product();
                let inner: usize = x.dims[a.min(x.dims.len())..].iter().product();
                Const {
                    dims: vec![outer, inner],
                    data: x.data,
                }
            }
            "Concat" => {
                let mut cs = vec![];
                for k in 0..n.input.len() {
                    cs.push(self.need_konst(n, k, "operand")?);
                }
                let refs: Vec<&Const> = cs.iter().collect();
                fold::concat(&refs, Self::attr_i(n, "axis", 0))?
            }
            "Reshape" => {
                let t = self
                    .ints_in_or_attr(n, 1, "shape")?
                    .context("Reshape without a shape")?;
                let dims = fold::reshape_dims(&x.dims, &t, Self::attr_i(n, "allowzero", 0) != 0)?;
                Const { dims, data: x.data }
            }
            "Slice" => {
                let (starts, ends, axes, steps) = self.slice_args(n)?;
                let r =
                    fold::slice_ranges(&x.dims, &starts, &ends, axes.as_deref(), steps.as_deref())?;
                fold::slice(&x, &r)?
            }
            "Transpose" => {
                let perm = self.perm(n, x.dims.len())?;
                fold::transpose(&x, &perm)?
            }
            "ConstantOfShape" => {
                let dims: Vec<usize> = x
                    .i64s()?
                    .iter()
                    .map(|&d| usize::try_from(d).map_err(|_| anyhow!("negative size {d}")))
                    .collect::<Result<_>>()?;
                let k = fold::numel(&dims)?;
                let value = match Self::attr(n, "value").and_then(|a| a.t.as_ref()) {
                    Some(t) => fold::from_proto(t)?,
                    None => Const {
                        dims: vec![1],
                        data: Data::F(vec![0.0]),
                    },
                };
                ensure!(
                    value.len() == 1,
                    "ConstantOfShape value must have one element"
                );
                let data = match value.data {
                    Data::F(v) => Data::F(vec![v[0]; k]),
                    Data::I(v) => Data::I(vec![v[0]; k]),
                };
                Const { dims, data }
            }
            op @ ("Add" | "Sub" | "Mul" | "Div") => {
                fold::binary(op, &x, &self.need_konst(n, 1, "operand")?)?
            }
            op => bail!("cannot evaluate {op} on constants"),
        })
    }

    fn slice_args(&self, n: &NodeProto) -> Result<SliceArgs> {
        if self.opset < 10 {
            return Ok((
                Self::attr_ints(n, "starts").context("Slice without starts")?,
                Self::attr_ints(n, "ends").context("Slice without ends")?,
                Self::attr_ints(n, "axes"),
                None,
            ));
        }
        let get = |k: usize| -> Result<Option<Vec<i64>>> {
            self.konst(n, k)?.map(|c| c.i64s()).transpose()
        };
        Ok((
            get(1)?.context("Slice without starts")?,
            get(2)?.context("Slice without ends")?,
            get(3)?,
            get(4)?,
        ))
    }

    fn perm(&self, n: &NodeProto, rank: usize) -> Result<Vec<usize>> {
        match Self::attr_ints(n, "perm") {
            Some(p) => p
                .iter()
                .map(|&v| usize::try_from(v).map_err(|_| anyhow!("negative axis {v} in perm")))
                .collect(),
            None => Ok((0..rank).rev().collect()),
        }
    }
}

fn names_of(v: &[&proto::ValueInfoProto]) -> String {
    v.iter()
        .map(|i| format!("`{}`", i.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per-sample shape of a graph input (batch 1, or symbolic).
fn input_shape(i: &proto::ValueInfoProto) -> Result<Vec<usize>> {
    let t = i
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .context("has no tensor type")?;
    ensure!(
        t.elem_type == proto::FLOAT,
        "has element type {}; the data input must be float32",
        fold::type_name(t.elem_type)
    );
    let dims = &t
        .shape
        .as_ref()
        .context("has no shape; export with a fixed input size")?
        .dim;
    ensure!(
        (2..=4).contains(&dims.len()),
        "has rank {}; whittle imports (N, C, L), (N, C, H, W) and (N, features) inputs",
        dims.len()
    );
    match (dims[0].dim_value, &dims[0].dim_param) {
        (Some(1), _) | (None, _) | (Some(0), _) => {}
        (Some(b), _) => bail!("has a fixed batch of {b}; export with batch 1 or a dynamic batch"),
    }
    let sample: Vec<usize> = dims[1..]
        .iter()
        .enumerate()
        .map(|(k, d)| match (d.dim_value, &d.dim_param) {
            (Some(v), _) if (1..1 << 24).contains(&v) => Ok(v as usize),
            (_, Some(p)) => bail!(
                "dimension {} is symbolic (`{p}`); export with a fixed input size",
                k + 1
            ),
            (v, _) => bail!("dimension {} has size {v:?}", k + 1),
        })
        .collect::<Result<_>>()?;
    fold::numel(&sample)?;
    Ok(sample)
}
