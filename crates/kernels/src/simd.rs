//! Small vectorisable kernels. Reductions use fixed-lane partial sums (the compiler cannot
//! reorder a plain float sum, so 16 independent lanes let it use SIMD); the order is fixed, hence
//! deterministic. Every function is compiled twice, for the baseline target and with AVX2
//! (chosen at run time); no FMA contraction, so both versions give bit-identical results.

/// Defines `pub fn name(args) -> ret` with a baseline body and an AVX2 copy picked at run time.
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        #[inline]
        pub fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($a: $t),*) $(-> $r)? {
                    imp($($a),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { avx2($($a),*) };
                }
            }
            imp($($a),*)
        }
    };
}

pub(crate) use multiversion;

use crate::act::Clamp;

const LANES: usize = 16;

/// `g` where `m > 0`, else `+0.0`, branch-free (a compare and a bitwise and, so loops using it
/// vectorise; a plain `if` compiles to scalar branches).
#[inline(always)]
fn keep(g: f32, m: f32) -> f32 {
    f32::from_bits(g.to_bits() & ((m > 0.0) as u32).wrapping_neg())
}

/// `g` where `0 < m < hi`, else `+0.0`, branch-free (the ReLU6 mask with `hi = 6`).
#[inline(always)]
fn keep_below(g: f32, m: f32, hi: f32) -> f32 {
    f32::from_bits(g.to_bits() & (((m > 0.0) & (m < hi)) as u32).wrapping_neg())
}

/// `v` clamped by `c` (nothing, `max(v, 0)` or `min(max(v, 0), 6)`).
#[inline(always)]
fn clamp(v: f32, c: Clamp) -> f32 {
    match c {
        Clamp::None => v,
        Clamp::Relu => v.max(0.0),
        Clamp::Relu6 => v.clamp(0.0, 6.0),
    }
}

multiversion! {
/// `Σ a[i]·b[i]` with 16 fixed lanes.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ar.iter().zip(br) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}
}

