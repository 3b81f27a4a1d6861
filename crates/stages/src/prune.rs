//! The `prune` stage kind: structured channel pruning of a trained network (`method` = l1 |
//! bn_gamma | uniform | random, `ratio` of channels removed, `scope` = layer | global), in
//! the same exported-network format as PIT. `bn_gamma` first trains with an L1 penalty
//! (`slim_lambda`) on the batch-norm scales using the recipe keys; the other methods ignore
//! the recipe apart from evaluation.

use crate::common::{NETWORK_KINDS, input_of_kind, load_data, model_row, with_threads};
use crate::recipe::Recipe;
use crate::search::test_accuracy;
use crate::train::{fit, parse_with_recipe};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use whittle_engine::{ParamError, RunContext, StageKind};
use whittle_nn::Model;
use whittle_nn::prune::slimming::Slimming;
use whittle_nn::prune::{Method, Scope, prune};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    method: String,
    ratio: f64,
    #[serde(default)]
    scope: Scope,
    /// bn_gamma: weight of Σ|γ| during the slimming training.
    #[serde(default = "slim")]
    slim_lambda: f64,
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
            &["method", "ratio", "scope", "slim_lambda", "seed", "threads"],
        )?;
        let method = match own.method.as_str() {
            "l1" => Method::L1,
            "bn_gamma" => Method::BnGamma,
            "uniform" => Method::Uniform,
            "random" => Method::Random,
            "fisher" => {
                return Err(ParamError::new(
                    ["method"],
                    "method `fisher` is not implemented yet (use l1, bn_gamma, uniform or random)",
                ));
            }
            m => {
                return Err(ParamError::new(
                    ["method"],
                    format!("unknown pruning method `{m}` (l1, bn_gamma, uniform, random)"),
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
        let p = Params {
            method,
            ratio: own.ratio,
            scope: own.scope,
            slim_lambda: slimming.then_some(own.slim_lambda),
            seed: own.seed,
            threads: own.threads.max(1),
            recipe: slimming.then_some(recipe),
        };
        serde_json::to_value(p).map_err(|e| ParamError::new(Vec::<String>::new(), e.to_string()))
    }

    fn threads(&self, resolved: &Value) -> usize {
        resolved.get("threads").and_then(Value::as_u64).unwrap_or(2) as usize
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: Params = serde_json::from_value(ctx.params.clone())?;
        with_threads(ctx.threads, || {
            let parent = input_of_kind(ctx, &NETWORK_KINDS)?;
            let model = Model::load(&parent.dir)
                .with_context(|| format!("loading the network of `{}`", parent.node))?;
            let (data, _) = load_data(ctx, model.config())?;
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
            let (small, changes) = prune(&model, p.method, p.ratio, p.scope, seed)?;
            let eval_recipe = p.recipe.clone().unwrap_or_default();
            let acc = test_accuracy(&small, &data, &eval_recipe)?;
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
