//! Depthwise convolution (groups = in = out channels) as direct loops, forward and backward.
//! Each input plane is copied into a zero-padded buffer so inner loops need no bounds logic;
//! with stride 1 the whole plane is one long multiply-add per kernel tap (computed in the
//! padded width, extra columns discarded). Work is split by channel: each task owns one
//! channel's outputs and weight/bias gradients and walks the batch in order, so no cross-thread
//! reduction is needed (deterministic for any thread count).

use crate::depthwise_flat as flat;
use crate::geom::Geom;
use crate::simd::{axpy, dot, sum};
use crate::util::SyncPtr;
use rayon::prelude::*;

/// Padded-plane geometry of one channel.
struct Pad {
    hp: usize,
    wp: usize,
    /// Length of the flattened stride-1 output in padded-width layout.
    len: usize,
}

impl Pad {
    fn new(gm: &Geom) -> Self {
        let (hp, wp) = (gm.h + 2 * gm.ph, gm.w + 2 * gm.pw);
        Self {
            hp,
            wp,
            len: (gm.oh - 1) * wp + gm.ow,
        }
    }
    fn fill(&self, gm: &Geom, xp: &mut [f32], xs: &[f32]) {
        for iy in 0..gm.h {
            xp[(iy + gm.ph) * self.wp + gm.pw..][..gm.w].copy_from_slice(&xs[iy * gm.w..][..gm.w]);
        }
    }
    fn tap(&self, gm: &Geom, ki: usize, kj: usize) -> usize {
        ki * gm.dh * self.wp + kj * gm.dw
    }
}

fn unit_stride(gm: &Geom) -> bool {
    gm.sh == 1 && gm.sw == 1
}

/// Forward depthwise convolution; `w` is `(c, 1, kh, kw)`.
pub fn forward(gm: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (c, p, hw, kk) = (gm.cin, gm.p(), gm.hw(), gm.kh * gm.kw);
    let pad = Pad::new(gm);
    let mut y = crate::util::uninit_vec(gm.n * c * p);
    let yp = SyncPtr(y.as_mut_ptr());
    (0..c).into_par_iter().for_each(|ch| {
        let wc = &w[ch * kk..][..kk];
        let bv = bias.map_or(0.0, |b| b[ch]);
        if flat::applies(gm) {
            let mut f = flat::Flat::new(gm);
            for n in 0..gm.n {
                // SAFETY: each task writes only the planes of its own channel.
                let ys = unsafe { yp.slice((n * c + ch) * p, p) };
                flat::plane_forward(&mut f, gm, &x[(n * c + ch) * hw..][..hw], wc, bv, ys);
            }
            return;
        }
        let mut xp = vec![0f32; pad.hp * pad.wp];
        let mut tmp = vec![0f32; gm.oh * pad.wp];
        for n in 0..gm.n {
            pad.fill(gm, &mut xp, &x[(n * c + ch) * hw..][..hw]);
            // SAFETY: each task writes only the planes of its own channel.
            let ys = unsafe { yp.slice((n * c + ch) * p, p) };
            if unit_stride(gm) {
                let t = &mut tmp[..pad.len];
                t.fill(bv);
                for ki in 0..gm.kh {
                    for kj in 0..gm.kw {
                        axpy(
                            t,
                            wc[ki * gm.kw + kj],
                            &xp[pad.tap(gm, ki, kj)..][..pad.len],
                        );
                    }
                }
                for oy in 0..gm.oh {
                    ys[oy * gm.ow..][..gm.ow].copy_from_slice(&t[oy * pad.wp..][..gm.ow]);
                }
            } else {
                ys.fill(bv);
                for oy in 0..gm.oh {
                    let yrow = &mut ys[oy * gm.ow..][..gm.ow];
                    for ki in 0..gm.kh {
                        for kj in 0..gm.kw {
                            let wv = wc[ki * gm.kw + kj];
                            let row = &xp[oy * gm.sh * pad.wp + pad.tap(gm, ki, kj)..];
                            for (ox, yv) in yrow.iter_mut().enumerate() {
                                *yv += wv * row[ox * gm.sw];
                            }
                        }
                    }
                }
            }
        }
    });
    y
}

