//! The `prune` stage kind: structured channel pruning of a trained network (`method` = l1 |
//! bn_gamma | uniform | random | fisher, `ratio` of channels removed, `scope` = layer |
//! global), in the same exported-network format as PIT. `bn_gamma` first trains with an L1
//! penalty (`slim_lambda`) on the batch-norm scales using the recipe keys. `fisher` removes
//! channels greedily by the smallest Fisher importance on training minibatches:
//! `channels_per_step` channels (default 8) per estimate over `fisher_batches` minibatches
//! (default 2), then `finetune_steps` optimizer steps (default 4); it uses the recipe keys
//! `batch_size`, `lr`, `optimizer` and `loss`, and its `scope` defaults to global. The other
//! methods ignore the recipe apart from evaluation, and every method ignores the keys of the
//! others (so one stage can sweep over `method`).

use crate::common::{NETWORK_KINDS, input_of_kind, model_row, with_threads};
use crate::recipe::Recipe;
use crate::train::{fit, parse_with_recipe};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use whittle_engine::{InputArtifact, MemoryNeed, ParamError, RunContext, StageKind};
use whittle_nn::Model;
use whittle_nn::loss::LossKind;
use whittle_nn::prune::fisher::{FisherConfig, FisherHooks, fisher_prune};
use whittle_nn::prune::slimming::Slimming;
use whittle_nn::prune::{Method, Scope, prune};
use whittle_nn::{OptimizerConfig, Split};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    method: String,
    ratio: f64,
    /// Default: global for fisher, layer for the others.
    #[serde(default)]
    scope: Option<Scope>,
    /// bn_gamma: weight of Σ|γ| during the slimming training.
    #[serde(default = "slim")]
    slim_lambda: f64,
    /// fisher: channels removed per importance estimate.
    #[serde(default = "eight")]
    channels_per_step: i64,
    /// fisher: minibatches per importance estimate.
    #[serde(default = "two_i")]
    fisher_batches: i64,
    /// fisher: optimizer steps after each removal.
    #[serde(default = "four")]
    finetune_steps: i64,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default = "two")]
    threads: usize,
}

fn slim() -> f64 {
    1e-4
}
fn two() -> usize {
    2
}
fn two_i() -> i64 {
    2
}
fn four() -> i64 {
    4
}
fn eight() -> i64 {
    8
}

/// What fisher uses (so recipe keys it ignores do not enter the key).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct FisherParams {
    channels_per_step: usize,
    fisher_batches: usize,
    finetune_steps: usize,
    batch_size: usize,
    lr: f64,
    optimizer: OptimizerConfig,
    loss: LossKind,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Params {
    method: Method,
    ratio: f64,
    scope: Scope,
    slim_lambda: Option<f64>,
    seed: Option<u64>,
    threads: usize,
    /// Only for bn_gamma (the slimming training).
    recipe: Option<Recipe>,
    /// Only for fisher.
    #[serde(default)]
    fisher: Option<FisherParams>,
}

pub struct Prune;

