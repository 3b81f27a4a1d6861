//! Max and average pooling over (N, C, H, W) with kernel, stride and (low, high) zero padding
//! per axis, as candle ops with hand-written backward (candle's own backward needs
//! kernel = stride). Average pooling divides by the full window (PyTorch's
//! `count_include_pad = True`); max pooling ignores padded positions (as if −∞). A max-pool
//! gradient goes to the first maximum of each window (row-major), like PyTorch.

use crate::util::{check_cpu_f32, err, storage_slice, tensor, with_f32};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Which pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// Geometry of a 2-d pooling: kernel, stride and (low, high) padding per axis (H, W).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dCfg {
    pub kind: PoolKind,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: ((usize, usize), (usize, usize)),
}

/// Output length of one pooled axis, None when the window does not fit.
pub fn pool_out(len: usize, k: usize, s: usize, (lo, hi): (usize, usize)) -> Option<usize> {
    let padded = len + lo + hi;
    if s == 0 || k == 0 || padded < k {
        None
    } else {
        Some((padded - k) / s + 1)
    }
}

/// Pooling of `x` (N, C, H, W) under `cfg`.
pub fn pool2d(x: &Tensor, cfg: &Pool2dCfg) -> Result<Tensor> {
    check_cpu_f32("pool2d", "input", x)?;
    let (n, c, h, w) = x.dims4()?;
    let (Some(oh), Some(ow)) = (
        pool_out(h, cfg.kernel.0, cfg.stride.0, cfg.padding.0),
        pool_out(w, cfg.kernel.1, cfg.stride.1, cfg.padding.1),
    ) else {
        return Err(err(
            "pool2d",
            format!(
                "window {:?} stride {:?} does not fit input {h}×{w} with padding {:?}",
                cfg.kernel, cfg.stride, cfg.padding
            ),
        ));
    };
    // Max pooling needs every window to hold a real input (else its max is −∞).
    if cfg.kind == PoolKind::Max
        && (cfg.padding.0.0 >= cfg.kernel.0
            || cfg.padding.0.1 >= cfg.kernel.0
            || cfg.padding.1.0 >= cfg.kernel.1
            || cfg.padding.1.1 >= cfg.kernel.1)
    {
        return Err(err(
            "pool2d",
            "max pooling padding must be smaller than the kernel",
        ));
    }
    x.contiguous()?.apply_op1(PoolOp {
        cfg: *cfg,
        dims: (n, c, h, w, oh, ow),
    })
}

struct PoolOp {
    cfg: Pool2dCfg,
    dims: (usize, usize, usize, usize, usize, usize),
}

impl PoolOp {
    /// For each output of one plane: the input positions of its window (row, column ranges).
    fn window(&self, o: usize, axis: usize) -> (usize, usize) {
        let (k, s, lo, len) = if axis == 0 {
            (
                self.cfg.kernel.0,
                self.cfg.stride.0,
                self.cfg.padding.0.0,
                self.dims.2,
            )
        } else {
            (
                self.cfg.kernel.1,
                self.cfg.stride.1,
                self.cfg.padding.1.0,
                self.dims.3,
            )
        };
        let start = (o * s) as isize - lo as isize;
        let a = start.max(0) as usize;
        let b = ((start + k as isize).min(len as isize)).max(0) as usize;
        (a, b.max(a))
    }

    /// Index (in the plane) of the first maximum of output (i, j)'s window.
    fn argmax(&self, p: &[f32], i: usize, j: usize) -> usize {
        let w = self.dims.3;
        let (r0, r1) = self.window(i, 0);
        let (c0, c1) = self.window(j, 1);
        let mut best = r0 * w + c0;
        for r in r0..r1 {
            for c in c0..c1 {
                if p[r * w + c] > p[best] {
                    best = r * w + c;
                }
            }
        }
        best
    }
}

impl CustomOp1 for PoolOp {
    fn name(&self) -> &'static str {
        "whittle-pool2d"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = storage_slice("pool2d", st, l)?;
        let (n, c, h, w, oh, ow) = self.dims;
        let area = (self.cfg.kernel.0 * self.cfg.kernel.1) as f32;
        let mut y = vec![0f32; n * c * oh * ow];
        y.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each(|(yp, p)| {
                for i in 0..oh {
                    let (r0, r1) = self.window(i, 0);
                    for j in 0..ow {
                        yp[i * ow + j] = match self.cfg.kind {
                            PoolKind::Max => p[self.argmax(p, i, j)],
                            PoolKind::Avg => {
                                let (c0, c1) = self.window(j, 1);
                                let mut s = 0f32;
                                for r in r0..r1 {
                                    for v in &p[r * w + c0..r * w + c1] {
                                        s += v;
                                    }
                                }
                                s / area
                            }
                        };
                    }
                }
            });
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w, oh, ow) = self.dims;
        let area = (self.cfg.kernel.0 * self.cfg.kernel.1) as f32;
        let xs = x.contiguous()?;
        let d = with_f32("pool2d", &xs, |xv| {
            with_f32("pool2d", grad, |g| {
                let mut d = vec![0f32; n * c * h * w];
                d.par_chunks_mut(h * w)
                    .zip(xv.par_chunks(h * w).zip(g.par_chunks(oh * ow)))
                    .for_each(|(dp, (p, gp))| {
                        for i in 0..oh {
                            let (r0, r1) = self.window(i, 0);
                            for j in 0..ow {
                                let gv = gp[i * ow + j];
                                match self.cfg.kind {
                                    PoolKind::Max => dp[self.argmax(p, i, j)] += gv,
                                    PoolKind::Avg => {
                                        let (c0, c1) = self.window(j, 1);
                                        let v = gv / area;
                                        for r in r0..r1 {
                                            for e in &mut dp[r * w + c0..r * w + c1] {
                                                *e += v;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    });
                d
            })
        })??;
        Ok(Some(tensor(d, x.shape().clone())?))
    }
}
