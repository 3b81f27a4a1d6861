//! Layer primitives every model is written against: conv1d, conv2d (grouped), training-mode
//! batch norm and ReLU. This module has exactly the API of the `whittle-kernels` crate (fast
//! candle custom ops) so it can later re-export that crate; for now it is implemented with
//! candle's built-in ops, plus a work-around for candle 0.11.1's conv2d backward bug
//! (input-gradient padding derived from the height and reused for the width).

use candle_core::{D, Result, Tensor};

/// 1-d convolution settings (symmetric zero padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dCfg {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
}

/// 2-d convolution settings, per (height, width), with channel groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dCfg {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

/// x (N, Cin, L), w (Cout, Cin, K) → (N, Cout, Lout); optional bias (Cout).
///
/// Ungrouped stride-1 convolutions (every TCN layer) are computed as im2col (K shifted
/// views stacked) + matmul from differentiable candle ops: candle 0.11.1's own conv1d kernel
/// gradient is wrong for batches > 1 and its input gradient underflows for large padding.
pub fn conv1d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &Conv1dCfg) -> Result<Tensor> {
    let (n, cin, l) = x.dims3()?;
    let (cout, cin_g, k) = w.dims3()?;
    if cin_g == 0 || cin % cin_g != 0 {
        candle_core::bail!("conv1d: input has {cin} channels, weight expects multiples of {cin_g}");
    }
    let groups = cin / cin_g;
    let (p, d, s) = (cfg.padding, cfg.dilation, cfg.stride);
    let span = d * (k.max(1) - 1) + 1;
    if l + 2 * p < span || s == 0 {
        candle_core::bail!(
            "conv1d: kernel span {span} longer than padded input {}",
            l + 2 * p
        );
    }
    if groups != 1 || s != 1 {
        let y = x.conv1d(w, p, s, d, groups)?;
        return add_bias(y, bias);
    }
    let lout = l + 2 * p - span + 1;
    // Columns laid out (Cin·K, N·Lout) so the whole batch is one GEMM with the (Cout, Cin·K)
    // weight matrix.
    let xt = x.transpose(0, 1)?; // (Cin, N, L)
    let xp = if p > 0 {
        xt.pad_with_zeros(2, p, p)?
    } else {
        xt
    };
    let taps = (0..k)
        .map(|j| xp.narrow(2, j * d, lout))
        .collect::<Result<Vec<_>>>()?;
    let cols = Tensor::stack(&taps, 1)?.reshape((cin * k, n * lout))?;
    let y = w
        .reshape((cout, cin * k))?
        .matmul(&cols)?
        .reshape((cout, n, lout))?
        .transpose(0, 1)?
        .contiguous()?;
    add_bias(y, bias)
}

/// x (N, Cin, H, W), w (Cout, Cin/groups, KH, KW) → (N, Cout, Hout, Wout); optional bias (Cout).
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &Conv2dCfg) -> Result<Tensor> {
    let (_, cin, h, wd) = x.dims4()?;
    let (_, cin_g, kh, kw) = w.dims4()?;
    if cfg.groups == 0 || cin_g * cfg.groups != cin {
        candle_core::bail!(
            "conv2d: input has {cin} channels but weight has {cin_g} per group × {} groups",
            cfg.groups
        );
    }
    if cfg.stride.0 != cfg.stride.1 || cfg.dilation.0 != cfg.dilation.1 {
        candle_core::bail!(
            "conv2d: candle needs equal stride and dilation in height and width, got {:?} / {:?}",
            cfg.stride,
            cfg.dilation
        );
    }
    let (s, d) = (cfg.stride.0, cfg.dilation.0);
    let (ph, pw) = cfg.padding;
    let y = if s == 1 && ph == pw {
        x.conv2d(w, ph, 1, d, cfg.groups)?
    } else {
        // Explicit padding, then drop the trailing rows/columns no window reaches: the
        // convolution then has padding 0 and no output padding in either dimension, which
        // avoids candle's backward shape bug for stride 2 on inputs of mixed parity.
        let span_h = d * (kh - 1) + 1;
        let span_w = d * (kw - 1) + 1;
        let (hp, wp) = (h + 2 * ph, wd + 2 * pw);
        if hp < span_h || wp < span_w {
            candle_core::bail!(
                "conv2d: padded input {hp}×{wp} is smaller than the kernel span {span_h}×{span_w}"
            );
        }
        let used_h = hp - (hp - span_h) % s;
        let used_w = wp - (wp - span_w) % s;
        let mut xp = x.clone();
        if ph > 0 {
            xp = xp.pad_with_zeros(2, ph, ph)?;
        }
        if pw > 0 {
            xp = xp.pad_with_zeros(3, pw, pw)?;
        }
        if used_h < hp {
            xp = xp.narrow(2, 0, used_h)?;
        }
        if used_w < wp {
            xp = xp.narrow(3, 0, used_w)?;
        }
        xp.conv2d(w, 0, s, d, cfg.groups)?
    };
    add_bias(y, bias)
}

fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        None => Ok(y),
        Some(b) => {
            let mut shape = vec![1usize; y.rank()];
            shape[1] = b.elem_count();
            y.broadcast_add(&b.reshape(shape)?)
        }
    }
}

/// Batch norm in training mode over every dimension except 1 (channels):
/// returns (y, batch mean, biased batch variance), mean/var of shape (C).
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let rank = x.rank();
    if rank < 2 {
        candle_core::bail!("batch_norm_train: input of rank {rank}, need at least 2");
    }
    let c = x.dim(1)?;
    // Move channels last and flatten to (M, C) so the statistics are column reductions.
    let xt = if rank == 2 {
        x.clone()
    } else {
        let mut perm: Vec<usize> = (0..rank).filter(|&d| d != 1).collect();
        perm.push(1);
        x.permute(perm)?.reshape(((), c))?
    };
    let mean = xt.mean(0)?;
    let centered = x.broadcast_sub(&bcast(&mean, rank)?)?;
    let var = centered
        .sqr()?
        .transpose(0, 1)?
        .flatten_from(1)?
        .mean(D::Minus1)?;
    let inv = (var.clone() + eps)?.sqrt()?.recip()?;
    let scale = (inv * gamma)?;
    let y = centered
        .broadcast_mul(&bcast(&scale, rank)?)?
        .broadcast_add(&bcast(beta, rank)?)?;
    Ok((y, mean, var))
}

/// Reshape a per-channel vector (C) to (1, C, 1, ...) for broadcasting over a rank-`rank` tensor.
pub(crate) fn bcast(v: &Tensor, rank: usize) -> Result<Tensor> {
    let mut shape = vec![1usize; rank];
    shape[1] = v.elem_count();
    v.reshape(shape)
}

/// Element-wise max(x, 0).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.relu()
}
