//! Small vectorisable reductions: fixed-lane partial sums (the compiler cannot reorder a plain
//! float sum, so 16 independent lanes let it use SIMD). The order is fixed, hence deterministic.

const LANES: usize = 16;

/// `Σ a[i]·b[i]` with 16 fixed lanes.
#[inline]
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

/// `Σ a[i]` with 16 fixed lanes.
#[inline]
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

/// `y[i] += alpha·x[i]`.
#[inline]
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (a, b) in y.iter_mut().zip(x) {
        *a += alpha * *b;
    }
}

/// `(Σ (x[i]-mu), Σ (x[i]-mu)²)` with 16 fixed lanes.
#[inline]
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

/// `(Σ g[i], Σ g[i]·(x[i]-mu))`, with `g[i]` zeroed where `mask[i] <= 0` if a mask is given.
#[inline]
pub fn grad_sums(g: &[f32], x: &[f32], mu: f32, mask: Option<&[f32]>) -> (f32, f32) {
    let n = g.len().min(x.len());
    let mut s = [0f32; LANES];
    let mut q = [0f32; LANES];
    let full = n / LANES * LANES;
    let m = |i: usize| mask.is_none_or(|m| m[i] > 0.0);
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
        Some(mk) => {
            let it = g[..full]
                .chunks_exact(LANES)
                .zip(x[..full].chunks_exact(LANES));
            for ((gc, xc), mc) in it.zip(mk[..full].chunks_exact(LANES)) {
                for l in 0..LANES {
                    let gv = if mc[l] > 0.0 { gc[l] } else { 0.0 };
                    s[l] += gv;
                    q[l] += gv * (xc[l] - mu);
                }
            }
        }
    }
    let (mut ts, mut tq) = (0f32, 0f32);
    for i in full..n {
        let gv = if m(i) { g[i] } else { 0.0 };
        ts += gv;
        tq += gv * (x[i] - mu);
    }
    (s.iter().sum::<f32>() + ts, q.iter().sum::<f32>() + tq)
}
