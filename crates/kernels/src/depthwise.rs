//! Depthwise convolution (groups = in = out channels) as direct loops, forward and backward.
//! Work is split by channel: each task owns one channel's outputs and its weight/bias
//! gradients and walks the batch in order, so no cross-thread reduction is needed.

use crate::geom::Geom;
use crate::util::SyncPtr;
use rayon::prelude::*;

/// Forward depthwise convolution; `w` is `(c, 1, kh, kw)`.
pub fn forward(gm: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (c, p, hw, kk) = (gm.cin, gm.p(), gm.hw(), gm.kh * gm.kw);
    let mut y = vec![0f32; gm.n * c * p];
    let yp = SyncPtr(y.as_mut_ptr());
    (0..c).into_par_iter().for_each(|ch| {
        let wc = &w[ch * kk..][..kk];
        let bv = bias.map_or(0.0, |b| b[ch]);
        for n in 0..gm.n {
            let xs = &x[(n * c + ch) * hw..][..hw];
            // SAFETY: each task writes only the planes of its own channel.
            let ys = unsafe { yp.slice((n * c + ch) * p, p) };
            plane_forward(gm, xs, wc, bv, ys);
        }
    });
    y
}

fn plane_forward(gm: &Geom, xs: &[f32], wc: &[f32], bv: f32, ys: &mut [f32]) {
    ys.fill(bv);
    for oy in 0..gm.oh {
        let yrow = &mut ys[oy * gm.ow..][..gm.ow];
        for ki in 0..gm.kh {
            let Some(iy) = gm.in_row(oy, ki) else {
                continue;
            };
            let xrow = &xs[iy * gm.w..][..gm.w];
            for kj in 0..gm.kw {
                let wv = wc[ki * gm.kw + kj];
                let (lo, hi, first) = gm.col_range(kj);
                if lo >= hi {
                    continue;
                }
                if gm.sw == 1 {
                    for (yv, xv) in yrow[lo..hi].iter_mut().zip(&xrow[first..first + hi - lo]) {
                        *yv += wv * *xv;
                    }
                } else {
                    for (k, yv) in yrow[lo..hi].iter_mut().enumerate() {
                        *yv += wv * xrow[first + k * gm.sw];
                    }
                }
            }
        }
    }
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
    let mut dx = if need_dx {
        vec![0f32; gm.n * c * hw]
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
            for n in 0..gm.n {
                let xs = &x[(n * c + ch) * hw..][..hw];
                let dys = &dy[(n * c + ch) * p..][..p];
                db += dys.iter().sum::<f32>();
                // SAFETY: each task writes only the planes of its own channel.
                let dxs = need_dx.then(|| unsafe { dxp.slice((n * c + ch) * hw, hw) });
                plane_backward(gm, xs, wc, dys, &mut dwc, dxs);
            }
            (dwc, db)
        })
        .collect();
    let mut dw = Vec::with_capacity(w.len());
    let mut db = Vec::with_capacity(c);
    for (dwc, dbc) in per_ch {
        dw.extend_from_slice(&dwc);
        db.push(dbc);
    }
    (need_dx.then_some(dx), dw, db)
}

fn plane_backward(
    gm: &Geom,
    xs: &[f32],
    wc: &[f32],
    dys: &[f32],
    dwc: &mut [f32],
    mut dxs: Option<&mut [f32]>,
) {
    for oy in 0..gm.oh {
        let dyrow = &dys[oy * gm.ow..][..gm.ow];
        for ki in 0..gm.kh {
            let Some(iy) = gm.in_row(oy, ki) else {
                continue;
            };
            let xrow = &xs[iy * gm.w..][..gm.w];
            for kj in 0..gm.kw {
                let wi = ki * gm.kw + kj;
                let wv = wc[wi];
                let (lo, hi, first) = gm.col_range(kj);
                if lo >= hi {
                    continue;
                }
                let g = &dyrow[lo..hi];
                let mut acc = 0f32;
                if gm.sw == 1 {
                    let xr = &xrow[first..first + hi - lo];
                    for (gv, xv) in g.iter().zip(xr) {
                        acc += *gv * *xv;
                    }
                    if let Some(dx) = dxs.as_deref_mut() {
                        let dr = &mut dx[iy * gm.w + first..][..hi - lo];
                        for (d, gv) in dr.iter_mut().zip(g) {
                            *d += wv * *gv;
                        }
                    }
                } else {
                    for (k, gv) in g.iter().enumerate() {
                        acc += *gv * xrow[first + k * gm.sw];
                    }
                    if let Some(dx) = dxs.as_deref_mut() {
                        let dr = &mut dx[iy * gm.w..][..gm.w];
                        for (k, gv) in g.iter().enumerate() {
                            dr[first + k * gm.sw] += wv * *gv;
                        }
                    }
                }
                dwc[wi] += acc;
            }
        }
    }
}
