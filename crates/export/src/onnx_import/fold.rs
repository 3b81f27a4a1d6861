//! Constant tensors of an ONNX graph and the ops the importer evaluates on them: initializers
//! and `Constant` nodes, and the shape arithmetic exporters wrap around `Flatten`, `Reshape`
//! and `Pad` (`Shape`, `Gather`, `Unsqueeze`, `Squeeze`, `Concat`, `Reshape`, `Slice`,
//! `Transpose`, `Cast`, `ConstantOfShape`, element-wise `Add`/`Sub`/`Mul`/`Div` with numpy
//! broadcasting). Every size is checked; a constant never exceeds [`MAX_ELEMS`] values.

use super::proto::{self, TensorProto};
use anyhow::{Result, bail, ensure};

/// Largest constant the folder builds (values).
pub const MAX_ELEMS: usize = 1 << 26;

/// Values of a constant: floats (f32, f64 read as f32) or integers (any integer type).
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F(Vec<f32>),
    I(Vec<i64>),
}

/// A constant tensor (row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    pub dims: Vec<usize>,
    pub data: Data,
}

/// Number of values of `dims`, checked.
pub fn numel(dims: &[usize]) -> Result<usize> {
    let mut n: usize = 1;
    for &d in dims {
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_ELEMS)
            .ok_or_else(|| anyhow::anyhow!("tensor of shape {dims:?} is too large"))?;
    }
    Ok(n)
}

