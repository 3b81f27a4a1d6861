//! Moving a dense plane in and out of a padded, row-strided region (AVX-512): `compress` packs
//! the rows `r0..r0+rows`, columns `c0..c0+width` of a region with row stride `wq` into a
//! dense `rows × width` plane, `expand` does the reverse. Both walk the region in 16-wide
//! chunks with a precomputed lane mask per chunk (compress/expand instructions, masked loads
//! and stores), so narrow rows such as DS-CNN's 5 columns cost a few instructions per 16 values
//! instead of one `memcpy` call per row. Masked lanes are never read or written.

use crate::act::Clamp;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The lane masks of one region.
#[derive(Clone, Debug)]
pub struct RowMap {
    /// Offset of the first element (`r0·wq + c0`).
    lo: usize,
    /// One 16-bit lane mask per 16-element chunk from `lo`.
    masks: Vec<u16>,
    /// Row stride, rows and row width of the region: rows of 16 or more columns are moved row
    /// by row with plain vector loads and stores (the lane-mask walk serves narrow rows; its
    /// compress/expand instructions cost more than the copy on wide ones).
    wq: usize,
    rows: usize,
    width: usize,
}

/// Rows at least this wide are copied row by row.
const WIDE_ROW: usize = 16;

impl RowMap {
    pub fn new(wq: usize, r0: usize, rows: usize, c0: usize, width: usize) -> Self {
        debug_assert!(c0 + width <= wq || rows <= 1);
        let lo = r0 * wq + c0;
        if rows == 0 || width == 0 {
            return Self {
                lo,
                masks: Vec::new(),
                wq,
                rows: 0,
                width: 0,
            };
        }
        let hi = (r0 + rows - 1) * wq + c0 + width;
        let masks = (lo..hi)
            .step_by(16)
            .map(|q0| {
                (0..16).fold(0u16, |m, t| {
                    let q = q0 + t;
                    let inside = q < hi && (q % wq).wrapping_sub(c0) < width;
                    m | (u16::from(inside) << t)
                })
            })
            .collect();
        Self {
            lo,
            masks,
            wq,
            rows,
            width,
        }
    }

