//! Parallel featurisation of many clips without holding all waveforms in memory: items are
//! produced and turned into MFCCs in fixed chunks, each item independently, so the output is
//! the same for any thread count; the first failing item (in item order) is reported.

use anyhow::Result;
use rayon::prelude::*;

use crate::mfcc::Mfcc;

/// Items per parallel chunk (bounds the waveforms in flight; progress is reported per chunk).
const CHUNK: usize = 512;

/// Produces item `i` with `make(i)` (a 1 s waveform) for i in 0..n, computes its MFCCs and
/// concatenates them. `progress(done)` is called on the calling thread after each chunk.
pub fn featurise_parallel<F>(
    n: usize,
    mfcc: &Mfcc,
    progress: &mut dyn FnMut(u64),
    make: F,
) -> Result<Vec<f32>>
where
    F: Fn(usize) -> Result<Vec<f32>> + Sync,
{
    let per: usize = mfcc.clip_shape().iter().product();
    let mut out = Vec::with_capacity(n * per);
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        let chunk: Vec<Result<Vec<f32>>> = (start..end)
            .into_par_iter()
            .map(|i| make(i).map(|w| mfcc.compute(&w)))
            .collect();
        for r in chunk {
            out.extend_from_slice(&r?);
        }
        progress(end as u64);
        start = end;
    }
    Ok(out)
}