impl StageKind for Prune {
    fn name(&self) -> &'static str {
        "prune"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let (own, recipe): (Own, Recipe) = parse_with_recipe(
            params,
            &[
                "method",
                "ratio",
                "scope",
                "slim_lambda",
                "channels_per_step",
                "fisher_batches",
                "finetune_steps",
                "seed",
                "threads",
            ],
        )?;
        let method = match own.method.as_str() {
            "l1" => Method::L1,
            "bn_gamma" => Method::BnGamma,
            "uniform" => Method::Uniform,
            "random" => Method::Random,
            "fisher" => Method::Fisher,
            m => {
                return Err(ParamError::new(
                    ["method"],
                    format!("unknown pruning method `{m}` (l1, bn_gamma, uniform, random, fisher)"),
                ));
            }
        };
        if !(0.0..1.0).contains(&own.ratio) {
            return Err(ParamError::new(
                ["ratio"],
                format!("ratio must be in [0, 1), got {}", own.ratio),
            ));
        }
        let slimming = method == Method::BnGamma;
        if slimming && !(own.slim_lambda.is_finite() && own.slim_lambda >= 0.0) {
            return Err(ParamError::new(
                ["slim_lambda"],
                "slim_lambda must be a number ≥ 0",
            ));
        }
        let fisher = if method == Method::Fisher {
            let count = |key: &str, v: i64, min: i64| -> Result<usize, ParamError> {
                if v < min {
                    return Err(ParamError::new(
                        [key],
                        format!("{key} must be an integer ≥ {min}, got {v}"),
                    ));
                }
                Ok(v as usize)
            };
            Some(FisherParams {
                channels_per_step: count("channels_per_step", own.channels_per_step, 1)?,
                fisher_batches: count("fisher_batches", own.fisher_batches, 1)?,
                finetune_steps: count("finetune_steps", own.finetune_steps, 0)?,
                batch_size: recipe.batch_size,
                lr: recipe.lr,
                optimizer: recipe.optimizer.clone(),
                loss: recipe.loss,
            })
        } else {
            None
        };
        let default_scope = if method == Method::Fisher {
            Scope::Global
        } else {
            Scope::Layer
        };
        let p = Params {
            method,
            ratio: own.ratio,
            scope: own.scope.unwrap_or(default_scope),
            slim_lambda: slimming.then_some(own.slim_lambda),
            seed: own.seed,
            threads: own.threads.max(1),
            recipe: slimming.then_some(recipe),
            fisher,
        };
        serde_json::to_value(p).map_err(|e| ParamError::new(Vec::<String>::new(), e.to_string()))
    }

    /// Methods that only rank and cut (l1, uniform, random) evaluate once: one thread is
    /// plenty; bn_gamma and fisher train, and get what `threads` asks for.
    fn threads(&self, resolved: &Value) -> usize {
        let asked = resolved.get("threads").and_then(Value::as_u64).unwrap_or(2) as usize;
        let trains = !resolved["recipe"].is_null() || !resolved["fisher"].is_null();
        if trains { asked } else { 1 }
    }

    /// Results do not depend on the thread count (the kernels split work in fixed chunks), so
    /// the scheduler may give it as few as one thread to run beside another node.
    fn min_threads(&self, _resolved: &Value) -> usize {
        1
    }

    /// bn_gamma: its slimming training; fisher: training at its batch size (gradients and
    /// optimizer steps); the others: evaluation of the input network.
    fn memory(&self, resolved: &Value, inputs: &[InputArtifact]) -> Option<MemoryNeed> {
        let p: Params = serde_json::from_value(resolved.clone()).ok()?;
        let g = crate::memory::first_input_graph(inputs)?;
        let data = crate::memory::data_bytes(inputs);
        Some(match (&p.recipe, &p.fisher) {
            (Some(r), _) => crate::memory::training_need(&g, r, inputs),
            (None, Some(f)) => {
                let slots = whittle_nn::memory::optimizer_slots(&f.optimizer);
                let e = whittle_nn::memory::training(&g, f.batch_size, slots, false);
                crate::memory::need(&[("", e, f.batch_size)], data)
            }
            (None, None) => {
                let batch = Recipe::default().batch_size;
                let e = whittle_nn::memory::inference(&g, batch);
                crate::memory::need(&[("", e, batch)], data)
            }
        })
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: Params = serde_json::from_value(ctx.params.clone())?;
        with_threads(ctx.threads, || {
            let parent = input_of_kind(ctx, &NETWORK_KINDS)?;
            let model = Model::load(&parent.dir)
                .with_context(|| format!("loading the network of `{}`", parent.node))?;
            let (data, ds) = crate::task::load_data(ctx, model.config())?;
            let seed = p.seed.unwrap_or(ctx.seed);
            let mut extra = json!({});
            if let (Method::BnGamma, Some(recipe), Some(lambda)) =
                (p.method, &p.recipe, p.slim_lambda)
            {
                let slim = Slimming {
                    model: &model,
                    lambda,
                };
                let r = fit(ctx, &slim, &data, recipe, seed)?;
                extra = json!({"slimming": {"history": r.history, "l1_gamma": slim.l1_gamma()?.to_scalar::<f32>()?}});
            }
            let (small, changes) = match &p.fisher {
                Some(f) => {
                    let (small, changes, steps) =
                        run_fisher(ctx, &model, &data.train, &p, f, seed)?;
                    extra = json!({"fisher": steps});
                    (small, changes)
                }
                None => prune(&model, p.method, p.ratio, p.scope, seed)?,
            };
            let mut eval_recipe = p.recipe.clone().unwrap_or_default();
            if let Some(f) = &p.fisher {
                eval_recipe.loss = f.loss;
                eval_recipe.batch_size = f.batch_size;
            }
            if ds.task == whittle_data::Task::AnomalyDetection {
                eval_recipe.loss = whittle_nn::loss::LossKind::Mse;
            }
            let fields = crate::task::score(&small, &data, &ds, &eval_recipe)?;
            let acc = fields.get("test_accuracy").and_then(Value::as_f64);
            small.save(ctx.out_dir)?;
            std::fs::write(
                ctx.out_dir.join("layers.json"),
                serde_json::to_string_pretty(&changes)?,
            )?;
            let method = serde_json::to_value(p.method)?;
            let mut row = model_row(
                &small,
                method.as_str().unwrap_or("prune"),
                Some(&parent.node),
                acc,
            );
            crate::task::merge(&mut row, fields);
            row["ratio"] = json!(p.ratio);
            row["scope"] = json!(p.scope);
            row["changes"] = json!(changes);
            Ok(json!({
                "models": [row],
                "parent": {"params": model.num_params(), "macs": model.macs()},
                "extra": extra,
            }))
        })
    }
}

/// Fisher pruning with the stage's progress and cancellation; per-step record for the metrics.
fn run_fisher(
    ctx: &RunContext,
    model: &Model,
    train: &Split,
    p: &Params,
    f: &FisherParams,
    seed: u64,
) -> Result<(Model, Vec<whittle_nn::pit::LayerChange>, Value)> {
    let cfg = FisherConfig {
        ratio: p.ratio,
        scope: p.scope,
        channels_per_step: f.channels_per_step,
        fisher_batches: f.fisher_batches,
        finetune_steps: f.finetune_steps,
        batch_size: f.batch_size,
        lr: f.lr,
        optimizer: f.optimizer.clone(),
        loss: f.loss,
        seed,
    };
    let cancel = || ctx.cancel.is_cancelled();
    let mut progress = |done: usize, total: usize| {
        ctx.progress.set_length(total as u64);
        ctx.progress.set_position(done as u64);
        ctx.progress
            .set_message(&format!("fisher: {done}/{total} channels removed"));
    };
    let r = fisher_prune(
        model,
        train,
        &cfg,
        FisherHooks {
            cancel: Some(&cancel),
            progress: Some(&mut progress),
        },
    )
    .context("fisher pruning")?;
    let removed: usize = r.steps.iter().map(|s| s.removed.len()).sum();
    let steps = json!({"removed": removed, "steps": r.steps, "kept": r.kept});
    Ok((r.model, r.changes, steps))
}

#[cfg(test)]
#[path = "prune_tests.rs"]
mod tests;
