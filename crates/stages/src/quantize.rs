//! The `quantize` stage kind (spec §6): evaluates every input network under each precision
//! format — fp32/fp16/bf16/float(w,t) rounding of weights and activations, int8 post-training
//! quantization calibrated on training inputs, k-bit weight-only — and reports one `models`
//! row per (network, format) with accuracy, stored sizes and the difference to fp32.

use crate::common::{NETWORK_KINDS, load_data, model_row, peak_activation_elems, with_threads};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use whittle_engine::{ParamError, RunContext, StageKind, from_params};
use whittle_nn::Model;
use whittle_nn::loss::LossKind;
use whittle_nn::quant::{Format, ObserverKind, QuantModel, QuantOptions, weight_bytes};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizeParams {
    #[serde(default = "default_formats")]
    pub formats: Vec<String>,
    #[serde(default = "default_calib")]
    pub calibration_samples: usize,
    #[serde(default = "default_observer")]
    pub observer: String,
    /// Tail percentile of the `percentile` observer.
    #[serde(default = "default_pct")]
    pub percentile: f64,
    #[serde(default = "yes")]
    pub keep_first_last_8bit: bool,
    #[serde(default = "one")]
    pub threads: usize,
}

fn default_formats() -> Vec<String> {
    ["fp32", "fp16", "bf16", "float(4,3)", "int8", "int4"]
        .map(String::from)
        .to_vec()
}
fn default_calib() -> usize {
    500
}
fn default_observer() -> String {
    "minmax".into()
}
fn default_pct() -> f64 {
    99.99
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}

impl QuantizeParams {
    fn observer_kind(&self) -> ObserverKind {
        if self.observer == "percentile" {
            ObserverKind::Percentile(self.percentile)
        } else {
            ObserverKind::MinMax
        }
    }
}

pub struct Quantize;

impl StageKind for Quantize {
    fn name(&self) -> &'static str {
        "quantize"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let mut p: QuantizeParams = from_params(params)?;
        let mut names = Vec::new();
        for (i, f) in p.formats.iter().enumerate() {
            let fmt = Format::parse(f)
                .map_err(|m| ParamError::new(["formats".to_string(), i.to_string()], m))?;
            names.push(fmt.name());
        }
        if names.is_empty() {
            return Err(ParamError::new(["formats"], "needs at least one format"));
        }
        p.formats = names;
        if !matches!(p.observer.as_str(), "minmax" | "percentile") {
            return Err(ParamError::new(
                ["observer"],
                format!(
                    "unknown observer `{}`: expected \"minmax\" or \"percentile\"",
                    p.observer
                ),
            ));
        }
        if !(50.0..=100.0).contains(&p.percentile) {
            return Err(ParamError::new(
                ["percentile"],
                format!("{} is not a tail percentile in [50, 100]", p.percentile),
            ));
        }
        if p.calibration_samples == 0 {
            return Err(ParamError::new(["calibration_samples"], "must be ≥ 1"));
        }
        p.threads = p.threads.max(1);
        serde_json::to_value(p).map_err(|e| ParamError::new(Vec::<String>::new(), e.to_string()))
    }

    fn threads(&self, resolved: &Value) -> usize {
        resolved.get("threads").and_then(Value::as_u64).unwrap_or(1) as usize
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: QuantizeParams = serde_json::from_value(ctx.params.clone())?;
        with_threads(ctx.threads, || {
            let mut rows = Vec::new();
            let nets: Vec<_> = ctx
                .inputs
                .iter()
                .filter(|i| NETWORK_KINDS.contains(&i.kind.as_str()))
                .collect();
            anyhow::ensure!(
                !nets.is_empty(),
                "stage `{}` needs at least one network input (kinds {})",
                ctx.stage,
                NETWORK_KINDS.join(", ")
            );
            for (k, input) in nets.iter().enumerate() {
                ctx.progress.set_length(nets.len() as u64);
                ctx.progress.set_position(k as u64);
                ctx.progress.set_message(&input.node);
                let model = Model::load(&input.dir)
                    .with_context(|| format!("loading network of `{}`", input.node))?;
                let method = input
                    .metrics
                    .get("models")
                    .and_then(|m| m.get(0))
                    .and_then(|r| r.get("method"))
                    .and_then(Value::as_str)
                    .unwrap_or(input.kind.as_str())
                    .to_string();
                rows.extend(
                    quantize_one(ctx, &p, &model, &method, &input.node)
                        .with_context(|| format!("quantizing `{}`", input.node))?,
                );
            }
            Ok(json!({ "models": rows }))
        })
    }
}

/// One row per format for one network.
fn quantize_one(
    ctx: &RunContext,
    p: &QuantizeParams,
    model: &Model,
    method: &str,
    parent: &str,
) -> Result<Vec<Value>> {
    let (data, _) = load_data(ctx, model.config())?;
    let test = data
        .test
        .as_ref()
        .or(data.val.as_ref())
        .context("the data set has neither a test nor a validation split")?;
    let n = p.calibration_samples.min(data.train.len());
    let calib = data.train.x.narrow(0, 0, n)?;
    let opts = QuantOptions {
        observer: p.observer_kind(),
        keep_first_last_8bit: p.keep_first_last_8bit,
        batch_size: 100,
    };
    let accuracy = |fmt: Format| -> Result<Option<f64>> {
        if ctx.cancel.is_cancelled() {
            anyhow::bail!("cancelled");
        }
        let q = QuantModel::prepare(model, fmt, Some(&calib), &opts)?;
        Ok(whittle_nn::train::evaluate(&q, test, LossKind::CrossEntropy, 100)?.accuracy)
    };
    let fp32 = Format::parse("fp32").map_err(anyhow::Error::msg)?;
    let acc32 = accuracy(fp32)?;
    let peak = peak_activation_elems(model);
    let mut rows = Vec::new();
    for name in &p.formats {
        let fmt = Format::parse(name).map_err(anyhow::Error::msg)?;
        let acc = if fmt == fp32 { acc32 } else { accuracy(fmt)? };
        let mut row = model_row(model, method, Some(parent), acc);
        let o = row.as_object_mut().context("model row is an object")?;
        o.remove("layers");
        o.insert("format".into(), json!(fmt.name()));
        o.insert(
            "weight_bytes".into(),
            json!(weight_bytes(model.graph(), fmt, p.keep_first_last_8bit)),
        );
        o.insert(
            "peak_activation_bytes".into(),
            json!((peak * fmt.activation_bits() as u64).div_ceil(8)),
        );
        o.insert(
            "delta_vs_fp32".into(),
            json!(acc.zip(acc32).map(|(a, b)| a - b)),
        );
        rows.push(row);
    }
    Ok(rows)
}
