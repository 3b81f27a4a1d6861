//! The one forward pass over a [`Graph`]: training, evaluation, PIT masks, Fisher pruning masks,
//! post-training quantization, quantization-aware training and per-layer timing all run it,
//! each adding its behaviour through a [`Hook`] (weights rewritten before use, outputs rewritten
//! after a node, timing around a node). A new op's forward is written once, in `apply`.
//!
//! The users: [`crate::Model::forward`] (no hook), [`crate::pit::PitModel`] (time masks on
//! Conv1d weights, channel masks on outputs), [`crate::prune::masked`] (Fisher's parameter and
//! per-sample activation masks), [`crate::quant::QuantModel`] (activation rounding and
//! calibration observers; weights are rounded once beforehand), [`crate::quant::QatModel`]
//! (straight-through weight and activation quantizers), [`StepTimes`] (per-step wall time) and,
//! through [`eval_node`], the per-node latency table of the `calibrate` stage.
//!
//! Fusions (the fast path of training): a batch norm whose only consumer is a ReLU or ReLU6, or
//! a residual sum whose only consumer is a ReLU, runs as one op; a ReLU or ReLU6 that is a
//! convolution's only consumer is applied in the convolution's output pass; in eval mode a batch
//! norm that is a convolution's only consumer is folded into its weights, and a depthwise
//! convolution step whose output only a 1×1 convolution (step) reads runs with it in one kernel
//! (the intermediate stays in cache; bit-identical to the two steps). A squeeze-and-excitation
//! product (`ChannelMul` by an `(N, C)` scale) is one kernel op. A node whose output a hook needs ([`Hook::keep`]) is never fused
//! with its consumer, so a mask or a rounding between a convolution and its ReLU stays exact.

use crate::graph::{Graph, Node, Op};
use crate::ops::{self, Clamp};
use anyhow::{Context, Result, bail, ensure};
use candle_core::Tensor;
use std::collections::HashMap;
use std::ops::Range;

/// Where the interpreter reads a node's tensors (`<node>.<suffix>`) and, in train mode, writes
/// batch-norm running statistics.
pub trait Tensors {
    fn get(&self, name: &str) -> Result<&Tensor>;
    /// Overwrite buffer `name` (train-mode running statistics).
    fn set(&self, name: &str, _value: &Tensor) -> Result<()> {
        bail!("tensor {name} is read-only here (batch norm in train mode needs a model)")
    }
}

impl Tensors for HashMap<String, Tensor> {
    fn get(&self, name: &str) -> Result<&Tensor> {
        HashMap::get(self, name).with_context(|| format!("no tensor named {name}"))
    }
}

/// What a caller adds to the forward pass. Every method has a no-op default.
pub trait Hook {
    /// Rewrites the network input (value 0), e.g. rounds it.
    fn input(&mut self, x: Tensor) -> Result<Tensor> {
        Ok(x)
    }
    /// Rewrites trainable tensor `suffix` (`weight`, `bias`) of node `node` before use: PIT time
    /// masks, quantization rounding, pruning masks. Running statistics are not passed here.
    fn weight(&mut self, _node: usize, _suffix: &str, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    /// Rewrites the output of node `node` (value `node + 1`): channel masks, activation
    /// rounding. Called once per computed value, for the last node of a fused step only.
    fn output(&mut self, _node: usize, y: Tensor) -> Result<Tensor> {
        Ok(y)
    }
    /// True when the hook needs node `node`'s own output (it rewrites or reads it in
    /// [`Hook::output`]): the node is then not fused with its consumer.
    fn keep(&self, _node: usize) -> bool {
        false
    }
    /// Whether eval mode may fold a batch norm into the convolution before it (the same
    /// function, different rounding).
    fn fold_eval_bn(&self) -> bool {
        true
    }
    /// Called before the step computing `nodes` (one node, or a fused run of them).
    fn begin(&mut self, _nodes: Range<usize>) {}
    /// Called after the step computing `nodes`.
    fn end(&mut self, _nodes: Range<usize>) {}
}

/// The plain network.
pub struct NoHook;
impl Hook for NoHook {}

/// One step of the forward pass: node `node`, plus the batch norm folded into it (a conv in
/// eval mode) and the ReLU (or ReLU6: conv and batch norm only) applied in its output pass
/// (conv, batch norm or sum); in eval mode a depthwise convolution step may carry `then`, the
/// 1×1 convolution step (node, folded batch norm, clamp) that alone reads its output, run in
/// the same kernel ([`whittle_kernels::depthwise_pointwise`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub node: usize,
    pub bn: Option<usize>,
    pub relu: Option<usize>,
    pub then: Option<(usize, Option<usize>, Option<usize>)>,
}

