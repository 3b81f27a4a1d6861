//! The `search` stage kind (method `pit`): loads a warmed-up seed network, trains weights and
//! PIT masks jointly on task loss + λ·cost (separate optimizers and learning rates, early stop
//! on validation task loss), exports the physically smaller network (`Model::save` format)
//! and reports it with per-layer before/after. The warm-up is an input, so a λ sweep shares it.
//! A search whose history shows divergence (an epoch loss over 1000× the first epoch's, or a
//! final validation accuracy at chance with a loss that did not fall) fails unless `allow_divergence = true`; a non-finite
//! loss always fails (the search loop stops there).

use crate::common::{NETWORK_KINDS, input_of_kind, model_row, with_threads};
use crate::recipe::Recipe;
use crate::train::parse_with_recipe;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use whittle_engine::{InputArtifact, MemoryNeed, ParamError, RunContext, StageKind};
use whittle_nn::pit::{Cost, PitModel, SearchConfig, search};
use whittle_nn::train::evaluate;
use whittle_nn::{Model, OptimizerConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMethod {
    Pit,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    method: SearchMethod,
    lambda: f64,
    #[serde(default)]
    cost: Cost,
    /// Learning rate of the masks (the recipe's `lr` is the weights').
    #[serde(default = "lr_masks")]
    lr_masks: f64,
    /// Search receptive field and dilation of causal Conv1d layers too.
    #[serde(default = "yes")]
    time_masks: bool,
    /// Keep the weights and masks of the epoch with the best validation task loss instead of
    /// the last epoch's (off by default: see crates/nn/src/pit/search.rs).
    #[serde(default)]
    restore_best: bool,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default = "two")]
    threads: usize,
}