impl Const {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        match &self.data {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
        }
    }

    pub fn ints(dims: Vec<usize>, v: Vec<i64>) -> Self {
        Const {
            dims,
            data: Data::I(v),
        }
    }

    /// Values as f32 (integers converted).
    pub fn f32s(&self) -> Vec<f32> {
        match &self.data {
            Data::F(v) => v.clone(),
            Data::I(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Values as f32, without a copy when they are f32 already.
    pub fn into_f32s(self) -> Vec<f32> {
        match self.data {
            Data::F(v) => v,
            Data::I(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Values as integers; floats only when integral.
    pub fn i64s(&self) -> Result<Vec<i64>> {
        match &self.data {
            Data::I(v) => Ok(v.clone()),
            Data::F(v) => v
                .iter()
                .map(|&x| {
                    ensure!(
                        x.fract() == 0.0 && x.abs() < 9e15,
                        "expected integers, got {x}"
                    );
                    Ok(x as i64)
                })
                .collect(),
        }
    }

    /// The only value of a one-element tensor.
    pub fn scalar_f32(&self) -> Result<f32> {
        ensure!(
            self.len() == 1,
            "expected one value, got a tensor of shape {:?}",
            self.dims
        );
        Ok(self.f32s()[0])
    }

    fn map_data(&self, dims: Vec<usize>, idx: &[usize]) -> Const {
        let data = match &self.data {
            Data::F(v) => Data::F(idx.iter().map(|&i| v[i]).collect()),
            Data::I(v) => Data::I(idx.iter().map(|&i| v[i]).collect()),
        };
        Const { dims, data }
    }
}

/// Reads an initializer or a `Constant` value.
pub fn from_proto(t: &TensorProto) -> Result<Const> {
    ensure!(
        t.data_location != 1 && t.external_data.is_empty(),
        "tensor `{}` keeps its values in an external file; save the model with all tensors inside (onnx.save(model, path, save_as_external_data=False))",
        t.name
    );
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        ensure!(d >= 0, "tensor `{}` has a negative dimension {d}", t.name);
        dims.push(usize::try_from(d)?);
    }
    let n = numel(&dims)?;
    let raw = &t.raw_data;
    let take = |width: usize, have: usize| -> Result<bool> {
        if !raw.is_empty() {
            ensure!(
                raw.len() == n * width,
                "tensor `{}` of shape {dims:?} needs {} bytes of data, has {}",
                t.name,
                n * width,
                raw.len()
            );
            return Ok(true);
        }
        ensure!(
            have == n,
            "tensor `{}` of shape {dims:?} needs {n} values, has {have}",
            t.name
        );
        Ok(false)
    };
    let data = match t.data_type {
        proto::FLOAT => Data::F(if take(4, t.float_data.len())? {
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            t.float_data.clone()
        }),
        proto::DOUBLE => Data::F(if take(8, t.double_data.len())? {
            raw.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect()
        } else {
            t.double_data.iter().map(|&x| x as f32).collect()
        }),
        proto::INT64 => Data::I(if take(8, t.int64_data.len())? {
            raw.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect()
        } else {
            t.int64_data.clone()
        }),
        proto::INT32 => Data::I(if take(4, t.int32_data.len())? {
            raw.chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                .collect()
        } else {
            t.int32_data.iter().map(|&x| x as i64).collect()
        }),
        proto::INT8 | proto::UINT8 | proto::BOOL => Data::I(if take(1, t.int32_data.len())? {
            raw.iter()
                .map(|&b| {
                    if t.data_type == proto::INT8 {
                        b as i8 as i64
                    } else {
                        b as i64
                    }
                })
                .collect()
        } else {
            t.int32_data.iter().map(|&x| x as i64).collect()
        }),
        other => bail!(
            "tensor `{}` has element type {other} ({}); the importer reads float32/64 and integer tensors",
            t.name,
            type_name(other)
        ),
    };
    Ok(Const { dims, data })
}

/// Name of an ONNX element type, for messages.
pub fn type_name(t: i32) -> &'static str {
    match t {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        16 => "bfloat16",
        _ => "other",
    }
}

/// Normalizes a possibly negative axis of a rank-`rank` tensor.
pub fn axis(a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    ensure!(
        (-r..r).contains(&a),
        "axis {a} is out of range for a tensor of rank {rank}"
    );
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Index of every output element in the input, for an output of `dims` whose coordinate
/// `c` reads input coordinate `src(c)`.
fn gather_index(
    dims: &[usize],
    in_dims: &[usize],
    src: impl Fn(&[usize], &mut [usize]),
) -> Result<Vec<usize>> {
    let n = numel(dims)?;
    let ins = strides(in_dims);
    let mut c = vec![0usize; dims.len()];
    let mut s = vec![0usize; in_dims.len()];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        src(&c, &mut s);
        out.push(s.iter().zip(&ins).map(|(a, b)| a * b).sum());
        for k in (0..dims.len()).rev() {
            c[k] += 1;
            if c[k] < dims[k] {
                break;
            }
            c[k] = 0;
        }
    }
    Ok(out)
}

pub fn transpose(x: &Const, perm: &[usize]) -> Result<Const> {
    let r = x.dims.len();
    let mut seen = vec![false; r];
    ensure!(
        perm.len() == r
            && perm
                .iter()
                .all(|&p| p < r && !std::mem::replace(&mut seen[p], true)),
        "perm {perm:?} is not a permutation of the {r} axes"
    );
    let dims: Vec<usize> = perm.iter().map(|&p| x.dims[p]).collect();
    let idx = gather_index(&dims, &x.dims, |c, s| {
        for (k, &p) in perm.iter().enumerate() {
            s[p] = c[k];
        }
    })?;
    Ok(x.map_data(dims, &idx))
}

pub fn gather(x: &Const, indices: &Const, ax: i64) -> Result<Const> {
    let a = axis(ax, x.dims.len())?;
    let n = x.dims[a] as i64;
    let ids: Vec<usize> = indices
        .i64s()?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + n } else { i };
            ensure!(
                (0..n).contains(&j),
                "index {i} is out of range for size {n}"
            );
            Ok(j as usize)
        })
        .collect::<Result<_>>()?;
    let mut dims = x.dims[..a].to_vec();
    dims.extend(&indices.dims);
    dims.extend(&x.dims[a + 1..]);
    let q = indices.dims.len();
    let idx = gather_index(&dims, &x.dims, |c, s| {
        s[..a].copy_from_slice(&c[..a]);
        let flat = c[a..a + q]
            .iter()
            .zip(strides(&indices.dims))
            .map(|(x, y)| x * y)
            .sum::<usize>();
        s[a] = ids[flat];
        s[a + 1..].copy_from_slice(&c[a + q..]);
    })?;
    Ok(x.map_data(dims, &idx))
}