impl Step {
    /// A step of node `node` alone.
    pub fn single(node: usize) -> Self {
        Self {
            node,
            bn: None,
            relu: None,
            then: None,
        }
    }

    /// The nodes this step computes.
    pub fn nodes(&self) -> Range<usize> {
        let last = |(n, bn, relu): (usize, Option<usize>, Option<usize>)| relu.or(bn).unwrap_or(n);
        let end = match self.then {
            Some(t) => last(t),
            None => last((self.node, self.bn, self.relu)),
        };
        self.node..end + 1
    }
}

/// A 2-d depthwise convolution with symmetric padding (the first half of a fused pair).
fn is_depthwise2d(op: &Op) -> bool {
    matches!(op, Op::Conv { c_in, c_out, kernel, padding, groups, .. }
        if kernel.len() == 2 && *groups > 1 && groups == c_in && groups == c_out
            && padding.iter().all(|(lo, hi)| lo == hi))
}

/// A unit-stride unpadded ungrouped 2-d 1×1 convolution over `c` channels.
fn is_pointwise2d(op: &Op, c: usize) -> bool {
    matches!(op, Op::Conv { c_in, kernel, stride, padding, dilation, groups: 1, .. }
        if *c_in == c && kernel == &[1, 1] && stride == &[1, 1] && dilation == &[1, 1]
            && padding == &[(0, 0), (0, 0)])
}

/// The steps of a forward pass over `graph` in `train` or eval mode under `hook`'s constraints.
pub fn steps(graph: &Graph, train: bool, hook: &dyn Hook) -> Vec<Step> {
    let nodes = &graph.nodes;
    let uses = graph.value_uses();
    // Node j consumes node i's output alone, and the hook does not need node i's output.
    let only_next = |i: usize, j: usize| {
        !hook.keep(i) && uses[i + 1] == 1 && nodes.get(j).is_some_and(|n| n.inputs[0] == i + 1)
    };
    let is_relu = |j: usize| matches!(nodes[j].op, Op::Relu);
    let is_clamp = |j: usize| matches!(nodes[j].op, Op::Relu | Op::Relu6);
    // The batch norm folded into conv `i` and the clamp in its output pass.
    let conv_step = |i: usize| -> Step {
        let mut s = Step::single(i);
        let mut last = i;
        // Training keeps batch norms (batch statistics): only a direct ReLU joins.
        if !train
            && hook.fold_eval_bn()
            && only_next(i, i + 1)
            && matches!(nodes[i + 1].op, Op::BatchNorm { .. })
        {
            s.bn = Some(i + 1);
            last = i + 1;
        }
        if only_next(last, last + 1) && is_clamp(last + 1) {
            s.relu = Some(last + 1);
        }
        s
    };
    let mut out = vec![];
    let mut i = 0;
    while i < nodes.len() {
        let mut s = Step::single(i);
        match &nodes[i].op {
            Op::Conv { c_out, .. } => {
                s = conv_step(i);
                let last = s.nodes().end - 1;
                if !train
                    && is_depthwise2d(&nodes[i].op)
                    && only_next(last, last + 1)
                    && is_pointwise2d(&nodes[last + 1].op, *c_out)
                {
                    let t = conv_step(last + 1);
                    s.then = Some((t.node, t.bn, t.relu));
                }
            }
            Op::BatchNorm { .. } if only_next(i, i + 1) && is_clamp(i + 1) => {
                s.relu = Some(i + 1);
            }
            Op::Add if only_next(i, i + 1) && is_relu(i + 1) => {
                s.relu = Some(i + 1);
            }
            _ => {}
        }
        i = s.nodes().end;
        out.push(s);
    }
    out
}

