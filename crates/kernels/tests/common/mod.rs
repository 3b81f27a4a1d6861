//! Test helpers: seeded random tensors, naive f64 direct-loop reference kernels (conv, batch
//! norm) with their hand-derived gradients, and tolerance checks.
#![allow(dead_code, clippy::too_many_arguments)]

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn randv(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

pub fn var(v: &[f32], shape: &[usize]) -> Var {
    Var::from_tensor(&Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()).unwrap()
}

pub fn cst(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Asserts `got ≈ want` elementwise with |d| <= atol + rtol·|want|.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (*g as f64 - w).abs();
        assert!(
            d <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, want {w} (|d| = {d:e})"
        );
    }
}

/// Naive grouped 2-D convolution problem description.
#[derive(Clone, Copy, Debug)]
pub struct RefConv {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub s: (usize, usize),
    pub p: (usize, usize),
    pub d: (usize, usize),
    pub g: usize,
}

impl RefConv {
    pub fn out(&self) -> Option<(usize, usize)> {
        let eh = self.d.0 * (self.kh - 1) + 1;
        let ew = self.d.1 * (self.kw - 1) + 1;
        if self.h + 2 * self.p.0 < eh || self.w + 2 * self.p.1 < ew {
            return None;
        }
        Some((
            (self.h + 2 * self.p.0 - eh) / self.s.0 + 1,
            (self.w + 2 * self.p.1 - ew) / self.s.1 + 1,
        ))
    }

    /// Visits every (output index, input index, weight index) triple that contributes.
    fn each(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        let (oh, ow) = self.out().unwrap();
        let (cig, cog) = (self.cin / self.g, self.cout / self.g);
        for n in 0..self.n {
            for co in 0..self.cout {
                let g = co / cog;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let yi = ((n * self.cout + co) * oh + oy) * ow + ox;
                        for ci in 0..cig {
                            for ki in 0..self.kh {
                                for kj in 0..self.kw {
                                    let iy = (oy * self.s.0 + ki * self.d.0) as isize
                                        - self.p.0 as isize;
                                    let ix = (ox * self.s.1 + kj * self.d.1) as isize
                                        - self.p.1 as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy as usize >= self.h
                                        || ix as usize >= self.w
                                    {
                                        continue;
                                    }
                                    let c = g * cig + ci;
                                    let xi = ((n * self.cin + c) * self.h + iy as usize) * self.w
                                        + ix as usize;
                                    let wi = ((co * cig + ci) * self.kh + ki) * self.kw + kj;
                                    f(yi, xi, wi, co);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    pub fn forward(&self, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f64> {
        let (oh, ow) = self.out().unwrap();
        let mut y = vec![0f64; self.n * self.cout * oh * ow];
        if let Some(b) = b {
            for (i, v) in y.iter_mut().enumerate() {
                *v = b[(i / (oh * ow)) % self.cout] as f64;
            }
        }
        self.each(|yi, xi, wi, _| y[yi] += x[xi] as f64 * w[wi] as f64);
        y
    }

    /// (dx, dw, db) for upstream gradient `dy`.
    pub fn backward(&self, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (oh, ow) = self.out().unwrap();
        let mut dx = vec![0f64; x.len()];
        let mut dw = vec![0f64; w.len()];
        let mut db = vec![0f64; self.cout];
        for (i, g) in dy.iter().enumerate() {
            db[(i / (oh * ow)) % self.cout] += *g as f64;
        }
        self.each(|yi, xi, wi, _| {
            dx[xi] += w[wi] as f64 * dy[yi] as f64;
            dw[wi] += x[xi] as f64 * dy[yi] as f64;
        });
        (dx, dw, db)
    }
}

/// Naive training batch norm over all dims but 1 of a (n, c, s) view: returns (y, mean, var).
pub fn bn_forward(
    x: &[f32],
    n: usize,
    c: usize,
    s: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    relu: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let m = (n * s) as f64;
    let mut mean = vec![0f64; c];
    let mut var = vec![0f64; c];
    for i in 0..n {
        for ch in 0..c {
            for k in 0..s {
                mean[ch] += x[(i * c + ch) * s + k] as f64 / m;
            }
        }
    }
    for i in 0..n {
        for ch in 0..c {
            for k in 0..s {
                let d = x[(i * c + ch) * s + k] as f64 - mean[ch];
                var[ch] += d * d / m;
            }
        }
    }
    let mut y = vec![0f64; x.len()];
    for i in 0..n {
        for ch in 0..c {
            for k in 0..s {
                let j = (i * c + ch) * s + k;
                let v = (x[j] as f64 - mean[ch]) / (var[ch] + eps).sqrt() * gamma[ch] as f64
                    + beta[ch] as f64;
                y[j] = if relu { v.max(0.0) } else { v };
            }
        }
    }
    (y, mean, var)
}

/// Batch-norm gradients by the textbook formulas: (dx, dgamma, dbeta).
#[allow(clippy::too_many_arguments)]
pub fn bn_backward(
    x: &[f32],
    n: usize,
    c: usize,
    s: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    relu: bool,
    dy: &[f32],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (y, mean, var) = bn_forward(x, n, c, s, gamma, beta, eps, relu);
    let m = (n * s) as f64;
    let mut dx = vec![0f64; x.len()];
    let mut dg = vec![0f64; c];
    let mut dbeta = vec![0f64; c];
    for ch in 0..c {
        let inv = 1.0 / (var[ch] + eps).sqrt();
        let idx = |i: usize, k: usize| (i * c + ch) * s + k;
        let g = |j: usize| {
            if relu && y[j] <= 0.0 {
                0.0
            } else {
                dy[j] as f64
            }
        };
        let (mut sg, mut sgx) = (0.0, 0.0);
        for i in 0..n {
            for k in 0..s {
                let j = idx(i, k);
                let xh = (x[j] as f64 - mean[ch]) * inv;
                sg += g(j);
                sgx += g(j) * xh;
            }
        }
        dg[ch] = sgx;
        dbeta[ch] = sg;
        for i in 0..n {
            for k in 0..s {
                let j = idx(i, k);
                let xh = (x[j] as f64 - mean[ch]) * inv;
                dx[j] = gamma[ch] as f64 * inv * (g(j) - sg / m - xh * sgx / m);
            }
        }
    }
    (dx, dg, dbeta)
}
