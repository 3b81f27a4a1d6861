//! Constant element-wise affine maps y = s·x + b: Mul, Add, Sub or Div of data by a constant
//! with one value in all or one per index of one axis (Keras' batch norm as Mul + Add,
//! `Rescaling`, `Normalization` as Sub + Mul, a scale after any layer). Such a map is
//! folded into the Conv / Gemm / MatMul / BatchNormalization that wrote its data (when nothing
//! else reads it), and else becomes a layer of its own that computes exactly s·x + b in
//! evaluation and in training alike: a depthwise 1×1 convolution (weight s, bias b) on a
//! map, a batch norm with mean 0, variance 1 − ε and ε = 2⁻¹⁰ (so that var + ε is exactly 1)
//! on a (N, C) vector. On the raw input (a Keras batch norm on the NHWC input comes before
//! tf2onnx's Transpose) the map waits for the layout ([`Val::InputAffine`]): the Transpose or
//! Reshape that sets it, or the first op that reads it, turns it into that layer.

use super::*;

/// ε of a batch norm made from an affine map: a power of two, so `1 − ε` and
/// `(1 − ε) + ε = 1` are exact in f32 and f64.
pub const AFFINE_EPS: f32 = 1.0 / 1024.0;

/// y = scale·x + bias along file axis `axis` (batch first) of the data; `None`: one value in
/// all. Each vector has one value, or one per index of `axis`.
#[derive(Clone, Debug, PartialEq)]
pub struct Affine {
    pub axis: Option<usize>,
    pub scale: Vec<f32>,
    pub bias: Vec<f32>,
}

fn at(v: &[f32], i: usize) -> f32 {
    if v.len() == 1 { v[0] } else { v[i] }
}

impl Affine {
    pub fn is_identity(&self) -> bool {
        self.scale.iter().all(|&s| s == 1.0) && self.bias.iter().all(|&b| b == 0.0)
    }

    /// `self` then `next`: next.s·(s·x + b) + next.b; None when they vary along different axes.
    pub fn then(&self, next: &Affine) -> Option<Affine> {
        let axis = match (self.axis, next.axis) {
            (a, None) => a,
            (None, b) => b,
            (Some(a), Some(b)) if a == b => Some(a),
            _ => return None,
        };
        let n = [&self.scale, &self.bias, &next.scale, &next.bias]
            .iter()
            .map(|v| v.len())
            .max()
            .unwrap_or(1);
        let scale = (0..n)
            .map(|i| at(&self.scale, i) * at(&next.scale, i))
            .collect();
        let bias = (0..n)
            .map(|i| at(&self.bias, i) * at(&next.scale, i) + at(&next.bias, i))
            .collect();
        Some(Affine { axis, scale, bias })
    }

    /// Scale and bias for each of `c` channels (axis 1); None when the map varies along
    /// another axis.
    pub fn per_channel(&self, c: usize) -> Option<(Vec<f32>, Vec<f32>)> {
        if !matches!(self.axis, None | Some(1)) {
            return None;
        }
        let ok = |v: &[f32]| v.len() == 1 || v.len() == c;
        if !ok(&self.scale) || !ok(&self.bias) {
            return None;
        }
        Some((
            (0..c).map(|i| at(&self.scale, i)).collect(),
            (0..c).map(|i| at(&self.bias, i)).collect(),
        ))
    }

