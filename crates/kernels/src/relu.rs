//! ReLU as a candle op with a one-pass masked backward (candle's own backward costs ~100× its
//! forward), the residual `ReLU(a + b)` in one pass, and global average pooling with a
//! broadcast backward.

use crate::act::Clamp;
use crate::simd::{relu_bwd, relu_fwd, relu6_bwd};
use crate::util::{check_cpu_f32, err, storage_slice, tensor, uninit_vec, with_f32};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const PAR_CHUNK: usize = 1 << 16;

/// `max(x, 0)` elementwise, any shape.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    check_cpu_f32("relu", "input", x)?;
    x.contiguous()?.apply_op1(ReluOp)
}

struct ReluOp;

impl CustomOp1 for ReluOp {
    fn name(&self) -> &'static str {
        "whittle-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = storage_slice("relu", s, l)?;
        let mut y = uninit_vec(x.len());
        y.par_chunks_mut(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK))
            .for_each(|(y, x)| {
                relu_fwd(y, x);
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let d = with_f32("relu", res, |y| {
            with_f32("relu", grad, |g| {
                let mut d = uninit_vec(y.len());
                d.par_chunks_mut(PAR_CHUNK)
                    .zip(y.par_chunks(PAR_CHUNK).zip(g.par_chunks(PAR_CHUNK)))
                    .for_each(|(d, (y, g))| {
                        relu_bwd(d, y, g);
                    });
                d
            })
        })??;
        Ok(Some(tensor(d, res.shape().clone())?))
    }
}

/// The gradient of a ReLU output `res`: `grad` where `res > 0`, else 0 (one parallel pass).
pub(crate) fn relu_grad(res: &Tensor, grad: &Tensor) -> Result<Tensor> {
    ReluOp
        .bwd(res, res, grad)?
        .ok_or_else(|| err("relu", "no gradient"))
}

/// The gradient through a clamped output `res` ([`Clamp::Relu`]: [`relu_grad`];
/// [`Clamp::Relu6`]: `grad` where `0 < res < 6`, else 0; one parallel pass). `Clamp::None`
/// passes `grad` through.
pub(crate) fn clamp_grad(res: &Tensor, grad: &Tensor, clamp: Clamp) -> Result<Tensor> {
    match clamp {
        Clamp::None => Ok(grad.clone()),
        Clamp::Relu => relu_grad(res, grad),
        Clamp::Relu6 => {
            let d = with_f32("relu6", res, |y| {
                with_f32("relu6", grad, |g| {
                    let mut d = uninit_vec(y.len());
                    d.par_chunks_mut(PAR_CHUNK)
                        .zip(y.par_chunks(PAR_CHUNK).zip(g.par_chunks(PAR_CHUNK)))
                        .for_each(|(d, (y, g))| relu6_bwd(d, y, g));
                    d
                })
            })??;
            tensor(d, res.shape().clone())
        }
    }
}

/// `max(a + b, 0)` elementwise for two tensors of one shape (a residual sum and its ReLU in one
/// pass, on all threads); both inputs receive the ReLU-masked gradient.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_cpu_f32("add_relu", "lhs", a)?;
    check_cpu_f32("add_relu", "rhs", b)?;
    if a.dims() != b.dims() {
        return Err(err(
            "add_relu",
            format!("shapes differ: {:?} and {:?}", a.dims(), b.dims()),
        ));
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, AddReluOp)
}

struct AddReluOp;

impl CustomOp2 for AddReluOp {
    fn name(&self) -> &'static str {
        "whittle-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (
            storage_slice("add_relu", s1, l1)?,
            storage_slice("add_relu", s2, l2)?,
        );
        let mut y = uninit_vec(a.len());
        y.par_chunks_mut(PAR_CHUNK)
            .zip(a.par_chunks(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)))
            .for_each(|(y, (a, b))| crate::simd::add_relu(y, a, b));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = relu_grad(res, grad)?;
        Ok((Some(d.clone()), Some(d)))
    }
}

/// Global average pooling: `(N, C, ...)` → `(N, C)`, the mean over all trailing dims.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    check_cpu_f32("global_avg_pool", "input", x)?;
    let dims = x.dims();
    if dims.len() < 3 {
        return Err(err(
            "global_avg_pool",
            format!("input must be (N, C, ...), got {dims:?}"),
        ));
    }
    let s: usize = dims[2..].iter().product();
    if s == 0 {
        return Err(err("global_avg_pool", "empty spatial extent"));
    }
    x.contiguous()?.apply_op1(GapOp {
        n: dims[0],
        c: dims[1],
        s,
    })
}

struct GapOp {
    n: usize,
    c: usize,
    s: usize,
}

impl CustomOp1 for GapOp {
    fn name(&self) -> &'static str {
        "whittle-global-avg-pool"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = storage_slice("global_avg_pool", st, l)?;
        let inv = 1.0 / self.s as f32;
        let y: Vec<f32> = x
            .chunks_exact(self.s)
            .map(|p| p.iter().sum::<f32>() * inv)
            .collect();
        Ok((CpuStorage::F32(y), Shape::from((self.n, self.c))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let inv = 1.0 / self.s as f32;
        let d = with_f32("global_avg_pool", grad, |g| {
            let mut d = uninit_vec(self.n * self.c * self.s);
            for (p, gv) in d.chunks_exact_mut(self.s).zip(g) {
                p.fill(gv * inv);
            }
            d
        })?;
        Ok(Some(tensor(d, x.shape().clone())?))
    }
}
