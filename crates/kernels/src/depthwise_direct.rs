//! Depthwise convolution on AVX-512 CPUs, with input planes laid out as in
//! [`crate::direct::PadLayout`] (zero padding shared between rows and samples), so each kernel
//! tap is one multiply-add over a run of columns, whatever the plane size (DS-CNN's 25×5 planes
//! included). Forward (any stride, through the polyphase planes; split by samples, one plane at
//! a time), weight and bias gradients (any stride; split by channel, each channel's whole batch
//! as one run), input gradient (unit stride: a forward pass over the output gradient with the
//! flipped kernel). Sums run in a fixed order: bit-identical for any thread count.

use crate::act::Clamp;
use crate::direct::PadLayout;
use crate::geom::Geom;
use crate::util::{SyncPtr, uninit_vec};
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output columns per forward tile (2 vectors).
pub(crate) const TILE: usize = 32;
/// Taps per weight-gradient pass.
const NKD: usize = 4;

/// True when these kernels can run here (AVX-512F CPU) for this depthwise convolution.
pub fn usable(gm: &Geom) -> bool {
    gm.is_depthwise() && gm.p() > 0 && crate::direct::avx512()
}

/// Forward: `y (n, c, oh, ow)` with bias and ReLU applied in the output pass. Work is split
/// by samples, one plane at a time, so input and output are read and written in order.
pub fn forward(gm: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: Clamp) -> Vec<f32> {
    let (c, p, kk) = (gm.cin, gm.p(), gm.kh * gm.kw);
    let lay = PadLayout::of(gm);
    let offs = lay.tap_offsets(gm, 1);
    let ld = lay.ncols(gm, 1).div_ceil(TILE) * TILE;
    let mut y = uninit_vec(gm.n * c * p);
    let yp = SyncPtr(y.as_mut_ptr());
    crate::util::batch_ranges(gm.n)
        .into_par_iter()
        .for_each(|r| {
            let (mut buf, mut tmp) = (Vec::new(), uninit_vec(ld));
            for b in r {
                // SAFETY: chunk ranges are disjoint, so each task owns its samples' outputs.
                let ys = unsafe { yp.slice(b * c * p, c * p) };
                for (ch, yc) in ys.chunks_exact_mut(p).enumerate() {
                    lay.fill(gm, x, b, 1, ch, &mut buf);
                    assert!(offs.iter().all(|o| o + ld <= buf.len()));
                    // SAFETY: AVX-512F is present (`usable`); reads `offs[k] + q` for q < ld are in
                    // `buf` (asserted above).
                    unsafe { fwd_plane(&w[ch * kk..][..kk], &offs, &buf, &mut tmp) };
                    lay.gather_bias(gm, &tmp, yc, bias.map_or(0.0, |bv| bv[ch]), relu);
                }
            }
        });
    y
}

/// Gradients `(dx if need_dx, dw, db)`; `need_dx` requires unit stride (see [`backward_usable`]).
pub fn backward(
    gm: &Geom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    need_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let (c, p, kk) = (gm.cin, gm.p(), gm.kh * gm.kw);
    let dx = need_dx.then(|| {
        let tg = crate::conv_gemm::transposed_geom(gm)
            .expect("backward_usable checked that the input gradient is a forward pass");
        forward(
            &tg,
            dy,
            &crate::conv_gemm::flip_weight(gm, w),
            None,
            Clamp::None,
        )
    });
    let lay = PadLayout::of(gm);
    let offs = lay.tap_offsets(gm, gm.n);
    let ld = lay.ncols(gm, gm.n).div_ceil(16) * 16;
    let per_ch: Vec<(Vec<f32>, f32)> = (0..c)
        .into_par_iter()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(buf, dyc), ch| {
                lay.fill(gm, x, 0, gm.n, ch, buf);
                // Only output positions are written: the others stay zero across channels.
                crate::util::zeroed_once(dyc, ld);
                let mut db = 0f32;
                for b in 0..gm.n {
                    let src = &dy[(b * c + ch) * p..][..p];
                    db += crate::simd::sum(src);
                    lay.scatter(gm, src, &mut dyc[b * lay.s..]);
                }
                let mut dwc = vec![0f32; kk];
                for k0 in (0..kk).step_by(NKD) {
                    let mut ptrs = [buf.as_ptr(); NKD];
                    for (j, pt) in ptrs.iter_mut().enumerate() {
                        // SAFETY: `offs[k] + ld <= buf.len()` (see `PadLayout::len`).
                        *pt = unsafe { buf.as_ptr().add(offs[(k0 + j).min(kk - 1)]) };
                    }
                    // SAFETY: AVX-512F is present; reads stay within `buf` and `dyc`.
                    let sums = unsafe { wgrad_taps(ld / 16, &ptrs, dyc.as_ptr()) };
                    for (j, s) in sums.iter().enumerate().take(kk - k0) {
                        dwc[k0 + j] = *s;
                    }
                }
                (dwc, db)
            },
        )
        .collect();
    let (dw, db) = crate::depthwise::concat_channels(per_ch);
    (dx, dw, db)
}

/// True when [`backward`] applies: the input gradient, if needed, is a unit-stride forward pass.
pub fn backward_usable(gm: &Geom, need_dx: bool) -> bool {
    usable(gm) && (!need_dx || crate::conv_gemm::transposed_geom(gm).is_some())
}

/// `tmp[q] = Σ_k w[k] · buf[offs[k] + q]` for every `q < tmp.len()` (a multiple of [`TILE`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn fwd_plane(w: &[f32], offs: &[usize], buf: &[f32], tmp: &mut [f32]) {
    unsafe {
        let b = buf.as_ptr();
        for q in (0..tmp.len()).step_by(TILE) {
            let mut acc = [_mm512_setzero_ps(); TILE / 16];
            for (wv, o) in w.iter().zip(offs) {
                let s = _mm512_set1_ps(*wv);
                let bp = b.add(o + q);
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(s, _mm512_loadu_ps(bp.add(16 * v)), *a);
                }
            }
            for (v, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(tmp.as_mut_ptr().add(q + 16 * v), *a);
            }
        }
    }
}

/// `[Σ_{q < 16·nv} d[q] · p[j][q] for j < NKD]`, 16 lanes each, summed in a fixed order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn wgrad_taps(nv: usize, p: &[*const f32; NKD], d: *const f32) -> [f32; NKD] {
    unsafe {
        let mut acc = [_mm512_setzero_ps(); NKD];
        for v in 0..nv {
            let dv = _mm512_loadu_ps(d.add(16 * v));
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(dv, _mm512_loadu_ps(p[j].add(16 * v)), *a);
            }
        }
        acc.map(|a| _mm512_reduce_add_ps(a))
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn fwd_plane(_: &[f32], _: &[usize], _: &[f32], _: &mut [f32]) {
    unreachable!("direct kernels need x86-64 AVX-512 (checked by `usable`)")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn wgrad_taps(_: usize, _: &[*const f32; NKD], _: *const f32) -> [f32; NKD] {
    unreachable!("direct kernels need x86-64 AVX-512 (checked by `usable`)")
}
