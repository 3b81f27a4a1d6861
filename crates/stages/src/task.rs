//! The task of a data set decides how its networks are trained and scored: classification
//! (cross-entropy on labels, test accuracy) or anomaly detection (an auto-encoder trained with
//! MSE to reconstruct normal windows; a clip's anomaly score is the mean reconstruction error
//! of its windows; ROC AUC and partial AUC (max FPR 0.1) per machine ID, averaged, as MLPerf
//! Tiny scores it). The metrics row names its metric (`"metric": "auc"`), which the report
//! reads by name.

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};
use whittle_data::{Dataset, Task};
use whittle_engine::RunContext;
use whittle_nn::loss::LossKind;
use whittle_nn::train::Trainable;
use whittle_nn::{DataSet, ModelConfig, Split};

/// Batch used to score test windows.
const SCORE_BATCH: usize = 256;

/// [`crate::common::load_data`], with an anomaly-detection set's splits turned into
/// reconstruction splits (targets = inputs).
pub fn load_data(ctx: &RunContext, cfg: &ModelConfig) -> Result<(DataSet, Dataset)> {
    let (mut data, ds) = crate::common::load_data(ctx, cfg)?;
    if ds.task == Task::AnomalyDetection {
        let rec = |s: &Split| Split::reconstruction(s.x.clone());
        data = DataSet {
            train: rec(&data.train),
            val: data.val.as_ref().map(rec),
            test: data.test.as_ref().map(rec),
        };
    }
    Ok((data, ds))
}

/// The loss a task trains with must be the one the recipe names: say so before training.
pub fn check_loss(ds: &Dataset, loss: LossKind, stage: &str) -> Result<()> {
    match (ds.task, loss) {
        (Task::AnomalyDetection, LossKind::CrossEntropy) => bail!(
            "stage `{stage}`: the data set is for anomaly detection, whose networks are auto-encoders trained to reconstruct their input: set `loss = \"mse\"` (and an `arch = \"autoencoder\"` model)"
        ),
        (Task::Classification, LossKind::Mse) => bail!(
            "stage `{stage}`: the data set is for classification; `loss = \"mse\"` needs an anomaly-detection data set (targets = inputs)"
        ),
        _ => Ok(()),
    }
}

/// The row fields of the task metric of `model` on the test split: `test_accuracy` (given,
/// from training) for classification; `metric = "auc"`, `test_auc`, `test_pauc` and the
/// per-machine values for anomaly detection. Empty without a test split.
pub fn metric_fields(
    model: &dyn Trainable,
    data: &DataSet,
    ds: &Dataset,
    accuracy: Option<f64>,
) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    match ds.task {
        Task::Classification => {
            m.insert("test_accuracy".into(), json!(accuracy));
        }
        Task::AnomalyDetection => {
            let Some(test) = &data.test else {
                return Ok(m);
            };
            let errors = whittle_nn::anomaly::reconstruction_errors(model, &test.x, SCORE_BATCH)?;
            let anomalous: Vec<bool> = ds.test.y.iter().map(|&y| y == 1).collect();
            let r =
                whittle_nn::anomaly::evaluate(&errors, &ds.test.clip, &anomalous, &ds.test.group)?;
            let per: Map<String, Value> = r
                .groups
                .iter()
                .map(|(g, auc, pauc)| {
                    let name = ds
                        .groups
                        .get(*g as usize)
                        .cloned()
                        .unwrap_or_else(|| format!("id_{g}"));
                    (name, json!({ "auc": auc, "pauc": pauc }))
                })
                .collect();
            m.insert("metric".into(), json!("auc"));
            m.insert("test_accuracy".into(), Value::Null);
            m.insert("test_auc".into(), json!(r.auc));
            m.insert("test_pauc".into(), json!(r.pauc));
            m.insert("test_auc_per_machine".into(), Value::Object(per));
        }
    }
    Ok(m)
}

/// The task metric of `model` evaluated now on the test split (accuracy with `recipe`'s loss
/// and batch size, or AUC), as row fields ([`metric_fields`]).
pub fn score(
    model: &dyn Trainable,
    data: &DataSet,
    ds: &Dataset,
    recipe: &crate::recipe::Recipe,
) -> Result<Map<String, Value>> {
    let acc = match ds.task {
        Task::Classification => crate::search::test_accuracy(model, data, recipe)?,
        Task::AnomalyDetection => None,
    };
    metric_fields(model, data, ds, acc)
}

/// Put `fields` into a metrics row (an object).
pub fn merge(row: &mut Value, fields: Map<String, Value>) {
    if let Some(o) = row.as_object_mut() {
        o.extend(fields);
    }
}

/// The task metric of a (quantized, or exported and run) network on `test`: accuracy, or for
/// anomaly detection the AUC of per-clip scores (on the test split).
pub fn metric_value(
    q: &dyn Trainable,
    data: &DataSet,
    ds: &Dataset,
    test: &Split,
) -> Result<Option<f64>> {
    match ds.task {
        Task::Classification => {
            Ok(whittle_nn::train::evaluate(q, test, LossKind::CrossEntropy, 100)?.accuracy)
        }
        Task::AnomalyDetection => {
            let f = metric_fields(q, data, ds, None)?;
            Ok(f.get("test_auc").and_then(Value::as_f64))
        }
    }
}
