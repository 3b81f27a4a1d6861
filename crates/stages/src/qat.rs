//! The `qat` stage kind (issue 22): quantization-aware fine-tuning of one input network for
//! one format (`int8`, or k-bit weight-only `wK`), with the result kept as a network node.
//!
//! The network is batch-norm folded, its int8 activation ranges calibrated on a seeded,
//! stratified choice of training items (`crate::int8::calibration_inputs`, the same choice the
//! `quantize` and `export` stages make) and frozen, and the weights fine-tuned through
//! straight-through quantizers (`whittle_nn::quant::QatModel`) with the training-recipe keys
//! (`epochs`, `lr`, `optimizer`, `batch_size`, `schedule`, … — QAT defaults: 3 epochs, Adam
//! without weight decay at lr 1e-4, constant schedule). Output: the fine-tuned folded network
//! (`Model::save`) and, for int8, its frozen quantizers in `int8.json` (`crate::int8::save`),
//! so `export`, `calibrate` and `quantize` take it like any trained network, and the int8
//! network `crate::int8::int8_model` reads from the folder is the one the row measured.
//!
//! Its `models` row (`format` = `int8+qat` / `w4+qat`) is measured on the saved files, read
//! back; sizes and `delta_vs_fp32` are counted as `quantize` counts them for the input network.

use crate::common::{NETWORK_KINDS, input_of_kind, model_row, peak_activation_elems, with_threads};
use crate::recipe::Recipe;
use crate::train::{diverged_metrics, fit};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use whittle_engine::{InputArtifact, MemoryNeed, ParamError, RunContext, StageKind, from_params};
use whittle_nn::Model;
use whittle_nn::loss::LossKind;
use whittle_nn::quant::{Format, QatModel, QuantModel, QuantOptions, weight_bytes};

/// Epochs, learning rate, optimizer and schedule of QAT when the stage does not name them
/// (a short, gentle fine-tuning of a trained network).
const QAT_EPOCHS: i64 = 3;
const QAT_LR: f64 = 1e-4;

/// The straight-through forward keeps, per int8 value, its quantized copy, the in-range mask,
/// x·mask and the sum beside x, so the activations of a float training are counted three times
/// (an estimate from those tensors, not a measurement).
const STE_ACTIVATION_FACTOR: u64 = 3;

/// The keys of the stage itself; every other key is a training-recipe key.
const OWN_KEYS: [&str; 6] = [
    "format",
    "calibration_samples",
    "observer",
    "percentile",
    "keep_first_last_8bit",
    "threads",
];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Own {
    /// `int8` or `wK` (k = 2..=8; `int4` = `w4`), stored by its canonical name.
    #[serde(default = "int8")]
    pub format: String,
    /// int8: training items the frozen activation ranges are calibrated on.
    #[serde(default = "crate::int8::default_samples")]
    pub calibration_samples: usize,
    #[serde(default = "crate::int8::default_observer")]
    pub observer: String,
    /// Tail percentile of the `percentile` observer.
    #[serde(default = "crate::int8::default_percentile")]
    pub percentile: f64,
    /// k-bit weight-only: the first and last conv/linear layer stay at 8 bits.
    #[serde(default = "yes")]
    pub keep_first_last_8bit: bool,
    #[serde(default = "two")]
    pub threads: usize,
}

fn int8() -> String {
    "int8".into()
}
fn yes() -> bool {
    true
}
fn two() -> usize {
    2
}

/// Resolved parameters: the stage's own keys and the full training recipe.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QatParams {
    #[serde(flatten)]
    pub own: Own,
    pub recipe: Recipe,
}

impl QatParams {
    pub fn format(&self) -> Result<Format> {
        Format::parse(&self.own.format).map_err(anyhow::Error::msg)
    }

    pub fn options(&self) -> QuantOptions {
        QuantOptions {
            observer: crate::int8::observer_kind(&self.own.observer, self.own.percentile),
            keep_first_last_8bit: self.own.keep_first_last_8bit,
            batch_size: 100,
        }
    }
}