    /// `dst[j] = src[region j] + bias` (then clamped by `clamp`) for the dense plane `dst`.
    ///
    /// # Safety
    /// AVX-512F must be present; `src` must be valid for reads of the whole region and `dst`
    /// for writes of `rows·width` floats.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn compress(&self, src: *const f32, dst: *mut f32, bias: f32, clamp: Clamp) {
        let relu = clamp.on();
        let six = clamp == Clamp::Relu6;
        unsafe {
            let (b, zero) = (_mm512_set1_ps(bias), _mm512_setzero_ps());
            let hi = _mm512_set1_ps(6.0);
            if self.width >= WIDE_ROW {
                let tail = low_bits(self.width % 16);
                for r in 0..self.rows {
                    let (s, d) = (src.add(self.lo + r * self.wq), dst.add(r * self.width));
                    let mut j = 0;
                    while j < self.width {
                        let m = if j + 16 <= self.width { 0xFFFF } else { tail };
                        let mut v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, s.add(j)), b);
                        if relu {
                            v = _mm512_max_ps(v, zero);
                        }
                        if six {
                            v = _mm512_min_ps(v, hi);
                        }
                        _mm512_mask_storeu_ps(d.add(j), m, v);
                        j += 16;
                    }
                }
                return;
            }
            let mut out = dst;
            for (i, &m) in self.masks.iter().enumerate() {
                let mut v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, src.add(self.lo + 16 * i)), b);
                if relu {
                    v = _mm512_max_ps(v, zero);
                }
                if six {
                    v = _mm512_min_ps(v, hi);
                }
                let n = m.count_ones() as usize;
                _mm512_mask_storeu_ps(out, low_bits(n), _mm512_maskz_compress_ps(m, v));
                out = out.add(n);
            }
        }
    }

    /// `dst[region j] = src[j]`; the other elements of `dst` are left as they are.
    ///
    /// # Safety
    /// AVX-512F must be present; `src` must be valid for reads of `rows·width` floats and `dst`
    /// for writes of the whole region.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn expand(&self, src: *const f32, dst: *mut f32) {
        unsafe {
            if self.width >= WIDE_ROW {
                let tail = low_bits(self.width % 16);
                for r in 0..self.rows {
                    let (s, d) = (src.add(r * self.width), dst.add(self.lo + r * self.wq));
                    let mut j = 0;
                    while j < self.width {
                        let m = if j + 16 <= self.width { 0xFFFF } else { tail };
                        _mm512_mask_storeu_ps(d.add(j), m, _mm512_maskz_loadu_ps(m, s.add(j)));
                        j += 16;
                    }
                }
                return;
            }
            let mut inp = src;
            for (i, &m) in self.masks.iter().enumerate() {
                let n = m.count_ones() as usize;
                let v = _mm512_maskz_loadu_ps(low_bits(n), inp);
                _mm512_mask_storeu_ps(dst.add(self.lo + 16 * i), m, _mm512_maskz_expand_ps(m, v));
                inp = inp.add(n);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl RowMap {
    pub unsafe fn compress(&self, _: *const f32, _: *mut f32, _: f32, _: Clamp) {
        unreachable!("row maps serve the AVX-512 kernels only")
    }
    pub unsafe fn expand(&self, _: *const f32, _: *mut f32) {
        unreachable!("row maps serve the AVX-512 kernels only")
    }
}

/// Splits `src` into its even-indexed elements at `even` and odd-indexed ones at `odd`
/// (`ceil(n/2)` and `floor(n/2)` floats); a null pointer skips that half.
///
/// # Safety
/// AVX-512F must be present; non-null `even` / `odd` must be valid for those writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn split2(src: &[f32], even: *mut f32, odd: *mut f32) {
    unsafe {
        let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let n = src.len();
        for j in (0..n).step_by(32) {
            let left = n - j;
            let a = _mm512_maskz_loadu_ps(low_bits(left.min(16)), src.as_ptr().add(j));
            let b = _mm512_maskz_loadu_ps(
                low_bits(left.saturating_sub(16).min(16)),
                src.as_ptr().wrapping_add(j + 16),
            );
            if !even.is_null() {
                let e = _mm512_permutex2var_ps(a, ie, b);
                _mm512_mask_storeu_ps(even.add(j / 2), low_bits(left.min(32).div_ceil(2)), e);
            }
            if !odd.is_null() {
                let o = _mm512_permutex2var_ps(a, io, b);
                _mm512_mask_storeu_ps(odd.add(j / 2), low_bits(left.min(32) / 2), o);
            }
        }
    }
}

/// Transposes the 16 × 16 block at `src` (row stride `lds`) into `dst` (row stride `ldd`).
///
/// # Safety
/// AVX-512F must be present; both blocks must be valid for 16 rows of 16 floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn transpose16(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
    unsafe {
        let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src.add(i * lds)));
        // Interleave pairs of rows, then pairs of pairs, then 128-bit lanes twice.
        // t[2p] = unpacklo(r[2p], r[2p+1]), t[2p+1] = unpackhi(r[2p], r[2p+1]).
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (x, y) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(x, y)
            } else {
                _mm512_unpackhi_ps(x, y)
            }
        });
        let u: [__m512; 16] = std::array::from_fn(|i| {
            // Groups of four rows g = i / 4: (t[4g], t[4g+2]) and (t[4g+1], t[4g+3]).
            let g = i / 4;
            let (x, y) = match i % 4 {
                0 | 1 => (t[4 * g], t[4 * g + 2]),
                _ => (t[4 * g + 1], t[4 * g + 3]),
            };
            if i % 2 == 0 {
                _mm512_shuffle_ps::<0x44>(x, y)
            } else {
                _mm512_shuffle_ps::<0xEE>(x, y)
            }
        });
        let v: [__m512; 16] = std::array::from_fn(|i| {
            // Halves h = i / 8 pair rows 4 apart: (u[8h + j], u[8h + j + 4]), j = i % 4.
            let (h, j) = (i / 8, i % 4);
            let (x, y) = (u[8 * h + j], u[8 * h + j + 4]);
            if i % 8 < 4 {
                _mm512_shuffle_f32x4::<0x88>(x, y)
            } else {
                _mm512_shuffle_f32x4::<0xDD>(x, y)
            }
        });
        for i in 0..16 {
            let j = i % 8;
            let (x, y) = (v[j], v[j + 8]);
            let o = if i < 8 {
                _mm512_shuffle_f32x4::<0x88>(x, y)
            } else {
                _mm512_shuffle_f32x4::<0xDD>(x, y)
            };
            _mm512_storeu_ps(dst.add(i * ldd), o);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn transpose16(_: *const f32, _: usize, _: *mut f32, _: usize) {
    unreachable!("row maps serve the AVX-512 kernels only")
}

#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn split2(_: &[f32], _: *mut f32, _: *mut f32) {
    unreachable!("row maps serve the AVX-512 kernels only")
}

