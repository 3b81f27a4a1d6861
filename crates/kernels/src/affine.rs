//! Per-channel affine `y = x·scale[c] + shift[c]` (optionally ReLU'd) as a candle op: eval-mode
//! batch norm in one pass instead of candle's broadcast multiply + broadcast add (+ ReLU).
//! Backward: dx = g·scale (masked by y > 0 with ReLU), dscale = Σ g·x, dshift = Σ g per channel,
//! split by channel with f64 accumulators in a fixed order (deterministic).

use crate::act::Clamp;
use crate::simd::{affine, grad_sums};
use crate::util::{
    SyncPtr, check_cpu_f32, err, storage_slice, tensor, to_vec, uninit_vec, with_f32,
};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const OP: &str = "channel_affine";

/// `x (N, C, ...)`, `scale (C)`, `shift (C)` → `x·scale + shift` per channel (dim 1), then
/// `max(·, 0)` when `relu` (or clamped by the given [`Clamp`]). Differentiable in all three
/// inputs.
pub fn channel_affine(
    x: &Tensor,
    scale: &Tensor,
    shift: &Tensor,
    relu: impl Into<Clamp>,
) -> Result<Tensor> {
    let relu = relu.into();
    for (what, t) in [("input", x), ("scale", scale), ("shift", shift)] {
        check_cpu_f32(OP, what, t)?;
    }
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(err(
            OP,
            format!("input must have at least 2 dims (N, C, ...), got {dims:?}"),
        ));
    }
    let (n, c) = (dims[0], dims[1]);
    let s: usize = dims[2..].iter().product();
    if scale.dims() != [c] || shift.dims() != [c] {
        return Err(err(
            OP,
            format!(
                "scale {:?} and shift {:?} must both be [{c}]",
                scale.dims(),
                shift.dims()
            ),
        ));
    }
    x.contiguous()?.apply_op3(
        &scale.contiguous()?,
        &shift.contiguous()?,
        AffineOp { n, c, s, relu },
    )
}

#[derive(Clone, Debug)]
struct AffineOp {
    n: usize,
    c: usize,
    s: usize,
    relu: Clamp,
}

impl CustomOp3 for AffineOp {
    fn name(&self) -> &'static str {
        match self.relu {
            Clamp::None => "whittle-channel-affine",
            Clamp::Relu => "whittle-channel-affine-relu",
            Clamp::Relu6 => "whittle-channel-affine-relu6",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = storage_slice(OP, s1, l1)?;
        let a = storage_slice(OP, s2, l2)?;
        let b = storage_slice(OP, s3, l3)?;
        let (n, c, s) = (self.n, self.c, self.s);
        let mut y = uninit_vec(x.len());
        // Split by sample (planes are independent); each task writes its own rows.
        y.par_chunks_mut(c * s)
            .zip(x.par_chunks(c * s))
            .for_each(|(ys, xs)| {
                for ch in 0..c {
                    let r = ch * s..(ch + 1) * s;
                    affine(&mut ys[r.clone()], &xs[r], a[ch], b[ch], self.relu);
                }
            });
        debug_assert_eq!(y.len(), n * c * s);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _shift: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, s) = (self.n, self.c, self.s);
        let need_dx = x.track_op();
        let a = to_vec(OP, scale)?;
        let (dx, da, db) = with_f32(OP, x, |xs| {
            with_f32(OP, grad, |gs| {
                with_f32(OP, res, |ys| {
                    let mut dx = if need_dx {
                        uninit_vec(xs.len())
                    } else {
                        Vec::new()
                    };
                    let dxp = SyncPtr(dx.as_mut_ptr());
                    let per: Vec<(f32, f32)> = (0..c)
                        .into_par_iter()
                        .map(|ch| {
                            let (mut sg, mut sgx) = (0f64, 0f64);
                            for i in 0..n {
                                let off = (i * c + ch) * s;
                                let r = off..off + s;
                                let mask = self.relu.on().then(|| &ys[r.clone()]);
                                let hi = self.relu.hi();
                                let (p, q) =
                                    grad_sums(&gs[r.clone()], &xs[r.clone()], 0.0, mask, hi);
                                sg += p as f64;
                                sgx += q as f64;
                                if need_dx {
                                    // SAFETY: each task writes only its own channel's planes.
                                    let d = unsafe { dxp.slice(off, s) };
                                    for j in 0..s {
                                        let live = mask.is_none_or(|m| {
                                            m[j] > 0.0 && (m[j] < hi || hi.is_infinite())
                                        });
                                        d[j] = if live { gs[off + j] * a[ch] } else { 0.0 };
                                    }
                                }
                            }
                            (sgx as f32, sg as f32)
                        })
                        .collect();
                    let (da, db): (Vec<f32>, Vec<f32>) = per.into_iter().unzip();
                    (need_dx.then_some(dx), da, db)
                })
            })
        })???;
        let dx = match dx {
            Some(v) => Some(tensor(v, x.shape().clone())?),
            None => None,
        };
        Ok((dx, Some(tensor(da, c)?), Some(tensor(db, c)?)))
    }
}
