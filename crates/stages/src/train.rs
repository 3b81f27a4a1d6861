//! The `train` stage kind: trains a network from its configuration on the input data set (the
//! warm-up of a seed network, or any baseline), with epoch-end checkpoints so an interrupted
//! run resumes to the same weights. Output: the network (`Model::save` format) + history.

use crate::common::{Sink, model_row, with_threads};
use crate::model_spec::ModelSpec;
use crate::recipe::Recipe;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use whittle_engine::{InputArtifact, MemoryNeed, ParamError, RunContext, StageKind, from_params};
use whittle_nn::Model;
use whittle_nn::divergence::OnDivergence;
use whittle_nn::train::{Hooks, Progress, TrainError};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    pub model: ModelSpec,
    #[serde(flatten)]
    pub recipe: Recipe,
    /// Overrides the experiment seed for this network's initialisation and data order (for
    /// repeated runs over several seeds).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Threads for this node (counted against `--jobs`).
    #[serde(default = "two")]
    pub threads: usize,
}

fn two() -> usize {
    2
}

/// Splits a stage table into the recipe keys and the rest, so unknown keys are still errors
/// (serde's `flatten` cannot deny unknown fields).
pub fn parse_with_recipe<T: serde::de::DeserializeOwned>(
    params: &toml::Table,
    own: &[&str],
) -> Result<(T, Recipe), ParamError> {
    let mut mine = toml::Table::new();
    let mut recipe = toml::Table::new();
    for (k, v) in params {
        if own.contains(&k.as_str()) {
            mine.insert(k.clone(), v.clone());
        } else {
            recipe.insert(k.clone(), v.clone());
        }
    }
    let r: Recipe = from_params(&recipe)?;
    r.validate()
        .map_err(|m| ParamError::new(Vec::<String>::new(), m))?;
    Ok((from_params(&mine)?, r))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    model: ModelSpec,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default = "two")]
    threads: usize,
}

pub struct Train;

/// Trains `model` with `recipe` in the node's context (checkpoints, cancellation, progress).
/// A diverged training is an error naming the epoch and the loss (or the chance accuracy),
/// unless the recipe says `allow_divergence`: then [`whittle_nn::TrainResult::diverged`]
/// says what happened (see [`diverged_metrics`]).
pub fn fit(
    ctx: &RunContext,
    model: &dyn whittle_nn::Trainable,
    data: &whittle_nn::DataSet,
    recipe: &Recipe,
    seed: u64,
) -> Result<whittle_nn::TrainResult> {
    let sink = Sink(ctx.checkpoints);
    let cancel = || ctx.cancel.is_cancelled();
    let mut progress = |p: &Progress| {
        ctx.progress.set_length(p.epochs * p.batches as u64);
        ctx.progress
            .set_position(p.epoch * p.batches as u64 + p.batch as u64);
        ctx.progress.set_message(&format!(
            "epoch {}/{} loss {:.4}",
            p.epoch + 1,
            p.epochs,
            p.loss
        ));
    };
    let hooks = Hooks {
        checkpoints: Some(&sink),
        cancel: Some(&cancel),
        progress: Some(&mut progress),
    };
    let on = if recipe.allow_divergence {
        OnDivergence::Allow
    } else {
        OnDivergence::Fail
    };
    whittle_nn::train_with(model, data, &recipe.train_config(seed), hooks, on).map_err(|e| {
        match e.downcast_ref::<TrainError>() {
            Some(TrainError::Divergence(d)) => anyhow::anyhow!(
                "training {d}; set `allow_divergence = true` on stage `{}` to keep such a result",
                ctx.stage
            ),
            _ => e,
        }
    })
}

/// Adds `"diverged": "<message>"` to a node's metrics when its training diverged (only
/// possible with `allow_divergence`); the report lists it as a warning.
pub fn diverged_metrics(metrics: &mut Value, result: &whittle_nn::TrainResult) {
    if let Some(d) = &result.diverged {
        metrics["diverged"] = json!(d.to_string());
    }
}

impl StageKind for Train {
    fn name(&self) -> &'static str {
        "train"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let (own, recipe): (Own, Recipe) =
            parse_with_recipe(params, &["model", "seed", "threads"])?;
        own.model.validate_at("model")?;
        let p = TrainParams {
            model: own.model,
            recipe,
            seed: own.seed,
            threads: own.threads.max(1),
        };
        serde_json::to_value(p).map_err(|e| ParamError::new(Vec::<String>::new(), e.to_string()))
    }

    fn threads(&self, resolved: &Value) -> usize {
        resolved.get("threads").and_then(Value::as_u64).unwrap_or(2) as usize
    }

    /// Results do not depend on the thread count (the kernels split work in fixed chunks), so
    /// the scheduler may give it as few as one thread to run beside another node.
    fn min_threads(&self, _resolved: &Value) -> usize {
        1
    }

    fn memory(&self, resolved: &Value, inputs: &[InputArtifact]) -> Option<MemoryNeed> {
        let p: TrainParams = serde_json::from_value(resolved.clone()).ok()?;
        let (shape, classes) = crate::memory::data_shape(inputs)?;
        let g = p.model.config(&shape, classes).ok()?.build().ok()?;
        Some(crate::memory::training_need(&g, &p.recipe, inputs))
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: TrainParams = serde_json::from_value(ctx.params.clone())?;
        with_threads(ctx.threads, || {
            let fetch = crate::common::input_of_kind(ctx, &["fetch"])?;
            let shape: Vec<usize> = fetch
                .metrics
                .get("input_shape")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .context("data input has no input_shape")?;
            let classes = fetch
                .metrics
                .get("classes")
                .and_then(Value::as_array)
                .map(Vec::len)
                .context("data input has no classes")?;
            let cfg = p.model.config(&shape, classes)?;
            let (data, ds) = crate::task::load_data(ctx, &cfg)?;
            crate::task::check_loss(&ds, p.recipe.loss, ctx.stage)?;
            let seed = p.seed.unwrap_or(ctx.seed);
            let model = Model::new(cfg, seed)?;
            let result = fit(ctx, &model, &data, &p.recipe, seed)?;
            model.save(ctx.out_dir)?;
            let acc = result.test.and_then(|m| m.accuracy);
            let mut row = model_row(&model, "train", None, acc);
            crate::task::merge(
                &mut row,
                crate::task::metric_fields(&model, &data, &ds, acc)?,
            );
            row["seed"] = json!(seed);
            let mut m = json!({
                "models": [row],
                "test": result.test,
                "val": result.val,
                "best_epoch": result.best_epoch,
                "stopped_early": result.stopped_early,
                "history": result.history,
            });
            diverged_metrics(&mut m, &result);
            Ok(m)
        })
    }
}
