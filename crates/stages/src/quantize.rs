//! The `quantize` stage kind (spec §6): evaluates every input network under each precision
//! format — fp32/fp16/bf16/float(w,t) rounding of weights and activations, int8 post-training
//! quantization calibrated on training inputs, k-bit weight-only — and reports one `models`
//! row per (network, format) with accuracy, stored sizes and the difference to fp32.
//! `float(*,*)` expands to a grid of reduced floats (`float_grid`) and marks each network's
//! best float format within `budget_bytes` of weights (`004`); `qat = true` adds a
//! quantization-aware fine-tuned row (`int8+qat`, `w4+qat`) after each int8 / k-bit format.

use crate::common::{NETWORK_KINDS, model_row, peak_activation_elems, with_threads};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use whittle_engine::{InputArtifact, MemoryNeed, ParamError, RunContext, StageKind, from_params};
use whittle_nn::Model;
use whittle_nn::loss::LossKind;
use whittle_nn::quant::{
    Candidate, FloatGrid, Format, ObserverKind, QatModel, QuantModel, QuantOptions,
    best_within_budget, weight_bytes,
};
use whittle_nn::train::{Hooks, Monitor, TrainConfig};

/// The formats-list entry that expands to the float grid.
pub const GRID_TOKEN: &str = "float(*,*)";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizeParams {
    #[serde(default = "default_formats")]
    pub formats: Vec<String>,
    #[serde(default = "crate::int8::default_samples")]
    pub calibration_samples: usize,
    #[serde(default = "crate::int8::default_observer")]
    pub observer: String,
    /// Tail percentile of the `percentile` observer.
    #[serde(default = "crate::int8::default_percentile")]
    pub percentile: f64,
    #[serde(default = "yes")]
    pub keep_first_last_8bit: bool,
    #[serde(default = "one")]
    pub threads: usize,
    /// Ranges of the `float(*,*)` grid (default w 2..=8, t 0..=7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub float_grid: Option<FloatGrid>,
    /// Weight memory budget for the best float format per network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_bytes: Option<u64>,
    /// Quantization-aware fine-tuning of each int8 / k-bit weight-only format.
    #[serde(default, skip_serializing_if = "is_false")]
    pub qat: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat_epochs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat_lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat_batch_size: Option<usize>,
    /// Optimizer of the QAT rows (default Adam without weight decay); the `qat` stage kind
    /// keeps the fine-tuned network as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat_optimizer: Option<whittle_nn::OptimizerConfig>,
}

fn is_false(b: &bool) -> bool {
    !*b
}
const QAT_EPOCHS: u64 = 3;
const QAT_LR: f64 = 1e-4;
const QAT_BATCH: usize = 100;

fn default_formats() -> Vec<String> {
    ["fp32", "fp16", "bf16", "float(4,3)", "int8", "int4"]
        .map(String::from)
        .to_vec()
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}

impl QuantizeParams {
    /// The formats to evaluate, in order: the list with `float(*,*)` expanded to the grid,
    /// each format once (its first occurrence).
    pub fn expanded_formats(&self) -> Result<Vec<Format>, String> {
        let mut out: Vec<Format> = Vec::new();
        for name in &self.formats {
            let add: Vec<Format> = if name == GRID_TOKEN {
                self.float_grid
                    .unwrap_or_default()
                    .formats()?
                    .into_iter()
                    .map(Format::Float)
                    .collect()
            } else {
                vec![Format::parse(name)?]
            };
            for f in add {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        Ok(out)
    }

    fn observer_kind(&self) -> ObserverKind {
        crate::int8::observer_kind(&self.observer, self.percentile)
    }
}

pub struct Quantize;

impl StageKind for Quantize {
    fn name(&self) -> &'static str {
        "quantize"
    }

    fn version(&self) -> &'static str {
        // 2: global average pooling by the kernel in PTQ/QAT (one interpreter)
        // 3: int8 = the exported network: seeded stratified calibration set, int32 biases
        "3"
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let mut p: QuantizeParams = from_params(params)?;
        let mut names = Vec::new();
        for (i, f) in p.formats.iter().enumerate() {
            if f.trim().replace(' ', "") == GRID_TOKEN {
                names.push(GRID_TOKEN.to_string());
                continue;
            }
            let fmt = Format::parse(f)
                .map_err(|m| ParamError::new(["formats".to_string(), i.to_string()], m))?;
            names.push(fmt.name());
        }
        if names.is_empty() {
            return Err(ParamError::new(["formats"], "needs at least one format"));
        }
        p.formats = names;
        if let Some(g) = &p.float_grid {
            g.formats()
                .map_err(|m| ParamError::new(["float_grid"], m))?;
        }
        if p.budget_bytes == Some(0) {
            return Err(ParamError::new(["budget_bytes"], "must be ≥ 1"));
        }
        if p.qat_epochs == Some(0) {
            return Err(ParamError::new(["qat_epochs"], "must be ≥ 1"));
        }
        if p.qat_batch_size == Some(0) {
            return Err(ParamError::new(["qat_batch_size"], "must be ≥ 1"));
        }
        if let Some(lr) = p.qat_lr
            && !(lr.is_finite() && lr > 0.0)
        {
            return Err(ParamError::new(
                ["qat_lr"],
                format!("{lr} is not a positive learning rate"),
            ));
        }
        crate::int8::check_calibration(p.calibration_samples, &p.observer, p.percentile)?;
        p.threads = p.threads.max(1);
        serde_json::to_value(p).map_err(|e| ParamError::new(Vec::<String>::new(), e.to_string()))
    }

