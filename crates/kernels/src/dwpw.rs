//! Eval-only fusion of a depthwise convolution with the 1×1 convolution that reads its output
//! (a depthwise-separable block: DS-CNN, MobileNet), forward only, no gradient: per sample,
//! the depthwise output (bias and clamp applied) goes to a scratch buffer that stays in cache
//! and the pointwise microkernel reads it there, so the intermediate activation is never
//! written to (or read back from) memory and never allocated. The two halves run exactly the
//! kernels of [`crate::conv2d_act`] (`depthwise_direct` and the direct pointwise path) in the
//! same order, so the output is bit-identical to the two convolutions run one after the other.
//! Without AVX-512 (or for shapes those kernels do not take) it runs the two convolutions.

use crate::act::Clamp;
use crate::conv::{Conv2dCfg, conv2d_act};
use crate::direct::{MR, NR, PadLayout, pack_weights, run_tiles};
use crate::geom::Geom;
use crate::util::{SyncPtr, batch_ranges, check_cpu_f32, err, tensor, uninit_vec, with_f32};
use candle_core::{Result, Tensor};
use rayon::prelude::*;

const OP: &str = "depthwise_pointwise";

/// One convolution of the block: weight, optional bias, and the clamp of its output pass.
#[derive(Clone, Copy)]
pub struct ConvPart<'a> {
    pub weight: &'a Tensor,
    pub bias: Option<&'a Tensor>,
    pub clamp: Clamp,
}

/// `pw(dw(x))`: `x (N, C, H, W)`, the depthwise `dw` (`weight (C, 1, KH, KW)`, geometry `cfg`,
/// `groups = C`) then the unit-stride unpadded 1×1 `pw` (`weight (CO, C, 1, 1)`), each with its
/// bias and clamp → `(N, CO, OH, OW)`. Forward only: the result does not track gradients.
pub fn depthwise_pointwise(
    x: &Tensor,
    dw: ConvPart,
    cfg: &Conv2dCfg,
    pw: ConvPart,
) -> Result<Tensor> {
    for (what, t) in [
        ("input", x),
        ("depthwise weight", dw.weight),
        ("pointwise weight", pw.weight),
    ] {
        check_cpu_f32(OP, what, t)?;
    }
    let xd = x.dims4().map_err(|e| err(OP, format!("input: {e}")))?;
    let dwd = dw
        .weight
        .dims4()
        .map_err(|e| err(OP, format!("depthwise weight: {e}")))?;
    let pwd = pw
        .weight
        .dims4()
        .map_err(|e| err(OP, format!("pointwise weight: {e}")))?;
    let dg = Geom::new(
        OP,
        xd,
        dwd,
        cfg.stride,
        cfg.padding,
        cfg.dilation,
        cfg.groups,
    )?;
    let pg = Geom::new(
        OP,
        (dg.n, dg.cout, dg.oh, dg.ow),
        pwd,
        (1, 1),
        (0, 0),
        (1, 1),
        1,
    )?;
    for (b, c, what) in [
        (dw.bias, dg.cout, "depthwise"),
        (pw.bias, pg.cout, "pointwise"),
    ] {
        if let Some(b) = b {
            check_cpu_f32(OP, "bias", b)?;
            if b.dims() != [c] {
                return Err(err(
                    OP,
                    format!("{what} bias shape {:?}, expected [{c}]", b.dims()),
                ));
            }
        }
    }
    if !(crate::depthwise_direct::usable(&dg) && pg.is_pointwise() && crate::direct::usable(&pg)) {
        let mid = conv2d_act(&x.detach(), dw.weight, dw.bias, cfg, dw.clamp)?;
        return conv2d_act(&mid, pw.weight, pw.bias, &Conv2dCfg::default(), pw.clamp)
            .map(|t| t.detach());
    }
    let vec = |t: Option<&Tensor>| t.map(|t| crate::util::to_vec(OP, t)).transpose();
    let (dwb, pwb) = (vec(dw.bias)?, vec(pw.bias)?);
    let (dww, pww) = (
        crate::util::to_vec(OP, dw.weight)?,
        crate::util::to_vec(OP, pw.weight)?,
    );
    let y = with_f32(OP, x, |xs| {
        forward(
            &dg,
            &pg,
            xs,
            (&dww, dwb.as_deref(), dw.clamp),
            (&pww, pwb.as_deref(), pw.clamp),
        )
    })?;
    tensor(y, (pg.n, pg.cout, pg.h, pg.w))
}

