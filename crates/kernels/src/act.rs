//! Pointwise activations as candle ops with a one-pass backward from the input: ReLU6
//! (`min(max(x, 0), 6)`), sigmoid, hard sigmoid (`relu6(x + 3) / 6`) and hard swish
//! (`x · relu6(x + 3) / 6`). At the kinks the derivative is taken from the open side that
//! PyTorch uses (ReLU6: 0 at x = 0 and x = 6; hard sigmoid: 0 at ±3; hard swish: as its formula
//! on (−3, 3), 0 below and 1 above).

use crate::util::{check_cpu_f32, storage_slice, tensor, uninit_vec, with_f32};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const PAR_CHUNK: usize = 1 << 16;

/// Which pointwise function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Relu6,
    Sigmoid,
    HardSigmoid,
    HardSwish,
}

impl Act {
    /// f(x).
    pub fn f(self, x: f32) -> f32 {
        match self {
            Act::Relu6 => x.clamp(0.0, 6.0),
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::HardSigmoid => (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Act::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        }
    }

    /// f'(x).
    pub fn df(self, x: f32) -> f32 {
        match self {
            Act::Relu6 => {
                if x > 0.0 && x < 6.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Act::Sigmoid => {
                let s = 1.0 / (1.0 + (-x).exp());
                s * (1.0 - s)
            }
            Act::HardSigmoid => {
                if x > -3.0 && x < 3.0 {
                    1.0 / 6.0
                } else {
                    0.0
                }
            }
            Act::HardSwish => {
                if x <= -3.0 {
                    0.0
                } else if x >= 3.0 {
                    1.0
                } else {
                    (2.0 * x + 3.0) / 6.0
                }
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Act::Relu6 => "relu6",
            Act::Sigmoid => "sigmoid",
            Act::HardSigmoid => "hard_sigmoid",
            Act::HardSwish => "hard_swish",
        }
    }
}

/// The clamp a convolution, batch norm or channel affine applies in its output pass (and masks
/// its gradient by): none, ReLU (`max(·, 0)`) or ReLU6 (`min(max(·, 0), 6)`). `true` / `false`
/// convert to `Relu` / `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clamp {
    #[default]
    None,
    Relu,
    Relu6,
}

impl From<bool> for Clamp {
    fn from(relu: bool) -> Self {
        if relu { Clamp::Relu } else { Clamp::None }
    }
}

impl Clamp {
    /// True unless `None`.
    pub fn on(self) -> bool {
        self != Clamp::None
    }

    /// The upper bound of the gradient mask `0 < y < hi` (infinite for ReLU: `y > 0` only).
    pub(crate) fn hi(self) -> f32 {
        match self {
            Clamp::Relu6 => 6.0,
            _ => f32::INFINITY,
        }
    }
}

/// `act` elementwise, any shape.
pub fn activation(x: &Tensor, act: Act) -> Result<Tensor> {
    check_cpu_f32(act.name(), "input", x)?;
    x.contiguous()?.apply_op1(ActOp(act))
}

struct ActOp(Act);

impl CustomOp1 for ActOp {
    fn name(&self) -> &'static str {
        "whittle-activation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = storage_slice(self.0.name(), s, l)?;
        let mut y = uninit_vec(x.len());
        let a = self.0;
        y.par_chunks_mut(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK))
            .for_each(|(y, x)| {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = a.f(x);
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let a = self.0;
        let xs = x.contiguous()?;
        let d = with_f32(a.name(), &xs, |x| {
            with_f32(a.name(), grad, |g| {
                let mut d = uninit_vec(x.len());
                d.par_chunks_mut(PAR_CHUNK)
                    .zip(x.par_chunks(PAR_CHUNK).zip(g.par_chunks(PAR_CHUNK)))
                    .for_each(|(d, (x, g))| {
                        for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
                            *d = g * a.df(x);
                        }
                    });
                d
            })
        })??;
        Ok(Some(tensor(d, x.shape().clone())?))
    }
}
