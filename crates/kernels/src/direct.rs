//! Direct ("implicit GEMM") convolution for AVX-512 CPUs: forward and weight gradient of any
//! dense or grouped (non-depthwise) convolution, with no im2col matrix and no GEMM packing.
//!
//! The inputs of a sub-batch are laid out once as zero-padded polyphase planes (see
//! [`PadLayout`]), so every output column `q = b·S + oy·wq + ox` of kernel tap `k = (ci, ki, kj)`
//! reads the input at `q + off[k]`: one offset per tap. The forward microkernel keeps an
//! `MR × 16·NV` output tile in registers and, per tap, broadcasts `MR` weights against `NV`
//! unaligned 16-wide loads of the shifted input row; the weight-gradient microkernel keeps
//! `MR × NK` dot products (16 lanes each) of output-gradient rows against shifted input rows.
//! Columns that are not outputs (padding positions) are computed and dropped in the forward;
//! in the weight gradient their output gradient is zero. Every sum runs in a fixed order, so
//! results are bit-identical run to run and for any thread count.

use crate::geom::Geom;
use crate::util::{SyncPtr, batch_ranges, uninit_vec};
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output channels per forward microkernel tile.
const MR: usize = 8;
/// 16-float vectors per forward microkernel tile (tile width `NR = 16·NV` columns).
const NV: usize = 3;
const NR: usize = 16 * NV;
/// Output-gradient rows and taps per weight-gradient microkernel call.
const MRW: usize = 4;
const NKW: usize = 6;
/// Columns per weight-gradient block (the rows of a block stay in L1 across the taps).
const CB: usize = 1024;
/// Floats of padded input + output tile per sub-batch (about 1 MB: L2-resident).
const SUB_BATCH_FLOATS: usize = 1 << 18;

/// True when the direct kernels can run here (AVX-512F CPU) for this convolution.
pub fn usable(gm: &Geom) -> bool {
    !gm.is_depthwise() && gm.p() > 0 && avx512()
}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            std::is_x86_feature_detected!("avx512f")
                && std::env::var("WHITTLE_KERNELS_NO_DIRECT").is_err()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Where the padded input of a sub-batch lives. Phase plane `(rp, cp)` of a sample holds the
/// padded pixels `(sh·i + rp, sw·j + cp)` at `i·wq + j`; sample `b` of channel `ci`, phase `ph`
/// starts at `(ci·nph + ph)·nb·s + b·s`. With unit stride and "same"/"valid" padding the
/// samples share their padding: row stride `wq = w + pw` (a row's right padding is the next
/// row's left padding) and sample stride `s = (h + ph)·wq` (a sample's bottom padding rows are
/// the next sample's top ones), which keeps the non-output columns few on small planes.
#[derive(Clone, Copy, Debug)]
pub struct PadLayout {
    pub wq: usize,
    pub s: usize,
    pub nph: usize,
}

impl PadLayout {
    pub fn of(gm: &Geom) -> Self {
        let (eh, ew) = (gm.dh * (gm.kh - 1), gm.dw * (gm.kw - 1));
        if gm.sh == 1 && gm.sw == 1 && gm.ph <= eh && gm.pw <= ew {
            let wq = gm.w + gm.pw;
            return Self {
                wq,
                s: (gm.h + gm.ph) * wq,
                nph: 1,
            };
        }
        let (hq, wq) = ((gm.h + 2 * gm.ph).div_ceil(gm.sh), (gm.w + 2 * gm.pw).div_ceil(gm.sw));
        Self {
            wq,
            s: hq * wq,
            nph: gm.sh * gm.sw,
        }
    }

    /// Offset of tap `k = (ci, ki, kj)` (group-local `ci`) from an output column, for `nb` samples.
    fn tap_offsets(&self, gm: &Geom, nb: usize) -> Vec<usize> {
        let mut offs = Vec::with_capacity(gm.kdim());
        for ci in 0..gm.cig() {
            for ki in 0..gm.kh {
                for kj in 0..gm.kw {
                    offs.push((ci * self.nph + self.phase(gm, ki, kj)) * nb * self.s + self.shift(gm, ki, kj));
                }
            }
        }
        offs
    }

    fn phase(&self, gm: &Geom, ki: usize, kj: usize) -> usize {
        (ki * gm.dh % gm.sh) * gm.sw + kj * gm.dw % gm.sw
    }

    fn shift(&self, gm: &Geom, ki: usize, kj: usize) -> usize {
        (ki * gm.dh / gm.sh) * self.wq + kj * gm.dw / gm.sw
    }

    /// Columns of `nb` samples up to the last output one.
    fn ncols(&self, gm: &Geom, nb: usize) -> usize {
        (nb - 1) * self.s + (gm.oh - 1) * self.wq + gm.ow
    }

