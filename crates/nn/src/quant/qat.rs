//! Quantization-aware fine-tuning (spec §6, `001`): a straight-through estimator (STE) in a
//! training forward that fake-quantizes weights per output channel (symmetric, int8 or k-bit
//! weight-only, first/last layer at 8 bits like post-training) and, for int8, every value
//! passed between layers per tensor with the affine ranges of post-training calibration.
//!
//! Activation ranges are **frozen after calibration**: calibrated once on the float network
//! (batch norm folded), then held fixed during fine-tuning and used unchanged to evaluate the
//! result, so the network is trained against exactly the quantizers it is evaluated with, and
//! no running statistic depends on batch order beyond the (seeded) training loop. Weight
//! scales follow the weights: each step uses the current per-channel max |w|.
//!
//! STE: forward value q(x); gradient 1 where x lies inside the quantizer's representable
//! range [dequant(qmin), dequant(qmax)] and 0 outside (clipped), written as
//! `q + (x·m − (x·m).detach())` so the forward value is exactly q.

use super::eval::{ActQuant, QuantModel, QuantOptions, weight_bits_per_layer};
use super::format::Format;
use super::int::{Affine, fake_quantize_per_channel};
use crate::interp::{self, Hook};
use crate::model::Model;
use crate::train::Trainable;
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor, Var};
use std::collections::HashMap;

/// Straight-through fake quantization: forward `q(x)` element-wise, gradient `inside(x)`
/// (1 inside the range, 0 outside).
pub fn ste(x: &Tensor, q: &dyn Fn(f32) -> f32, inside: &dyn Fn(f32) -> bool) -> Result<Tensor> {
    let xd = x.detach();
    let v: Vec<f32> = xd.flatten_all()?.to_vec1()?;
    let qv: Vec<f32> = v.iter().map(|&a| q(a)).collect();
    let mv: Vec<f32> = v
        .iter()
        .map(|&a| if inside(a) { 1.0 } else { 0.0 })
        .collect();
    let qt = Tensor::from_vec(qv, x.dims(), &Device::Cpu)?;
    let mt = Tensor::from_vec(mv, x.dims(), &Device::Cpu)?;
    let pass = x.mul(&mt)?;
    Ok((qt + (&pass - pass.detach())?)?)
}

/// STE through one per-tensor affine quantizer, clipped to its representable range.
pub fn ste_affine(x: &Tensor, a: &Affine) -> Result<Tensor> {
    let (lo, hi) = (a.dequantize(a.qmin), a.dequantize(a.qmax));
    ste(x, &|v| a.fake(v), &|v| (lo..=hi).contains(&v))
}

/// STE through symmetric per-output-channel quantization of a weight (C_out, …) with `bits`
/// bits. Each channel's range is its own max |w|, so every weight is inside: gradient 1.
pub fn ste_weight(w: &Tensor, bits: u32) -> Result<Tensor> {
    let wd = w.detach();
    let mut v: Vec<f32> = wd.flatten_all()?.to_vec1()?;
    fake_quantize_per_channel(&mut v, w.dims()[0], bits);
    let qt = Tensor::from_vec(v, w.dims(), &Device::Cpu)?;
    Ok((qt + (w - wd)?)?)
}

/// A copy of `model` with batch norm folded and its own variables (training it leaves
/// `model` untouched).
fn folded_copy(model: &Model) -> Result<Model> {
    if !model.bn_folded() {
        return model.fold_bn();
    }
    let m = Model::new(model.config().clone(), 0)?.fold_bn()?;
    m.load_state(&model.state()?)?;
    Ok(m)
}

/// A network under quantization-aware fine-tuning for one int8 or k-bit weight-only format.
pub struct QatModel {
    model: Model,
    format: Format,
    /// Bits of each conv/linear weight, by layer name.
    bits: HashMap<String, u32>,
    /// Frozen transform of each value (0 = input, i + 1 = output of node i).
    acts: Vec<ActQuant>,
    opts: QuantOptions,
}

impl QatModel {
    /// Folds batch norm into a copy of `model` and, for int8, calibrates the frozen activation
    /// ranges on `calib` exactly as post-training quantization does.
    pub fn new(
        model: &Model,
        format: Format,
        calib: Option<&Tensor>,
        opts: &QuantOptions,
    ) -> Result<Self> {
        if !matches!(format, Format::Int8 | Format::WeightOnly(_)) {
            bail!(
                "quantization-aware training supports int8 and k-bit weight-only formats, not {}",
                format.name()
            );
        }
        let model = folded_copy(model).context("folding batch norm for QAT")?;
        let acts = QuantModel::prepare(&model, format, calib, opts)?
            .activation_quantizers()
            .to_vec();
        let bits = weight_bits_per_layer(model.graph(), format, opts.keep_first_last_8bit)
            .into_iter()
            .collect();
        Ok(Self {
            model,
            format,
            bits,
            acts,
            opts: *opts,
        })
    }