    fn threads(&self, resolved: &Value) -> usize {
        resolved.get("threads").and_then(Value::as_u64).unwrap_or(1) as usize
    }

    /// Results do not depend on the thread count (the kernels split work in fixed chunks), so
    /// the scheduler may give it as few as one thread to run beside another node.
    fn min_threads(&self, _resolved: &Value) -> usize {
        1
    }

    /// The largest input network: evaluated at batch 100, or with `qat` trained at the QAT
    /// batch size; networks are quantized one after the other.
    fn memory(&self, resolved: &Value, inputs: &[InputArtifact]) -> Option<MemoryNeed> {
        let p: QuantizeParams = serde_json::from_value(resolved.clone()).ok()?;
        let batch = if p.qat {
            p.qat_batch_size.unwrap_or(QAT_BATCH)
        } else {
            100
        };
        let e = crate::memory::input_graphs(inputs)
            .iter()
            .map(|g| {
                if p.qat {
                    whittle_nn::memory::training(g, batch, 2, true)
                } else {
                    whittle_nn::memory::inference(g, batch)
                }
            })
            .max_by_key(|e| e.total())?;
        Some(crate::memory::need(
            &[("largest network", e, batch)],
            crate::memory::data_bytes(inputs),
        ))
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
                    quantize_one(ctx, &p, &model, &input.dir, &method, &input.node)
                        .with_context(|| format!("quantizing `{}`", input.node))?,
                );
            }
            let best: Vec<Value> = rows
                .iter()
                .filter(|r| r.get("best_format").and_then(Value::as_bool) == Some(true))
                .map(|r| {
                    json!({
                        "network": r.get("parent"),
                        "format": r.get("format"),
                        "test_accuracy": r.get("test_accuracy"),
                        "weight_bytes": r.get("weight_bytes"),
                    })
                })
                .collect();
            let mut out = json!({ "models": rows });
            if p.formats.iter().any(|f| f == GRID_TOKEN) || p.budget_bytes.is_some() {
                out["best_formats"] = json!(best);
                out["budget_bytes"] = json!(p.budget_bytes);
            }
            Ok(out)
        })
    }
}

