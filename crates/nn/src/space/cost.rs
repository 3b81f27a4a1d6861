//! Analytic costs of a candidate from its graph alone (no weights are made): trainable
//! parameters, multiply-accumulates per sample ([`Graph::macs`]), stored weight bytes in a
//! format of b bits per weight (conv/linear weights at b bits, biases and batch-norm
//! parameters at 32, as [`crate::quant::weight_bytes`] counts for float formats), and the
//! peak activation memory of one inference at batch 1 for an executor that frees a value
//! after its last reader: the largest sum, over the nodes in order, of the values still to be
//! read plus the node's output (the input counted; no op runs in place).

use super::predict::LogLogFit;
use crate::graph::{Graph, Op};
use serde::Serialize;

/// The analytic costs of one candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Costs {
    pub params: u64,
    pub macs: u64,
    /// Elements of conv and linear weights (the part stored at the format's bits).
    pub weight_elems: u64,
    /// Peak live activation elements at batch 1.
    pub peak_activations: u64,
}

impl Costs {
    /// Costs of `graph`.
    pub fn of(graph: &Graph) -> Costs {
        let mut params = 0u64;
        let mut weight_elems = 0u64;
        let mut macs = 0u64;
        for n in &graph.nodes {
            for (suffix, shape, _) in n.op.params() {
                let e = shape.iter().product::<usize>() as u64;
                params += e;
                if suffix == "weight" && matches!(n.op, Op::Conv { .. } | Op::Linear { .. }) {
                    weight_elems += e;
                }
            }
            macs += match &n.op {
                Op::Conv {
                    c_in,
                    kernel,
                    groups,
                    ..
                } => {
                    let out: usize = n.out_shape.iter().product();
                    (out * (c_in / groups) * kernel.iter().product::<usize>()) as u64
                }
                Op::Linear { c_in, c_out, .. } => (c_in * c_out) as u64,
                _ => 0,
            };
        }
        Costs {
            params,
            macs,
            weight_elems,
            peak_activations: peak_activations(graph),
        }
    }

    /// 2 × MACs (one multiply and one add each).
    pub fn flops(&self) -> u64 {
        2 * self.macs
    }

    /// Stored weight bytes at `bits` per conv/linear weight, the rest at 32 bits.
    pub fn weight_bytes(&self, bits: u32) -> u64 {
        (self.weight_elems * bits as u64 + (self.params - self.weight_elems) * 32).div_ceil(8)
    }

    /// Peak activation bytes at batch 1 with `bits` per activation value.
    pub fn peak_activation_bytes(&self, bits: u32) -> u64 {
        (self.peak_activations * bits as u64).div_ceil(8)
    }
}

/// Peak live activation elements of one inference at batch 1 (see the module doc).
pub fn peak_activations(graph: &Graph) -> u64 {
    let n = graph.nodes.len();
    let size = |v: usize| graph.value_shape(v).iter().product::<usize>() as u64;
    // Last node reading each value; the output is read "after" the last node.
    let mut last = vec![0usize; n + 1];
    for (i, node) in graph.nodes.iter().enumerate() {
        for &v in &node.inputs {
            last[v] = last[v].max(i);
        }
    }
    last[n] = n;
    let mut live = size(0);
    let mut peak = live;
    for i in 0..n {
        live += size(i + 1);
        peak = peak.max(live);
        for (v, _) in last
            .iter()
            .enumerate()
            .take(i + 1)
            .filter(|&(_, &l)| l == i)
        {
            live -= size(v);
        }
    }
    peak
}

/// A metric the genetic law design fits into a band.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    Params,
    Macs,
    Flops,
    /// Stored weight bytes at this many bits per weight ([`Costs::weight_bytes`]).
    WeightBytes(u32),
    /// Peak activation bytes at this many bits per value.
    PeakActivationBytes(u32),
    /// Predicted latency in seconds from FLOPs ([`LogLogFit::predict`]).
    Latency(LogLogFit),
}

impl Metric {
    pub fn of(&self, c: &Costs) -> f64 {
        match self {
            Metric::Params => c.params as f64,
            Metric::Macs => c.macs as f64,
            Metric::Flops => c.flops() as f64,
            Metric::WeightBytes(b) => c.weight_bytes(*b) as f64,
            Metric::PeakActivationBytes(b) => c.peak_activation_bytes(*b) as f64,
            Metric::Latency(fit) => fit.predict(c.flops() as f64),
        }
    }

    /// Name for reports (`params`, `macs`, `flops`, `weight_bytes@8`, …).
    pub fn name(&self) -> String {
        match self {
            Metric::Params => "params".into(),
            Metric::Macs => "macs".into(),
            Metric::Flops => "flops".into(),
            Metric::WeightBytes(b) => format!("weight_bytes@{b}"),
            Metric::PeakActivationBytes(b) => format!("peak_activation_bytes@{b}"),
            Metric::Latency(_) => "predicted_latency_s".into(),
        }
    }
}
