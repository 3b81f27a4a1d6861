//! Direct ("implicit GEMM") convolution for AVX-512 CPUs: forward, input gradient and weight
//! gradient of any dense or grouped (non-depthwise) convolution, with no im2col matrix and no
//! GEMM packing.
//!
//! The inputs of a sub-batch are laid out once as zero-padded (polyphase, when strided) planes
//! (see [`PadLayout`]), so every output column `q = b·S + oy·wq + ox` of kernel tap
//! `k = (ci, ki, kj)` reads the input at `q + off[k]`: one offset per tap. The forward
//! microkernel keeps an `MR × 16·NV` output tile in registers and, per tap, broadcasts `MR`
//! weights against `NV` unaligned 16-wide loads of the shifted input row. A strided input
//! gradient runs the same microkernel once per polyphase component. The weight-gradient
//! microkernel broadcasts input values against rows of the transposed output gradient
//! (16 output channels per vector), accumulating `NK` taps × `16·NV` channels in registers.
//! Columns that are not outputs (padding positions) are computed and dropped in the forward;
//! in the weight gradient their output gradient is zero. Every sum runs in a fixed order, so
//! results are bit-identical run to run and for any thread count.

use crate::act::Clamp;
use crate::geom::Geom;
use crate::rowmap::RowMap;
use crate::util::{SyncPtr, batch_ranges, sum_partials, uninit_vec, zeroed_once};
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output channels per forward microkernel tile.
pub(crate) const MR: usize = 8;
/// 16-float vectors per forward microkernel tile (tile width `NR = 16·NV` columns).
const NV: usize = 3;
pub(crate) const NR: usize = 16 * NV;
/// Zero floats past the last plane: at least one microkernel tile of any kernel reading them.
const SLACK: usize = 64;
/// Floats of padded input + output tile per sub-batch (about 1 MB: L2-resident).
const SUB_BATCH_FLOATS: usize = 1 << 18;

/// True when the direct kernels can run here (AVX-512F CPU) for this convolution.
pub fn usable(gm: &Geom) -> bool {
    !gm.is_depthwise() && gm.p() > 0 && avx512()
}