    /// The map of node `n` (Add, Sub, Mul or Div) with constant `c` and data operand `dk`
    /// of file shape `shape`.
    pub fn of_node(n: &NodeProto, c: &Const, dk: usize, shape: &[usize]) -> Result<Affine> {
        let op = n.op_type.as_str();
        ensure!(
            c.dims.len() <= shape.len()
                && fold::broadcast(&c.dims, shape).ok().as_deref() == Some(shape),
            "{op} of data of shape {shape:?} and a constant of shape {:?}: the constant must broadcast to the data's shape",
            c.dims
        );
        let lead = shape.len() - c.dims.len();
        let varying: Vec<usize> = c
            .dims
            .iter()
            .enumerate()
            .filter(|&(_, &d)| d != 1)
            .map(|(i, _)| i + lead)
            .collect();
        ensure!(
            varying.len() <= 1,
            "{op} of data of shape {shape:?} by a constant of shape {:?} varying along axes {varying:?}: only one value in all or one per index of one axis (per channel) is imported",
            c.dims
        );
        let v = c.f32s();
        let axis = varying.first().copied();
        let v = if axis.is_none() { vec![v[0]] } else { v };
        let (one, zero) = (vec![1.0], vec![0.0]);
        let (scale, bias) = match (op, dk) {
            ("Mul", _) => (v, zero),
            ("Add", _) => (one, v),
            ("Sub", 0) => (one, v.iter().map(|x| -x).collect()),
            ("Sub", _) => (vec![-1.0], v),
            ("Div", 0) => {
                ensure!(
                    v.iter().all(|&x| x != 0.0 && x.is_finite()),
                    "Div by a constant holding zero or a non-finite value"
                );
                (v.iter().map(|x| 1.0 / x).collect(), zero)
            }
            ("Div", _) => bail!("Div of a constant by data is not imported (no reciprocal op)"),
            _ => bail!("{op} is not an affine map"),
        };
        Ok(Affine { axis, scale, bias })
    }
}

impl Importer<'_> {
    /// Add / Sub / Mul / Div of data by a constant: folded, pending on the raw input, or a
    /// layer; false when no operand is a constant.
    pub(super) fn const_binary(&mut self, n: &NodeProto) -> Result<bool> {
        ensure!(n.input.len() == 2, "{} needs two inputs", n.op_type);
        let Some((dk, c)) =
            [(0, 1), (1, 0)]
                .into_iter()
                .find_map(|(dk, ck)| match self.vals.get(&n.input[ck]) {
                    Some(Val::C(c)) => Some((dk, c.clone())),
                    _ => None,
                })
        else {
            return Ok(false);
        };
        let name = n.input[dk].clone();
        match self.val(&name)?.clone() {
            Val::Input => {
                let shape = self.input_dyn().shape;
                let a = Affine::of_node(n, &c, dk, &shape)?;
                let single = self.uses.get(&name).copied().unwrap_or(0) == 1;
                self.set(n, 0, Val::InputAffine { a, single })?;
            }
            Val::InputAffine { a: prev, single } => {
                let shape = self.input_dyn().shape;
                let a = Affine::of_node(n, &c, dk, &shape)?;
                let Some(a) = prev.then(&a) else {
                    bail!(
                        "{} of the input by a constant varying along another axis than the scale or shift before it: not imported",
                        n.op_type
                    )
                };
                let single = single && self.uses.get(&name).copied().unwrap_or(0) == 1;
                self.set(n, 0, Val::InputAffine { a, single })?;
            }
            _ => {
                let d = self.data(n, dk)?;
                let a = Affine::of_node(n, &c, dk, &d.shape)?;
                self.affine_data(n, d, dk, a)?;
            }
        }
        Ok(true)
    }

    /// `a` applied to data `d` (input `dk` of `n`): folded into the layer that wrote it, or a
    /// layer of its own.
    fn affine_data(&mut self, n: &NodeProto, d: Dyn, dk: usize, a: Affine) -> Result<()> {
        if a.is_identity() {
            return self.set(n, 0, Val::T(d));
        }
        let src = n.input[dk].clone();
        let c = d.shape.get(1).copied().unwrap_or(0);
        let Some((s, b)) = a.per_channel(c).filter(|_| d.net_shape.get(1) == Some(&c)) else {
            bail!(
                "{} of data of shape {:?} by a constant varying along axis {:?}: only one value in all or one per channel (axis 1) is imported",
                n.op_type,
                d.shape,
                a.axis
            )
        };
        if let Some(&li) = self.direct.get(&src)
            && self.uses.get(&src).copied().unwrap_or(0) == 1
            && fold_into(&mut self.layers[li], &s, &b)
        {
            let out = n.output.first().context("has no output")?.clone();
            self.direct.insert(out, li);
            return self.set(n, 0, Val::T(d));
        }
        let layer = self.affine_layer(&d, s, b)?;
        let (net_shape, shape) = (d.net_shape.clone(), d.shape.clone());
        self.emit(n, layer, net_shape, shape)
    }

    /// The layer computing s·x + b per channel of `d`: a depthwise 1×1 conv on a map, a
    /// batch norm on a vector.
    pub(super) fn affine_layer(
        &self,
        d: &Dyn,
        s: Vec<f32>,
        b: Vec<f32>,
    ) -> Result<impl FnOnce(String) -> Layer + use<>> {
        let c = s.len();
        let input = d.net.clone();
        let nd = d.net_shape.len().saturating_sub(2);
        let conv = if nd == 0 {
            None
        } else {
            let mut shape = vec![c, 1];
            shape.extend(vec![1; nd]);
            Some((Tensor32::new(shape, s.clone())?, nd))
        };
        Ok(move |output| match conv {
            Some((weight, nd)) => Layer::Conv {
                input,
                output,
                weight,
                bias: Some(b),
                stride: vec![1; nd],
                padding: vec![(0, 0); nd],
                dilation: vec![1; nd],
                groups: c,
            },
            None => Layer::BatchNorm {
                input,
                output,
                gamma: s,
                beta: b,
                mean: vec![0.0; c],
                var: vec![1.0 - AFFINE_EPS; c],
                eps: AFFINE_EPS,
            },
        })
    }

    /// The pending map `a` on the input, now that the input reads as `d`: `d` itself for
    /// the identity, else the output of a new layer (named after `base`), bound to
    /// `onnx` when given.
    pub(super) fn resolve_input_affine(
        &mut self,
        a: &Affine,
        d: Dyn,
        base: &str,
        onnx: Option<&str>,
    ) -> Result<Dyn> {
        if a.is_identity() {
            return Ok(d);
        }
        let c = d.shape.get(1).copied().unwrap_or(0);
        let Some((s, b)) = a.per_channel(c) else {
            bail!(
                "a scale or shift of the input along axis {:?} of {:?} (batch first), which is not the channel axis of the network input {:?}",
                a.axis,
                self.file_shape,
                d.shape
            )
        };
        let make = self.affine_layer(&d, s, b)?;
        let net = self.fresh(base);
        let i = self.push(make(net.clone()));
        if let Some(o) = onnx {
            self.direct.insert(o.to_string(), i);
        }
        Ok(Dyn { net, ..d })
    }
}