/// Run `graph` on a batch `x` (N, input_shape...) with tensors from `t`. Train mode: batch
/// norms use batch statistics and update their running statistics (momentum, unbiased
/// variance, like PyTorch).
pub fn forward(
    graph: &Graph,
    t: &dyn Tensors,
    x: &Tensor,
    train: bool,
    hook: &mut dyn Hook,
) -> Result<Tensor> {
    let want = &graph.input_shape;
    ensure!(
        x.rank() == want.len() + 1 && &x.dims()[1..] == want.as_slice(),
        "model input: expected (N, {want:?}), got {:?}",
        x.dims()
    );
    ensure!(!graph.nodes.is_empty(), "graph has no nodes");
    let has_dropout = graph
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::Dropout { .. }));
    let seed = if train && has_dropout {
        dropout_seed(graph, t, x)?
    } else {
        0
    };
    // A plain (non-Var) input: the first layer then skips its input gradient.
    let mut vals: Vec<Option<Tensor>> = vec![None; graph.nodes.len() + 1];
    vals[0] = Some(hook.input(x.detach())?);
    for step in steps(graph, train, hook) {
        let node = &graph.nodes[step.node];
        let inputs: Vec<&Tensor> = node
            .inputs
            .iter()
            .map(|&v| vals[v].as_ref().context("value used before it is computed"))
            .collect::<Result<_>>()?;
        hook.begin(step.nodes());
        let mut p = |i: usize, s: &str| -> Result<Tensor> {
            let name = format!("{}.{s}", graph.nodes[i].name);
            let v = t.get(&name)?;
            match s {
                "weight" | "bias" => hook.weight(i, s, v),
                _ => Ok(v.clone()),
            }
        };
        let clamp = |relu: Option<usize>| match relu.map(|j| &graph.nodes[j].op) {
            Some(Op::Relu6) => Clamp::Relu6,
            Some(_) => Clamp::Relu,
            None => Clamp::None,
        };
        let y = if let Some((pw, pw_bn, pw_relu)) = step.then {
            let dw = conv_params(graph, step.node, step.bn, &mut p)?;
            let pwp = conv_params(graph, pw, pw_bn, &mut p)?;
            depthwise_pointwise(
                graph,
                inputs[0],
                (step.node, &dw, clamp(step.relu)),
                (&pwp, clamp(pw_relu)),
            )
            .with_context(|| format!("nodes {} + {}", node.name, graph.nodes[pw].name))?
        } else {
            let folded = match step.bn {
                Some(j) => Some(fold_bn_into(graph, j, step.node, &mut p)?),
                None => None,
            };
            let ctx = Ctx {
                train,
                seed,
                clamp: clamp(step.relu),
                tensors: t,
            };
            apply(node, &inputs, &mut |s| p(step.node, s), folded, &ctx)
                .with_context(|| format!("node {}", node.name))?
        };
        let last = step.nodes().end - 1;
        let y = hook.output(last, y)?;
        hook.end(step.nodes());
        vals[last + 1] = Some(y);
    }
    Ok(vals.pop().flatten().expect("the last node is computed"))
}

/// Weight and optional bias of conv node `conv`, with the eval-mode batch norm `bn` folded in.
fn conv_params(
    graph: &Graph,
    conv: usize,
    bn: Option<usize>,
    p: &mut dyn FnMut(usize, &str) -> Result<Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    Ok(match bn {
        Some(j) => {
            let (w, b) = fold_bn_into(graph, j, conv, p)?;
            (w, Some(b))
        }
        None => {
            let bias = matches!(graph.nodes[conv].op, Op::Conv { bias: true, .. });
            (
                p(conv, "weight")?,
                if bias { Some(p(conv, "bias")?) } else { None },
            )
        }
    })
}

