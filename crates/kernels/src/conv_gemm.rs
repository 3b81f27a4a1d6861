//! General (grouped) convolution, forward and backward, on raw f32 slices: dispatches to the
//! AVX-512 direct kernels (`crate::direct`) where they run, else im2col + GEMM (this file).
//! Work is split into the fixed batch chunks of [`crate::util::batch_ranges`]; each chunk
//! processes sub-batches whose size depends on the shapes only, and weight/bias gradients are
//! per-chunk partial sums reduced in chunk order, so results are bit-identical for any thread count.

use crate::act::Clamp;
use crate::geom::Geom;
use crate::geom::Wide;
use crate::im2col::{col2im, im2col, im2col_wide};
use crate::util::{SyncPtr, batch_ranges, matmul};
use rayon::prelude::*;

/// Samples per GEMM: enough columns for an efficient GEMM, while the column buffer stays in cache.
/// `p` is the number of GEMM columns per sample.
fn sub_batch(gm: &Geom, p: usize) -> usize {
    if gm.is_pointwise() {
        // The input planes are the GEMM operand as they are: no copies, one sample per GEMM.
        return 1;
    }
    let p = p.max(1);
    let want = 512usize.div_ceil(p).max(1);
    let cap = ((1usize << 18) / (gm.kdim() * p).max(1)).max(1);
    want.min(cap)
}

/// Forward convolution: `y (n, cout, oh, ow)` from `x (n, cin, h, w)`, `w (cout, cig, kh, kw)`,
/// with the ReLU applied in the bias pass when `relu`.
pub fn forward(gm: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: Clamp) -> Vec<f32> {
    if crate::direct::usable(gm) {
        return crate::direct::forward(gm, x, w, bias, relu);
    }
    let (cin, cout, p, hw, kdim) = (gm.cin, gm.cout, gm.p(), gm.hw(), gm.kdim());
    let (cig, cog) = (gm.cig(), gm.cog());
    let mut y = crate::util::uninit_vec(gm.n * cout * p);
    let yp = SyncPtr(y.as_mut_ptr());
    let wide = gm.wide();
    let cols = wide.map_or(p, |wd| wd.cols);
    let sb = sub_batch(gm, cols);
    batch_ranges(gm.n).into_par_iter().for_each(|r| {
        let (mut col, mut tmp, mut pad) = (Vec::new(), Vec::new(), Vec::new());
        let mut n0 = r.start;
        while n0 < r.end {
            let nb = sb.min(r.end - n0);
            let ncols = nb * cols;
            // SAFETY: chunk ranges are disjoint, so each task owns its samples' outputs.
            let ys = unsafe { yp.slice(n0 * cout * p, nb * cout * p) };
            for g in 0..gm.groups {
                let wg = &w[g * cog * kdim..][..cog * kdim];
                let colref: &[f32] = if gm.is_pointwise() && nb == 1 {
                    &x[(n0 * cin + g * cig) * hw..][..cig * hw]
                } else {
                    grow(&mut col, kdim * ncols);
                    match &wide {
                        Some(wd) => im2col_wide(gm, wd, x, n0, nb, g, &mut pad, &mut col),
                        None => im2col(gm, x, n0, nb, g, &mut col),
                    }
                    &col[..kdim * ncols]
                };
                if nb == 1 && wide.is_none() {
                    let dst = &mut ys[g * cog * p..][..cog * p];
                    matmul(cog, p, kdim, dst, false, wg, kdim, 1, colref, ncols, 1);
                } else {
                    grow(&mut tmp, cog * ncols);
                    matmul(
                        cog, ncols, kdim, &mut tmp, false, wg, kdim, 1, colref, ncols, 1,
                    );
                    for b in 0..nb {
                        for co in 0..cog {
                            let dst = &mut ys[(b * cout + g * cog + co) * p..][..p];
                            let src = &tmp[co * ncols + b * cols..][..cols];
                            from_columns(gm, wide.as_ref(), src, dst);
                        }
                    }
                }
            }
            if bias.is_some() || relu.on() {
                for (i, plane) in ys.chunks_exact_mut(p.max(1)).enumerate() {
                    let bv = bias.map_or(0.0, |b| b[i % cout]);
                    crate::simd::add_bias(plane, bv, relu);
                }
            }
            n0 += nb;
        }
    });
    y
}