pub fn concat(xs: &[&Const], ax: i64) -> Result<Const> {
    ensure!(!xs.is_empty(), "concat of nothing");
    let r = xs[0].dims.len();
    let a = axis(ax, r)?;
    for x in xs {
        ensure!(
            x.dims.len() == r
                && x.dims
                    .iter()
                    .enumerate()
                    .all(|(i, &d)| i == a || d == xs[0].dims[i]),
            "concat of shapes {:?} and {:?} along axis {a}",
            xs[0].dims,
            x.dims
        );
    }
    let float = xs.iter().any(|x| matches!(x.data, Data::F(_)));
    let outer: usize = xs[0].dims[..a].iter().product();
    let mut dims = xs[0].dims.clone();
    dims[a] = xs.iter().map(|x| x.dims[a]).sum();
    numel(&dims)?;
    let (mut f, mut iv) = (vec![], vec![]);
    for o in 0..outer {
        for x in xs {
            let inner: usize = x.dims[a..].iter().product();
            if float {
                f.extend_from_slice(&x.f32s()[o * inner..(o + 1) * inner]);
            } else {
                iv.extend_from_slice(&x.i64s()?[o * inner..(o + 1) * inner]);
            }
        }
    }
    Ok(Const {
        dims,
        data: if float { Data::F(f) } else { Data::I(iv) },
    })
}

/// ONNX Reshape's target: 0 copies the input dimension (unless `allowzero`), one −1 is
/// inferred.
pub fn reshape_dims(from: &[usize], target: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let n = numel(from)?;
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 => {
                ensure!(infer.is_none(), "shape {target:?} has more than one -1");
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*from.get(i).ok_or_else(|| {
                anyhow::anyhow!(
                    "shape {target:?}: 0 at axis {i} copies a dimension the input {from:?} lacks"
                )
            })?),
            t if t >= 0 => out.push(usize::try_from(t)?),
            t => bail!("shape {target:?} has a negative size {t}"),
        }
    }
    let known = numel(&out)?;
    if let Some(i) = infer {
        ensure!(
            known > 0 && n % known == 0,
            "cannot reshape {from:?} ({n} values) to {target:?}"
        );
        out[i] = n / known;
    }
    ensure!(
        numel(&out)? == n,
        "cannot reshape {from:?} ({n} values) to {target:?}"
    );
    Ok(out)
}

pub fn unsqueeze_dims(from: &[usize], axes: &[i64]) -> Result<Vec<usize>> {
    let r = from.len() + axes.len();
    let mut ax: Vec<usize> = axes.iter().map(|&a| axis(a, r)).collect::<Result<_>>()?;
    ax.sort_unstable();
    ax.dedup();
    ensure!(ax.len() == axes.len(), "repeated axes in {axes:?}");
    let mut out = Vec::with_capacity(r);
    let mut it = from.iter();
    for i in 0..r {
        if ax.contains(&i) {
            out.push(1);
        } else {
            out.push(*it.next().expect("counted"));
        }
    }
    Ok(out)
}