    /// Buffer length for `nb` samples of one group: the planes plus zero slack that covers the
    /// largest tap shift and a whole microkernel tile past the last column.
    fn len(&self, gm: &Geom, nb: usize) -> usize {
        gm.cig() * self.nph * nb * self.s + self.shift(gm, gm.kh - 1, gm.kw - 1) + NR
    }

    /// Writes the input pixels of samples `n0..n0+nb`, group `g`, into `buf` (zeroed when its
    /// length changes; padding positions are never written, so they stay zero).
    fn fill(&self, gm: &Geom, x: &[f32], n0: usize, nb: usize, g: usize, buf: &mut Vec<f32>) {
        let len = self.len(gm, nb);
        if buf.len() != len {
            buf.clear();
            buf.resize(len, 0.0);
        }
        let (cig, hw, block) = (gm.cig(), gm.hw(), nb * self.s);
        for ci in 0..cig {
            for b in 0..nb {
                let src = &x[((n0 + b) * gm.cin + g * cig + ci) * hw..][..hw];
                let dst = &mut buf[ci * self.nph * block + b * self.s..];
                polyphase(gm, self.wq, block, src, dst);
            }
        }
    }
}

/// Scatters one input plane into its zero-padded polyphase planes: padded pixel `(py, px)` goes
/// to phase `(py mod sh, px mod sw)` (planes `phase_stride` apart in `dst`), position
/// `(py / sh)·wq + px / sw`. Only input pixels are written.
pub fn polyphase(gm: &Geom, wq: usize, phase_stride: usize, src: &[f32], dst: &mut [f32]) {
    let (sh, sw) = (gm.sh, gm.sw);
    for (iy, row) in src.chunks_exact(gm.w).enumerate() {
        let py = iy + gm.ph;
        let (rp, i) = (py % sh, py / sh);
        if sw == 1 {
            dst[rp * phase_stride + i * wq + gm.pw..][..gm.w].copy_from_slice(row);
            continue;
        }
        for cp in 0..sw {
            // Padded columns px ≡ cp (mod sw) inside the input: px = pw + ix.
            let px0 = gm.pw + (cp + sw - gm.pw % sw) % sw;
            if px0 >= gm.pw + gm.w {
                continue;
            }
            let ix0 = px0 - gm.pw;
            let cnt = (gm.w - ix0).div_ceil(sw);
            let out = &mut dst[(rp * sw + cp) * phase_stride + i * wq + px0 / sw..][..cnt];
            let ins = &row[ix0..][..(cnt - 1) * sw + 1];
            for (j, o) in out.iter_mut().enumerate() {
                *o = ins[j * sw];
            }
        }
    }
}

/// Samples per sub-batch: as many as keep `per_sample` floats each within [`SUB_BATCH_FLOATS`].
fn sub_batch(per_sample: usize) -> usize {
    (SUB_BATCH_FLOATS / per_sample.max(1)).max(1)
}

/// Weights of group `g` packed for the forward microkernel: blocks of `MR` output channels,
/// each `kdim × MR` (tap-major), zero rows past the last channel.
fn pack_weights(gm: &Geom, w: &[f32], g: usize) -> Vec<f32> {
    let (cog, kdim) = (gm.cog(), gm.kdim());
    let blocks = cog.div_ceil(MR);
    let mut out = vec![0f32; blocks * kdim * MR];
    for co in 0..cog {
        let (rb, r) = (co / MR, co % MR);
        let src = &w[(g * cog + co) * kdim..][..kdim];
        for (k, v) in src.iter().enumerate() {
            out[(rb * kdim + k) * MR + r] = *v;
        }
    }
    out
}