type Part<'a> = (&'a [f32], Option<&'a [f32]>, Clamp);

/// The fused forward on raw slices (`dg` the depthwise geometry, `pg` the pointwise one).
fn forward(dg: &Geom, pg: &Geom, x: &[f32], dw: Part, pw: Part) -> Vec<f32> {
    use crate::depthwise_direct::{TILE, fwd_plane};
    let (c, p, kk) = (dg.cin, dg.p(), dg.kh * dg.kw);
    let lay = PadLayout::of(dg);
    let offs = lay.tap_offsets(dg, 1);
    let dld = lay.ncols(dg, 1).div_ceil(TILE) * TILE;
    let packed = pack_weights(pg, pw.0, 0);
    let cout = pg.cout;
    let blocks = cout.div_ceil(MR);
    let ntiles = p.div_ceil(NR);
    let ld = ntiles * NR;
    let poffs: Vec<usize> = (0..c).map(|ci| ci * p).collect();
    let mut y = uninit_vec(dg.n * cout * p);
    let yp = SyncPtr(y.as_mut_ptr());
    batch_ranges(dg.n).into_par_iter().for_each(|r| {
        let (mut buf, mut dtmp, mut ptmp) =
            (Vec::new(), uninit_vec(dld), uninit_vec(blocks * MR * ld));
        // The sample's depthwise output, plus zeros the last pointwise tile may read.
        let mut mid = vec![0f32; c * p + ld];
        for b in r {
            for ch in 0..c {
                lay.fill(dg, x, b, 1, ch, &mut buf);
                assert!(offs.iter().all(|o| o + dld <= buf.len()));
                // SAFETY: AVX-512F is present (`usable`); reads `offs[k] + q` for q < dld are in
                // `buf` (asserted above).
                unsafe { fwd_plane(&dw.0[ch * kk..][..kk], &offs, &buf, &mut dtmp) };
                let bv = dw.1.map_or(0.0, |bv| bv[ch]);
                lay.gather_bias(dg, &dtmp, &mut mid[ch * p..][..p], bv, dw.2);
            }
            // SAFETY: AVX-512F is present (`usable`); tap `ci` reads `mid[ci·p..][..ld]`, inside
            // `mid` (c·p + ld long); `packed` / `ptmp` are sized for `blocks` row blocks.
            unsafe { run_tiles(&packed, &poffs, mid.as_ptr(), ntiles, &mut ptmp, ld) };
            // SAFETY: chunk ranges are disjoint, so each task owns its samples' outputs.
            let ys = unsafe { yp.slice(b * cout * p, cout * p) };
            for co in 0..cout {
                let bv = pw.1.map_or(0.0, |bv| bv[co]);
                crate::simd::copy_bias(&mut ys[co * p..][..p], &ptmp[co * ld..][..p], bv, pw.2);
            }
        }
    });
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Naive depthwise then pointwise convolution (f64 sums), bias and clamp per stage.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        (n, c, h, w): (usize, usize, usize, usize),
        dw: (&[f32], &[f32], Clamp),
        (kh, kw, s, pad): (usize, usize, (usize, usize), (usize, usize)),
        pw: (&[f32], &[f32], Clamp),
        co: usize,
    ) -> Vec<f32> {
        let oh = (h + 2 * pad.0 - kh) / s.0 + 1;
        let ow = (w + 2 * pad.1 - kw) / s.1 + 1;
        let clamp = |v: f64, k: Clamp| match k {
            Clamp::None => v,
            Clamp::Relu => v.max(0.0),
            Clamp::Relu6 => v.clamp(0.0, 6.0),
        };
        let mut mid = vec![0f64; n * c * oh * ow];
        for b in 0..n {
            for ch in 0..c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = dw.1[ch] as f64;
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let (iy, ix) = (
                                    (oy * s.0 + ki) as isize - pad.0 as isize,
                                    (ox * s.1 + kj) as isize - pad.1 as isize,
                                );
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    acc += dw.0[(ch * kh + ki) * kw + kj] as f64
                                        * x[((b * c + ch) * h + iy as usize) * w + ix as usize]
                                            as f64;
                                }
                            }
                        }
                        mid[((b * c + ch) * oh + oy) * ow + ox] = clamp(acc, dw.2);
                    }
                }
            }
        }
        let p = oh * ow;
        let mut y = vec![0f32; n * co * p];
        for b in 0..n {
            for o in 0..co {
                for q in 0..p {
                    let mut acc = pw.1[o] as f64;
                    for ch in 0..c {
                        acc += pw.0[o * c + ch] as f64 * mid[(b * c + ch) * p + q];
                    }
                    y[(b * co + o) * p + q] = clamp(acc, pw.2) as f32;
                }
            }
        }
        y
    }

    /// Fused = the two convolutions bit for bit, and within 1e-4 of the naive reference, on
    /// DS-CNN's 25×5 planes (3×3, padding 1), a strided case, odd channel counts and ReLU6.
    #[test]
    fn fused_matches_unfused_and_naive() {
        let cases = [
            (
                (3, 64, 25, 5),
                (3, 3, (1, 1), (1, 1)),
                64,
                Clamp::Relu,
                Clamp::Relu,
            ),
            (
                (2, 12, 9, 7),
                (3, 3, (2, 2), (1, 1)),
                20,
                Clamp::Relu6,
                Clamp::None,
            ),
            (
                (1, 5, 16, 16),
                (5, 3, (1, 1), (2, 1)),
                9,
                Clamp::None,
                Clamp::Relu6,
            ),
            (
                (9, 16, 8, 8),
                (3, 3, (1, 1), (1, 1)),
                32,
                Clamp::Relu,
                Clamp::Relu,
            ),
        ];
        for (k, (xd, (kh, kw, s, pad), co, dc, pc)) in cases.into_iter().enumerate() {
            let (n, c, h, w) = xd;
            let seed = 10 * k as u64;
            let x = randn(&[n, c, h, w], seed + 1);
            let dww = randn(&[c, 1, kh, kw], seed + 2);
            let dwb = randn(&[c], seed + 3);
            let pww = (randn(&[co, c, 1, 1], seed + 4) * 0.3).unwrap();
            let pwb = randn(&[co], seed + 5);
            let cfg = Conv2dCfg {
                stride: s,
                padding: pad,
                dilation: (1, 1),
                groups: c,
            };
            let dw = ConvPart {
                weight: &dww,
                bias: Some(&dwb),
                clamp: dc,
            };
            let pw = ConvPart {
                weight: &pww,
                bias: Some(&pwb),
                clamp: pc,
            };
            let fused = depthwise_pointwise(&x, dw, &cfg, pw).unwrap();
            let mid = conv2d_act(&x, &dww, Some(&dwb), &cfg, dc).unwrap();
            let two = conv2d_act(&mid, &pww, Some(&pwb), &Conv2dCfg::default(), pc).unwrap();
            assert_eq!(fused.dims(), two.dims(), "case {k}");
            let (f, t) = (
                fused.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                two.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert!(
                f.iter().zip(&t).all(|(a, b)| a.to_bits() == b.to_bits()),
                "case {k}: fused differs from the two convolutions"
            );
            let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let r = naive(
                &v(&x),
                xd,
                (&v(&dww), &v(&dwb), dc),
                (kh, kw, s, pad),
                (&v(&pww), &v(&pwb), pc),
                co,
            );
            let worst = f
                .iter()
                .zip(&r)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "case {k}: max |fused - naive| = {worst}");
        }
    }

    #[test]
    fn shape_errors_are_clear() {
        let x = randn(&[1, 4, 5, 5], 1);
        let dww = randn(&[4, 1, 3, 3], 2);
        let pww = randn(&[6, 3, 1, 1], 3);
        let cfg = Conv2dCfg {
            padding: (1, 1),
            groups: 4,
            ..Default::default()
        };
        let part = |w| ConvPart {
            weight: w,
            bias: None,
            clamp: Clamp::None,
        };
        let e = depthwise_pointwise(&x, part(&dww), &cfg, part(&pww))
            .unwrap_err()
            .to_string();
        assert!(e.contains("depthwise_pointwise"), "{e}");
    }
}