/// One row per format for one network (plus `+qat` rows), the best float format marked.
fn quantize_one(
    ctx: &RunContext,
    p: &QuantizeParams,
    model: &Model,
    dir: &std::path::Path,
    method: &str,
    parent: &str,
) -> Result<Vec<Value>> {
    let (data, ds) = crate::task::load_data(ctx, model.config())?;
    let anomaly = ds.task == whittle_data::Task::AnomalyDetection;
    let test = data
        .test
        .as_ref()
        .or(data.val.as_ref())
        .context("the data set has neither a test nor a validation split")?;
    // The calibration set and the int8 network are those the export stage writes (crate::int8).
    let calib = crate::int8::calibration_inputs(&data.train, p.calibration_samples, ctx.seed)?;
    let opts = QuantOptions {
        observer: p.observer_kind(),
        keep_first_last_8bit: p.keep_first_last_8bit,
        batch_size: 100,
    };
    let check_cancel = || -> Result<()> {
        if ctx.cancel.is_cancelled() {
            anyhow::bail!("cancelled");
        }
        Ok(())
    };
    // the task metric: accuracy, or the AUC of per-clip reconstruction errors
    let accuracy_of =
        |q: &QuantModel| -> Result<Option<f64>> { crate::task::metric_value(q, &data, &ds, test) };
    let accuracy = |fmt: Format| -> Result<Option<f64>> {
        check_cancel()?;
        let q = if fmt == Format::Int8 {
            crate::int8::int8_model(model, Some(dir), &calib, &opts)?
        } else {
            QuantModel::prepare(model, fmt, Some(&calib), &opts)?
        };
        accuracy_of(&q)
    };
    let formats = p.expanded_formats().map_err(anyhow::Error::msg)?;
    let fp32 = Format::parse("fp32").map_err(anyhow::Error::msg)?;
    let acc32 = accuracy(fp32)?;
    // Every format is evaluated independently (inference only), in parallel over the stage's
    // threads; results are collected in list order, so the output does not depend on timing.
    let accs: Vec<Option<f64>> = {
        use rayon::prelude::*;
        formats
            .par_iter()
            .map(|&f| if f == fp32 { Ok(acc32) } else { accuracy(f) })
            .collect::<Result<_>>()?
    };
    let peak = peak_activation_elems(model);
    let row = |label: String, fmt: Format, acc: Option<f64>| -> Result<Value> {
        let mut row = model_row(model, method, Some(parent), acc);
        let o = row.as_object_mut().context("model row is an object")?;
        o.remove("layers");
        if anomaly {
            o.insert("metric".into(), json!("auc"));
            o.insert("test_accuracy".into(), Value::Null);
            o.insert("test_auc".into(), json!(acc));
        }
        o.insert("format".into(), json!(label));
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
        Ok(row)
    };
    let mut rows = Vec::new();
    let mut cands = Vec::new();
    for (&fmt, &acc) in formats.iter().zip(&accs) {
        rows.push(row(fmt.name(), fmt, acc)?);
        cands.push(Candidate {
            format: fmt,
            weight_bytes: weight_bytes(model.graph(), fmt, p.keep_first_last_8bit),
            accuracy: acc,
        });
        if p.qat && matches!(fmt, Format::Int8 | Format::WeightOnly(_)) {
            check_cancel()?;
            let acc = qat_accuracy(ctx, p, model, fmt, &calib, &opts, &data, &ds)
                .with_context(|| format!("quantization-aware training for {}", fmt.name()))?;
            let mut r = row(format!("{}+qat", fmt.name()), fmt, acc)?;
            r["qat_epochs"] = json!(p.qat_epochs.unwrap_or(QAT_EPOCHS));
            r["qat_lr"] = json!(p.qat_lr.unwrap_or(QAT_LR));
            rows.push(r);
            // Not a float format: never a candidate of the budget choice.
            cands.push(Candidate {
                format: fmt,
                weight_bytes: 0,
                accuracy: None,
            });
        }
    }
    if (p.formats.iter().any(|f| f == GRID_TOKEN) || p.budget_bytes.is_some())
        && let Some(i) = best_within_budget(&cands, p.budget_bytes)
    {
        rows[i]["best_format"] = json!(true);
        rows[i]["budget_bytes"] = json!(p.budget_bytes);
    }
    Ok(rows)
}

/// Accuracy of `model` after quantization-aware fine-tuning for `fmt` (activation ranges
/// frozen at calibration; see `whittle_nn::quant::qat`).
fn qat_accuracy(
    ctx: &RunContext,
    p: &QuantizeParams,
    model: &Model,
    fmt: Format,
    calib: &candle_core::Tensor,
    opts: &QuantOptions,
    data: &whittle_nn::data::DataSet,
    ds: &whittle_data::Dataset,
) -> Result<Option<f64>> {
    let qat = QatModel::new(model, fmt, Some(calib), opts)?;
    let loss = match ds.task {
        whittle_data::Task::AnomalyDetection => LossKind::Mse,
        whittle_data::Task::Classification => LossKind::CrossEntropy,
    };
    let cfg = TrainConfig {
        augment: Default::default(),
        epochs: p.qat_epochs.unwrap_or(QAT_EPOCHS),
        batch_size: p.qat_batch_size.unwrap_or(QAT_BATCH),
        lr: p.qat_lr.unwrap_or(QAT_LR),
        optimizer: p
            .qat_optimizer
            .clone()
            .unwrap_or(whittle_nn::OptimizerConfig::adam(0.0)),
        schedule: Default::default(),
        loss,
        patience: None,
        monitor: Monitor::ValLoss,
        keep_best: data.val.is_some(),
        seed: ctx.seed,
    };
    let cancel = || ctx.cancel.is_cancelled();
    whittle_nn::train::train(
        &qat,
        data,
        &cfg,
        Hooks {
            cancel: Some(&cancel),
            ..Default::default()
        },
    )?;
    let test = data
        .test
        .as_ref()
        .or(data.val.as_ref())
        .context("the data set has neither a test nor a validation split")?;
    crate::task::metric_value(&qat.quantized()?, data, ds, test)
}