multiversion! {
/// `Σ a[i]` with 16 fixed lanes.
pub fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let ac = a.chunks_exact(LANES);
    let tail: f32 = ac.remainder().iter().sum();
    for x in ac {
        for l in 0..LANES {
            acc[l] += x[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}
}

multiversion! {
/// `y[i] += alpha·x[i]`.
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (a, b) in y.iter_mut().zip(x) {
        *a += alpha * *b;
    }
}
}

multiversion! {
/// `(Σ (x[i]-mu), Σ (x[i]-mu)²)` with 16 fixed lanes.
pub fn centered_sums(x: &[f32], mu: f32) -> (f32, f32) {
    let mut s = [0f32; LANES];
    let mut q = [0f32; LANES];
    let xc = x.chunks_exact(LANES);
    let (mut ts, mut tq) = (0f32, 0f32);
    for v in xc.remainder() {
        let d = v - mu;
        ts += d;
        tq += d * d;
    }
    for c in xc {
        for l in 0..LANES {
            let d = c[l] - mu;
            s[l] += d;
            q[l] += d * d;
        }
    }
    (s.iter().sum::<f32>() + ts, q.iter().sum::<f32>() + tq)
}
}

multiversion! {
/// `(Σ g[i], Σ g[i]·(x[i]-mu))`, with `g[i]` zeroed where `mask[i] <= 0` (or `mask[i] >= hi`,
/// for a finite `hi`: the ReLU6 mask) if a mask is given.
pub fn grad_sums(g: &[f32], x: &[f32], mu: f32, mask: Option<&[f32]>, hi: f32) -> (f32, f32) {
    let n = g.len().min(x.len());
    let mut s = [0f32; LANES];
    let mut q = [0f32; LANES];
    let full = n / LANES * LANES;
    match mask {
        None => {
            for (gc, xc) in g[..full]
                .chunks_exact(LANES)
                .zip(x[..full].chunks_exact(LANES))
            {
                for l in 0..LANES {
                    s[l] += gc[l];
                    q[l] += gc[l] * (xc[l] - mu);
                }
            }
        }
        Some(mk) if hi.is_finite() => {
            let it = g[..full]
                .chunks_exact(LANES)
                .zip(x[..full].chunks_exact(LANES));
            for ((gc, xc), mc) in it.zip(mk[..full].chunks_exact(LANES)) {
                for l in 0..LANES {
                    let gv = keep_below(gc[l], mc[l], hi);
                    s[l] += gv;
                    q[l] += gv * (xc[l] - mu);
                }
            }
        }
        Some(mk) => {
            let it = g[..full]
                .chunks_exact(LANES)
                .zip(x[..full].chunks_exact(LANES));
            for ((gc, xc), mc) in it.zip(mk[..full].chunks_exact(LANES)) {
                for l in 0..LANES {
                    let gv = keep(gc[l], mc[l]);
                    s[l] += gv;
                    q[l] += gv * (xc[l] - mu);
                }
            }
        }
    }
    let (mut ts, mut tq) = (0f32, 0f32);
    for i in full..n {
        let gv = match mask {
            None => g[i],
            Some(m) if hi.is_finite() => keep_below(g[i], m[i], hi),
            Some(m) => keep(g[i], m[i]),
        };
        ts += gv;
        tq += gv * (x[i] - mu);
    }
    (s.iter().sum::<f32>() + ts, q.iter().sum::<f32>() + tq)
}
}

multiversion! {
/// `d[i] = x[i]·m[i]`.
pub fn mul_into(d: &mut [f32], x: &[f32], m: &[f32]) {
    for ((d, x), m) in d.iter_mut().zip(x).zip(m) {
        *d = *x * *m;
    }
}
}

multiversion! {
/// `d[i] += a[i]·m[i]`.
pub fn add_mul(d: &mut [f32], a: &[f32], m: &[f32]) {
    for ((d, a), m) in d.iter_mut().zip(a).zip(m) {
        *d += *a * *m;
    }
}
}

multiversion! {
/// `d[i] += a[i]`.
pub fn add(d: &mut [f32], a: &[f32]) {
    for (d, a) in d.iter_mut().zip(a) {
        *d += *a;
    }
}
}

multiversion! {
/// `y[i] = x[i]·a + b`, clamped by `c`.
pub fn affine(y: &mut [f32], x: &[f32], a: f32, b: f32, c: Clamp) {
    match c {
        Clamp::None => {
            for (y, x) in y.iter_mut().zip(x) {
                *y = *x * a + b;
            }
        }
        Clamp::Relu => {
            for (y, x) in y.iter_mut().zip(x) {
                *y = (*x * a + b).max(0.0);
            }
        }
        Clamp::Relu6 => {
            for (y, x) in y.iter_mut().zip(x) {
                *y = clamp(*x * a + b, Clamp::Relu6);
            }
        }
    }
}
}

multiversion! {
/// Batch-norm input gradient `d = k·(g' − c0 − (x − mu)·c1)`, `g' = g` masked by `y > 0` (and
/// `y < hi` for a finite `hi`) if given.
pub fn bn_dx(d: &mut [f32], g: &[f32], x: &[f32], mask: Option<&[f32]>, hi: f32, k: f32, c0: f32, c1: f32, mu: f32) {
    match mask {
        Some(m) if hi.is_finite() => {
            for (((d, g), x), y) in d.iter_mut().zip(g).zip(x).zip(m) {
                *d = k * (keep_below(*g, *y, hi) - c0 - (*x - mu) * c1);
            }
        }
        None => {
            for ((d, g), x) in d.iter_mut().zip(g).zip(x) {
                *d = k * (*g - c0 - (*x - mu) * c1);
            }
        }
        Some(m) => {
            for (((d, g), x), y) in d.iter_mut().zip(g).zip(x).zip(m) {
                *d = k * (keep(*g, *y) - c0 - (*x - mu) * c1);
            }
        }
    }
}
}

multiversion! {
/// `y[i] += b`, then clamped by `c`.
pub fn add_bias(y: &mut [f32], b: f32, c: Clamp) {
    match c {
        Clamp::None => y.iter_mut().for_each(|v| *v += b),
        Clamp::Relu => y.iter_mut().for_each(|v| *v = (*v + b).max(0.0)),
        Clamp::Relu6 => y.iter_mut().for_each(|v| *v = clamp(*v + b, Clamp::Relu6)),
    }
}
}

multiversion! {
/// `y[i] = x[i] + b`, then clamped by `c`.
pub fn copy_bias(y: &mut [f32], x: &[f32], b: f32, c: Clamp) {
    match c {
        Clamp::None => y.iter_mut().zip(x).for_each(|(v, x)| *v = *x + b),
        Clamp::Relu => y.iter_mut().zip(x).for_each(|(v, x)| *v = (*x + b).max(0.0)),
        Clamp::Relu6 => y
            .iter_mut()
            .zip(x)
            .for_each(|(v, x)| *v = clamp(*x + b, Clamp::Relu6)),
    }
}
}

multiversion! {
/// `y[i] = max(a[i] + b[i], 0)`.
pub fn add_relu(y: &mut [f32], a: &[f32], b: &[f32]) {
    for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
        *y = (a + b).max(0.0);
    }
}
}

multiversion! {
/// `y[i] = max(x[i], 0)`.
pub fn relu_fwd(y: &mut [f32], x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = x.max(0.0);
    }
}
}

multiversion! {
/// `d[i] = g[i]` where `y[i] > 0`, else 0.
pub fn relu_bwd(d: &mut [f32], y: &[f32], g: &[f32]) {
    for ((d, y), g) in d.iter_mut().zip(y).zip(g) {
        *d = keep(*g, *y);
    }
}
}

multiversion! {
/// `d[i] = g[i]` where `0 < y[i] < 6`, else 0 (the gradient through a ReLU6 output `y`).
pub fn relu6_bwd(d: &mut [f32], y: &[f32], g: &[f32]) {
    for ((d, y), g) in d.iter_mut().zip(y).zip(g) {
        *d = keep_below(*g, *y, 6.0);
    }
}
}

multiversion! {
/// `d[i] = x[i]·s`.
pub fn scale_into(d: &mut [f32], x: &[f32], s: f32) {
    for (d, x) in d.iter_mut().zip(x) {
        *d = *x * s;
    }
}
}
