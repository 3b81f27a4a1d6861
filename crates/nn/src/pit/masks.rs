//! PIT mask arithmetic (spec §3): the binarizer with a straight-through gradient, keep-alive
//! vectors, the C_β / C_γ matrices with their cost normalisation factors, and the θ vectors
//! of channel (α), receptive-field (β) and dilation (γ) masks.
//!
//! Time-mask index convention: tap `i` of a kernel of `k` taps, `i = 0` the oldest input
//! (PyTorch cross-correlation order: the last tap multiplies the newest sample). `r = k−1−i`
//! is the distance from the newest tap.

use candle_core::{DType, Device, Result, Tensor};

/// H(x) = 1 if x > 0.5 else 0 in the forward pass; the backward pass is the identity
/// (straight-through estimator). Exact: the value is `H(x) + (x − x)` and `x − x` is 0.
pub fn binarize(x: &Tensor) -> Result<Tensor> {
    let h = x.gt(0.5)?.to_dtype(DType::F32)?;
    h + (x - x.detach())?
}

/// Keep-alive vector of length `n` with a one at `index`.
pub fn keep_alive(n: usize, index: usize) -> Result<Tensor> {
    let v: Vec<f32> = (0..n).map(|i| if i == index { 1.0 } else { 0.0 }).collect();
    Tensor::from_vec(v, n, &Device::Cpu)
}

/// θ = |p|·(1 − ka) + ka: the continuous mask of parameters `p` with element `ka_index`
/// forced to 1.
pub fn theta_keep_alive(p: &Tensor, ka_index: usize) -> Result<Tensor> {
    let n = p.elem_count();
    let ka = keep_alive(n, ka_index)?;
    p.abs()?.mul(&(1.0 - &ka)?)? + ka
}

/// Number of dilation levels of a kernel of `k` taps: ⌈log2 k⌉ (at least 1).
pub fn gamma_len(k: usize) -> usize {
    let mut g = 0;
    while (1usize << g) < k {
        g += 1;
    }
    g.max(1)
}

/// C_β (k × k): θ_β,i = Σ_{j ≤ i} β̃_j, i.e. row i has ones in columns 0..=i; the newest tap
/// (i = k−1) sums every element, so dropping a β element removes the oldest taps first.
pub fn c_beta(k: usize) -> Vec<f32> {
    let mut m = vec![0f32; k * k];
    for i in 0..k {
        for j in 0..=i {
            m[i * k + j] = 1.0;
        }
    }
    m
}

/// Normalisation of θ_β in the cost: 1 / (number of β elements summed at tap i) = 1/(i+1).
pub fn norm_beta(k: usize) -> Vec<f32> {
    (0..k).map(|i| 1.0 / (i + 1) as f32).collect()
}

/// C_γ (k × g): entry (i, j) is 1 when r = k−1−i is a multiple of 2^j.
pub fn c_gamma(k: usize) -> Vec<f32> {
    let g = gamma_len(k);
    let mut m = vec![0f32; k * g];
    for i in 0..k {
        let r = k - 1 - i;
        for j in 0..g {
            if r.is_multiple_of(1usize << j) {
                m[i * g + j] = 1.0;
            }
        }
    }
    m
}

/// Normalisation of θ_γ in the cost: 1 / (number of γ levels summed at tap i).
pub fn norm_gamma(k: usize) -> Vec<f32> {
    let g = gamma_len(k);
    let c = c_gamma(k);
    (0..k)
        .map(|i| 1.0 / c[i * g..(i + 1) * g].iter().sum::<f32>())
        .collect()
}

/// θ_β = C_β·|β̃| with the newest element (last) kept alive; `beta` has length k.
pub fn theta_beta(beta: &Tensor) -> Result<Tensor> {
    let k = beta.elem_count();
    let t = theta_keep_alive(beta, k - 1)?;
    let c = Tensor::from_vec(c_beta(k), (k, k), &Device::Cpu)?;
    c.matmul(&t.reshape((k, 1))?)?.reshape(k)
}

/// θ_γ = C_γ·|γ̃| with the last (coarsest) level kept alive; `gamma` has length ⌈log2 k⌉.
pub fn theta_gamma(gamma: &Tensor, k: usize) -> Result<Tensor> {
    let g = gamma.elem_count();
    if g != gamma_len(k) {
        candle_core::bail!(
            "PIT: γ of a {k}-tap kernel needs {} elements, got {g}",
            gamma_len(k)
        );
    }
    let t = theta_keep_alive(gamma, g - 1)?;
    let c = Tensor::from_vec(c_gamma(k), (k, g), &Device::Cpu)?;
    c.matmul(&t.reshape((g, 1))?)?.reshape(k)
}

/// Binary time mask H(θ_β) ⊙ H(θ_γ) over the k taps (straight-through gradient).
pub fn time_mask(beta: &Tensor, gamma: &Tensor) -> Result<Tensor> {
    let k = beta.elem_count();
    binarize(&theta_beta(beta)?)?.mul(&binarize(&theta_gamma(gamma, k)?)?)
}

/// Effective kernel size on the continuous masks: Σ_i θ_β,i·norm_β,i·θ_γ,i·norm_γ,i.
pub fn k_eff(beta: &Tensor, gamma: &Tensor) -> Result<Tensor> {
    let k = beta.elem_count();
    let nb = Tensor::from_vec(norm_beta(k), k, &Device::Cpu)?;
    let ng = Tensor::from_vec(norm_gamma(k), k, &Device::Cpu)?;
    theta_beta(beta)?
        .mul(&nb)?
        .mul(&theta_gamma(gamma, k)?.mul(&ng)?)?
        .sum_all()
}

/// Kept taps of a binary time mask as (new kernel size, dilation factor 2^m, tap indices in
/// ascending order). The kept set is always {k−1 − j·2^m : j < k'}; anything else is an error.
pub fn kept_taps(mask: &[f32]) -> anyhow::Result<(usize, usize, Vec<usize>)> {
    let k = mask.len();
    let kept: Vec<usize> = (0..k).filter(|&i| mask[i] > 0.5).collect();
    anyhow::ensure!(
        kept.last() == Some(&(k - 1)),
        "PIT: time mask {mask:?} drops the newest tap"
    );
    let step = if kept.len() >= 2 {
        kept[kept.len() - 1] - kept[kept.len() - 2]
    } else {
        1
    };
    for w in kept.windows(2) {
        anyhow::ensure!(
            w[1] - w[0] == step,
            "PIT: time mask {mask:?} is not a regular dilation pattern"
        );
    }
    Ok((kept.len(), step, kept))
}