/// Depthwise gradients `(dx if need_dx, dw, db)`.
pub fn backward(
    gm: &Geom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    need_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let (c, p, hw, kk) = (gm.cin, gm.p(), gm.hw(), gm.kh * gm.kw);
    let pad = Pad::new(gm);
    let mut dx = if need_dx {
        crate::util::uninit_vec(gm.n * c * hw)
    } else {
        Vec::new()
    };
    let dxp = SyncPtr(dx.as_mut_ptr());
    let per_ch: Vec<(Vec<f32>, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let wc = &w[ch * kk..][..kk];
            let mut dwc = vec![0f32; kk];
            let mut db = 0f32;
            if flat::applies(gm) {
                let mut f = flat::Flat::new(gm);
                for n in 0..gm.n {
                    let dys = &dy[(n * c + ch) * p..][..p];
                    db += sum(dys);
                    // SAFETY: each task writes only the planes of its own channel.
                    let dxs = need_dx.then(|| unsafe { dxp.slice((n * c + ch) * hw, hw) });
                    flat::plane_backward(
                        &mut f,
                        gm,
                        &x[(n * c + ch) * hw..][..hw],
                        wc,
                        dys,
                        &mut dwc,
                        dxs,
                    );
                }
                return (dwc, db);
            }
            let mut xp = vec![0f32; pad.hp * pad.wp];
            let mut gp = vec![0f32; pad.hp * pad.wp];
            let mut dyp = vec![0f32; gm.oh * pad.wp];
            for n in 0..gm.n {
                pad.fill(gm, &mut xp, &x[(n * c + ch) * hw..][..hw]);
                let dys = &dy[(n * c + ch) * p..][..p];
                db += sum(dys);
                if need_dx {
                    gp.fill(0.0);
                }
                if unit_stride(gm) {
                    // dy in padded-width layout; the extra columns stay zero.
                    for oy in 0..gm.oh {
                        dyp[oy * pad.wp..][..gm.ow].copy_from_slice(&dys[oy * gm.ow..][..gm.ow]);
                    }
                    let g = &dyp[..pad.len];
                    for ki in 0..gm.kh {
                        for kj in 0..gm.kw {
                            let t = pad.tap(gm, ki, kj);
                            dwc[ki * gm.kw + kj] += dot(g, &xp[t..t + pad.len]);
                            if need_dx {
                                axpy(&mut gp[t..t + pad.len], wc[ki * gm.kw + kj], g);
                            }
                        }
                    }
                } else {
                    for oy in 0..gm.oh {
                        let grow = &dys[oy * gm.ow..][..gm.ow];
                        for ki in 0..gm.kh {
                            for kj in 0..gm.kw {
                                let wi = ki * gm.kw + kj;
                                let base = oy * gm.sh * pad.wp + pad.tap(gm, ki, kj);
                                let row = &xp[base..];
                                let mut acc = 0f32;
                                for (ox, gv) in grow.iter().enumerate() {
                                    acc += *gv * row[ox * gm.sw];
                                }
                                dwc[wi] += acc;
                                if need_dx {
                                    let wv = wc[wi];
                                    let drow = &mut gp[base..];
                                    for (ox, gv) in grow.iter().enumerate() {
                                        drow[ox * gm.sw] += wv * *gv;
                                    }
                                }
                            }
                        }
                    }
                }
                if need_dx {
                    // SAFETY: each task writes only the planes of its own channel.
                    let d = unsafe { dxp.slice((n * c + ch) * hw, hw) };
                    for iy in 0..gm.h {
                        d[iy * gm.w..][..gm.w]
                            .copy_from_slice(&gp[(iy + gm.ph) * pad.wp + gm.pw..][..gm.w]);
                    }
                }
            }
            (dwc, db)
        })
        .collect();
    let (dw, db) = concat_channels(per_ch);
    (need_dx.then_some(dx), dw, db)
}

/// Per-channel `(weight gradient, bias gradient)` pairs, in channel order, as `(dw, db)`.
pub(crate) fn concat_channels(per_ch: Vec<(Vec<f32>, f32)>) -> (Vec<f32>, Vec<f32>) {
    let mut dw = Vec::new();
    let mut db = Vec::with_capacity(per_ch.len());
    for (dwc, dbc) in per_ch {
        dw.extend_from_slice(&dwc);
        db.push(dbc);
    }
    (dw, db)
}