fn lr_masks() -> f64 {
    1e-3
}
fn yes() -> bool {
    true
}
fn two() -> usize {
    2
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Params {
    #[serde(flatten)]
    own: Own,
    recipe: Recipe,
}

pub struct Search;

/// The first sign of divergence in a per-epoch history: an epoch's mean training loss over
/// [`whittle_nn::divergence::GROWTH`] × the first epoch's, or a last epoch at chance on the
/// validation split (the training split without one) with a loss not below the first epoch's.
pub fn history_divergence(
    history: &[whittle_nn::train::EpochRecord],
    classes: usize,
    data: &whittle_nn::DataSet,
) -> Option<whittle_nn::divergence::Divergence> {
    use whittle_nn::divergence::{check_chance, check_loss};
    let first = history.first()?.train.loss;
    if let Some(d) = history
        .iter()
        .skip(1)
        .find_map(|h| check_loss(h.epoch, h.train.loss, first))
    {
        return Some(d);
    }
    let last = history.last()?;
    let (l, f) = (last.train.loss, first);
    match (&last.val, &data.val) {
        (Some(m), Some(v)) => check_chance(m.accuracy?, classes, "validation", v.len(), f, l),
        _ => check_chance(
            last.train.accuracy?,
            classes,
            "training",
            data.train.len(),
            f,
            l,
        ),
    }
}

/// Test accuracy (eval mode) of a network on the test split, if there is one.
pub fn test_accuracy(
    model: &dyn whittle_nn::Trainable,
    data: &whittle_nn::DataSet,
    recipe: &Recipe,
) -> Result<Option<f64>> {
    Ok(match &data.test {
        Some(t) => evaluate(model, t, recipe.loss, recipe.batch_size)?.accuracy,
        None => None,
    })
}

impl StageKind for Search {
    fn name(&self) -> &'static str {
        "search"
    }

    fn version(&self) -> &'static str {
        "3" // 2: the last epoch's masks are kept unless `restore_best`; 3: global average pooling by the kernel (one interpreter)
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let (own, recipe): (Own, Recipe) = parse_with_recipe(
            params,
            &[
                "method",
                "lambda",
                "cost",
                "lr_masks",
                "time_masks",
                "restore_best",
                "seed",
                "threads",
            ],
        )?;
        if !(own.lambda.is_finite() && own.lambda >= 0.0) {
            return Err(ParamError::new(
                ["lambda"],
                format!("lambda must be a number ≥ 0, got {}", own.lambda),
            ));
        }
        if !(own.lr_masks.is_finite() && own.lr_masks > 0.0) {
            return Err(ParamError::new(
                ["lr_masks"],
                "lr_masks must be a positive number",
            ));
        }
        let mut own = own;
        own.threads = own.threads.max(1);
        serde_json::to_value(Params { own, recipe })
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

    /// The seed network's training, plus its masked weights (one more copy of the weights).
    fn memory(&self, resolved: &Value, inputs: &[InputArtifact]) -> Option<MemoryNeed> {
        let p: Params = serde_json::from_value(resolved.clone()).ok()?;
        let g = crate::memory::first_input_graph(inputs)?;
        let mut e = crate::memory::train_estimate(&g, &p.recipe);
        e.weights = e.weights.saturating_mul(2);
        Some(crate::memory::need(
            &[("", e, p.recipe.batch_size)],
            crate::memory::data_bytes(inputs),
        ))
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: Params = serde_json::from_value(ctx.params.clone())?;
        with_threads(ctx.threads, || {
            let parent = input_of_kind(ctx, &NETWORK_KINDS)?;
            let seed_model = Model::load(&parent.dir)
                .with_context(|| format!("loading the seed network of `{}`", parent.node))?;
            let (data, ds) = crate::task::load_data(ctx, seed_model.config())?;
            crate::task::check_loss(&ds, p.recipe.loss, ctx.stage)?;
            let seed_row = model_row(&seed_model, "seed", None, None);
            let classes = seed_model
                .graph()
                .nodes
                .last()
                .and_then(|n| n.out_shape.first().copied())
                .unwrap_or(0);
            let pit = PitModel::new(seed_model, p.own.cost, p.own.lambda, p.own.time_masks)?;
            let cfg = SearchConfig {
                epochs: p.recipe.epochs,
                batch_size: p.recipe.batch_size,
                lr_weights: p.recipe.lr,
                lr_masks: p.own.lr_masks,
                schedule: p.recipe.schedule.clone(),
                optimizer: p.recipe.optimizer.clone(),
                mask_optimizer: OptimizerConfig::adam(0.0),
                patience: p.recipe.patience,
                restore_best: p.own.restore_best,
                seed: p.own.seed.unwrap_or(ctx.seed),
                augment: p.recipe.augment.clone(),
            };
            let cancel = || ctx.cancel.is_cancelled();
            ctx.progress.set_length(cfg.epochs);
            let mut progress = |epoch: u64, cost: f64| {
                ctx.progress.set_position(epoch + 1);
                ctx.progress.set_message(&format!(
                    "epoch {}/{} cost {cost:.0}",
                    epoch + 1,
                    cfg.epochs
                ));
            };
            let result = search(&pit, &data, &cfg, &cancel, &mut progress)?;
            let diverged = history_divergence(&result.history, classes, &data);
            if let (Some(d), false) = (&diverged, p.recipe.allow_divergence) {
                anyhow::bail!(
                    "search {d}; set `allow_divergence = true` on stage `{}` to keep such a result",
                    ctx.stage
                );
            }
            let masked = crate::task::score(&pit, &data, &ds, &p.recipe)?;
            let masked_acc = masked.get("test_accuracy").and_then(Value::as_f64);
            let layer_costs = pit.layer_costs()?;
            let (small, changes) = pit.export()?;
            let fields = crate::task::score(&small, &data, &ds, &p.recipe)?;
            let acc = fields.get("test_accuracy").and_then(Value::as_f64);
            small.save(ctx.out_dir)?;
            std::fs::write(
                ctx.out_dir.join("layers.json"),
                serde_json::to_string_pretty(&changes)?,
            )?;
            let mut row = model_row(&small, "pit", Some(&parent.node), acc);
            crate::task::merge(&mut row, fields);
            row["lambda"] = json!(p.own.lambda);
            row["cost"] = json!(p.own.cost);
            row["changes"] = json!(changes);
            let mut m = json!({
                "models": [row],
                "seed": {"params": seed_row["params"], "macs": seed_row["macs"]},
                "masked_test_accuracy": masked_acc,
                "best_epoch": result.best_epoch,
                "stopped_early": result.stopped_early,
                "history": result.history,
                "cost_history": result.cost_history,
                "layer_costs": layer_costs.iter().map(|c| json!({"name": c.name, "size": c.size, "macs": c.macs})).collect::<Vec<_>>(),
            });
            if let Some(d) = diverged {
                m["diverged"] = json!(d.to_string());
            }
            if let Some(auc) = masked.get("test_auc") {
                m["masked_test_auc"] = auc.clone();
            }
            Ok(m)
        })
    }
}