/// Forward convolution `y (n, cout, oh, ow)`, bias and ReLU applied in the output pass.
/// Callers check [`usable`] first.
pub fn forward(gm: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool) -> Vec<f32> {
    let (cout, cog, p, kdim) = (gm.cout, gm.cog(), gm.p(), gm.kdim());
    let lay = PadLayout::of(gm);
    let blocks = cog.div_ceil(MR);
    let packed: Vec<Vec<f32>> = (0..gm.groups).map(|g| pack_weights(gm, w, g)).collect();
    let mut y = uninit_vec(gm.n * cout * p);
    let yp = SyncPtr(y.as_mut_ptr());
    let sb = sub_batch((gm.cig() * lay.nph + blocks * MR) * lay.s);
    batch_ranges(gm.n).into_par_iter().for_each(|r| {
        let (mut buf, mut tmp) = (Vec::new(), Vec::new());
        let mut n0 = r.start;
        while n0 < r.end {
            let nb = sb.min(r.end - n0);
            let offs = lay.tap_offsets(gm, nb);
            let ncols = lay.ncols(gm, nb);
            let ntiles = ncols.div_ceil(NR);
            let ld = ntiles * NR;
            if tmp.len() < blocks * MR * ld {
                tmp = uninit_vec(blocks * MR * ld);
            }
            // SAFETY: chunk ranges are disjoint, so each task owns its samples' outputs.
            let ys = unsafe { yp.slice(n0 * cout * p, nb * cout * p) };
            for (g, wg) in packed.iter().enumerate() {
                lay.fill(gm, x, n0, nb, g, &mut buf);
                debug_assert!(offs.iter().all(|o| o + ld <= buf.len()));
                for t in 0..ntiles {
                    for rb in 0..blocks {
                        // SAFETY: AVX-512F is present (`usable`); every read `offs[k] + t·NR + j`
                        // (j < NR) is below `buf.len()` (see `PadLayout::len`) and the tile
                        // written is inside `tmp` (`blocks·MR` rows of `ld`).
                        unsafe {
                            tile_fwd(
                                kdim,
                                wg.as_ptr().add(rb * kdim * MR),
                                offs.as_ptr(),
                                buf.as_ptr().add(t * NR),
                                tmp.as_mut_ptr().add(rb * MR * ld + t * NR),
                                ld,
                            )
                        };
                    }
                }
                for b in 0..nb {
                    for co in 0..cog {
                        let c = g * cog + co;
                        let dst = &mut ys[(b * cout + c) * p..][..p];
                        let src = &tmp[co * ld + b * lay.s..];
                        for (oy, row) in dst.chunks_exact_mut(gm.ow).enumerate() {
                            row.copy_from_slice(&src[oy * lay.wq..][..gm.ow]);
                        }
                        if bias.is_some() || relu {
                            crate::simd::add_bias(dst, bias.map_or(0.0, |bv| bv[c]), relu);
                        }
                    }
                }
            }
            n0 += nb;
        }
    });
    y
}

/// Weight and bias gradients `(dw, db)` from `dy (n, cout, oh, ow)`. Callers check [`usable`].
pub fn weight_grad(gm: &Geom, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (cout, cog, p, kdim) = (gm.cout, gm.cog(), gm.p(), gm.kdim());
    let lay = PadLayout::of(gm);
    let rows = cog.div_ceil(MRW) * MRW;
    let sb = sub_batch((gm.cig() * lay.nph + rows) * lay.s);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = batch_ranges(gm.n)
        .into_par_iter()
        .map(|r| {
            let mut dw = vec![0f32; cout * kdim];
            let mut db = vec![0f32; cout];
            let (mut buf, mut dyc) = (Vec::new(), Vec::new());
            let mut n0 = r.start;
            while n0 < r.end {
                let nb = sb.min(r.end - n0);
                let dys = &dy[n0 * cout * p..][..nb * cout * p];
                for (i, plane) in dys.chunks_exact(p).enumerate() {
                    db[i % cout] += crate::simd::sum(plane);
                }
                let offs = lay.tap_offsets(gm, nb);
                let ld = lay.ncols(gm, nb).div_ceil(16) * 16;
                for g in 0..gm.groups {
                    lay.fill(gm, x, n0, nb, g, &mut buf);
                    // Output-gradient rows in the column layout, zero at non-output columns
                    // and in the padding rows past the last channel.
                    dyc.clear();
                    dyc.resize(rows * ld, 0.0);
                    for b in 0..nb {
                        for co in 0..cog {
                            let src = &dys[(b * cout + g * cog + co) * p..][..p];
                            let dst = &mut dyc[co * ld + b * lay.s..];
                            for (oy, row) in src.chunks_exact(gm.ow).enumerate() {
                                dst[oy * lay.wq..][..gm.ow].copy_from_slice(row);
                            }
                        }
                    }
                    debug_assert!(offs.iter().all(|o| o + ld <= buf.len()));
                    let dwg = &mut dw[g * cog * kdim..][..cog * kdim];
                    weight_grad_group(&offs, &buf, &dyc, ld, cog, kdim, dwg);
                }
                n0 += nb;
            }
            (dw, db)
        })
        .collect();
    let mut parts = partials.into_iter();
    let (mut dw, mut db) = parts
        .next()
        .unwrap_or_else(|| (vec![0f32; cout * kdim], vec![0f32; cout]));
    for (pw, pb) in parts {
        dw.iter_mut().zip(&pw).for_each(|(a, b)| *a += *b);
        db.iter_mut().zip(&pb).for_each(|(a, b)| *a += *b);
    }
    (dw, db)
}