pub fn squeeze_dims(from: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>> {
    match axes {
        None => Ok(from.iter().copied().filter(|&d| d != 1).collect()),
        Some(axes) => {
            let ax: Vec<usize> = axes
                .iter()
                .map(|&a| axis(a, from.len()))
                .collect::<Result<_>>()?;
            for &a in &ax {
                ensure!(
                    from[a] == 1,
                    "cannot squeeze axis {a} of size {} (shape {from:?})",
                    from[a]
                );
            }
            Ok(from
                .iter()
                .enumerate()
                .filter(|(i, _)| !ax.contains(i))
                .map(|(_, &d)| d)
                .collect())
        }
    }
}

/// The (start, stop, step) ranges of ONNX Slice per axis, clamped like the spec.
pub fn slice_ranges(
    dims: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Vec<(i64, i64, i64)>> {
    ensure!(
        starts.len() == ends.len(),
        "Slice: starts {starts:?} and ends {ends:?} differ in length"
    );
    let mut r: Vec<(i64, i64, i64)> = dims.iter().map(|&d| (0, d as i64, 1)).collect();
    for k in 0..starts.len() {
        let a = match axes {
            Some(ax) => axis(
                *ax.get(k)
                    .ok_or_else(|| anyhow::anyhow!("Slice: fewer axes than starts"))?,
                dims.len(),
            )?,
            None => k,
        };
        ensure!(a < dims.len(), "Slice: more starts than axes");
        let step = steps.and_then(|s| s.get(k).copied()).unwrap_or(1);
        ensure!(step != 0, "Slice: step 0");
        let d = dims[a] as i64;
        let fix = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (s, e) = (fix(starts[k]), fix(ends[k]));
        let (s, e) = if step > 0 {
            (s.clamp(0, d), e.clamp(0, d))
        } else if d == 0 {
            (0, 0)
        } else {
            (s.clamp(0, d - 1), e.clamp(-1, d - 1))
        };
        r[a] = (s, e, step);
    }
    Ok(r)
}

pub fn slice(x: &Const, ranges: &[(i64, i64, i64)]) -> Result<Const> {
    let dims: Vec<usize> = ranges
        .iter()
        .map(|&(s, e, st)| {
            let n = if st > 0 {
                (e - s + st - 1) / st
            } else {
                (s - e + (-st) - 1) / (-st)
            };
            n.max(0) as usize
        })
        .collect();
    let idx = gather_index(&dims, &x.dims, |c, s| {
        for k in 0..c.len() {
            s[k] = (ranges[k].0 + c[k] as i64 * ranges[k].2) as usize;
        }
    })?;
    Ok(x.map_data(dims, &idx))
}

/// numpy-broadcast shape of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let get = |s: &[usize], i: usize| {
        if i + s.len() >= r {
            s[i + s.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|i| {
            let (x, y) = (get(a, i), get(b, i));
            ensure!(
                x == y || x == 1 || y == 1,
                "shapes {a:?} and {b:?} do not broadcast"
            );
            Ok(x.max(y))
        })
        .collect()
}

/// Element-wise `op` ("Add", "Sub", "Mul", "Div") with broadcasting.
pub fn binary(op: &str, a: &Const, b: &Const) -> Result<Const> {
    let dims = broadcast(&a.dims, &b.dims)?;
    let r = dims.len();
    let pad = |d: &[usize]| -> Vec<usize> {
        let mut v = vec![1; r - d.len()];
        v.extend(d);
        v
    };
    let (da, db) = (pad(&a.dims), pad(&b.dims));
    let ia = gather_index(&dims, &da, |c, s| {
        for k in 0..r {
            s[k] = if da[k] == 1 { 0 } else { c[k] };
        }
    })?;
    let ib = gather_index(&dims, &db, |c, s| {
        for k in 0..r {
            s[k] = if db[k] == 1 { 0 } else { c[k] };
        }
    })?;
    let data = match (&a.data, &b.data) {
        (Data::I(x), Data::I(y)) => Data::I(
            ia.iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    let (p, q) = (x[i], y[j]);
                    Ok(match op {
                        "Add" => p.wrapping_add(q),
                        "Sub" => p.wrapping_sub(q),
                        "Mul" => p.wrapping_mul(q),
                        _ => {
                            ensure!(q != 0, "integer division by zero");
                            p.wrapping_div(q)
                        }
                    })
                })
                .collect::<Result<_>>()?,
        ),
        _ => {
            let (x, y) = (a.f32s(), b.f32s());
            Data::F(
                ia.iter()
                    .zip(&ib)
                    .map(|(&i, &j)| {
                        let (p, q) = (x[i], y[j]);
                        match op {
                            "Add" => p + q,
                            "Sub" => p - q,
                            "Mul" => p * q,
                            _ => p / q,
                        }
                    })
                    .collect(),
            )
        }
    };
    Ok(Const { dims, data })
}