    /// The (folded, fine-tuned) float network.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The frozen activation quantizers.
    pub fn activation_quantizers(&self) -> &[ActQuant] {
        &self.acts
    }

    /// The current network quantized for evaluation: weights quantized per channel from the
    /// current values, activations with the frozen ranges.
    pub fn quantized(&self) -> Result<QuantModel> {
        QuantModel::prepare_with_activations(
            &self.model,
            self.format,
            self.acts.clone(),
            &self.opts,
        )
    }

    /// Eval-mode forward with straight-through fake quantization of weights and activations.
    pub fn forward_ste(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_ste_t(x, false)
    }

    /// [`QatModel::forward_ste`] in training (`train`: dropout active, seeded per batch as in
    /// float training; the folded network has no batch norm) or eval mode.
    pub fn forward_ste_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let graph = self.model.graph();
        let mut hook = QatHook { qat: self };
        interp::forward(graph, &self.model, x, train, &mut hook)
    }
}

/// Straight-through quantizers as interpreter hooks: conv/linear weights per output channel,
/// every value with its frozen range (such values are not fused with their consumer).
struct QatHook<'a> {
    qat: &'a QatModel,
}

impl QatHook<'_> {
    fn act(&self, v: usize, t: Tensor) -> Result<Tensor> {
        match &self.qat.acts[v] {
            ActQuant::Affine(a) => ste_affine(&t, a),
            ActQuant::Identity => Ok(t),
            ActQuant::Float(_) => bail!("QAT has no float-format activations"),
        }
    }
}

impl QatHook<'_> {
    /// int8: the bias on the int32 grid of the exports (scale s_in·s_w[c], from the frozen
    /// input range and the current weights' per-channel max |w|), straight through.
    fn bias(&self, node: usize, b: &Tensor) -> Result<Tensor> {
        let g = self.qat.model.graph();
        let n = &g.nodes[node];
        let ActQuant::Affine(input) = self.qat.acts[n.inputs[0]] else {
            return Ok(b.clone());
        };
        let w = self
            .qat
            .model
            .get(&format!("{}.weight", n.name))?
            .as_tensor();
        let c = w.dims()[0];
        let wv: Vec<f32> = w.flatten_all()?.to_vec1()?;
        let per = wv.len() / c.max(1);
        let bd = b.detach();
        let bv: Vec<f32> = bd.to_vec1()?;
        let q: Vec<f32> = bv
            .iter()
            .enumerate()
            .map(|(ch, &x)| {
                let m = wv[ch * per..(ch + 1) * per]
                    .iter()
                    .fold(0.0f32, |m, v| m.max(v.abs()));
                let s = Affine::symmetric(m, 8).scale * input.scale;
                (x / s)
                    .round_ties_even()
                    .clamp(i32::MIN as f32, i32::MAX as f32)
                    * s
            })
            .collect();
        let qt = Tensor::from_vec(q, b.dims(), &Device::Cpu)?;
        Ok((qt + (b - bd)?)?)
    }
}

impl Hook for QatHook<'_> {
    fn input(&mut self, x: Tensor) -> Result<Tensor> {
        self.act(0, x)
    }
    fn weight(&mut self, node: usize, suffix: &str, w: &Tensor) -> Result<Tensor> {
        let name = &self.qat.model.graph().nodes[node].name;
        match (suffix, self.qat.bits.get(name)) {
            ("weight", Some(&b)) => ste_weight(w, b),
            ("bias", Some(_)) if self.qat.format == Format::Int8 => self.bias(node, w),
            _ => Ok(w.clone()),
        }
    }
    fn output(&mut self, node: usize, y: Tensor) -> Result<Tensor> {
        self.act(node + 1, y)
    }
    fn keep(&self, node: usize) -> bool {
        !matches!(self.qat.acts[node + 1], ActQuant::Identity)
    }
}

impl Trainable for QatModel {
    /// The folded network has no batch norm: train and eval mode differ only by dropout.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_ste_t(x, train)
    }
    fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.model.params().to_vec()
    }
    fn state_vars(&self) -> Vec<(String, Var)> {
        self.model
            .params()
            .iter()
            .chain(self.model.buffers())
            .cloned()
            .collect()
    }
}
