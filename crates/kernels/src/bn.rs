//! Training-mode batch normalisation (optionally fused with ReLU) as a candle op: statistics
//! over every dim except dim 1, one fused backward pass for dx, dgamma and dbeta. Work is split
//! by channel, with f64 per-channel accumulators summed in a fixed order (deterministic).

use crate::simd::{affine, bn_dx, centered_sums, grad_sums};
use crate::util::{SyncPtr, check_cpu_f32, err, storage_slice, tensor, with_f32};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const OP: &str = "batch_norm_train";

/// Training batch norm: returns `(y, batch_mean, batch_biased_var)`; mean and var (shape `(C)`)
/// are plain tensors for the caller's running statistics (not differentiated).
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    bn(x, gamma, beta, eps, false)
}

/// `relu(batch_norm_train(x))` in one op (one pass forward, one masked pass backward).
pub fn batch_norm_relu_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    bn(x, gamma, beta, eps, true)
}

fn bn(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    for (what, t) in [("input", x), ("gamma", gamma), ("beta", beta)] {
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
    if gamma.dims() != [c] || beta.dims() != [c] {
        return Err(err(
            OP,
            format!(
                "gamma {:?} and beta {:?} must both be [{c}]",
                gamma.dims(),
                beta.dims()
            ),
        ));
    }
    if n * s == 0 {
        return Err(err(OP, "empty batch"));
    }
    if eps.is_nan() || eps < 0.0 {
        return Err(err(OP, format!("eps must be non-negative, got {eps}")));
    }
    let x = x.contiguous()?;
    let (mean, var) = with_f32(OP, &x, |xs| stats(xs, n, c, s))?;
    let invstd: Vec<f32> = var
        .iter()
        .map(|v| (1.0 / (v + eps).sqrt()) as f32)
        .collect();
    let mean32: Vec<f32> = mean.iter().map(|v| *v as f32).collect();
    let var32: Vec<f32> = var.iter().map(|v| *v as f32).collect();
    let op = BnOp {
        n,
        c,
        s,
        mean: mean32.clone(),
        invstd,
        relu,
    };
    let y = x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    Ok((y, tensor(mean32, c)?, tensor(var32, c)?))
}

/// Per-channel mean and biased variance (f64, one pass per channel).
fn stats(x: &[f32], n: usize, c: usize, s: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (n * s) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            // Shift by the first element to keep the one-pass variance well conditioned.
            let shift = x[ch * s] as f64;
            let (mut sum, mut sq) = (0f64, 0f64);
            for i in 0..n {
                let (ps, pq) = centered_sums(&x[(i * c + ch) * s..][..s], shift as f32);
                sum += ps as f64;
                sq += pq as f64;
            }
            let mu = sum / m;
            (shift + mu, (sq / m - mu * mu).max(0.0))
        })
        .unzip()
}

#[derive(Clone, Debug)]
struct BnOp {
    n: usize,
    c: usize,
    s: usize,
    mean: Vec<f32>,
    invstd: Vec<f32>,
    relu: bool,
}

impl CustomOp3 for BnOp {
    fn name(&self) -> &'static str {
        if self.relu {
            "whittle-bn-relu-train"
        } else {
            "whittle-bn-train"
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
        let gamma = storage_slice(OP, s2, l2)?;
        let beta = storage_slice(OP, s3, l3)?;
        let (n, c, s) = (self.n, self.c, self.s);
        let mut y = vec![0f32; x.len()];
        let yp = SyncPtr(y.as_mut_ptr());
        (0..c).into_par_iter().for_each(|ch| {
            let a = gamma[ch] * self.invstd[ch];
            let b = beta[ch] - self.mean[ch] * a;
            for i in 0..n {
                let off = (i * c + ch) * s;
                // SAFETY: each task writes only its own channel's planes.
                let ys = unsafe { yp.slice(off, s) };
                affine(ys, &x[off..off + s], a, b, self.relu);
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, s) = (self.n, self.c, self.s);
        let need_dx = x.track_op();
        let gamma = crate::util::to_vec(OP, gamma)?;
        let (dx, dg, db) = with_f32(OP, x, |xs| {
            with_f32(OP, grad, |gs| {
                with_f32(OP, res, |ys| {
                    let mut dx = if need_dx {
                        vec![0f32; xs.len()]
                    } else {
                        Vec::new()
                    };
                    let dxp = SyncPtr(dx.as_mut_ptr());
                    let per: Vec<(f32, f32)> = (0..c)
                        .into_par_iter()
                        .map(|ch| {
                            let (mu, inv) = (self.mean[ch], self.invstd[ch]);
                            let (mut sg, mut sgx) = (0f64, 0f64);
                            for i in 0..n {
                                let off = (i * c + ch) * s;
                                let mask = self.relu.then(|| &ys[off..off + s]);
                                let (a, b) =
                                    grad_sums(&gs[off..off + s], &xs[off..off + s], mu, mask);
                                sg += a as f64;
                                sgx += b as f64;
                            }
                            let sgx = sgx * inv as f64; // Σ g·x̂
                            if need_dx {
                                let m = (n * s) as f64;
                                let k = gamma[ch] * inv;
                                let c0 = (sg / m) as f32;
                                let c1 = (sgx / m) as f32 * inv;
                                for i in 0..n {
                                    let off = (i * c + ch) * s;
                                    // SAFETY: each task writes only its own channel's planes.
                                    let d = unsafe { dxp.slice(off, s) };
                                    let g = &gs[off..off + s];
                                    let xr = &xs[off..off + s];
                                    let mask = self.relu.then(|| &ys[off..off + s]);
                                    bn_dx(d, g, xr, mask, k, c0, c1, mu);
                                }
                            }
                            (sgx as f32, sg as f32)
                        })
                        .collect();
                    let (dg, db): (Vec<f32>, Vec<f32>) = per.into_iter().unzip();
                    (need_dx.then_some(dx), dg, db)
                })
            })
        })???;
        let dx = match dx {
            Some(v) => Some(tensor(v, x.shape().clone())?),
            None => None,
        };
        Ok((dx, Some(tensor(dg, c)?), Some(tensor(db, c)?)))
    }
}
