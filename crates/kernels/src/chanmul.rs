//! The squeeze-and-excitation product `y[n, c, ·] = x[n, c, ·] · s[n, c]` as a candle op:
//! `x (N, C, ...)` scaled per sample and channel by `s (N, C)` in one pass, instead of candle's
//! broadcast multiply (strided indexing per element) and its backward (a broadcast multiply
//! plus a sum over the trailing dims). Backward: `dx = g · s` per plane, `ds[n, c] = Σ g · x`
//! over the plane (16-lane fixed-order sums): deterministic, split by sample.

use crate::simd::{dot, scale_into};
use crate::util::{check_cpu_f32, err, storage_slice, tensor, uninit_vec, with_f32};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const OP: &str = "channel_mul";

/// `x (N, C, ...)` times `s (N, C)` broadcast over the trailing dims. Differentiable in both.
pub fn channel_mul(x: &Tensor, s: &Tensor) -> Result<Tensor> {
    check_cpu_f32(OP, "input", x)?;
    check_cpu_f32(OP, "scale", s)?;
    let dims = x.dims();
    if dims.len() < 2 || s.dims() != &dims[..2] {
        return Err(err(
            OP,
            format!(
                "input (N, C, ...) and scale (N, C) expected, got {dims:?} and {:?}",
                s.dims()
            ),
        ));
    }
    let plane: usize = dims[2..].iter().product();
    x.contiguous()?
        .apply_op2(&s.contiguous()?, ChanMulOp { plane })
}

struct ChanMulOp {
    /// Elements per (sample, channel) plane.
    plane: usize,
}

/// Planes per parallel task: whole samples' worth when planes are small.
fn chunk(plane: usize) -> usize {
    (1usize << 14).div_ceil(plane.max(1)).max(1)
}

impl CustomOp2 for ChanMulOp {
    fn name(&self) -> &'static str {
        "whittle-channel-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = storage_slice(OP, s1, l1)?;
        let s = storage_slice(OP, s2, l2)?;
        let p = self.plane;
        let mut y = uninit_vec(x.len());
        if p > 0 {
            let k = chunk(p);
            y.par_chunks_mut(k * p)
                .zip(x.par_chunks(k * p).zip(s.par_chunks(k)))
                .for_each(|(y, (x, s))| {
                    for ((y, x), &s) in y.chunks_exact_mut(p).zip(x.chunks_exact(p)).zip(s) {
                        scale_into(y, x, s);
                    }
                });
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        s: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let p = self.plane;
        let need_dx = x.track_op();
        let k = chunk(p);
        let (dx, ds) = with_f32(OP, x, |xs| {
            with_f32(OP, s, |ss| {
                with_f32(OP, grad, |gs| {
                    let mut ds = vec![0f32; ss.len()];
                    let mut dx = if need_dx {
                        uninit_vec(xs.len())
                    } else {
                        Vec::new()
                    };
                    if p > 0 {
                        ds.par_chunks_mut(k)
                            .zip(xs.par_chunks(k * p).zip(gs.par_chunks(k * p)))
                            .for_each(|(d, (x, g))| {
                                for ((d, x), g) in
                                    d.iter_mut().zip(x.chunks_exact(p)).zip(g.chunks_exact(p))
                                {
                                    *d = dot(g, x);
                                }
                            });
                        if need_dx {
                            dx.par_chunks_mut(k * p)
                                .zip(gs.par_chunks(k * p).zip(ss.par_chunks(k)))
                                .for_each(|(d, (g, s))| {
                                    for ((d, g), &s) in
                                        d.chunks_exact_mut(p).zip(g.chunks_exact(p)).zip(s)
                                    {
                                        scale_into(d, g, s);
                                    }
                                });
                        }
                    }
                    (need_dx.then_some(dx), ds)
                })
            })
        })???;
        let dx = match dx {
            Some(v) => Some(tensor(v, x.shape().clone())?),
            None => None,
        };
        Ok((dx, Some(tensor(ds, s.shape().clone())?)))
    }
}
