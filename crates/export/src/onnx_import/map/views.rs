//! Ops of [`super::Importer`] that move data without arithmetic: Concat, Pad (held until
//! the conv or average pool it merges into), Reshape / Flatten / (Un)squeeze as views or a
//! Flatten layer, the channel shuffle (Reshape to (N, g, C/g, …), Transpose (0, 2, 1, …),
//! Reshape back), Transpose (of the input: the layout; a Reshape of the input that moves
//! unit axes too), Slice and Split of channels.

use super::*;

impl Importer<'_> {
    pub(super) fn concat(&mut self, n: &NodeProto) -> Result<()> {
        let mut xs = vec![];
        for k in 0..n.input.len() {
            xs.push(self.data(n, k)?);
        }
        ensure!(!xs.is_empty(), "Concat of nothing");
        let r = xs[0].shape.len();
        let a = fold::axis(Self::attr_i(n, "axis", 1), r)?;
        ensure!(
            a == 1,
            "Concat along axis {a}: only the channel axis 1 is imported"
        );
        for x in &xs {
            ensure!(
                x.shape.len() == r && x.shape[2..] == xs[0].shape[2..],
                "Concat of shapes {:?} and {:?}: only the channels may differ",
                xs[0].shape,
                x.shape
            );
        }
        let mut shape = xs[0].shape.clone();
        shape[1] = xs.iter().map(|x| x.shape[1]).sum();
        let (inputs, net_shape) = if vectorish(&shape) && r > 2 {
            let mut v = vec![];
            for x in &xs {
                v.push(self.vector(x)?);
            }
            (v, vec![1, shape[1]])
        } else {
            (
                xs.iter()
                    .map(|x| self.plain(x))
                    .collect::<Result<Vec<_>>>()?,
                shape.clone(),
            )
        };
        self.emit(
            n,
            |output| Layer::Concat { inputs, output },
            net_shape,
            shape,
        )
    }

    /// Global average pool of `d` (keepdims: the file keeps (N, C, 1, …)).
    pub(super) fn pad(&mut self, n: &NodeProto) -> Result<()> {
        let in0 = n.input.first().context("missing input 0")?.clone();
        let (x, before) = match self.val(&in0)?.clone() {
            Val::Padded { src, pads, .. } => (src, Some(pads)),
            _ => (self.data(n, 0)?, None),
        };
        let mode = Self::attr_s(n, "mode");
        ensure!(
            mode.is_empty() || mode == "constant",
            "Pad mode `{mode}`: only zero (constant) padding is imported"
        );
        let r = x.shape.len();
        let (pads, value) = if self.opset < 11 {
            (
                Self::attr_ints(n, "pads").context("Pad without pads")?,
                Self::attr_f(n, "value", 0.0),
            )
        } else {
            let p = self.need_konst(n, 1, "pads")?.i64s()?;
            let v = self.konst(n, 2)?.map_or(Ok(0.0), |c| c.scalar_f32())?;
            (p, v)
        };
        ensure!(
            value == 0.0,
            "Pad with value {value}: only zero padding is imported"
        );
        let axes: Vec<usize> = match self.konst(n, 3)? {
            Some(a) => a
                .i64s()?
                .iter()
                .map(|&v| fold::axis(v, r))
                .collect::<Result<_>>()?,
            None => (0..r).collect(),
        };
        ensure!(
            pads.len() == 2 * axes.len(),
            "pads {pads:?} must have {} entries",
            2 * axes.len()
        );
        let mut per = vec![(0usize, 0usize); r];
        for (i, &a) in axes.iter().enumerate() {
            let (b, e) = (pads[i], pads[i + axes.len()]);
            ensure!(
                (0..1 << 20).contains(&b) && (0..1 << 20).contains(&e),
                "negative or huge pads {pads:?} (cropping) are not imported"
            );
            per[a] = (b as usize, e as usize);
        }
        ensure!(
            r >= 3 && per[0] == (0, 0) && per[1] == (0, 0),
            "Pad of the batch or channel axis ({pads:?}) is not imported"
        );
        let mut spatial: Vec<(usize, usize)> = per[2..].to_vec();
        if let Some(b) = before {
            for (p, q) in spatial.iter_mut().zip(b) {
                p.0 += q.0;
                p.1 += q.1;
            }
        }
        self.plain(&x)?;
        let node = if n.name.is_empty() {
            n.output[0].clone()
        } else {
            n.name.clone()
        };
        self.set(
            n,
            0,
            Val::Padded {
                src: x,
                pads: spatial,
                node,
            },
        )
    }

    /// Reshape: of a map to channel groups (the start of a channel shuffle), of grouped
    /// channels back (its end: a [`Layer::ChannelShuffle`] when transposed), or a view.
    pub(super) fn reshape(&mut self, n: &NodeProto) -> Result<()> {
        let in0 = n.input.first().context("missing input 0")?.clone();
        let target = self
            .ints_in_or_attr(n, 1, "shape")?
            .context("Reshape without a shape")?;
        let allowzero = Self::attr_i(n, "allowzero", 0) != 0;
        if let Val::Grouped {
            src,
            groups,
            swapped,
            shape,
            node,
        } = self.val(&in0)?.clone()
        {
            let dims = fold::reshape_dims(&shape, &target, allowzero)?;
            ensure!(
                dims == src.shape,
                "reshape of the channel groups {shape:?} of Reshape `{node}` to {dims:?}: only the reshape back to {:?} (a channel shuffle) is imported",
                src.shape
            );
            if !swapped {
                return self.set(n, 0, Val::T(src));
            }
            let input = self.plain(&src)?;
            return self.emit(
                n,
                |output| Layer::ChannelShuffle {
                    input,
                    output,
                    groups,
                },
                src.shape.clone(),
                src.shape,
            );
        }
        if let Some(pending) = self.raw_input(&in0)? {
            let from = self.input_dyn().shape;
            let dims = fold::reshape_dims(&from, &target, allowzero)?;
            let big = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
            let single = self.uses.get(&in0).copied().unwrap_or(0) == 1
                && pending.as_ref().is_none_or(|(_, s)| *s);
            if single && (3..=4).contains(&dims.len()) && dims[0] == 1 && big(&dims) == big(&from) {
                // Unit axes moved (tf2onnx's NHWC → NCHW of a one-channel input): the same
                // values in another shape, the network's input shape.
                self.net_input_shape = dims[1..].to_vec();
                let d = self.input_dyn();
                let d = match pending {
                    None => d,
                    Some((mut a, _)) => {
                        let k = a.axis.map(|x| big(&from[..x]).len());
                        a.axis = k.and_then(|k| (0..dims.len()).filter(|&i| dims[i] != 1).nth(k));
                        let out = n.output.first().context("has no output")?.clone();
                        self.resolve_input_affine(&a, d, &out, Some(&out))?
                    }
                };
                return self.set(n, 0, Val::T(d));
            }
        }
        let d = self.data(n, 0)?;
        let dims = fold::reshape_dims(&d.shape, &target, allowzero)?;
        let c = d.shape.get(1).copied().unwrap_or(0);
        let grouping = d.shape.len() >= 3
            && d.net_shape == d.shape
            && dims.len() >= 4
            && dims[0] == 1
            && dims[1] >= 2
            && dims[1] * dims[2] == c
            && dims[3..].iter().product::<usize>() == d.shape[2..].iter().product::<usize>();
        if grouping {
            let node = if n.name.is_empty() {
                n.output[0].clone()
            } else {
                n.name.clone()
            };
            let v = Val::Grouped {
                src: d,
                groups: dims[1],
                swapped: false,
                shape: dims,
                node,
            };
            return self.set(n, 0, v);
        }
        self.reshape_dyn(n, d, dims)
    }

    /// A data tensor seen with another shape: a view, a Flatten layer, or an error.
    pub(super) fn reshape_dyn(&mut self, n: &NodeProto, d: Dyn, target: Vec<usize>) -> Result<()> {
        if target == d.shape {
            return self.set(n, 0, Val::T(d));
        }
        ensure!(
            target.first() == Some(&1) && target.len() >= 2,
            "reshape of {:?} to {target:?} (batch 1) moves the batch axis; only flattening to (N, -1) and channel views are imported",
            d.shape
        );
        if target.len() == 2 {
            if d.net_shape.len() == 2 {
                return self.set(n, 0, Val::T(Dyn { shape: target, ..d }));
            }
            // A map (or a pooled (N, C, 1, …) map) flattened: a Flatten layer.
            let input = d.net.clone();
            let net_shape = target.clone();
            self.emit(
                n,
                |output| Layer::Flatten { input, output },
                net_shape,
                target,
            )?;
            if let Some(Val::T(o)) = self.vals.get(&n.output[0]) {
                let o = o.net.clone();
                self.flat.entry(d.net).or_insert(o);
            }
            return Ok(());
        }
        if vectorish(&d.shape) && vectorish(&target) && d.shape[1] == target[1] {
            return self.set(n, 0, Val::T(Dyn { shape: target, ..d }));
        }
        if target.len() == 3
            && d.net_shape == d.shape
            && d.shape.len() >= 3
            && target[1] == d.shape[1]
        {
            // (N, C, H, W) seen as (N, C, H·W).
            return self.set(n, 0, Val::T(Dyn { shape: target, ..d }));
        }
        bail!(
            "reshape of {:?} to {target:?}: only flattening to (N, -1), (N, C, -1) before a mean, and (N, C) ↔ (N, C, 1, …) views are imported",
            d.shape
        )
    }

    /// For the raw input `Some(None)`, for the input under a pending scale / shift
    /// `Some(Some((map, single)))`, else None.
    fn raw_input(&self, name: &str) -> Result<Option<Option<(Affine, bool)>>> {
        Ok(match self.val(name)? {
            Val::Input => Some(None),
            Val::InputAffine { a, single } => Some(Some((a.clone(), *single))),
            _ => None,
        })
    }

    pub(super) fn transpose(&mut self, n: &NodeProto) -> Result<()> {
        let name = n.input.first().context("missing input 0")?.clone();
        if let Some(pending) = self.raw_input(&name)? {
            let r = self.file_shape.len() + 1;
            let perm = self.perm(n, r)?;
            let mut seen = vec![false; r];
            ensure!(
                perm.len() == r
                    && perm[0] == 0
                    && perm
                        .iter()
                        .all(|&p| p < r && !std::mem::replace(&mut seen[p], true)),
                "Transpose {perm:?} of the input must keep the batch axis first"
            );
            ensure!(
                self.uses.get(&name).copied().unwrap_or(0) == 1
                    && pending.as_ref().is_none_or(|(_, single)| *single),
                "the input `{}` is read both transposed and as it is; not imported",
                self.input_name
            );
            let sample: Vec<usize> = perm[1..].iter().map(|&p| p - 1).collect();
            self.net_input_shape = sample.iter().map(|&p| self.file_shape[p]).collect();
            self.input_perm = Some(sample);
            let d = self.input_dyn();
            let d = match pending {
                None => d,
                Some((mut a, _)) => {
                    a.axis = a.axis.and_then(|x| perm.iter().position(|&p| p == x));
                    let out = n.output.first().context("has no output")?.clone();
                    self.resolve_input_affine(&a, d, &out, Some(&out))?
                }
            };
            return self.set(n, 0, Val::T(d));
        }
        if let Val::Grouped {
            src,
            groups,
            swapped,
            mut shape,
            node,
        } = self.val(&name)?.clone()
        {
            let perm = self.perm(n, shape.len())?;
            let mut swap: Vec<usize> = (0..shape.len()).collect();
            swap.swap(1, 2);
            ensure!(
                perm == swap,
                "Transpose {perm:?} of the channel groups {shape:?} of Reshape `{node}`: only {swap:?} (a channel shuffle) is imported"
            );
            shape.swap(1, 2);
            let v = Val::Grouped {
                src,
                groups,
                swapped: !swapped,
                shape,
                node,
            };
            return self.set(n, 0, v);
        }
        let d = self.data(n, 0)?;
        let perm = self.perm(n, d.shape.len())?;
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return self.set(n, 0, Val::T(d));
        }
        bail!(
            "Transpose {perm:?} of a tensor of shape {:?} inside the network is not imported (only a transpose of the input, which sets the input layout)",
            d.shape
        )
    }

    pub(super) fn slice(&mut self, n: &NodeProto) -> Result<()> {
        let d = self.data(n, 0)?;
        let (starts, ends, axes, steps) = self.slice_args(n)?;
        let r = fold::slice_ranges(&d.shape, &starts, &ends, axes.as_deref(), steps.as_deref())?;
        let mut changed = vec![];
        for (i, &(s, e, st)) in r.iter().enumerate() {
            if !(s == 0 && e == d.shape[i] as i64 && st == 1) {
                changed.push(i);
            }
        }
        if changed.is_empty() {
            return self.set(n, 0, Val::T(d));
        }
        let (s, e, st) = r[1];
        ensure!(
            changed == [1] && st == 1 && e > s,
            "Slice of {:?} with ranges {r:?}: only a channel range (axis 1, step 1) is imported",
            d.shape
        );
        self.narrow(n, 0, &d, s as usize, (e - s) as usize)
    }

    pub(super) fn narrow(
        &mut self,
        n: &NodeProto,
        k: usize,
        d: &Dyn,
        start: usize,
        len: usize,
    ) -> Result<()> {
        let mut shape = d.shape.clone();
        shape[1] = len;
        let vec_in = d.net_shape.len() == 2 && vectorish(&d.shape);
        let input = if vec_in {
            d.net.clone()
        } else {
            self.plain(d)?
        };
        let net_shape = if vec_in { vec![1, len] } else { shape.clone() };
        let onnx = n
            .output
            .get(k)
            .filter(|s| !s.is_empty())
            .context("missing output")?
            .clone();
        let net = self.fresh(&onnx);
        let i = self.push(Layer::Narrow {
            input,
            output: net.clone(),
            start,
            len,
        });
        self.direct.insert(onnx, i);
        self.set(
            n,
            k,
            Val::T(Dyn {
                net,
                net_shape,
                shape,
            }),
        )
    }

    pub(super) fn split(&mut self, n: &NodeProto) -> Result<()> {
        let d = self.data(n, 0)?;
        let a = fold::axis(Self::attr_i(n, "axis", 0), d.shape.len())?;
        ensure!(
            a == 1,
            "Split along axis {a}: only the channel axis 1 is imported"
        );
        let c = d.shape[1];
        let parts = n.output.len();
        let sizes: Vec<usize> = match self.ints_in_or_attr(n, 1, "split")? {
            Some(s) => s
                .iter()
                .map(|&v| usize::try_from(v).map_err(|_| anyhow!("negative split size {v}")))
                .collect::<Result<_>>()?,
            None => {
                let per = c.div_ceil(parts.max(1));
                (0..parts)
                    .map(|i| per.min(c.saturating_sub(i * per)))
                    .collect()
            }
        };
        ensure!(
            sizes.len() == parts
                && sizes.iter().sum::<usize>() == c
                && sizes.iter().all(|&s| s > 0),
            "Split sizes {sizes:?} for {c} channels and {parts} outputs"
        );
        let mut start = 0;
        for (k, &len) in sizes.iter().enumerate() {
            self.narrow(n, k, &d, start, len)?;
            start += len;
        }
        Ok(())
    }
}
