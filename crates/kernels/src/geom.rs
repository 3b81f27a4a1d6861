//! Convolution geometry (shapes, strides, padding, dilation, groups) shared by the conv kernels,
//! with the valid-output-range arithmetic that lets inner loops run without bounds checks.

use crate::util::err;
use candle_core::Result;

/// Full description of a 2-D convolution problem (conv1d is the `h = 1` special case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub dh: usize,
    pub dw: usize,
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    /// Validates the hyper-parameters against the input and weight shapes and derives the output size.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        op: &str,
        x: (usize, usize, usize, usize),
        wt: (usize, usize, usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        groups: usize,
    ) -> Result<Self> {
        let (n, cin, h, w) = x;
        let (cout, cig, kh, kw) = wt;
        if stride.0 == 0 || stride.1 == 0 || dilation.0 == 0 || dilation.1 == 0 || groups == 0 {
            return Err(err(op, "stride, dilation and groups must be positive"));
        }
        if cin % groups != 0 || cout % groups != 0 {
            return Err(err(
                op,
                format!("groups {groups} must divide in-channels {cin} and out-channels {cout}"),
            ));
        }
        if cig != cin / groups {
            return Err(err(
                op,
                format!(
                    "weight has {cig} input channels per group, expected {} (in-channels {cin} / groups {groups})",
                    cin / groups
                ),
            ));
        }
        if kh == 0 || kw == 0 {
            return Err(err(op, "kernel size must be positive"));
        }
        let eff_h = dilation.0 * (kh - 1) + 1;
        let eff_w = dilation.1 * (kw - 1) + 1;
        if h + 2 * padding.0 < eff_h || w + 2 * padding.1 < eff_w {
            return Err(err(
                op,
                format!(
                    "input {h}x{w} with padding {padding:?} is smaller than the dilated kernel {eff_h}x{eff_w}"
                ),
            ));
        }
        let oh = (h + 2 * padding.0 - eff_h) / stride.0 + 1;
        let ow = (w + 2 * padding.1 - eff_w) / stride.1 + 1;
        Ok(Self {
            n,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            sh: stride.0,
            sw: stride.1,
            ph: padding.0,
            pw: padding.1,
            dh: dilation.0,
            dw: dilation.1,
            groups,
            oh,
            ow,
        })
    }

    /// Input channels per group.
    pub fn cig(&self) -> usize {
        self.cin / self.groups
    }
    /// Output channels per group.
    pub fn cog(&self) -> usize {
        self.cout / self.groups
    }
    /// Rows of the im2col matrix of one group (= weight row length).
    pub fn kdim(&self) -> usize {
        self.cig() * self.kh * self.kw
    }
    /// Output positions per plane.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Input positions per plane.
    pub fn hw(&self) -> usize {
        self.h * self.w
    }
    /// True for an unpadded, unstrided 1×1 convolution (the im2col matrix is the input itself).
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }
    /// True for a depthwise convolution (one input and one output channel per group).
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.cin && self.groups == self.cout && self.groups > 1
    }
    /// The "wide" im2col layout of a convolution, when it costs at most a quarter more GEMM
    /// columns than the plain one (see [`Wide`]).
    pub fn wide(&self) -> Option<Wide> {
        if self.is_pointwise() || self.p() == 0 {
            return None;
        }
        let (hp, wp) = (self.h + 2 * self.ph, self.w + 2 * self.pw);
        let (hq, wq) = (hp.div_ceil(self.sh), wp.div_ceil(self.sw));
        let cols = (self.oh - 1) * wq + self.ow;
        (4 * cols <= 5 * self.p()).then_some(Wide { hq, wq, cols })
    }
    /// Input row for output row `oy` and kernel row `ki`, if inside the input.
    #[inline]
    pub fn in_row(&self, oy: usize, ki: usize) -> Option<usize> {
        let iy = (oy * self.sh + ki * self.dh) as isize - self.ph as isize;
        (iy >= 0 && (iy as usize) < self.h).then_some(iy as usize)
    }
    /// For kernel column `kj`: the output columns `[lo, hi)` whose input column
    /// `ox * sw + kj * dw - pw` lies inside the input, and that input column at `ox = lo`.
    #[inline]
    pub fn col_range(&self, kj: usize) -> (usize, usize, usize) {
        valid_range(self.ow, self.w, self.sw, kj * self.dw, self.pw)
    }
}

/// im2col over the zero-padded input split into its `sh × sw` polyphase planes (plane
/// `(rp, cp)` holds the padded pixels `(sh·i + rp, sw·j + cp)`, `hq × wq` each; one plane when
/// the stride is 1). Output `(oy, ox)` reads tap `(ki, kj)` at plane
/// `(ki·dh mod sh, kj·dw mod sw)`, position `(oy + ki·dh / sh, ox + kj·dw / sw)`, so with GEMM
/// column `q = oy·wq + ox` (`q < cols = (oh − 1)·wq + ow`) the row of each tap is one
/// contiguous slice of a plane: one copy per (tap, sample) instead of one per output row.
/// Columns with `ox ≥ ow` are not outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wide {
    pub hq: usize,
    pub wq: usize,
    pub cols: usize,
}

/// Output indices `[lo, hi)` with `0 <= o * s + off - pad < len`, plus the input index at `lo`.
#[inline]
pub fn valid_range(
    out: usize,
    len: usize,
    s: usize,
    off: usize,
    pad: usize,
) -> (usize, usize, usize) {
    // o * s + off >= pad  <=>  o >= ceil((pad - off) / s)
    let lo = if off >= pad {
        0
    } else {
        (pad - off).div_ceil(s)
    };
    // o * s + off - pad <= len - 1  <=>  o <= (len - 1 + pad - off) / s
    let hi = if len + pad > off {
        ((len - 1 + pad - off) / s + 1).min(out)
    } else {
        0
    };
    if lo >= hi {
        return (0, 0, 0);
    }
    let first = lo * s + off - pad;
    (lo, hi, first)
}
