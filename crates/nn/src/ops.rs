//! Layer primitives every model is written against: conv1d, conv2d (grouped), training-mode
//! batch norm (optionally fused with ReLU), eval-mode batch norm as a per-channel affine, ReLU, pointwise activations, pooling (global, max,
//! average). The single place
//! models call: a thin layer over the `whittle-kernels` candle custom ops (fast, deterministic,
//! hand-written backward), adding grouped conv1d on top of the kernels' conv2d.

use candle_core::{Result, Tensor};

pub use whittle_kernels::{
    Act, Clamp, Conv1dCfg, Conv2dCfg, ConvPart, Pool2dCfg, PoolKind, activation, add_relu,
    batch_norm_act_train, batch_norm_relu_train, batch_norm_train, channel_affine, channel_mul,
    conv2d, conv2d_act, depthwise_pointwise, global_avg_pool, pool2d, relu,
};

/// x (N, Cin, L), w (Cout, Cin/groups, K) → (N, Cout, Lout); optional bias (Cout). The number
/// of groups is Cin / w.dim(1); grouped convolutions run as a conv2d of height 1.
pub fn conv1d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &Conv1dCfg) -> Result<Tensor> {
    conv1d_act(x, w, bias, cfg, false)
}

/// [`conv1d`] followed by a ReLU (in the same pass) when `relu` (or the given [`Clamp`]).
pub fn conv1d_act(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &Conv1dCfg,
    relu: impl Into<Clamp>,
) -> Result<Tensor> {
    let relu = relu.into();
    let (n, cin, l) = x.dims3()?;
    let (cout, cin_g, k) = w.dims3()?;
    if cin_g == 0 || cin % cin_g != 0 {
        candle_core::bail!("conv1d: input has {cin} channels, weight expects multiples of {cin_g}");
    }
    let groups = cin / cin_g;
    if groups == 1 {
        return whittle_kernels::conv1d_act(x, w, bias, cfg, relu);
    }
    let y = whittle_kernels::conv2d_act(
        &x.reshape((n, cin, 1, l))?,
        &w.reshape((cout, cin_g, 1, k))?,
        bias,
        &Conv2dCfg {
            stride: (1, cfg.stride),
            padding: (0, cfg.padding),
            dilation: (1, cfg.dilation),
            groups,
        },
        relu,
    )?;
    let lout = y.dim(3)?;
    y.reshape((n, cout, lout))
}

/// Reshape a per-channel vector (C) to (1, C, 1, ...) for broadcasting over a rank-`rank` tensor.
pub(crate) fn bcast(
    v: &candle_core::Tensor,
    rank: usize,
) -> candle_core::Result<candle_core::Tensor> {
    let mut shape = vec![1usize; rank];
    shape[1] = v.elem_count();
    v.reshape(shape)
}