/// A depthwise convolution (node `dw`, planned by [`steps`]) and the 1×1 convolution after it
/// in one kernel, each with its (folded) weight, bias and clamp.
fn depthwise_pointwise(
    graph: &Graph,
    x: &Tensor,
    (dw, (dww, dwb), dc): (usize, &(Tensor, Option<Tensor>), Clamp),
    ((pww, pwb), pc): (&(Tensor, Option<Tensor>), Clamp),
) -> Result<Tensor> {
    let Op::Conv {
        stride,
        padding,
        dilation,
        groups,
        ..
    } = &graph.nodes[dw].op
    else {
        bail!("{} is not a convolution", graph.nodes[dw].name);
    };
    let cfg = ops::Conv2dCfg {
        stride: (stride[0], stride[1]),
        padding: (padding[0].0, padding[1].0),
        dilation: (dilation[0], dilation[1]),
        groups: *groups,
    };
    let dw = ops::ConvPart {
        weight: dww,
        bias: dwb.as_ref(),
        clamp: dc,
    };
    let pw = ops::ConvPart {
        weight: pww,
        bias: pwb.as_ref(),
        clamp: pc,
    };
    Ok(ops::depthwise_pointwise(x, dw, &cfg, pw)?)
}

/// Eval-mode output of one node alone on `inputs` (no fusion), reading its tensors from `t`:
/// the per-node latency table times this.
pub fn eval_node(node: &Node, inputs: &[&Tensor], t: &dyn Tensors) -> Result<Tensor> {
    let ctx = Ctx {
        train: false,
        seed: 0,
        clamp: Clamp::None,
        tensors: t,
    };
    let mut p = |s: &str| Ok(t.get(&format!("{}.{s}", node.name))?.clone());
    apply(node, inputs, &mut p, None, &ctx).with_context(|| format!("node {}", node.name))
}

/// How [`apply`] runs a node.
struct Ctx<'a> {
    train: bool,
    /// Dropout seed of this pass (train mode).
    seed: u64,
    /// The ReLU or ReLU6 applied in the same op.
    clamp: Clamp,
    tensors: &'a dyn Tensors,
}

/// The operation of `node` on `inputs`; `p` gives its tensors by suffix; `folded` is the
/// conv weight and bias with an eval-mode batch norm already folded in.
fn apply(
    node: &Node,
    inputs: &[&Tensor],
    p: &mut dyn FnMut(&str) -> Result<Tensor>,
    folded: Option<(Tensor, Tensor)>,
    ctx: &Ctx,
) -> Result<Tensor> {
    let a = inputs[0];
    Ok(match &node.op {
        Op::Conv {
            kernel,
            stride,
            padding,
            dilation,
            groups,
            bias,
            ..
        } => {
            let (w, b) = match folded {
                Some((w, b)) => (w, Some(b)),
                None => (p("weight")?, if *bias { Some(p("bias")?) } else { None }),
            };
            conv_act(
                a,
                &w,
                b.as_ref(),
                kernel.len(),
                (stride, padding, dilation),
                *groups,
                ctx.clamp,
            )?
        }
        Op::BatchNorm { eps, momentum, .. } => {
            let (g, bt) = (p("weight")?, p("bias")?);
            batch_norm(node, a, &g, &bt, (*eps, *momentum), ctx)?
        }
        Op::Relu => ops::relu(a)?,
        Op::Add if ctx.clamp == Clamp::Relu => ops::add_relu(a, inputs[1])?,
        Op::Add => (a + inputs[1])?,
        Op::GlobalAvgPool => ops::global_avg_pool(a)?,
        Op::Linear { bias, .. } => {
            let y = a.matmul(&p("weight")?.t()?)?;
            if *bias {
                y.broadcast_add(&p("bias")?)?
            } else {
                y
            }
        }
        Op::Relu6 => ops::activation(a, ops::Act::Relu6)?,
        Op::Sigmoid => ops::activation(a, ops::Act::Sigmoid)?,
        Op::HardSigmoid => ops::activation(a, ops::Act::HardSigmoid)?,
        Op::HardSwish => ops::activation(a, ops::Act::HardSwish)?,
        Op::ChannelMul if a.rank() >= 2 && inputs[1].dims() == &a.dims()[..2] => {
            ops::channel_mul(a, inputs[1])?
        }
        Op::ChannelMul => {
            let s = inputs[1];
            let mut shape = s.dims().to_vec();
            shape.resize(a.rank(), 1);
            a.broadcast_mul(&s.reshape(shape)?)?
        }
        Op::Concat => Tensor::cat(inputs, 1)?,
        Op::Narrow { start, len } => a.narrow(1, *start, *len)?.contiguous()?,
        Op::ChannelShuffle { groups } => {
            let dims = a.dims().to_vec();
            let (n, c) = (dims[0], dims[1]);
            let rest: usize = dims[2..].iter().product();
            a.reshape((n, *groups, c / groups, rest))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape(dims)?
        }
        Op::MaxPool {
            kernel,
            stride,
            padding,
        } => pool(a, ops::PoolKind::Max, kernel, stride, padding)?,
        Op::AvgPool {
            kernel,
            stride,
            padding,
        } => pool(a, ops::PoolKind::Avg, kernel, stride, padding)?,
        Op::Dropout { p } if ctx.train && *p > 0.0 => {
            let mask = dropout_mask(a.dims(), *p, ctx.seed ^ node_salt(&node.name))?;
            a.mul(&mask)?
        }
        Op::Dropout { .. } => a.clone(),
        Op::Flatten => a.flatten_from(1)?,
    })
}