/// Accumulates `dw[co][k] += Σ_q dyc[co][q] · buf[offs[k] + q]` over `ld` columns, in column
/// blocks of [`CB`], tiles of `MRW` rows × `NKW` taps.
fn weight_grad_group(
    offs: &[usize],
    buf: &[f32],
    dyc: &[f32],
    ld: usize,
    cog: usize,
    kdim: usize,
    dw: &mut [f32],
) {
    let mut acc = [[0f32; NKW]; MRW];
    for c0 in (0..ld).step_by(CB) {
        let nv = (ld - c0).min(CB) / 16;
        for rb in (0..cog).step_by(MRW) {
            for k0 in (0..kdim).step_by(NKW) {
                let nk = (kdim - k0).min(NKW);
                let mut ptrs = [buf.as_ptr(); NKW];
                for (j, p) in ptrs.iter_mut().enumerate().take(nk) {
                    debug_assert!(offs[k0 + j] + c0 + 16 * nv <= buf.len());
                    // SAFETY: in bounds of `buf` (checked by the caller's layout, asserted above).
                    *p = unsafe { buf.as_ptr().add(offs[k0 + j] + c0) };
                }
                // SAFETY: AVX-512F is present; rows `rb..rb+MRW` of `dyc` exist (padded to MRW),
                // and every read stays in `buf` / `dyc`.
                unsafe {
                    let d = dyc.as_ptr().add(rb * ld + c0);
                    match nk {
                        6 => tile_dw::<6>(nv, d, ld, &ptrs, &mut acc),
                        5 => tile_dw::<5>(nv, d, ld, &ptrs, &mut acc),
                        4 => tile_dw::<4>(nv, d, ld, &ptrs, &mut acc),
                        3 => tile_dw::<3>(nv, d, ld, &ptrs, &mut acc),
                        2 => tile_dw::<2>(nv, d, ld, &ptrs, &mut acc),
                        _ => tile_dw::<1>(nv, d, ld, &ptrs, &mut acc),
                    }
                }
                for (r, row) in acc.iter().enumerate().take((cog - rb).min(MRW)) {
                    for (j, v) in row.iter().enumerate().take(nk) {
                        dw[(rb + r) * kdim + k0 + j] += *v;
                    }
                }
            }
        }
    }
}

/// `c[r][0..NR] = Σ_k w[k][r] · b[offs[k] + 0..NR]` for `r < MR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_fwd(kdim: usize, w: *const f32, offs: *const usize, b: *const f32, c: *mut f32, ldc: usize) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for k in 0..kdim {
            let bp = b.add(*offs.add(k));
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(bp.add(16 * v));
            }
            let wk = w.add(k * MR);
            for (r, row) in acc.iter_mut().enumerate() {
                let s = _mm512_set1_ps(*wk.add(r));
                for (a, x) in row.iter_mut().zip(&bv) {
                    *a = _mm512_fmadd_ps(s, *x, *a);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, a) in row.iter().enumerate() {
                _mm512_storeu_ps(c.add(r * ldc + 16 * v), *a);
            }
        }
    }
}

/// `acc[r][j] = Σ_{q < 16·nv} d[r·ldd + q] · p[j][q]` for `r < MRW`, `j < NK`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_dw<const NK: usize>(
    nv: usize,
    d: *const f32,
    ldd: usize,
    p: &[*const f32; NKW],
    acc: &mut [[f32; NKW]; MRW],
) {
    unsafe {
        let mut a = [[_mm512_setzero_ps(); NK]; MRW];
        for v in 0..nv {
            let mut pv = [_mm512_setzero_ps(); NK];
            for (j, x) in pv.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(p[j].add(16 * v));
            }
            for (r, row) in a.iter_mut().enumerate() {
                let dv = _mm512_loadu_ps(d.add(r * ldd + 16 * v));
                for (s, x) in row.iter_mut().zip(&pv) {
                    *s = _mm512_fmadd_ps(dv, *x, *s);
                }
            }
        }
        for (r, row) in a.iter().enumerate() {
            for (j, s) in row.iter().enumerate() {
                acc[r][j] = _mm512_reduce_add_ps(*s);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_fwd(_: usize, _: *const f32, _: *const usize, _: *const f32, _: *mut f32, _: usize) {
    unreachable!("direct kernels need x86-64 AVX-512 (checked by `usable`)")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_dw<const NK: usize>(
    _: usize,
    _: *const f32,
    _: usize,
    _: &[*const f32; NKW],
    _: &mut [[f32; NKW]; MRW],
) {
    unreachable!("direct kernels need x86-64 AVX-512 (checked by `usable`)")
}
