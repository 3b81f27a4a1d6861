//! Public conv1d / conv2d entry points and the candle custom ops wrapping the GEMM and
//! depthwise kernels (forward in `cpu_fwd`, all gradients in one pass in `bwd`).

use crate::act::Clamp;
use crate::geom::Geom;
use crate::util::{check_cpu_f32, err, storage_slice, tensor, with_f32};
use crate::{conv_gemm, depthwise, depthwise_direct};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// Hyper-parameters of a 1-D convolution (symmetric padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dCfg {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
}

impl Default for Conv1dCfg {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            dilation: 1,
        }
    }
}

/// Hyper-parameters of a 2-D convolution: per-axis (height, width) stride, symmetric padding
/// and dilation, and the number of groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dCfg {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Default for Conv2dCfg {
    fn default() -> Self {
        Self {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

const OP: &str = "conv";

/// 1-D convolution: `x (N, Cin, L)`, `w (Cout, Cin, K)`, `bias (Cout)` → `(N, Cout, Lout)`.
pub fn conv1d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &Conv1dCfg) -> Result<Tensor> {
    conv1d_act(x, w, bias, cfg, false)
}

/// [`conv1d`] followed by a ReLU when `relu` (or the given [`Clamp`]), applied in the same
/// pass as the bias.
pub fn conv1d_act(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &Conv1dCfg,
    relu: impl Into<Clamp>,
) -> Result<Tensor> {
    let relu = relu.into();
    let (n, cin, l) = x
        .dims3()
        .map_err(|e| err("conv1d", format!("input: {e}")))?;
    let (cout, cig, k) = w
        .dims3()
        .map_err(|e| err("conv1d", format!("weight: {e}")))?;
    let gm = Geom::new(
        "conv1d",
        (n, cin, 1, l),
        (cout, cig, 1, k),
        (1, cfg.stride),
        (0, cfg.padding),
        (1, cfg.dilation),
        1,
    )?;
    apply(gm, x, w, bias, Shape::from((n, cout, gm.ow)), relu)
}

/// 2-D convolution: `x (N, Cin, H, W)`, `w (Cout, Cin/groups, KH, KW)`, `bias (Cout)` →
/// `(N, Cout, OH, OW)`. Depthwise (`groups = Cin = Cout`) uses direct loops; every other case
/// is im2col + GEMM.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &Conv2dCfg) -> Result<Tensor> {
    conv2d_act(x, w, bias, cfg, false)
}

/// [`conv2d`] followed by a ReLU when `relu` (or the given [`Clamp`]), applied in the same
/// pass as the bias.
pub fn conv2d_act(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &Conv2dCfg,
    relu: impl Into<Clamp>,
) -> Result<Tensor> {
    let relu = relu.into();
    let xd = x
        .dims4()
        .map_err(|e| err("conv2d", format!("input: {e}")))?;
    let wd = w
        .dims4()
        .map_err(|e| err("conv2d", format!("weight: {e}")))?;
    let gm = Geom::new(
        "conv2d",
        xd,
        wd,
        cfg.stride,
        cfg.padding,
        cfg.dilation,
        cfg.groups,
    )?;
    apply(
        gm,
        x,
        w,
        bias,
        Shape::from((gm.n, gm.cout, gm.oh, gm.ow)),
        relu,
    )
}

fn apply(
    gm: Geom,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    out: Shape,
    relu: Clamp,
) -> Result<Tensor> {
    check_cpu_f32(OP, "input", x)?;
    check_cpu_f32(OP, "weight", w)?;
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let op = ConvOp { gm, out, relu };
    match bias {
        None => x.apply_op2(&w, op),
        Some(b) => {
            check_cpu_f32(OP, "bias", b)?;
            if b.dims() != [gm.cout] {
                return Err(err(
                    OP,
                    format!("bias shape {:?}, expected [{}]", b.dims(), gm.cout),
                ));
            }
            x.apply_op3(&w, &b.contiguous()?, op)
        }
    }
}

/// The convolution as a candle op; `out` is the output shape (rank 3 for conv1d, 4 for conv2d);
/// `relu` clamps the output (and masks the incoming gradient by it in backward).
#[derive(Clone, Debug)]
struct ConvOp {
    gm: Geom,
    out: Shape,
    relu: Clamp,
}

impl ConvOp {
    fn fwd(&self, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Result<(CpuStorage, Shape)> {
        let gm = &self.gm;
        if x.len() != gm.n * gm.cin * gm.hw() {
            return Err(err(OP, "input size does not match the op's geometry"));
        }
        let y = if depthwise_direct::usable(gm) {
            depthwise_direct::forward(gm, x, w, b, self.relu)
        } else if gm.is_depthwise() {
            let mut y = depthwise::forward(gm, x, w, b);
            match self.relu {
                Clamp::None => {}
                Clamp::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
                Clamp::Relu6 => y.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
            }
            y
        } else {
            conv_gemm::forward(gm, x, w, b, self.relu)
        };
        Ok((CpuStorage::F32(y), self.out.clone()))
    }

    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Tensor, Tensor)> {
        let gm = &self.gm;
        let masked;
        let grad = if self.relu.on() {
            masked = crate::relu::clamp_grad(res, grad, self.relu)?;
            &masked
        } else {
            grad
        };
        let need_dx = x.track_op();
        let (dx, dw, db) = with_f32(OP, x, |xs| {
            with_f32(OP, w, |ws| {
                with_f32(OP, grad, |gs| {
                    if depthwise_direct::backward_usable(gm, need_dx) {
                        depthwise_direct::backward(gm, xs, ws, gs, need_dx)
                    } else if gm.is_depthwise() {
                        depthwise::backward(gm, xs, ws, gs, need_dx)
                    } else {
                        conv_gemm::backward(gm, xs, ws, gs, need_dx)
                    }
                })
            })
        })???;
        let dx = match dx {
            Some(v) => Some(tensor(v, x.shape().clone())?),
            None => None,
        };
        Ok((dx, tensor(dw, w.shape().clone())?, tensor(db, gm.cout)?))
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "whittle-conv"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd(storage_slice(OP, s1, l1)?, storage_slice(OP, s2, l2)?, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, res, grad)?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "whittle-conv-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd(
            storage_slice(OP, s1, l1)?,
            storage_slice(OP, s2, l2)?,
            Some(storage_slice(OP, s3, l3)?),
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, w, res, grad)?;
        Ok((dx, Some(dw), Some(db)))
    }
}