/// 1-d or 2-d pooling through the kernels' 2-d op (1-d as height 1).
fn pool(
    a: &Tensor,
    kind: ops::PoolKind,
    kernel: &[usize],
    stride: &[usize],
    padding: &[(usize, usize)],
) -> Result<Tensor> {
    Ok(if kernel.len() == 1 {
        let y = ops::pool2d(
            &a.unsqueeze(2)?,
            &ops::Pool2dCfg {
                kind,
                kernel: (1, kernel[0]),
                stride: (1, stride[0]),
                padding: ((0, 0), padding[0]),
            },
        )?;
        y.squeeze(2)?
    } else {
        ops::pool2d(
            a,
            &ops::Pool2dCfg {
                kind,
                kernel: (kernel[0], kernel[1]),
                stride: (stride[0], stride[1]),
                padding: (padding[0], padding[1]),
            },
        )?
    })
}

/// 64-bit FNV-1a of `bytes`, continuing from `h`.
fn fnv(mut h: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

const FNV_START: u64 = 0xcbf29ce484222325;

/// A per-node constant mixed into the dropout seed (so two dropout nodes draw differently).
fn node_salt(name: &str) -> u64 {
    fnv(FNV_START, name.bytes())
}

/// The dropout seed of one training forward pass: a hash of the input batch and of the first
/// trainable tensor. Both are restored bit for bit on resume, and the weights change every
/// step, so the masks are reproducible (same file, same seed → same bits) yet differ from step
/// to step, without a counter to checkpoint.
fn dropout_seed(graph: &Graph, t: &dyn Tensors, x: &Tensor) -> Result<u64> {
    let bits = |t: &Tensor| -> Result<Vec<u8>> {
        Ok(t.flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes())
            .collect())
    };
    let mut h = fnv(FNV_START, bits(x)?);
    if let Some(first) = graph.param_specs().first() {
        h = fnv(h, bits(t.get(&first.name)?)?);
    }
    Ok(h)
}

/// A keep mask scaled by 1/(1 − p): each element is 0 with probability p (ChaCha8 from `seed`).
fn dropout_mask(dims: &[usize], p: f64, seed: u64) -> Result<Tensor> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let keep = (1.0 / (1.0 - p)) as f32;
    let v: Vec<f32> = (0..n)
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
        .collect();
    Ok(Tensor::from_vec(v, dims, &candle_core::Device::Cpu)?)
}