/// The mask of the `n` lowest lanes.
#[inline(always)]
fn low_bits(n: usize) -> u16 {
    ((1u32 << n) - 1) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compress_and_expand_match_row_copies() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        for &(wq, r0, rows, c0, width) in &[
            (6, 1, 25, 1, 5),
            (6, 0, 25, 0, 5),
            (5, 0, 25, 0, 5),
            (33, 1, 32, 1, 32),
            (9, 2, 7, 0, 9),
            (50, 0, 1, 1, 49),
            (17, 3, 1, 2, 15),
            // Rows of 16 or more columns: the row-by-row path.
            (40, 2, 5, 3, 37),
            (21, 1, 6, 2, 19),
            (16, 0, 4, 0, 16),
        ] {
            let region = (r0 + rows + 1) * wq;
            let src: Vec<f32> = (0..region).map(|i| i as f32 - 40.0).collect();
            let mut want = Vec::new();
            for r in 0..rows {
                let row = &src[(r0 + r) * wq + c0..][..width];
                want.extend(row.iter().map(|v| (v + 0.5f32).max(0.0)));
            }
            let map = RowMap::new(wq, r0, rows, c0, width);
            let mut got = vec![f32::NAN; rows * width];
            // SAFETY: AVX-512F checked; sizes as documented.
            unsafe { map.compress(src.as_ptr(), got.as_mut_ptr(), 0.5, Clamp::Relu) };
            assert_eq!(
                got, want,
                "compress wq {wq} r0 {r0} rows {rows} c0 {c0} width {width}"
            );
            let six: Vec<f32> = want.iter().map(|v| v.min(6.0)).collect();
            // SAFETY: as above.
            unsafe { map.compress(src.as_ptr(), got.as_mut_ptr(), 0.5, Clamp::Relu6) };
            assert_eq!(got, six, "compress relu6 wq {wq} width {width}");

            let dense: Vec<f32> = (0..rows * width).map(|i| i as f32 + 1.0).collect();
            let mut got = vec![-7f32; region];
            let mut want = got.clone();
            for r in 0..rows {
                want[(r0 + r) * wq + c0..][..width].copy_from_slice(&dense[r * width..][..width]);
            }
            // SAFETY: as above.
            unsafe { map.expand(dense.as_ptr(), got.as_mut_ptr()) };
            assert_eq!(
                got, want,
                "expand wq {wq} r0 {r0} rows {rows} c0 {c0} width {width}"
            );
        }
    }

    #[test]
    fn transpose16_transposes() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        let src: Vec<f32> = (0..16 * 20).map(|i| i as f32).collect();
        let mut dst = vec![-1f32; 16 * 18];
        // SAFETY: AVX-512F checked; 16 rows of 20 and of 18 floats.
        unsafe { transpose16(src.as_ptr(), 20, dst.as_mut_ptr(), 18) };
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(dst[i * 18 + j], src[j * 20 + i], "({i}, {j})");
            }
            assert!(dst[i * 18 + 16..i * 18 + 18].iter().all(|v| *v == -1.0));
        }
    }

    #[test]
    fn split2_deinterleaves_any_length() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        for n in [1usize, 2, 5, 10, 16, 17, 31, 32, 33, 49, 64, 65] {
            let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let mut even = vec![-1f32; n.div_ceil(2) + 20];
            let mut odd = vec![-1f32; n / 2 + 20];
            // SAFETY: AVX-512F checked; both outputs are long enough.
            unsafe { split2(&src, even.as_mut_ptr(), odd.as_mut_ptr()) };
            let we: Vec<f32> = src.iter().step_by(2).copied().collect();
            let wo: Vec<f32> = src.iter().skip(1).step_by(2).copied().collect();
            assert_eq!(&even[..we.len()], &we[..], "n {n}");
            assert_eq!(&odd[..wo.len()], &wo[..], "n {n}");
            assert!(
                even[we.len()..]
                    .iter()
                    .chain(&odd[wo.len()..])
                    .all(|v| *v == -1.0),
                "n {n}: wrote past the end"
            );
        }
    }
}
