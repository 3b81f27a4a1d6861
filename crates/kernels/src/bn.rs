//! Training-mode batch normalisation (optionally fused with ReLU) as a candle op: statistics
//! over every dim except dim 1, one fused backward pass for dx, dgamma and dbeta. Memory is
//! streamed in layout order: work is split by sample, each task producing the partial sums of
//! its (sample, channel) planes; the per-channel totals are then f64 sums over the samples in
//! order, so results do not depend on the thread count (deterministic).

use crate::act::Clamp;
use crate::simd::{affine, bn_dx, centered_sums, grad_sums};
use crate::util::{check_cpu_f32, err, storage_slice, tensor, uninit_vec, with_f32};
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
    bn(x, gamma, beta, eps, Clamp::None)
}

/// `relu(batch_norm_train(x))` in one op (one pass forward, one masked pass backward).
pub fn batch_norm_relu_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    bn(x, gamma, beta, eps, Clamp::Relu)
}

/// [`batch_norm_train`] clamped by `clamp` (ReLU, ReLU6 or nothing) in the same op.
pub fn batch_norm_act_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    clamp: Clamp,
) -> Result<(Tensor, Tensor, Tensor)> {
    bn(x, gamma, beta, eps, clamp)
}

fn bn(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: Clamp,
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

/// Per-(sample, channel) plane results `f(sample, channel, plane offset)` as an `n × c` table,
/// computed in parallel over samples (each task walks its sample's planes in memory order).
fn plane_table<F>(n: usize, c: usize, s: usize, f: F) -> Vec<(f32, f32)>
where
    F: Fn(usize, usize) -> (f32, f32) + Sync,
{
    let mut out = vec![(0f32, 0f32); n * c];
    out.par_chunks_mut(c).enumerate().for_each(|(i, row)| {
        for (ch, r) in row.iter_mut().enumerate() {
            *r = f(ch, (i * c + ch) * s);
        }
    });
    out
}

/// Per-channel f64 totals of an `n × c` plane table, summed over samples in order.
fn channel_totals(table: &[(f32, f32)], c: usize) -> Vec<(f64, f64)> {
    let mut tot = vec![(0f64, 0f64); c];
    for row in table.chunks_exact(c) {
        for (t, (a, b)) in tot.iter_mut().zip(row) {
            t.0 += *a as f64;
            t.1 += *b as f64;
        }
    }
    tot
}

/// Per-channel mean and biased variance (f64; plane sums shifted by each channel's first
/// element to keep the one-pass variance well conditioned).
fn stats(x: &[f32], n: usize, c: usize, s: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (n * s) as f64;
    let shift: Vec<f32> = (0..c).map(|ch| x[ch * s]).collect();
    let table = plane_table(n, c, s, |ch, off| {
        centered_sums(&x[off..off + s], shift[ch])
    });
    channel_totals(&table, c)
        .into_iter()
        .zip(&shift)
        .map(|((sum, sq), sh)| {
            let mu = sum / m;
            (*sh as f64 + mu, (sq / m - mu * mu).max(0.0))
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
    relu: Clamp,
}

impl CustomOp3 for BnOp {
    fn name(&self) -> &'static str {
        match self.relu {
            Clamp::None => "whittle-bn-train",
            Clamp::Relu => "whittle-bn-relu-train",
            Clamp::Relu6 => "whittle-bn-relu6-train",
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
        let (c, s) = (self.c, self.s);
        let a: Vec<f32> = (0..c).map(|ch| gamma[ch] * self.invstd[ch]).collect();
        let b: Vec<f32> = (0..c).map(|ch| beta[ch] - self.mean[ch] * a[ch]).collect();
        let mut y = uninit_vec(x.len());
        y.par_chunks_mut(c * s)
            .zip(x.par_chunks(c * s))
            .for_each(|(ys, xs)| {
                for ch in 0..c {
                    let r = ch * s..(ch + 1) * s;
                    affine(&mut ys[r.clone()], &xs[r], a[ch], b[ch], self.relu);
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
                    let table = plane_table(n, c, s, |ch, off| {
                        let mask = self.relu.on().then(|| &ys[off..off + s]);
                        let (g, xr) = (&gs[off..off + s], &xs[off..off + s]);
                        grad_sums(g, xr, self.mean[ch], mask, self.relu.hi())
                    });
                    let m = (n * s) as f64;
                    let mut dg = Vec::with_capacity(c);
                    let mut db = Vec::with_capacity(c);
                    // Per channel: dx = k·(g' − c0 − (x − mu)·c1).
                    let mut coef = Vec::with_capacity(c);
                    for (ch, (sg, sgx)) in channel_totals(&table, c).into_iter().enumerate() {
                        let inv = self.invstd[ch];
                        let sgx = sgx * inv as f64; // Σ g·x̂
                        dg.push(sgx as f32);
                        db.push(sg as f32);
                        coef.push((gamma[ch] * inv, (sg / m) as f32, (sgx / m) as f32 * inv));
                    }
                    let mut dx = Vec::new();
                    if need_dx {
                        dx = uninit_vec(xs.len());
                        dx.par_chunks_mut(c * s).enumerate().for_each(|(i, d)| {
                            for (ch, &(k, c0, c1)) in coef.iter().enumerate() {
                                let r = ch * s..(ch + 1) * s;
                                let off = i * c * s + ch * s;
                                let mask = self.relu.on().then(|| &ys[off..off + s]);
                                let (g, xr) = (&gs[off..off + s], &xs[off..off + s]);
                                let (hi, mu) = (self.relu.hi(), self.mean[ch]);
                                bn_dx(&mut d[r], g, xr, mask, hi, k, c0, c1, mu);
                            }
                        });
                    }
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