/// Splits and checks the stage table: own keys, then the recipe with the QAT defaults filled
/// in for the keys the table leaves out; every error names its key.
pub fn parse(params: &toml::Table) -> Result<QatParams, ParamError> {
    let mut mine = toml::Table::new();
    let mut rest = toml::Table::new();
    for (k, v) in params {
        if OWN_KEYS.contains(&k.as_str()) {
            mine.insert(k.clone(), v.clone());
        } else {
            rest.insert(k.clone(), v.clone());
        }
    }
    let defaults: [(&str, toml::Value); 4] = [
        ("epochs", toml::Value::Integer(QAT_EPOCHS)),
        ("lr", toml::Value::Float(QAT_LR)),
        ("optimizer", toml::Value::Table(kind_table("adam"))),
        ("schedule", toml::Value::Table(kind_table("constant"))),
    ];
    for (k, v) in defaults {
        rest.entry(k).or_insert(v);
    }
    let mut own: Own = from_params(&mine)?;
    let recipe: Recipe = from_params(&rest)?;
    let fmt = Format::parse(&own.format).map_err(|m| ParamError::new(["format"], m))?;
    if !matches!(fmt, Format::Int8 | Format::WeightOnly(_)) {
        return Err(ParamError::new(
            ["format"],
            format!(
                "quantization-aware training is for int8 or k-bit weight-only formats (w2 … w8), not `{}`",
                own.format
            ),
        ));
    }
    own.format = fmt.name();
    crate::int8::check_calibration(own.calibration_samples, &own.observer, own.percentile)?;
    if recipe.epochs == 0 {
        return Err(ParamError::new(["epochs"], "must be ≥ 1"));
    }
    if recipe.batch_size == 0 {
        return Err(ParamError::new(["batch_size"], "must be ≥ 1"));
    }
    if !(recipe.lr.is_finite() && recipe.lr > 0.0) {
        return Err(ParamError::new(
            ["lr"],
            format!("{} is not a positive learning rate", recipe.lr),
        ));
    }
    recipe
        .schedule
        .validate()
        .map_err(|e| ParamError::new(["schedule"], e.to_string()))?;
    own.threads = own.threads.max(1);
    Ok(QatParams { own, recipe })
}

fn kind_table(kind: &str) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("kind".into(), toml::Value::String(kind.into()));
    t
}

pub struct Qat;

impl StageKind for Qat {
    fn name(&self) -> &'static str {
        "qat"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        serde_json::to_value(parse(params)?)
            .map_err(|e| ParamError::new(Vec::<String>::new(), e.to_string()))
    }

    fn threads(&self, resolved: &Value) -> usize {
        resolved.get("threads").and_then(Value::as_u64).unwrap_or(2) as usize
    }

    /// Results do not depend on the thread count (the kernels split work in fixed chunks), so
    /// the scheduler may give it as few as one thread to run beside another node.
    fn min_threads(&self, _resolved: &Value) -> usize {
        1
    }

    /// A training of the input network at the recipe's batch, int8 activations counted
    /// [`STE_ACTIVATION_FACTOR`] times for the straight-through copies.
    fn memory(&self, resolved: &Value, inputs: &[InputArtifact]) -> Option<MemoryNeed> {
        let p: QatParams = serde_json::from_value(resolved.clone()).ok()?;
        let g = crate::memory::first_input_graph(inputs)?;
        let batch = crate::memory::effective_batch(p.recipe.batch_size, inputs);
        let r = Recipe {
            batch_size: batch,
            ..p.recipe.clone()
        };
        let mut e = crate::memory::train_estimate(&g, &r);
        if p.format().ok()? == Format::Int8 {
            e.activations = e.activations.saturating_mul(STE_ACTIVATION_FACTOR);
        }
        Some(crate::memory::need(
            &[("QAT", e, batch)],
            crate::memory::data_bytes(inputs),
        ))
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: QatParams = serde_json::from_value(ctx.params.clone())?;
        with_threads(ctx.threads, || run(ctx, &p))
    }
}