/// Gradients of a convolution: `(dx if need_dx, dw, db)` from `dy (n, cout, oh, ow)`.
pub fn backward(
    gm: &Geom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    need_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let (cin, cout, p, hw, kdim) = (gm.cin, gm.cout, gm.p(), gm.hw(), gm.kdim());
    let (cig, cog) = (gm.cig(), gm.cog());
    // Unit stride: dx is a forward convolution of dy with the flipped, channel-transposed kernel,
    // which runs at forward-GEMM speed (the dcol + col2im route has a tiny GEMM inner dimension).
    let transposed = need_dx.then(|| transposed_geom(gm)).flatten();
    if crate::direct::usable(gm) {
        let dx = need_dx.then(|| match &transposed {
            Some(tg) => forward(tg, dy, &flip_weight(gm, w), None, Clamp::None),
            None => crate::direct::input_grad(gm, w, dy),
        });
        let (dw, db) = crate::direct::weight_grad(gm, x, dy);
        return (dx, dw, db);
    }
    let mut dx = match &transposed {
        Some(tg) => forward(tg, dy, &flip_weight(gm, w), None, Clamp::None),
        None if need_dx => vec![0f32; gm.n * cin * hw],
        None => Vec::new(),
    };
    let dcol_dx = need_dx && transposed.is_none();
    let dxp = SyncPtr(dx.as_mut_ptr());
    // col2im reads the plain layout, so the wide one serves the weight gradient only.
    let wide = if dcol_dx { None } else { gm.wide() };
    let cols = wide.map_or(p, |wd| wd.cols);
    let sb = sub_batch(gm, cols);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = batch_ranges(gm.n)
        .into_par_iter()
        .map(|r| {
            // Weight gradient accumulated transposed, (kdim × cog) per group: gemm is ~3× faster
            // producing this orientation for the long-k shapes of dW.
            let mut dwt = vec![0f32; w.len()];
            let mut db = vec![0f32; cout];
            let (mut col, mut dyt, mut dcol, mut pad) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut n0 = r.start;
            while n0 < r.end {
                let nb = sb.min(r.end - n0);
                let ncols = nb * cols;
                let dys = &dy[n0 * cout * p..][..nb * cout * p];
                for (i, plane) in dys.chunks_exact(p.max(1)).enumerate() {
                    db[i % cout] += crate::simd::sum(plane);
                }
                let dyc: &[f32] = if nb == 1 && wide.is_none() {
                    dys
                } else {
                    // The wide layout's non-output columns must hold zeros.
                    dyt.clear();
                    dyt.resize(cout * ncols, 0.0);
                    for b in 0..nb {
                        for co in 0..cout {
                            let src = &dys[(b * cout + co) * p..][..p];
                            let dst = &mut dyt[co * ncols + b * cols..][..cols];
                            to_columns(gm, wide.as_ref(), src, dst);
                        }
                    }
                    &dyt
                };
                for g in 0..gm.groups {
                    let wg = &w[g * cog * kdim..][..cog * kdim];
                    let dyg = &dyc[g * cog * ncols..][..cog * ncols];
                    let direct = gm.is_pointwise() && nb == 1;
                    let colref: &[f32] = if direct {
                        &x[(n0 * cin + g * cig) * hw..][..cig * hw]
                    } else {
                        grow(&mut col, kdim * ncols);
                        match &wide {
                            Some(wd) => im2col_wide(gm, wd, x, n0, nb, g, &mut pad, &mut col),
                            None => im2col(gm, x, n0, nb, g, &mut col),
                        }
                        &col[..kdim * ncols]
                    };
                    let dwtg = &mut dwt[g * cog * kdim..][..cog * kdim];
                    matmul(
                        kdim, cog, ncols, dwtg, true, colref, ncols, 1, dyg, 1, ncols,
                    );
                    if dcol_dx {
                        // SAFETY: chunk ranges are disjoint, so each task owns its samples' dx.
                        let dxs = unsafe { dxp.slice(n0 * cin * hw, nb * cin * hw) };
                        if direct {
                            let dst = &mut dxs[g * cig * hw..][..cig * hw];
                            matmul(kdim, ncols, cog, dst, false, wg, 1, kdim, dyg, ncols, 1);
                        } else {
                            grow(&mut dcol, kdim * ncols);
                            matmul(
                                kdim, ncols, cog, &mut dcol, false, wg, 1, kdim, dyg, ncols, 1,
                            );
                            col2im(gm, &dcol, nb, g, dxs);
                        }
                    }
                }
                n0 += nb;
            }
            let mut dw = vec![0f32; w.len()];
            for g in 0..gm.groups {
                let (t, d) = (
                    &dwt[g * cog * kdim..][..cog * kdim],
                    &mut dw[g * cog * kdim..][..cog * kdim],
                );
                for r in 0..kdim {
                    for co in 0..cog {
                        d[co * kdim + r] = t[r * cog + co];
                    }
                }
            }
            (dw, db)
        })
        .collect();
    let (dw, db) = crate::util::sum_partials(partials, w.len(), cout);
    (need_dx.then_some(dx), dw, db)
}

