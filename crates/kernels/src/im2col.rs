//! im2col / col2im for one group of a sub-batch: the column matrix has `kdim` rows and
//! `nb * P` columns (sample-major), so one GEMM covers several samples.

use crate::geom::{Geom, Wide};

/// Fills `col` (kdim × nb·P) from samples `n0..n0+nb`, channels of group `g`, of input `x`.
pub fn im2col(gm: &Geom, x: &[f32], n0: usize, nb: usize, g: usize, col: &mut [f32]) {
    let (cig, p, hw) = (gm.cig(), gm.p(), gm.hw());
    let ncols = nb * p;
    for ci in 0..cig {
        for ki in 0..gm.kh {
            for kj in 0..gm.kw {
                let r = (ci * gm.kh + ki) * gm.kw + kj;
                let row = &mut col[r * ncols..(r + 1) * ncols];
                let (lo, hi, first) = gm.col_range(kj);
                for b in 0..nb {
                    let plane = &x[((n0 + b) * gm.cin + g * cig + ci) * hw..][..hw];
                    for oy in 0..gm.oh {
                        let dst = &mut row[b * p + oy * gm.ow..][..gm.ow];
                        match gm.in_row(oy, ki) {
                            None => dst.fill(0.0),
                            Some(iy) => {
                                let src = &plane[iy * gm.w..][..gm.w];
                                dst[..lo].fill(0.0);
                                dst[hi..].fill(0.0);
                                if gm.sw == 1 {
                                    dst[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                                } else {
                                    for (k, d) in dst[lo..hi].iter_mut().enumerate() {
                                        *d = src[first + k * gm.sw];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Accumulates `col` (kdim × nb·P) back into the input-gradient planes of samples `n0..n0+nb`,
/// group `g`. `dx` is the gradient of those samples only (starting at sample `n0`).
pub fn col2im(gm: &Geom, col: &[f32], nb: usize, g: usize, dx: &mut [f32]) {
    let (cig, p, hw) = (gm.cig(), gm.p(), gm.hw());
    let ncols = nb * p;
    for ci in 0..cig {
        for ki in 0..gm.kh {
            for kj in 0..gm.kw {
                let r = (ci * gm.kh + ki) * gm.kw + kj;
                let row = &col[r * ncols..(r + 1) * ncols];
                let (lo, hi, first) = gm.col_range(kj);
                if lo >= hi {
                    continue;
                }
                for b in 0..nb {
                    let plane = &mut dx[(b * gm.cin + g * cig + ci) * hw..][..hw];
                    for oy in 0..gm.oh {
                        let Some(iy) = gm.in_row(oy, ki) else {
                            continue;
                        };
                        let src = &row[b * p + oy * gm.ow..][lo..hi];
                        let dst = &mut plane[iy * gm.w..][..gm.w];
                        if gm.sw == 1 {
                            for (d, s) in dst[first..first + (hi - lo)].iter_mut().zip(src) {
                                *d += *s;
                            }
                        } else {
                            for (k, s) in src.iter().enumerate() {
                                dst[first + k * gm.sw] += *s;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// [`Wide`] im2col of samples `n0..n0+nb`, group `g`: splits each input plane into the
/// zero-padded polyphase planes in `pad`, then copies one contiguous slice per (tap, sample).
/// `col` is `kdim × nb·wd.cols`.
#[allow(clippy::too_many_arguments)]
pub fn im2col_wide(
    gm: &Geom,
    wd: &Wide,
    x: &[f32],
    n0: usize,
    nb: usize,
    g: usize,
    pad: &mut Vec<f32>,
    col: &mut [f32],
) {
    let (cig, hw) = (gm.cig(), gm.hw());
    let (sh, sw, plane) = (gm.sh, gm.sw, wd.hq * wd.wq);
    let pp = sh * sw * plane;
    // Only input pixels are written below, always at the same places for a given size, so the
    // padding stays zero across calls with the same buffer size.
    crate::util::zeroed_once(pad, nb * cig * pp);
    for b in 0..nb {
        for ci in 0..cig {
            let src = &x[((n0 + b) * gm.cin + g * cig + ci) * hw..][..hw];
            let dst = &mut pad[(b * cig + ci) * pp..][..pp];
            crate::direct::polyphase(gm, wd.wq, plane, src, dst);
        }
    }
    let ncols = nb * wd.cols;
    for ci in 0..cig {
        for ki in 0..gm.kh {
            for kj in 0..gm.kw {
                let r = (ci * gm.kh + ki) * gm.kw + kj;
                let (ey, ex) = (ki * gm.dh, kj * gm.dw);
                let off = ((ey % sh) * sw + ex % sw) * plane + (ey / sh) * wd.wq + ex / sw;
                let row = &mut col[r * ncols..(r + 1) * ncols];
                for b in 0..nb {
                    row[b * wd.cols..][..wd.cols]
                        .copy_from_slice(&pad[(b * cig + ci) * pp + off..][..wd.cols]);
                }
            }
        }
    }
}
