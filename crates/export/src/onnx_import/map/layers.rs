//! The layers of [`super::Importer`]: convolution (a 1×1 conv of a pooled vector is a linear
//! layer; a zero Pad before it merges into its padding), batch norm, activations and Clip,
//! Add of data (residual), Mul of data (hard swish, channel multiply; constants are
//! [`super::affine`]'s), global /
//! average / max pooling, Gemm / MatMul and the final Softmax (dropped).

use super::*;

impl Importer<'_> {
    pub(super) fn conv(&mut self, n: &NodeProto) -> Result<()> {
        let in0 = n.input.first().context("missing input 0")?.clone();
        let (x, extra) = match self.val(&in0)?.clone() {
            Val::Padded { src, pads, .. } => (src, Some(pads)),
            _ => (self.data(n, 0)?, None),
        };
        let w = self.take_konst(n, 1, "weight")?;
        let b = self.konst(n, 2)?;
        let wd = w.dims.clone();
        ensure!(
            wd.len() == 3 || wd.len() == 4,
            "weight of shape {wd:?}: only 1-d and 2-d convolutions are imported"
        );
        let nd = wd.len() - 2;
        ensure!(
            x.shape.len() == nd + 2,
            "a {nd}-d convolution needs a (N, C, {}) input, got shape {:?}",
            if nd == 1 { "L" } else { "H, W" },
            x.shape
        );
        let group = Self::attr_i(n, "group", 1);
        ensure!(group >= 1, "group {group} must be ≥ 1");
        let group = group as usize;
        let (cout, cin_g, k) = (wd[0], wd[1], wd[2..].to_vec());
        let c = x.shape[1];
        ensure!(
            cin_g.checked_mul(group) == Some(c),
            "weight of shape {wd:?} with {group} group(s) expects {} input channels, the input has {c} channels",
            cin_g as u128 * group as u128
        );
        ensure!(
            cout > 0 && cout % group == 0,
            "{cout} output channels are not divisible into {group} groups"
        );
        if let Some(ks) = Self::attr_ints(n, "kernel_shape") {
            ensure!(
                ks.iter()
                    .map(|&v| v as i128)
                    .eq(k.iter().map(|&v| v as i128)),
                "kernel_shape {ks:?} differs from the weight's kernel {k:?}"
            );
        }
        let stride = Self::sizes(n, "strides", nd)?;
        let dil = Self::sizes(n, "dilations", nd)?;
        let spatial = x.shape[2..].to_vec();
        let mut pads = Self::pads(n, &spatial, &k, &stride, &dil)?;
        if let Some(e) = extra {
            for (p, q) in pads.iter_mut().zip(e) {
                p.0 += q.0;
                p.1 += q.1;
            }
        }
        let bias = match b {
            Some(b) => {
                ensure!(
                    b.len() == cout,
                    "bias has {} values for {cout} output channels",
                    b.len()
                );
                Some(b.f32s())
            }
            None => None,
        };
        let weight = Tensor32::new(wd.clone(), w.into_f32s())?;
        let flat_in = vectorish(&x.shape) && pads.iter().all(|p| *p == (0, 0));
        if flat_in && k.iter().all(|&v| v == 1) && group == 1 {
            // A 1×1 conv of a pooled vector (squeeze-and-excitation) is a linear layer.
            let input = self.vector(&x)?;
            let weight = Tensor32::new(vec![cout, c], weight.data)?;
            let mut shape = vec![1, cout];
            shape.extend(vec![1; nd]);
            return self.emit(
                n,
                |output| Layer::Linear {
                    input,
                    output,
                    weight,
                    bias,
                },
                vec![1, cout],
                shape,
            );
        }
        let input = self.plain(&x)?;
        let mut out = vec![1, cout];
        for i in 0..nd {
            out.push(conv_out_len(spatial[i], k[i], stride[i], pads[i], dil[i]).with_context(|| {
                format!(
                    "kernel {k:?} (dilation {dil:?}, padding {pads:?}) is larger than the input {spatial:?}"
                )
            })?);
        }
        self.emit(
            n,
            |output| Layer::Conv {
                input,
                output,
                weight,
                bias,
                stride,
                padding: pads,
                dilation: dil,
                groups: group,
            },
            out.clone(),
            out,
        )
    }

    /// `strides` / `dilations`: one size ≥ 1 per spatial axis (default 1).
    pub(super) fn sizes(n: &NodeProto, name: &str, nd: usize) -> Result<Vec<usize>> {
        match Self::attr_ints(n, name) {
            None => Ok(vec![1; nd]),
            Some(v) => {
                ensure!(
                    v.len() == nd && v.iter().all(|&s| (1..1 << 20).contains(&s)),
                    "`{name}` {v:?} must have {nd} entries ≥ 1"
                );
                Ok(v.iter().map(|&s| s as usize).collect())
            }
        }
    }

    /// Padding (begin, end) per spatial axis from `pads` or `auto_pad`.
    pub(super) fn pads(
        n: &NodeProto,
        spatial: &[usize],
        k: &[usize],
        stride: &[usize],
        dil: &[usize],
    ) -> Result<Vec<(usize, usize)>> {
        let nd = spatial.len();
        let auto = Self::attr_s(n, "auto_pad");
        match auto.as_str() {
            "" | "NOTSET" => match Self::attr_ints(n, "pads") {
                None => Ok(vec![(0, 0); nd]),
                Some(p) => {
                    ensure!(
                        p.len() == 2 * nd && p.iter().all(|&v| (0..1 << 20).contains(&v)),
                        "`pads` {p:?} must have {} entries ≥ 0",
                        2 * nd
                    );
                    Ok((0..nd)
                        .map(|i| (p[i] as usize, p[i + nd] as usize))
                        .collect())
                }
            },
            "VALID" => Ok(vec![(0, 0); nd]),
            "SAME_UPPER" | "SAME_LOWER" => Ok((0..nd)
                .map(|i| {
                    let out = spatial[i].div_ceil(stride[i]);
                    let span = dil[i] * (k[i].max(1) - 1) + 1;
                    let total =
                        ((out.saturating_sub(1)) * stride[i] + span).saturating_sub(spatial[i]);
                    let small = total / 2;
                    if auto == "SAME_UPPER" {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    }
                })
                .collect()),
            other => bail!("auto_pad `{other}` is not an ONNX value"),
        }
    }

    pub(super) fn batch_norm(&mut self, n: &NodeProto) -> Result<()> {
        ensure!(
            Self::attr_i(n, "training_mode", 0) == 0,
            "BatchNormalization in training mode; export the network in eval mode"
        );
        for extra in n.output.iter().skip(1).filter(|o| !o.is_empty()) {
            ensure!(
                self.uses.get(extra).copied().unwrap_or(0) == 0,
                "the running statistics output `{extra}` is used; only inference graphs are imported"
            );
        }
        let x = self.data(n, 0)?;
        ensure!(
            x.shape.len() >= 2,
            "batch norm of a tensor of shape {:?}",
            x.shape
        );
        let c = x.shape[1];
        let mut v = vec![];
        for (k, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")] {
            let t = self.need_konst(n, k, what)?;
            ensure!(
                t.len() == c,
                "{what} has {} values for {c} channels",
                t.len()
            );
            v.push(t.f32s());
        }
        let eps = Self::attr_f(n, "epsilon", 1e-5);
        ensure!(eps.is_finite() && eps >= 0.0, "epsilon {eps} must be ≥ 0");
        let var = v.pop().expect("4");
        let mean = v.pop().expect("3");
        let beta = v.pop().expect("2");
        let gamma = v.pop().expect("1");
        let (net_shape, shape) = (x.net_shape.clone(), x.shape.clone());
        let input = x.net;
        self.emit(
            n,
            |output| Layer::BatchNorm {
                input,
                output,
                gamma,
                beta,
                mean,
                var,
                eps,
            },
            net_shape,
            shape,
        )
    }

    pub(super) fn pointwise(&mut self, n: &NodeProto, act: Option<Activation>) -> Result<()> {
        let x = self.data(n, 0)?;
        let (net_shape, shape) = (x.net_shape.clone(), x.shape.clone());
        let input = x.net;
        self.emit(
            n,
            |output| match act {
                None => Layer::Relu { input, output },
                Some(act) => Layer::Activation { act, input, output },
            },
            net_shape,
            shape,
        )
    }

    pub(super) fn clip(&mut self, n: &NodeProto) -> Result<()> {
        let (lo, hi) = if self.opset < 11 {
            (
                Self::attr(n, "min").map_or(f32::NEG_INFINITY, |a| a.f),
                Self::attr(n, "max").map_or(f32::INFINITY, |a| a.f),
            )
        } else {
            (
                self.konst(n, 1)?
                    .map_or(Ok(f32::NEG_INFINITY), |c| c.scalar_f32())?,
                self.konst(n, 2)?
                    .map_or(Ok(f32::INFINITY), |c| c.scalar_f32())?,
            )
        };
        let hi_inf = hi >= f32::MAX;
        if lo == 0.0 && (hi - 6.0).abs() < 1e-6 {
            self.pointwise(n, Some(Activation::Relu6))
        } else if lo == 0.0 && hi_inf {
            self.pointwise(n, None)
        } else {
            bail!(
                "Clip(min = {lo}, max = {hi}): only [0, 6] (ReLU6) and [0, ∞) (ReLU) map to the graph IR"
            )
        }
    }

    /// Add of two data tensors (constants: [`Self::const_binary`]).
    pub(super) fn add(&mut self, n: &NodeProto) -> Result<()> {
        let (a, b) = (self.data(n, 0)?, self.data(n, 1)?);
        ensure!(
            a.shape == b.shape,
            "Add of shapes {:?} and {:?}: only adds of equal shapes (residual connections) are imported",
            a.shape,
            b.shape
        );
        let (ia, ib, net_shape) =
            if vectorish(&a.shape) && (a.net_shape.len() == 2 || b.net_shape.len() == 2) {
                (self.vector(&a)?, self.vector(&b)?, vec![1, a.shape[1]])
            } else {
                let ns = a.net_shape.clone();
                ensure!(
                    a.net_shape == b.net_shape,
                    "Add of tensors held as {:?} and {:?}",
                    a.net_shape,
                    b.net_shape
                );
                (a.net.clone(), b.net.clone(), ns)
            };
        self.emit(
            n,
            |output| Layer::Add {
                a: ia,
                b: ib,
                output,
            },
            net_shape,
            a.shape,
        )
    }

    /// A Softmax / LogSoftmax over the classes that computes the graph output: dropped, the
    /// network gives the logits before it (same argmax); noted in `final_softmax`.
    pub(super) fn final_softmax(&mut self, n: &NodeProto) -> Result<()> {
        let op = n.op_type.clone();
        let out = n.output.first().context("has no output")?.clone();
        let d = self.data(n, 0)?;
        let default = if self.opset < 13 { 1 } else { -1 };
        let a = fold::axis(Self::attr_i(n, "axis", default), d.shape.len())?;
        ensure!(
            self.outputs.contains(&out) && self.uses.get(&out).copied().unwrap_or(0) == 1,
            "{op} inside the network: whittle networks give logits, so only a final {op} (computing the graph output, which the import drops) is imported"
        );
        ensure!(
            vectorish(&d.shape) && a == 1,
            "{op} over axis {a} of a tensor of shape {:?}: only a final {op} over the classes of a (N, classes) output is imported (and dropped)",
            d.shape
        );
        self.final_softmax = Some(op);
        self.set(n, 0, Val::T(d))
    }

    /// Mul of two data tensors (constants: [`Self::const_binary`]).
    pub(super) fn mul(&mut self, n: &NodeProto) -> Result<()> {
        let (a, b) = (self.data(n, 0)?, self.data(n, 1)?);
        if a.shape == b.shape {
            // x · HardSigmoid(x) = hard swish.
            for (x, g, gk) in [(&a, &b, 1), (&b, &a, 0)] {
                let gname = &n.input[gk];
                let Some(&li) = self.direct.get(gname) else {
                    continue;
                };
                let is_hs = matches!(
                    &self.layers[li],
                    Layer::Activation { act: Activation::HardSigmoid, input, .. } if *input == x.net
                );
                if is_hs && self.uses.get(gname).copied().unwrap_or(0) == 1 {
                    let out = n.output.first().context("has no output")?.clone();
                    self.names.remove(&g.net);
                    let net = self.fresh(&out);
                    self.producer.remove(&g.net);
                    self.layers[li] = Layer::Activation {
                        act: Activation::HardSwish,
                        input: x.net.clone(),
                        output: net.clone(),
                    };
                    self.producer.insert(net.clone(), li);
                    self.direct.insert(out, li);
                    let d = Dyn {
                        net,
                        net_shape: x.net_shape.clone(),
                        shape: x.shape.clone(),
                    };
                    return self.set(n, 0, Val::T(d));
                }
            }
        }
        // x (N, C, …) · s (N, C, 1, …): a channel multiply.
        for (x, s) in [(&a, &b), (&b, &a)] {
            if x.shape.len() >= 3
                && !vectorish(&x.shape)
                && s.shape.len() == x.shape.len()
                && vectorish(&s.shape)
                && s.shape[1] == x.shape[1]
            {
                let xi = self.plain(x)?;
                let si = self.vector(s)?;
                let shape = x.shape.clone();
                return self.emit(
                    n,
                    |output| Layer::ChannelMul {
                        x: xi,
                        s: si,
                        output,
                    },
                    shape.clone(),
                    shape,
                );
            }
        }
        bail!(
            "Mul of shapes {:?} and {:?}: only x · HardSigmoid(x) (hard swish) and x · s with s of shape (N, C, 1, …) (squeeze-and-excitation) are imported",
            a.shape,
            b.shape
        )
    }

    pub(super) fn global_pool(&mut self, n: &NodeProto, d: Dyn, keep: bool) -> Result<()> {
        ensure!(
            d.shape.len() >= 3,
            "global pooling of a tensor of shape {:?}",
            d.shape
        );
        let c = d.shape[1];
        let mut shape = vec![1, c];
        if keep {
            shape.extend(vec![1; d.shape.len() - 2]);
        }
        if vectorish(&d.net_shape) {
            return self.set(
                n,
                0,
                Val::T(Dyn {
                    net: d.net,
                    net_shape: d.net_shape,
                    shape,
                }),
            );
        }
        let mut net_shape = vec![1, c];
        net_shape.extend(vec![1; d.net_shape.len() - 2]);
        let input = d.net;
        self.emit(
            n,
            |output| Layer::GlobalAvgPool { input, output },
            net_shape,
            shape,
        )
    }

    pub(super) fn reduce_mean(&mut self, n: &NodeProto) -> Result<()> {
        let d = self.data(n, 0)?;
        let r = d.shape.len();
        let axes = if self.opset >= 18 {
            self.konst(n, 1)?.map(|c| c.i64s()).transpose()?
        } else {
            Self::attr_ints(n, "axes")
        };
        let mut ax: Vec<usize> = match axes {
            Some(a) if !a.is_empty() => {
                a.iter().map(|&v| fold::axis(v, r)).collect::<Result<_>>()?
            }
            _ => (0..r).collect(),
        };
        ax.sort_unstable();
        ax.dedup();
        ensure!(
            r >= 3 && ax == (2..r).collect::<Vec<_>>(),
            "ReduceMean over axes {ax:?} of a tensor of shape {:?}: only the mean over all spatial axes (a global average pool) is imported",
            d.shape
        );
        self.global_pool(n, d, Self::attr_i(n, "keepdims", 1) != 0)
    }

    pub(super) fn pool(&mut self, n: &NodeProto) -> Result<()> {
        let max = n.op_type == "MaxPool";
        let in0 = n.input.first().context("missing input 0")?.clone();
        let (x, extra) = match self.val(&in0)?.clone() {
            Val::Padded { src, pads, node } => {
                ensure!(
                    !max,
                    "Pad `{node}` (zeros) before a MaxPool is not a max-pool padding; not imported"
                );
                (src, Some(pads))
            }
            _ => (self.data(n, 0)?, None),
        };
        for extra in n.output.iter().skip(1).filter(|o| !o.is_empty()) {
            ensure!(
                self.uses.get(extra).copied().unwrap_or(0) == 0,
                "the MaxPool indices `{extra}` are used; not imported"
            );
        }
        let k: Vec<usize> = Self::attr_ints(n, "kernel_shape")
            .context("pooling without kernel_shape")?
            .iter()
            .map(|&v| {
                usize::try_from(v)
                    .ok()
                    .filter(|&v| v >= 1)
                    .context("kernel sizes must be ≥ 1")
            })
            .collect::<Result<_>>()?;
        let nd = k.len();
        ensure!(
            (1..=2).contains(&nd) && x.shape.len() == nd + 2,
            "a {nd}-d pooling of a tensor of shape {:?}: only 1-d and 2-d pooling of (N, C, …) maps is imported",
            x.shape
        );
        let stride = Self::sizes(n, "strides", nd)?;
        if max {
            let dil = Self::sizes(n, "dilations", nd)?;
            ensure!(
                dil.iter().all(|&d| d == 1),
                "MaxPool with dilations {dil:?} is not imported"
            );
        }
        let spatial = x.shape[2..].to_vec();
        let own = Self::pads(n, &spatial, &k, &stride, &vec![1; nd])?;
        if !max && Self::attr_i(n, "count_include_pad", 0) == 0 {
            ensure!(
                own.iter().all(|p| *p == (0, 0)),
                "AveragePool with padding {own:?} and count_include_pad = 0: whittle's average pooling counts the padded zeros (count_include_pad = 1)"
            );
        }
        let mut pads = own;
        if let Some(e) = extra {
            for (p, q) in pads.iter_mut().zip(e) {
                p.0 += q.0;
                p.1 += q.1;
            }
        }
        if max {
            ensure!(
                pads.iter().zip(&k).all(|(p, &kk)| p.0 < kk && p.1 < kk),
                "MaxPool padding {pads:?} must be smaller than the kernel {k:?}"
            );
        }
        let mut out = vec![1, x.shape[1]];
        for i in 0..nd {
            let o = conv_out_len(spatial[i], k[i], stride[i], pads[i], 1)
                .with_context(|| format!("kernel {k:?} is larger than the input {spatial:?}"))?;
            if Self::attr_i(n, "ceil_mode", 0) != 0 {
                let padded = spatial[i] + pads[i].0 + pads[i].1;
                ensure!(
                    (padded - k[i]).is_multiple_of(stride[i]),
                    "ceil_mode = 1 changes the output size here; only floor output sizes are imported"
                );
            }
            out.push(o);
        }
        let input = self.plain(&x)?;
        let kind = if max { PoolKind::Max } else { PoolKind::Avg };
        self.emit(
            n,
            |output| Layer::Pool {
                kind,
                input,
                output,
                kernel: k,
                stride,
                padding: pads,
            },
            out.clone(),
            out,
        )
    }

    pub(super) fn gemm(&mut self, n: &NodeProto) -> Result<()> {
        ensure!(
            Self::attr_i(n, "transA", 0) == 0,
            "Gemm with transA = 1 is not imported"
        );
        let a = self.data(n, 0)?;
        let b = self.take_konst(n, 1, "B (weights)")?;
        let c = self.konst(n, 2)?;
        let (alpha, beta) = (Self::attr_f(n, "alpha", 1.0), Self::attr_f(n, "beta", 1.0));
        ensure!(
            b.dims.len() == 2,
            "B of shape {:?} must be a matrix",
            b.dims
        );
        let w = if Self::attr_i(n, "transB", 0) != 0 {
            b
        } else {
            fold::transpose(&b, &[1, 0])?
        };
        self.linear(n, a, w, alpha, c.map(|c| (c, beta)))
    }

    pub(super) fn matmul(&mut self, n: &NodeProto) -> Result<()> {
        let a = self.data(n, 0)?;
        let b = self
            .take_konst(n, 1, "weights")
            .context("MatMul: only data × constant matrix (a linear layer) is imported")?;
        ensure!(
            b.dims.len() == 2,
            "MatMul by a constant of shape {:?}: only a matrix is imported",
            b.dims
        );
        let w = fold::transpose(&b, &[1, 0])?;
        self.linear(n, a, w, 1.0, None)
    }

    /// y = alpha · x Wᵀ + beta · c with `w` (out, in).
    pub(super) fn linear(
        &mut self,
        n: &NodeProto,
        a: Dyn,
        w: Const,
        alpha: f32,
        c: Option<(Const, f32)>,
    ) -> Result<()> {
        ensure!(
            a.shape.len() == 2 && a.shape[0] == 1,
            "a linear layer needs a (N, features) input, got shape {:?} (flatten first)",
            a.shape
        );
        let (out, inn) = (w.dims[0], w.dims[1]);
        ensure!(
            inn == a.shape[1],
            "weights of shape ({out}, {inn}) (out, in) on an input with {} features",
            a.shape[1]
        );
        let bias = match c {
            None => None,
            Some((c, beta)) => {
                let v = c.f32s();
                let ok = matches!(c.dims.as_slice(), [] | [1])
                    || c.dims.iter().rev().skip(1).all(|&d| d == 1) && c.dims.last() == Some(&out);
                ensure!(ok, "bias C of shape {:?} for {out} outputs", c.dims);
                Some(
                    (0..out)
                        .map(|i| beta * if v.len() == 1 { v[0] } else { v[i] })
                        .collect(),
                )
            }
        };
        let mut wv = w.into_f32s();
        if alpha != 1.0 {
            wv.iter_mut().for_each(|x| *x *= alpha);
        }
        let mut input = self.vector(&a)?;
        let mut bias = bias;
        if let Some((x, s, b)) = self.affine_before_linear(n, &input) {
            // W·(s·x + b) + c = (W·diag s)·x + (c + W·b).
            let mut c = bias.unwrap_or_else(|| vec![0.0; out]);
            for (row, c) in wv.chunks_mut(inn).zip(&mut c) {
                *c += row.iter().zip(&b).map(|(w, b)| w * b).sum::<f32>();
                row.iter_mut().zip(&s).for_each(|(w, s)| *w *= s);
            }
            bias = Some(c);
            input = x;
        }
        let weight = Tensor32::new(vec![out, inn], wv)?;
        self.emit(
            n,
            |output| Layer::Linear {
                input,
                output,
                weight,
                bias,
            },
            vec![1, out],
            vec![1, out],
        )
    }
}