fn run(ctx: &RunContext, p: &QatParams) -> Result<Value> {
    let fmt = p.format()?;
    let opts = p.options();
    let parent = input_of_kind(ctx, &NETWORK_KINDS)?;
    let model = Model::load(&parent.dir)
        .with_context(|| format!("loading the network of `{}`", parent.node))?;
    let (data, ds) = crate::task::load_data(ctx, model.config())?;
    crate::task::check_loss(&ds, p.recipe.loss, ctx.stage)?;
    let test = data
        .test
        .as_ref()
        .or(data.val.as_ref())
        .context("the data set has neither a test nor a validation split")?;
    ctx.progress.set_message("calibrating");
    let calib = match fmt {
        Format::Int8 => Some(
            crate::int8::calibration_inputs(&data.train, p.own.calibration_samples, ctx.seed)
                .context("choosing the calibration items")?,
        ),
        _ => None,
    };
    let score = |q: &dyn whittle_nn::Trainable| -> Result<serde_json::Map<String, Value>> {
        let acc = match ds.task {
            whittle_data::Task::Classification => {
                whittle_nn::train::evaluate(q, test, LossKind::CrossEntropy, 100)?.accuracy
            }
            whittle_data::Task::AnomalyDetection => None,
        };
        crate::task::metric_fields(q, &data, &ds, acc)
    };
    let value = |f: &serde_json::Map<String, Value>| {
        f.get("test_accuracy")
            .and_then(Value::as_f64)
            .or_else(|| f.get("test_auc").and_then(Value::as_f64))
    };
    let fp32 = Format::parse("fp32").map_err(anyhow::Error::msg)?;
    let fp32_model = QuantModel::prepare(&model, fp32, None, &opts)?;
    let score32 = crate::task::metric_value(&fp32_model, &data, &ds, test)?;
    let qat = QatModel::new(&model, fmt, calib.as_ref(), &opts)
        .context("preparing quantization-aware training")?;
    let before = crate::task::metric_value(&qat.quantized()?, &data, &ds, test)?;
    let result = fit(ctx, &qat, &data, &p.recipe, ctx.seed)
        .with_context(|| format!("quantization-aware training for {}", fmt.name()))?;
    if ctx.cancel.is_cancelled() {
        anyhow::bail!("cancelled");
    }
    ctx.progress.set_message("saving and evaluating");
    qat.model().save(ctx.out_dir)?;
    if fmt == Format::Int8 {
        crate::int8::save(
            ctx.out_dir,
            qat.model().graph(),
            qat.activation_quantizers(),
        )?;
    }
    // Measured on the files just written, as every later stage will read them.
    let saved = Model::load(ctx.out_dir).context("reading the saved QAT network back")?;
    let q = match &calib {
        Some(c) => crate::int8::int8_model(&saved, Some(ctx.out_dir), c, &opts)?,
        None => QuantModel::prepare(&saved, fmt, None, &opts)?,
    };
    let fields = score(&q)?;
    let after = value(&fields);
    let method = parent
        .metrics
        .get("models")
        .and_then(|m| m.get(0))
        .and_then(|r| r.get("method"))
        .and_then(Value::as_str)
        .unwrap_or(parent.kind.as_str())
        .to_string();
    // Sizes as `quantize` counts them for the input network, so the row sits beside its rows.
    let mut row = model_row(&model, &method, Some(&parent.node), None);
    crate::task::merge(&mut row, fields);
    let peak = peak_activation_elems(&model);
    row["format"] = json!(format!("{}+qat", fmt.name()));
    row["weight_bytes"] = json!(weight_bytes(model.graph(), fmt, p.own.keep_first_last_8bit));
    row["peak_activation_bytes"] = json!((peak * fmt.activation_bits() as u64).div_ceil(8));
    row["delta_vs_fp32"] = json!(after.zip(score32).map(|(a, b)| a - b));
    row["ptq_score"] = json!(before);
    row["qat_epochs"] = json!(p.recipe.epochs);
    row["qat_lr"] = json!(p.recipe.lr);
    row["stage"] = json!("qat");
    let mut m = json!({
        "models": [row],
        "format": fmt.name(),
        "fp32_score": score32,
        "calibration_samples": calib.as_ref().map(|c| c.dim(0)).transpose()?,
        "test": result.test,
        "val": result.val,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "history": result.history,
    });
    diverged_metrics(&mut m, &result);
    Ok(m)
}

#[cfg(test)]
#[path = "qat_tests.rs"]
mod tests;