/// Batch norm of `a` with scale `g` and shift `bt`: train mode normalises with the batch
/// statistics and updates the node's running statistics; eval mode applies the running ones.
fn batch_norm(
    node: &Node,
    a: &Tensor,
    g: &Tensor,
    bt: &Tensor,
    (eps, m): (f64, f64),
    ctx: &Ctx,
) -> Result<Tensor> {
    let rm_name = format!("{}.running_mean", node.name);
    let rv_name = format!("{}.running_var", node.name);
    let rm = ctx.tensors.get(&rm_name)?;
    let rv = ctx.tensors.get(&rv_name)?;
    if !ctx.train {
        let scale = (g / (rv + eps)?.sqrt()?)?;
        let shift = (bt - (rm * &scale)?)?;
        return Ok(ops::channel_affine(a, &scale, &shift, ctx.clamp)?);
    }
    let (y, mean, var) = match ctx.clamp {
        Clamp::None => ops::batch_norm_train(a, g, bt, eps)?,
        Clamp::Relu => ops::batch_norm_relu_train(a, g, bt, eps)?,
        c => ops::batch_norm_act_train(a, g, bt, eps, c)?,
    };
    let n = (a.elem_count() / a.dim(1)?) as f64;
    let unbiased = (var.detach() * (n / (n - 1.0).max(1.0)))?;
    let new_rm = ((rm * (1.0 - m))? + (mean.detach() * m)?)?;
    let new_rv = ((rv * (1.0 - m))? + (unbiased * m)?)?;
    ctx.tensors.set(&rm_name, &new_rm)?;
    ctx.tensors.set(&rv_name, &new_rv)?;
    Ok(y)
}

/// Weight and bias of conv/linear node `conv` with the eval-mode batch norm node `bn` folded
/// in, `p(node, suffix)` giving the tensors: `w·s`, `(b − mean)·s + β` with
/// `s = γ / √(var + ε)`.
pub(crate) fn fold_bn_into(
    graph: &Graph,
    bn: usize,
    conv: usize,
    p: &mut dyn FnMut(usize, &str) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    let (bn_i, conv_i) = (bn, conv);
    let (bn, conv) = (&graph.nodes[bn], &graph.nodes[conv]);
    let Op::BatchNorm { eps, .. } = bn.op else {
        bail!("{} is not a batch norm", bn.name);
    };
    let has_bias = match conv.op {
        Op::Conv { bias, .. } | Op::Linear { bias, .. } => bias,
        _ => bail!("{} is not a conv or linear layer", conv.name),
    };
    let (w, b) = (
        p(conv_i, "weight")?,
        if has_bias {
            Some(p(conv_i, "bias")?)
        } else {
            None
        },
    );
    let (g, bt, rm, rv) = (
        p(bn_i, "weight")?,
        p(bn_i, "bias")?,
        p(bn_i, "running_mean")?,
        p(bn_i, "running_var")?,
    );
    let scale = (g / (rv + eps)?.sqrt()?)?;
    let mut shape = vec![1usize; w.rank()];
    shape[0] = scale.dim(0)?;
    let w2 = w.broadcast_mul(&scale.reshape(shape)?)?;
    let b0 = match b {
        Some(b) => b,
        None => scale.zeros_like()?,
    };
    let b2 = (((b0 - rm)? * &scale)? + bt)?;
    Ok((w2, b2))
}

/// Stride, (low, high) padding and dilation per spatial axis.
type ConvGeom<'a> = (&'a [usize], &'a [(usize, usize)], &'a [usize]);

/// A graph convolution through `ops`, padding explicitly when low ≠ high, with the ReLU or
/// ReLU6 `relu` applied in the convolution's output pass.
fn conv_act(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    nd: usize,
    (stride, padding, dilation): ConvGeom,
    groups: usize,
    relu: Clamp,
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

/// Wall time of every step of a forward pass (a fused run of nodes is one step), for per-layer
/// timing of a whole network: `times[k] = (nodes of step k, seconds)`, in execution order.
#[derive(Default)]
pub struct StepTimes {
    pub times: Vec<(Range<usize>, f64)>,
    started: Option<std::time::Instant>,
}

impl Hook for StepTimes {
    fn begin(&mut self, _nodes: Range<usize>) {
        self.started = Some(std::time::Instant::now());
    }
    fn end(&mut self, nodes: Range<usize>) {
        if let Some(t) = self.started.take() {
            self.times.push((nodes, t.elapsed().as_secs_f64()));
        }
    }
}