/// Makes `v` at least `len` long without initialising new elements: for scratch buffers that
/// every use fully overwrites (im2col columns, GEMM outputs) before reading.
fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        *v = crate::util::uninit_vec(len);
    }
}

/// One output plane from its GEMM columns (plain: the same; wide: every `wq`-th row of `ow`).
fn from_columns(gm: &Geom, wide: Option<&Wide>, src: &[f32], dst: &mut [f32]) {
    match wide {
        None => dst.copy_from_slice(&src[..dst.len()]),
        Some(wd) => {
            for (oy, row) in dst.chunks_exact_mut(gm.ow).enumerate() {
                row.copy_from_slice(&src[oy * wd.wq..][..gm.ow]);
            }
        }
    }
}

/// The GEMM columns of one output-gradient plane: the inverse of [`from_columns`] (the wide
/// layout's other columns are left as they are: zero).
fn to_columns(gm: &Geom, wide: Option<&Wide>, src: &[f32], dst: &mut [f32]) {
    match wide {
        None => dst[..src.len()].copy_from_slice(src),
        Some(wd) => {
            for (oy, row) in src.chunks_exact(gm.ow).enumerate() {
                dst[oy * wd.wq..][..gm.ow].copy_from_slice(row);
            }
        }
    }
}

/// Geometry of dx as a forward convolution of dy, when the stride is 1 and the padding is at
/// most the dilated kernel extent (true for "same" and "valid" convolutions).
pub(crate) fn transposed_geom(gm: &Geom) -> Option<Geom> {
    let (eh, ew) = (gm.dh * (gm.kh - 1), gm.dw * (gm.kw - 1));
    if gm.sh != 1 || gm.sw != 1 || gm.ph > eh || gm.pw > ew {
        return None;
    }
    let tg = Geom {
        n: gm.n,
        cin: gm.cout,
        h: gm.oh,
        w: gm.ow,
        cout: gm.cin,
        ph: eh - gm.ph,
        pw: ew - gm.pw,
        oh: gm.h,
        ow: gm.w,
        ..*gm
    };
    debug_assert_eq!(tg.oh, gm.oh + 2 * tg.ph - eh);
    debug_assert_eq!(tg.ow, gm.ow + 2 * tg.pw - ew);
    Some(tg)
}

/// `W'[g·cig + ci, co, ki, kj] = W[g·cog + co, ci, kh-1-ki, kw-1-kj]`: the kernel of the transposed conv.
pub(crate) fn flip_weight(gm: &Geom, w: &[f32]) -> Vec<f32> {
    let (cig, cog, kh, kw) = (gm.cig(), gm.cog(), gm.kh, gm.kw);
    let mut out = vec![0f32; w.len()];
    for g in 0..gm.groups {
        for co in 0..cog {
            for ci in 0..cig {
                for ki in 0..kh {
                    for kj in 0..kw {
                        let src = (((g * cog + co) * cig + ci) * kh + ki) * kw + kj;
                        let dst =
                            (((g * cig + ci) * cog + co) * kh + (kh - 1 - ki)) * kw + (kw - 1 - kj);
                        out[dst] = w[src];
                    }
                }
            }
        }
    }
    out
}
