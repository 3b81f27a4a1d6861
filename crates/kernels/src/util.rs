//! Shared plumbing: reading contiguous f32 slices out of candle tensors and storages, building
//! result tensors, and the fixed (thread-count independent) batch partition used by every kernel.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Error, Layout, Result, Shape, Storage, Tensor};

/// Number of fixed work chunks the batch is split into. Per-chunk partial sums (weight
/// gradients) are reduced in chunk order, so results never depend on the thread count.
pub const BATCH_CHUNKS: usize = 8;

/// Splits `n` items into at most [`BATCH_CHUNKS`] contiguous ranges whose bounds depend on `n` only.
pub fn batch_ranges(n: usize) -> Vec<std::ops::Range<usize>> {
    let chunks = n.clamp(1, BATCH_CHUNKS);
    let per = n.div_ceil(chunks).max(1);
    (0..chunks)
        .map(|c| (c * per).min(n)..((c + 1) * per).min(n))
        .filter(|r| !r.is_empty())
        .collect()
}

/// A vector of `len` f32 whose contents are unspecified, for outputs that the caller fully
/// overwrites before reading: skips the zero-fill (a full extra pass over memory) of `vec![0; len]`.
pub fn uninit_vec(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: every bit pattern is a valid f32, and callers write each element before any read.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(len)
    };
    v
}

/// Makes `v` a zero-filled buffer of `len` floats, keeping its contents when the length is
/// already `len`: for scratch planes whose non-data positions (padding) are never written, so
/// they stay zero from one use to the next with the same layout.
pub fn zeroed_once(v: &mut Vec<f32>, len: usize) {
    if v.len() != len {
        v.clear();
        v.resize(len, 0.0);
    }
}

/// Sums per-chunk `(weight gradient, bias gradient)` partials in chunk order (a fixed order,
/// so the result does not depend on the thread count); zeros of the given sizes if none.
pub fn sum_partials(
    partials: Vec<(Vec<f32>, Vec<f32>)>,
    wlen: usize,
    blen: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut parts = partials.into_iter();
    let (mut dw, mut db) = parts
        .next()
        .unwrap_or_else(|| (vec![0f32; wlen], vec![0f32; blen]));
    for (pw, pb) in parts {
        dw.iter_mut().zip(&pw).for_each(|(a, b)| *a += *b);
        db.iter_mut().zip(&pb).for_each(|(a, b)| *a += *b);
    }
    (dw, db)
}

/// Builds a candle error carrying the op name and a message.
pub fn err(op: &str, msg: impl std::fmt::Display) -> Error {
    Error::Msg(format!("whittle-kernels {op}: {msg}"))
}

/// Checks that a tensor is an f32 tensor on the CPU.
pub fn check_cpu_f32(op: &str, what: &str, t: &Tensor) -> Result<()> {
    if !matches!(t.device(), Device::Cpu) {
        return Err(err(
            op,
            format!("{what} must be on the CPU, got {:?}", t.device().location()),
        ));
    }
    if t.dtype() != DType::F32 {
        return Err(err(op, format!("{what} must be f32, got {:?}", t.dtype())));
    }
    Ok(())
}

/// The contiguous f32 slice a cpu storage + layout describe.
pub fn storage_slice<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        other => {
            return Err(err(
                op,
                format!("only f32 is supported, got {:?}", other.dtype()),
            ));
        }
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => Err(err(op, "input must be contiguous")),
    }
}

/// Runs `f` on the contiguous f32 data of `t` (made contiguous first if needed).
pub fn with_f32<R>(op: &str, t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(cpu) => Ok(f(storage_slice(op, cpu, l)?)),
        _ => Err(err(op, "only CPU tensors are supported")),
    }
}

/// Copies the contiguous f32 data of `t` into a vector.
pub fn to_vec(op: &str, t: &Tensor) -> Result<Vec<f32>> {
    with_f32(op, t, |s| s.to_vec())
}

/// Wraps a vector as a CPU tensor of the given shape.
pub fn tensor(v: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// Raw pointer wrapper that lets disjoint output regions be written from several rayon tasks.
#[derive(Clone, Copy)]
pub struct SyncPtr(pub *mut f32);
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// The mutable slice `[off, off + len)`; callers guarantee tasks use disjoint ranges.
    ///
    /// # Safety
    /// The range must be in bounds of the original allocation and not aliased by any other task.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, off: usize, len: usize) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(off), len) }
    }
}

/// Row-major `dst (m×n) = [dst +] a (m×k, strides) · b (k×n, strides)` on one thread.
///
/// `a_rs/a_cs` and `b_rs/b_cs` are row/column strides, so transposed operands are free.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= m * n);
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: bounds checked above; gemm reads/writes exactly the described strided matrices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
