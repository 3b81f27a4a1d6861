//! Fast path for unit-stride depthwise convolutions that keep the width (`ow == w`, e.g. 3×3
//! padding 1): every kernel tap is one multiply-add over the whole flattened plane. Horizontal
//! taps that would wrap into the neighbouring row read an input copy whose wrapping columns are
//! zeroed (forward, weight gradient) or write an accumulator masked the same way (input
//! gradient), so no per-row copies are needed for narrow planes such as DS-CNN's 25×5.

use crate::geom::Geom;
use crate::simd::{add, add_mul, axpy, dot, mul_into, multiversion};

/// True when the flattened formulation applies.
pub fn applies(gm: &Geom) -> bool {
    gm.sh == 1 && gm.sw == 1 && gm.ow == gm.w
}

/// Per-channel scratch: column masks per horizontal tap offset, masked input and accumulators.
pub struct Flat {
    /// `masks[kj]`: 1 where input column `c` can pair with an output column for tap `kj`, else 0;
    /// `None` when the tap has no horizontal offset.
    masks: Vec<Option<Vec<f32>>>,
    xm: Vec<Vec<f32>>,
    acc: Vec<Vec<f32>>,
}

fn delta(gm: &Geom, kj: usize) -> isize {
    (kj * gm.dw) as isize - gm.pw as isize
}

impl Flat {
    pub fn new(gm: &Geom) -> Self {
        let hw = gm.hw();
        let masks: Vec<Option<Vec<f32>>> = (0..gm.kw)
            .map(|kj| {
                let d = delta(gm, kj);
                (d != 0).then(|| {
                    (0..hw)
                        .map(|i| {
                            let c = (i % gm.w) as isize;
                            // Output column ox = c - d must lie in [0, w).
                            if c - d >= 0 && c - d < gm.w as isize {
                                1.0
                            } else {
                                0.0
                            }
                        })
                        .collect()
                })
            })
            .collect();
        let xm = (0..gm.kw).map(|_| vec![0f32; hw]).collect();
        let acc = (0..gm.kw).map(|_| vec![0f32; hw]).collect();
        Self { masks, xm, acc }
    }

    /// Loads one input plane: masked copies for the horizontally shifted taps.
    #[inline(always)]
    fn load(&mut self, xs: &[f32]) {
        for (m, xm) in self.masks.iter().zip(self.xm.iter_mut()) {
            if let Some(m) = m {
                mul_into(xm, xs, m);
            }
        }
    }

    fn input<'a>(&'a self, xs: &'a [f32], kj: usize) -> &'a [f32] {
        if self.masks[kj].is_some() {
            &self.xm[kj]
        } else {
            xs
        }
    }

    /// Output range `[o0, o1)` and input start of tap `(ki, kj)` in flattened coordinates.
    fn span(gm: &Geom, ki: usize, kj: usize) -> Option<(usize, usize, usize)> {
        let w = gm.w as isize;
        let r = (ki * gm.dh) as isize - gm.ph as isize;
        let oy0 = (-r).max(0);
        let oy1 = (gm.oh as isize).min(gm.h as isize - r);
        if oy0 >= oy1 {
            return None;
        }
        let d = delta(gm, kj);
        let src0 = (oy0 + r) * w + d;
        let a = (-src0).max(0);
        let b = ((oy1 + r) * w + d - gm.hw() as isize).max(0);
        let (o0, o1) = (oy0 * w + a, oy1 * w - b);
        (o0 < o1).then_some((o0 as usize, o1 as usize, (src0 + a) as usize))
    }

    /// Forward of one plane into `ys` (length `oh·w`); called through [`plane_forward`].
    #[inline(always)]
    fn forward_imp(&mut self, gm: &Geom, xs: &[f32], wc: &[f32], bv: f32, ys: &mut [f32]) {
        self.load(xs);
        ys.fill(bv);
        for ki in 0..gm.kh {
            for kj in 0..gm.kw {
                if let Some((o0, o1, s0)) = Self::span(gm, ki, kj) {
                    let x = self.input(xs, kj);
                    axpy(&mut ys[o0..o1], wc[ki * gm.kw + kj], &x[s0..s0 + (o1 - o0)]);
                }
            }
        }
    }

    /// Backward of one plane: accumulates the weight gradient into `dwc` and, if given, writes
    /// the input gradient plane `dx`; called through [`plane_backward`].
    #[inline(always)]
    fn backward_imp(
        &mut self,
        gm: &Geom,
        xs: &[f32],
        wc: &[f32],
        dys: &[f32],
        dwc: &mut [f32],
        dx: Option<&mut [f32]>,
    ) {
        self.load(xs);
        let need_dx = dx.is_some();
        if need_dx {
            self.acc.iter_mut().for_each(|a| a.fill(0.0));
        }
        for ki in 0..gm.kh {
            for kj in 0..gm.kw {
                if let Some((o0, o1, s0)) = Self::span(gm, ki, kj) {
                    let len = o1 - o0;
                    let g = &dys[o0..o1];
                    dwc[ki * gm.kw + kj] += dot(g, &self.input(xs, kj)[s0..s0 + len]);
                    if need_dx {
                        axpy(&mut self.acc[kj][s0..s0 + len], wc[ki * gm.kw + kj], g);
                    }
                }
            }
        }
        if let Some(dx) = dx {
            dx.fill(0.0);
            for (m, acc) in self.masks.iter().zip(&self.acc) {
                match m {
                    None => add(dx, acc),
                    Some(m) => add_mul(dx, acc, m),
                }
            }
        }
    }
}

// One dispatch per plane: the per-tap helpers inline into these (AVX2 when available) instead of
// paying a call and a feature check each on DS-CNN's 125-element planes.
multiversion! {
/// Forward of one plane (one feature-detected dispatch per plane).
pub fn plane_forward(f: &mut Flat, gm: &Geom, xs: &[f32], wc: &[f32], bv: f32, ys: &mut [f32]) {
    f.forward_imp(gm, xs, wc, bv, ys)
}
}

multiversion! {
/// Backward of one plane (one feature-detected dispatch per plane).
pub fn plane_backward(
    f: &mut Flat,
    gm: &Geom,
    xs: &[f32],
    wc: &[f32],
    dys: &[f32],
    dwc: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    f.backward_imp(gm, xs, wc, dys, dwc, dx)
}
}