pub(crate) fn avx512() -> bool {
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
#[derive(Clone, Debug)]
pub struct PadLayout {
    pub wq: usize,
    pub s: usize,
    pub nph: usize,
    /// Input pixels within a sample's region (unit stride only; strided inputs are scattered
    /// into their phases by [`polyphase`]).
    inp: Option<RowMap>,
    /// Output positions within a sample's columns.
    out: RowMap,
    /// Phases some tap reads (a 1×1 stride-2 convolution reads one of four).
    used: Vec<bool>,
}

impl PadLayout {
    pub fn of(gm: &Geom) -> Self {
        let (eh, ew) = (gm.dh * (gm.kh - 1), gm.dw * (gm.kw - 1));
        let (wq, s, nph) = if gm.sh == 1 && gm.sw == 1 && gm.ph <= eh && gm.pw <= ew {
            let wq = gm.w + gm.pw;
            (wq, (gm.h + gm.ph) * wq, 1)
        } else {
            let (hq, wq) = (
                (gm.h + 2 * gm.ph).div_ceil(gm.sh),
                (gm.w + 2 * gm.pw).div_ceil(gm.sw),
            );
            (wq, hq * wq, gm.sh * gm.sw)
        };
        let unit = gm.sh == 1 && gm.sw == 1;
        let mut lay = Self {
            wq,
            s,
            nph,
            inp: unit.then(|| RowMap::new(wq, gm.ph, gm.h, gm.pw, gm.w)),
            out: RowMap::new(wq, 0, gm.oh, 0, gm.ow),
            used: vec![false; nph],
        };
        for ki in 0..gm.kh {
            for kj in 0..gm.kw {
                let ph = lay.phase(gm, ki, kj);
                lay.used[ph] = true;
            }
        }
        lay
    }

    /// Offset of tap `k = (ci, ki, kj)` (group-local `ci`) from an output column, for `nb` samples.
    pub(crate) fn tap_offsets(&self, gm: &Geom, nb: usize) -> Vec<usize> {
        let mut offs = Vec::with_capacity(gm.kdim());
        for ci in 0..gm.cig() {
            for ki in 0..gm.kh {
                for kj in 0..gm.kw {
                    offs.push(
                        (ci * self.nph + self.phase(gm, ki, kj)) * nb * self.s
                            + self.shift(gm, ki, kj),
                    );
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
    pub(crate) fn ncols(&self, gm: &Geom, nb: usize) -> usize {
        (nb - 1) * self.s + (gm.oh - 1) * self.wq + gm.ow
    }

    /// One output plane from its columns (`src` starts at the sample's first column), plus
    /// `bias`, then clamped by `clamp`.
    pub(crate) fn gather_bias(
        &self,
        gm: &Geom,
        src: &[f32],
        dst: &mut [f32],
        bias: f32,
        clamp: Clamp,
    ) {
        assert!(dst.len() == gm.p() && src.len() >= (gm.oh - 1) * self.wq + gm.ow);
        // SAFETY: AVX-512F is present (the direct kernels' precondition); the region and the
        // plane are inside `src` and `dst` (asserted above).
        unsafe {
            self.out
                .compress(src.as_ptr(), dst.as_mut_ptr(), bias, clamp)
        }
    }

    /// One output-gradient plane into its columns (`dst` starts at the sample's first column);
    /// the non-output columns of `dst` are left as they are.
    pub(crate) fn scatter(&self, gm: &Geom, src: &[f32], dst: &mut [f32]) {
        assert!(src.len() == gm.p() && dst.len() >= (gm.oh - 1) * self.wq + gm.ow);
        // SAFETY: as in `gather_bias`.
        unsafe { self.out.expand(src.as_ptr(), dst.as_mut_ptr()) }
    }

    /// Buffer length for `nb` samples of one group: the planes plus zero slack that covers the
    /// largest tap shift and a whole microkernel tile past the last column.
    fn len(&self, gm: &Geom, nb: usize) -> usize {
        gm.cig() * self.nph * nb * self.s + self.shift(gm, gm.kh - 1, gm.kw - 1) + SLACK
    }

    /// Writes the input pixels of samples `n0..n0+nb`, group `g`, into `buf` (zeroed when its
    /// length changes; padding positions are never written, so they stay zero).
    pub(crate) fn fill(
        &self,
        gm: &Geom,
        x: &[f32],
        n0: usize,
        nb: usize,
        g: usize,
        buf: &mut Vec<f32>,
    ) {
        zeroed_once(buf, self.len(gm, nb));
        let (cig, hw, block) = (gm.cig(), gm.hw(), nb * self.s);
        for ci in 0..cig {
            for b in 0..nb {
                let src = &x[((n0 + b) * gm.cin + g * cig + ci) * hw..][..hw];
                let dst = &mut buf[ci * self.nph * block + b * self.s..];
                match &self.inp {
                    Some(map) => {
                        assert!(dst.len() >= (gm.ph + gm.h) * self.wq);
                        // SAFETY: AVX-512F is present (the direct kernels' precondition); the
                        // plane and its region are inside `src` and `dst` (asserted above).
                        unsafe { map.expand(src.as_ptr(), dst.as_mut_ptr()) }
                    }
                    None if gm.sw == 2 => self.fill_stride2(gm, src, dst, block),
                    None => polyphase(gm, self.wq, block, src, dst),
                }
            }
        }
    }

    /// [`polyphase`] for width stride 2 (any height stride), into the phases the taps read:
    /// each row is split into its even and odd columns with AVX-512 permutes.
    fn fill_stride2(&self, gm: &Geom, src: &[f32], dst: &mut [f32], block: usize) {
        let pw = gm.pw;
        let (ne, no) = (gm.w.div_ceil(2), gm.w / 2);
        for (iy, row) in src.chunks_exact(gm.w).enumerate() {
            let py = iy + gm.ph;
            let base = (py / gm.sh) * self.wq;
            // Input column 2j lands in phase column `pw % 2` at `j + pw / 2`, column 2j + 1 in
            // phase column `(pw + 1) % 2` at `j + (pw + 1) / 2`.
            let (pe, po) = ((py % gm.sh) * 2 + pw % 2, (py % gm.sh) * 2 + (pw + 1) % 2);
            let (se, so) = (
                pe * block + base + pw / 2,
                po * block + base + pw.div_ceil(2),
            );
            assert!(se + ne <= dst.len() && so + no <= dst.len());
            let even = if self.used[pe] {
                dst[se..].as_mut_ptr()
            } else {
                std::ptr::null_mut()
            };
            let odd = if self.used[po] {
                dst[so..].as_mut_ptr()
            } else {
                std::ptr::null_mut()
            };
            // SAFETY: AVX-512F is present (the direct kernels' precondition); `ne` / `no` floats
            // fit after `se` / `so` (asserted above).
            unsafe { crate::rowmap::split2(row, even, odd) };
        }
    }
}

/// Scatters one input plane into its zero-padded polyphase planes: padded pixel `(py, px)` goes
/// to phase `(py mod sh, px mod sw)` (planes `phase_stride` apart in `dst`), position
/// `(py / sh)·wq + px / sw`. Only input pixels are written.
pub fn polyphase(gm: &Geom, wq: usize, phase_stride: usize, src: &[f32], dst: &mut [f32]) {
    let (sh, sw) = (gm.sh, gm.sw);
    if sh == 1 && sw == 1 && wq == gm.w {
        // No column padding: the rows are contiguous in `dst` too.
        dst[gm.ph * wq..][..src.len()].copy_from_slice(src);
        return;
    }
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

/// Weights packed for the forward microkernel: blocks of `MR` output rows, each `klen × MR`
/// (tap-major), with `weight(row, k)` for `row < rows` and zeros past the last row.
fn pack(rows: usize, klen: usize, weight: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let mut out = vec![0f32; rows.div_ceil(MR) * klen * MR];
    for row in 0..rows {
        let (rb, r) = (row / MR, row % MR);
        for k in 0..klen {
            out[(rb * klen + k) * MR + r] = weight(row, k);
        }
    }
    out
}

/// The forward weights of group `g`, packed (rows = its output channels, k = (ci, ki, kj)).
pub(crate) fn pack_weights(gm: &Geom, w: &[f32], g: usize) -> Vec<f32> {
    let (cog, kdim) = (gm.cog(), gm.kdim());
    pack(cog, kdim, |co, k| w[(g * cog + co) * kdim + k])
}

/// `tmp[rb·MR + r][t·NR..][..NR] = Σ_k wg[rb][k][r] · src[offs[k] + t·NR..][..NR]` for every
/// row block and tile.
///
/// # Safety
/// AVX-512F must be present; `src.add(offs[k] + ntiles·NR)` must stay within its allocation,
/// `wg` must hold `blocks·kdim·MR` floats and `tmp` `blocks·MR` rows of `ld ≥ ntiles·NR`.
pub(crate) unsafe fn run_tiles(
    wg: &[f32],
    offs: &[usize],
    src: *const f32,
    ntiles: usize,
    tmp: &mut [f32],
    ld: usize,
) {
    let kdim = offs.len();
    let blocks = wg.len() / (kdim * MR).max(1);
    debug_assert!(tmp.len() >= blocks * MR * ld && ld >= ntiles * NR);
    for t in 0..ntiles {
        for rb in 0..blocks {
            // SAFETY: as documented above.
            unsafe {
                tile_fwd(
                    kdim,
                    wg.as_ptr().add(rb * kdim * MR),
                    offs.as_ptr(),
                    src.add(t * NR),
                    tmp.as_mut_ptr().add(rb * MR * ld + t * NR),
                    ld,
                )
            };
        }
    }
}

/// Forward convolution `y (n, cout, oh, ow)`, bias and clamp applied in the output pass.
/// Callers check [`usable`] first.
pub fn forward(gm: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: Clamp) -> Vec<f32> {
    let packed: Vec<Vec<f32>> = (0..gm.groups).map(|g| pack_weights(gm, w, g)).collect();
    if gm.is_pointwise() {
        return forward_pointwise(gm, x, &packed, bias, relu);
    }
    let (cout, cog, p) = (gm.cout, gm.cog(), gm.p());
    let lay = PadLayout::of(gm);
    let blocks = cog.div_ceil(MR);
    let mut y = uninit_vec(gm.n * cout * p);
    let yp = SyncPtr(y.as_mut_ptr());
    let sb = sub_batch((gm.cig() * lay.nph + blocks * MR) * lay.s);
    batch_ranges(gm.n).into_par_iter().for_each(|r| {
        let (mut buf, mut tmp) = (Vec::new(), Vec::new());
        let mut n0 = r.start;
        while n0 < r.end {
            let nb = sb.min(r.end - n0);
            let offs = lay.tap_offsets(gm, nb);
            let ntiles = lay.ncols(gm, nb).div_ceil(NR);
            let ld = ntiles * NR;
            if tmp.len() < blocks * MR * ld {
                tmp = uninit_vec(blocks * MR * ld);
            }
            // SAFETY: chunk ranges are disjoint, so each task owns its samples' outputs.
            let ys = unsafe { yp.slice(n0 * cout * p, nb * cout * p) };
            for (g, wg) in packed.iter().enumerate() {
                lay.fill(gm, x, n0, nb, g, &mut buf);
                assert!(offs.iter().all(|o| o + ld <= buf.len()));
                // SAFETY: AVX-512F is present (`usable`); reads are in `buf` (asserted above),
                // `wg` and `tmp` are sized for `blocks` row blocks of `ld` columns.
                unsafe { run_tiles(wg, &offs, buf.as_ptr(), ntiles, &mut tmp, ld) };
                for b in 0..nb {
                    for co in 0..cog {
                        let c = g * cog + co;
                        let dst = &mut ys[(b * cout + c) * p..][..p];
                        let bv = bias.map_or(0.0, |bv| bv[c]);
                        lay.gather_bias(gm, &tmp[co * ld + b * lay.s..], dst, bv, relu);
                    }
                }
            }
            n0 += nb;
        }
    });
    y
}

/// Unpadded unit-stride 1×1 convolution: the microkernel reads the input planes in place, one
/// sample at a time (no copies), and the output rows are contiguous. A sample whose last
/// tile would read past the end of `x` is copied into a zero-padded scratch buffer first.
fn forward_pointwise(
    gm: &Geom,
    x: &[f32],
    packed: &[Vec<f32>],
    bias: Option<&[f32]>,
    relu: Clamp,
) -> Vec<f32> {
    let (cin, cout, cig, cog, hw) = (gm.cin, gm.cout, gm.cig(), gm.cog(), gm.hw());
    let blocks = cog.div_ceil(MR);
    let ntiles = hw.div_ceil(NR);
    let ld = ntiles * NR;
    let offs: Vec<usize> = (0..cig).map(|ci| ci * hw).collect();
    let mut y = uninit_vec(gm.n * cout * hw);
    let yp = SyncPtr(y.as_mut_ptr());
    batch_ranges(gm.n).into_par_iter().for_each(|r| {
        let (mut tmp, mut scratch) = (uninit_vec(blocks * MR * ld), Vec::new());
        for b in r {
            // SAFETY: chunk ranges are disjoint, so each task owns its samples' outputs.
            let ys = unsafe { yp.slice(b * cout * hw, cout * hw) };
            for (g, wg) in packed.iter().enumerate() {
                let start = (b * cin + g * cig) * hw;
                let src = if start + (cig - 1) * hw + ld <= x.len() {
                    &x[start..]
                } else {
                    scratch.clear();
                    scratch.extend_from_slice(&x[start..][..cig * hw]);
                    scratch.resize(cig * hw + ld, 0.0);
                    &scratch[..]
                };
                // SAFETY: AVX-512F is present (`usable`); reads `offs[k] + ntiles·NR` stay in
                // `src` (checked above), `wg` / `tmp` are sized for `blocks` row blocks.
                unsafe { run_tiles(wg, &offs, src.as_ptr(), ntiles, &mut tmp, ld) };
                for co in 0..cog {
                    let c = g * cog + co;
                    let bv = bias.map_or(0.0, |bv| bv[c]);
                    crate::simd::copy_bias(
                        &mut ys[c * hw..][..hw],
                        &tmp[co * ld..][..hw],
                        bv,
                        relu,
                    );
                }
            }
        }
    });
    y
}

/// Input gradient `dx (n, cin, h, w)` of a strided convolution, one polyphase component at a
/// time: the input pixels with padded position `(sh·i + a, sw·j + b)` receive only the taps
/// with `ki·dh ≡ a (mod sh)`, `kj·dw ≡ b (mod sw)`, from output `(i − ⌊ki·dh/sh⌋, j − ⌊kj·dw/sw⌋)`:
/// a unit-stride correlation of the output gradient (zero-padded by the largest such shift on
/// the top and left) run by the forward microkernel, then written to every `sh`-th row and
/// `sw`-th column of `dx`. Pixels of phases no tap reaches get zero.
pub fn input_grad(gm: &Geom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let (cin, cout, cig, cog, p, hw, kk) = (
        gm.cin,
        gm.cout,
        gm.cig(),
        gm.cog(),
        gm.p(),
        gm.hw(),
        gm.kh * gm.kw,
    );
    let (sh, sw) = (gm.sh, gm.sw);
    // Phase a along the height covers padded rows sh·i + a, i < rows[a], holding input rows
    // from i0[a]; same along the width.
    let span = |s: usize, pad: usize, len: usize, a: usize| -> (usize, usize) {
        let first = pad.saturating_sub(a).div_ceil(s);
        let end = (pad + len).saturating_sub(a).div_ceil(s);
        (first, end)
    };
    let (tmax, umax) = ((gm.kh - 1) * gm.dh / sh, (gm.kw - 1) * gm.dw / sw);
    let iq = (0..sh)
        .map(|a| span(sh, gm.ph, gm.h, a).1)
        .max()
        .unwrap_or(0);
    let jq = (0..sw)
        .map(|b| span(sw, gm.pw, gm.w, b).1)
        .max()
        .unwrap_or(0);
    let wq = umax + jq.max(gm.ow);
    let s = (tmax + iq.max(gm.oh)) * wq;
    let map = RowMap::new(wq, tmax, gm.oh, umax, gm.ow);
    let blocks = cig.div_ceil(MR);
    // Per phase (a, b): its taps and, per group, the packed weights.
    struct Phase {
        a: usize,
        b: usize,
        taps: Vec<(usize, usize)>,
        packed: Vec<Vec<f32>>,
    }
    let mut phases = Vec::new();
    for a in 0..sh {
        for b in 0..sw {
            let taps: Vec<(usize, usize)> = (0..gm.kh)
                .filter(|ki| ki * gm.dh % sh == a)
                .flat_map(|ki| {
                    (0..gm.kw)
                        .filter(|kj| kj * gm.dw % sw == b)
                        .map(move |kj| (ki, kj))
                })
                .collect();
            if taps.is_empty() || span(sh, gm.ph, gm.h, a).1 == 0 || span(sw, gm.pw, gm.w, b).1 == 0
            {
                continue;
            }
            // Rows = this group's input channels, k = (co, tap).
            let nt = taps.len();
            let packed = (0..gm.groups)
                .map(|g| {
                    pack(cig, cog * nt, |ci, k| {
                        let (co, (ki, kj)) = (k / nt, taps[k % nt]);
                        w[((g * cog + co) * cig + ci) * kk + ki * gm.kw + kj]
                    })
                })
                .collect();
            phases.push(Phase { a, b, taps, packed });
        }
    }
    let mut dx = vec![0f32; gm.n * cin * hw];
    let dxp = SyncPtr(dx.as_mut_ptr());
    let sb = sub_batch((cout + blocks * MR) * s);
    batch_ranges(gm.n).into_par_iter().for_each(|r| {
        let (mut buf, mut tmp) = (Vec::new(), Vec::new());
        let mut n0 = r.start;
        while n0 < r.end {
            let nb = sb.min(r.end - n0);
            let block = nb * s;
            zeroed_once(&mut buf, cout * block + tmax * wq + umax + SLACK);
            for co in 0..cout {
                for b in 0..nb {
                    let src = &dy[((n0 + b) * cout + co) * p..][..p];
                    let dst = &mut buf[co * block + b * s..];
                    assert!(dst.len() >= (tmax + gm.oh) * wq);
                    // SAFETY: AVX-512F is present (`usable`); plane and region are in bounds.
                    unsafe { map.expand(src.as_ptr(), dst.as_mut_ptr()) };
                }
            }
            // SAFETY: chunk ranges are disjoint, so each task owns its samples' dx.
            let dxs = unsafe { dxp.slice(n0 * cin * hw, nb * cin * hw) };
            for ph in &phases {
                let (i0, i1) = span(sh, gm.ph, gm.h, ph.a);
                let (j0, j1) = span(sw, gm.pw, gm.w, ph.b);
                let ncols = (nb - 1) * s + (i1 - 1) * wq + j1;
                let ntiles = ncols.div_ceil(NR);
                let ld = ntiles * NR;
                if tmp.len() < blocks * MR * ld {
                    tmp = uninit_vec(blocks * MR * ld);
                }
                let offs: Vec<usize> = (0..cog)
                    .flat_map(|co| {
                        ph.taps.iter().map(move |&(ki, kj)| {
                            co * block + (tmax - ki * gm.dh / sh) * wq + (umax - kj * gm.dw / sw)
                        })
                    })
                    .collect();
                for (g, wg) in ph.packed.iter().enumerate() {
                    let base = g * cog * block;
                    assert!(offs.iter().all(|o| base + o + ld <= buf.len()));
                    // SAFETY: AVX-512F is present; reads are inside `buf` (asserted above), `wg`
                    // and `tmp` are sized for `blocks` row blocks of `ld` columns.
                    unsafe { run_tiles(wg, &offs, buf.as_ptr().add(base), ntiles, &mut tmp, ld) };
                    for b in 0..nb {
                        for ci in 0..cig {
                            let plane = &mut dxs[(b * cin + g * cig + ci) * hw..][..hw];
                            let src = &tmp[ci * ld + b * s..];
                            for i in i0..i1 {
                                let iy = sh * i + ph.a - gm.ph;
                                let row = &mut plane[iy * gm.w..][..gm.w];
                                let srow = &src[i * wq..];
                                for j in j0..j1 {
                                    row[sw * j + ph.b - gm.pw] = srow[j];
                                }
                            }
                        }
                    }
                }
            }
            n0 += nb;
        }
    });
    dx
}

/// Weight and bias gradients `(dw, db)` from `dy (n, cout, oh, ow)`. Callers check [`usable`].
///
/// The output gradient is transposed to column-major `dyt[q][co]` (zero at non-output columns
/// and past the last channel), so the microkernel accumulates 16 output channels per vector
/// against broadcast input values: `dwt[k][co] += Σ_q buf[offs[k] + q] · dyt[q][co]`, with no
/// horizontal sums.
pub fn weight_grad(gm: &Geom, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    weight_grad_with(gm, x, dy, true)
}

/// [`weight_grad`]; `in_place` allows the pointwise route that reads `x` and `dy` in place
/// (off: every convolution goes through the copied column layout, for the bit-identity test).
fn weight_grad_with(gm: &Geom, x: &[f32], dy: &[f32], in_place: bool) -> (Vec<f32>, Vec<f32>) {
    let (cout, cog, p, kdim) = (gm.cout, gm.cog(), gm.p(), gm.kdim());
    let lay = PadLayout::of(gm);
    let cogr = cog.div_ceil(16) * 16;
    let sb = sub_batch((gm.cig() * lay.nph + cogr) * lay.s);
    // dwt rows per group: the taps plus room for the last tile's repeated taps.
    let krows = kdim + NK_MAX;
    // An unpadded unit-stride 1×1 convolution's column layout is its planes back to back
    // (`s = p`, no non-output columns): with whole 16 × 16 blocks (`cog`, `p` multiples of 16)
    // the output gradient is transposed straight from `dy` and the microkernel reads `x` in
    // place, sample by sample, summing in the same order as over the copied layout.
    let in_place = in_place && gm.is_pointwise() && cog % 16 == 0 && p % 16 == 0 && lay.s == p;
    let partials: Vec<(Vec<f32>, Vec<f32>)> = batch_ranges(gm.n)
        .into_par_iter()
        .map(|r| {
            let mut dwt = vec![0f32; gm.groups * krows * cogr];
            let mut db = vec![0f32; cout];
            let (mut buf, mut dyc, mut dyt) = (Vec::new(), Vec::new(), Vec::new());
            let mut n0 = r.start;
            while n0 < r.end {
                let nb = sb.min(r.end - n0);
                let dys = &dy[n0 * cout * p..][..nb * cout * p];
                for (i, plane) in dys.chunks_exact(p).enumerate() {
                    db[i % cout] += crate::simd::sum(plane);
                }
                if in_place {
                    let ncols = nb * p;
                    if dyt.len() < ncols * cogr {
                        dyt = uninit_vec(ncols * cogr);
                    }
                    let offs: Vec<usize> = (0..kdim).map(|ci| ci * p).collect();
                    for g in 0..gm.groups {
                        for b in 0..nb {
                            let src = &dys[(b * cout + g * cog) * p..][..cog * p];
                            for c0 in (0..cog).step_by(16) {
                                for q0 in (0..p).step_by(16) {
                                    // SAFETY: AVX-512F is present; the blocks are inside `src`
                                    // (cog rows of p) and `dyt` (ncols rows of cogr = cog).
                                    unsafe {
                                        crate::rowmap::transpose16(
                                            src.as_ptr().add(c0 * p + q0),
                                            p,
                                            dyt.as_mut_ptr().add((b * p + q0) * cogr + c0),
                                            cogr,
                                        )
                                    };
                                }
                            }
                        }
                        let xs = &x[(n0 * gm.cin + g * kdim) * p..];
                        let segs = Segments {
                            count: nb,
                            len: p,
                            stride: gm.cin * p,
                        };
                        assert!((nb - 1) * segs.stride + kdim * p <= xs.len());
                        let dwg = &mut dwt[g * krows * cogr..][..krows * cogr];
                        weight_grad_group(&offs, xs, &dyt, segs, cogr, dwg);
                    }
                    n0 += nb;
                    continue;
                }
                let offs = lay.tap_offsets(gm, nb);
                let ncols = lay.ncols(gm, nb);
                for g in 0..gm.groups {
                    lay.fill(gm, x, n0, nb, g, &mut buf);
                    // Output-gradient rows in the column layout (zero at non-output columns
                    // and past the last channel: only output positions are ever written), then
                    // transposed in 16 × 16 blocks.
                    let ld16 = ncols.div_ceil(16) * 16;
                    zeroed_once(&mut dyc, cogr * ld16);
                    for b in 0..nb {
                        for co in 0..cog {
                            let src = &dys[(b * cout + g * cog + co) * p..][..p];
                            lay.scatter(gm, src, &mut dyc[co * ld16 + b * lay.s..]);
                        }
                    }
                    if dyt.len() < ld16 * cogr {
                        dyt = uninit_vec(ld16 * cogr);
                    }
                    for c0 in (0..cogr).step_by(16) {
                        for q0 in (0..ld16).step_by(16) {
                            // SAFETY: AVX-512F is present; the 16 × 16 blocks are inside `dyc`
                            // (cogr rows of ld16) and `dyt` (ld16 rows of cogr).
                            unsafe {
                                crate::rowmap::transpose16(
                                    dyc.as_ptr().add(c0 * ld16 + q0),
                                    ld16,
                                    dyt.as_mut_ptr().add(q0 * cogr + c0),
                                    cogr,
                                )
                            };
                        }
                    }
                    debug_assert!(offs.iter().all(|o| o + ncols <= buf.len()));
                    let dwg = &mut dwt[g * krows * cogr..][..krows * cogr];
                    let segs = Segments {
                        count: 1,
                        len: ncols,
                        stride: 0,
                    };
                    weight_grad_group(&offs, &buf, &dyt, segs, cogr, dwg);
                }
                n0 += nb;
            }
            let mut dw = vec![0f32; cout * kdim];
            for g in 0..gm.groups {
                let t = &dwt[g * krows * cogr..];
                for co in 0..cog {
                    for k in 0..kdim {
                        dw[(g * cog + co) * kdim + k] = t[k * cogr + co];
                    }
                }
            }
            (dw, db)
        })
        .collect();
    sum_partials(partials, cout * kdim, cout)
}

/// Taps per weight-gradient tile for `nv` vectors (16·nv output channels): `nk·nv`
/// accumulators plus `nv` loads and a broadcast fit the 32 vector registers.
const NK_OF_NV: [usize; 5] = [0, 14, 12, 8, 6];
/// Most taps per weight-gradient tile.
const NK_MAX: usize = NK_OF_NV[1];

/// The columns of a weight-gradient sum: `count` runs of `len` input values, `stride` apart
/// (one run over a copied layout; one per sample when reading the input in place).
#[derive(Clone, Copy)]
struct Segments {
    count: usize,
    len: usize,
    stride: usize,
}

/// `dwt[k][co] += Σ_q buf[offs[k] + col(q)] · dyt[q][co]` for every tap `k` and the `cogr`
/// (a multiple of 16) channels, in tiles of up to 64 channels × `NK` taps; column `q` of run `r`
/// is `r·stride + q` in `buf` and `r·len + q` in `dyt`. The last tap tile repeats the last tap
/// into rows past `offs.len()` (discarded by the caller).
fn weight_grad_group(
    offs: &[usize],
    buf: &[f32],
    dyt: &[f32],
    segs: Segments,
    cogr: usize,
    dwt: &mut [f32],
) {
    let kdim = offs.len();
    let ncols = segs.len;
    debug_assert!(
        offs.iter()
            .all(|o| segs.count == 0 || o + (segs.count - 1) * segs.stride + ncols <= buf.len())
            && dyt.len() >= segs.count * ncols * cogr
    );
    debug_assert!(dwt.len() >= (kdim + NK_MAX) * cogr);
    for c0 in (0..cogr).step_by(64) {
        let nv = ((cogr - c0) / 16).min(4);
        let nk = NK_OF_NV[nv];
        for k0 in (0..kdim).step_by(nk) {
            let mut ptrs = [buf.as_ptr(); NK_MAX];
            for (j, p) in ptrs.iter_mut().enumerate().take(nk) {
                // SAFETY: `offs[k] + ncols <= buf.len()` (see `PadLayout::len`).
                *p = unsafe { buf.as_ptr().add(offs[(k0 + j).min(kdim - 1)]) };
            }
            // SAFETY: AVX-512F is present (`usable`); reads stay within `buf` and `dyt`
            // (`count·len` rows of `cogr`), writes within `dwt` (rows `k0..k0+nk < kdim + NK_MAX`).
            unsafe {
                let (d, o) = (dyt.as_ptr().add(c0), dwt.as_mut_ptr().add(k0 * cogr + c0));
                match nv {
                    1 => tile_dw::<1, { NK_OF_NV[1] }>(segs, &ptrs, d, cogr, o),
                    2 => tile_dw::<2, { NK_OF_NV[2] }>(segs, &ptrs, d, cogr, o),
                    3 => tile_dw::<3, { NK_OF_NV[3] }>(segs, &ptrs, d, cogr, o),
                    _ => tile_dw::<4, { NK_OF_NV[4] }>(segs, &ptrs, d, cogr, o),
                }
            }
        }
    }
}

/// `c[r][0..NR] = Σ_k w[k][r] · b[offs[k] + 0..NR]` for `r < MR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_fwd(
    kdim: usize,
    w: *const f32,
    offs: *const usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
) {
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

/// `o[j·ld + 16v..][..16] += Σ_q p[j][col(q)] · d[q·ld + 16v..][..16]` for `j < NK`, `v < NV`,
/// over the columns of `segs` in order (one accumulation, so runs do not change the rounding).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_dw<const NV: usize, const NK: usize>(
    segs: Segments,
    p: &[*const f32; NK_MAX],
    d: *const f32,
    ld: usize,
    o: *mut f32,
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; NK];
        for r in 0..segs.count {
            let (pr, dr) = (r * segs.stride, d.add(r * segs.len * ld));
            for q in 0..segs.len {
                let mut dv = [_mm512_setzero_ps(); NV];
                for (v, x) in dv.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(dr.add(q * ld + 16 * v));
                }
                for (j, row) in acc.iter_mut().enumerate() {
                    let s = _mm512_set1_ps(*p[j].add(pr + q));
                    for (a, x) in row.iter_mut().zip(&dv) {
                        *a = _mm512_fmadd_ps(s, *x, *a);
                    }
                }
            }
        }
        for (j, row) in acc.iter().enumerate() {
            for (v, a) in row.iter().enumerate() {
                let dst = o.add(j * ld + 16 * v);
                _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), *a));
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_fwd(_: usize, _: *const f32, _: *const usize, _: *const f32, _: *mut f32, _: usize) {
    unreachable!("direct kernels need x86-64 AVX-512 (checked by `usable`)")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_dw<const NV: usize, const NK: usize>(
    _: Segments,
    _: &[*const f32; NK_MAX],
    _: *const f32,
    _: usize,
    _: *mut f32,
) {
    unreachable!("direct kernels need x86-64 AVX-512 (checked by `usable`)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pointwise weight gradient read in place sums in the same order as over the copied
    /// layout: bit-identical results (sub-batches of several samples, groups, 16-multiples).
    #[test]
    fn in_place_pointwise_weight_grad_is_bit_identical() {
        if !avx512() {
            return;
        }
        // (n, cin, h, w, cout, groups)
        for &(n, cin, h, w, cout, groups) in &[
            (5, 24, 8, 8, 32, 1),
            (20, 16, 4, 4, 64, 1),
            (17, 32, 16, 16, 32, 2),
            (9, 8, 2, 8, 16, 1),
        ] {
            let gm = Geom::new(
                "test",
                (n, cin, h, w),
                (cout, cin / groups, 1, 1),
                (1, 1),
                (0, 0),
                (1, 1),
                groups,
            )
            .unwrap();
            let x: Vec<f32> = (0..n * cin * h * w)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let dy: Vec<f32> = (0..n * cout * h * w)
                .map(|i| ((i * 104729) % 997) as f32 / 498.5 - 1.0)
                .collect();
            let a = weight_grad_with(&gm, &x, &dy, true);
            let b = weight_grad_with(&gm, &x, &dy, false);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&a.0),
                bits(&b.0),
                "dw {n} {cin} {h} {w} {cout} {groups}"
            );
            assert_eq!(bits(&a.1), bits(&b.1), "db");
            assert!(a.0.iter().any(|v| *v != 0.0));
        }
    }
}