impl Importer<'_> {
    /// When input 0 of linear node `n` is a vector written by a batch norm made from an
    /// affine map and read by nothing else: that batch norm's input and its scale and shift
    /// (the linear layer takes them, W·(s·x + b) = (W·diag s)·x + W·b, and the batch norm is
    /// left unread).
    pub(super) fn affine_before_linear(
        &self,
        n: &NodeProto,
        input: &str,
    ) -> Option<(String, Vec<f32>, Vec<f32>)> {
        let name = n.input.first()?;
        let &li = self.direct.get(name)?;
        if self.uses.get(name).copied().unwrap_or(0) != 1 {
            return None;
        }
        match &self.layers[li] {
            Layer::BatchNorm {
                input: x,
                output,
                gamma,
                beta,
                mean,
                var,
                eps,
            } if output == input
                && *eps == AFFINE_EPS
                && mean.iter().all(|&m| m == 0.0)
                && var.iter().all(|&v| v == 1.0 - AFFINE_EPS) =>
            {
                Some((x.clone(), gamma.clone(), beta.clone()))
            }
            _ => None,
        }
    }
}

/// Folds s·x + b (per output channel) into a Conv, Linear or BatchNorm layer; false for
/// other layers or another channel count.
fn fold_into(layer: &mut Layer, s: &[f32], b: &[f32]) -> bool {
    let shift = b.iter().any(|&v| v != 0.0);
    match layer {
        Layer::Conv { weight, bias, .. } | Layer::Linear { weight, bias, .. }
            if weight.shape.first() == Some(&s.len()) =>
        {
            let row = (weight.data.len() / s.len()).max(1);
            for (w, k) in weight.data.chunks_mut(row).zip(s) {
                w.iter_mut().for_each(|v| *v *= k);
            }
            if bias.is_some() || shift {
                let old = bias.take().unwrap_or_else(|| vec![0.0; s.len()]);
                *bias = Some(
                    old.iter()
                        .zip(s.iter().zip(b))
                        .map(|(v, (k, c))| v * k + c)
                        .collect(),
                );
            }
            true
        }
        Layer::BatchNorm { gamma, beta, .. } if gamma.len() == s.len() => {
            for (i, (k, c)) in s.iter().zip(b).enumerate() {
                gamma[i] *= k;
                beta[i] = beta[i] * k + c;
            }
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            ..Default::default()
        }
    }

    fn c(dims: Vec<usize>, v: Vec<f32>) -> Const {
        Const {
            dims,
            data: Data::F(v),
        }
    }

    #[test]
    fn a_batch_norm_made_from_a_map_divides_by_exactly_one() {
        let v = 1.0 - AFFINE_EPS;
        assert_eq!(v + AFFINE_EPS, 1.0);
        assert_eq!(f64::from(v) + f64::from(AFFINE_EPS), 1.0);
        assert_eq!((v + AFFINE_EPS).sqrt(), 1.0);
    }

    #[test]
    fn maps_of_ops_compose() {
        let shape = [1, 2, 3, 3];
        let x = [0.5f32, -2.0];
        // (x − m) / s · g + b per channel, as Keras' Normalization + BatchNormalization.
        let sub = Affine::of_node(
            &node("Sub"),
            &c(vec![1, 2, 1, 1], vec![1.0, 2.0]),
            0,
            &shape,
        )
        .unwrap();
        let div =
            Affine::of_node(&node("Div"), &c(vec![2, 1, 1], vec![4.0, 0.5]), 0, &shape).unwrap();
        let mul = Affine::of_node(&node("Mul"), &c(vec![], vec![3.0]), 0, &shape).unwrap();
        let add = Affine::of_node(&node("Sub"), &c(vec![1], vec![1.0]), 1, &shape).unwrap();
        assert_eq!((sub.axis, mul.axis), (Some(1), None));
        let all = sub
            .then(&div)
            .unwrap()
            .then(&mul)
            .unwrap()
            .then(&add)
            .unwrap();
        let (s, b) = all.per_channel(2).unwrap();
        for ch in 0..2 {
            let want = 1.0 - (x[ch] - [1.0, 2.0][ch]) / [4.0, 0.5][ch] * 3.0;
            assert_eq!(s[ch] * x[ch] + b[ch], want, "channel {ch}");
        }
    }

    #[test]
    fn constants_varying_along_two_axes_or_dividing_by_data_are_refused() {
        let shape = [1, 2, 3, 3];
        let two = c(vec![2, 3, 1], vec![1.0; 6]);
        let e = Affine::of_node(&node("Mul"), &two, 0, &shape).unwrap_err();
        assert!(format!("{e}").contains("varying along axes [1, 2]"), "{e}");
        let e = Affine::of_node(&node("Div"), &c(vec![], vec![2.0]), 1, &shape).unwrap_err();
        assert!(format!("{e}").contains("Div of a constant by data"), "{e}");
        let e = Affine::of_node(
            &node("Add"),
            &c(vec![1, 2, 3, 3, 1], vec![0.0; 18]),
            0,
            &shape,
        )
        .unwrap_err();
        assert!(format!("{e}").contains("must broadcast"), "{e}");
        // Along H, then per channel: not one axis.
        let h =
            Affine::of_node(&node("Mul"), &c(vec![3, 1], vec![1.0, 2.0, 3.0]), 0, &shape).unwrap();
        assert_eq!(h.axis, Some(2));
        assert_eq!(h.per_channel(2), None);
        let ch =
            Affine::of_node(&node("Add"), &c(vec![2, 1, 1], vec![1.0, 2.0]), 0, &shape).unwrap();
        assert_eq!(h.then(&ch), None);
    }
}