/// Cast to an ONNX element type: floats for float32/64, integers for the integer types.
pub fn cast(x: &Const, to: i64) -> Result<Const> {
    let data = match to as i32 {
        proto::FLOAT | proto::DOUBLE => Data::F(x.f32s()),
        proto::INT64 | proto::INT32 | proto::INT8 | proto::UINT8 | proto::BOOL => {
            Data::I(match &x.data {
                Data::I(v) => v.clone(),
                Data::F(v) => v.iter().map(|&f| f as i64).collect(),
            })
        }
        t => bail!("Cast to {} is not supported", type_name(t)),
    };
    Ok(Const {
        dims: x.dims.clone(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(dims: &[usize]) -> Const {
        let n = dims.iter().product::<usize>() as i64;
        Const::ints(dims.to_vec(), (0..n).collect())
    }

    #[test]
    fn shape_arithmetic_by_hand() {
        // [[0 1 2] [3 4 5]]ᵀ = [[0 3] [1 4] [2 5]]
        let t = transpose(&iota(&[2, 3]), &[1, 0]).unwrap();
        assert_eq!(
            (t.dims.clone(), t.i64s().unwrap()),
            (vec![3, 2], vec![0, 3, 1, 4, 2, 5])
        );
        // Gather axis 1, indices [2, -3]: columns 2 and 0.
        let g = gather(&iota(&[2, 3]), &Const::ints(vec![2], vec![2, -3]), 1).unwrap();
        assert_eq!(g.i64s().unwrap(), [2, 0, 5, 3]);
        // Gather of a scalar index drops the axis (Shape → Gather(0) → the batch).
        let g = gather(
            &Const::ints(vec![4], vec![1, 8, 7, 7]),
            &Const::ints(vec![], vec![0]),
            0,
        );
        assert_eq!(g.unwrap(), Const::ints(vec![], vec![1]));
        // Slice with a negative step: [9, 7, 5] from 0..10.
        let r = slice_ranges(&[10], &[-1], &[4], None, Some(&[-2])).unwrap();
        assert_eq!(slice(&iota(&[10]), &r).unwrap().i64s().unwrap(), [9, 7, 5]);
        // An end past the axis is clamped; an empty axis slices to nothing.
        let r = slice_ranges(&[3], &[1], &[i64::MAX], None, None).unwrap();
        assert_eq!(slice(&iota(&[3]), &r).unwrap().i64s().unwrap(), [1, 2]);
        let r = slice_ranges(&[0], &[0], &[-1], None, Some(&[-1])).unwrap();
        assert_eq!(slice(&iota(&[0]), &r).unwrap().len(), 0);
        // (2, 1) − (3): broadcast to (2, 3).
        let d = binary(
            "Sub",
            &Const::ints(vec![2, 1], vec![10, 20]),
            &Const::ints(vec![3], vec![1, 2, 3]),
        );
        assert_eq!(d.unwrap().i64s().unwrap(), [9, 8, 7, 19, 18, 17]);
        assert!(
            binary(
                "Div",
                &Const::ints(vec![1], vec![1]),
                &Const::ints(vec![1], vec![0])
            )
            .is_err()
        );
        // Reshape: 0 copies, −1 infers; a wrong count is an error.
        assert_eq!(
            reshape_dims(&[1, 8, 4, 4], &[0, -1], false).unwrap(),
            [1, 128]
        );
        assert!(reshape_dims(&[1, 8, 4, 4], &[3, -1], false).is_err());
        assert!(reshape_dims(&[1, 8], &[-1, -1], false).is_err());
        assert_eq!(unsqueeze_dims(&[1, 8], &[-1, 2]).unwrap(), [1, 8, 1, 1]);
        assert_eq!(squeeze_dims(&[1, 8, 1, 1], Some(&[2, 3])).unwrap(), [1, 8]);
        assert!(squeeze_dims(&[1, 8], Some(&[1])).is_err());
        let c = concat(
            &[
                &Const::ints(vec![1], vec![1]),
                &Const::ints(vec![2], vec![-1, 5]),
            ],
            0,
        );
        assert_eq!(c.unwrap().i64s().unwrap(), [1, -1, 5]);
        assert!(axis(0, 0).is_err());
    }
}
