//! The `finetune` stage kind: trains an exported (searched or pruned) network with the recipe
//! keys, starting from its inherited weights (`init = "inherit"`) or from a fresh seeded
//! initialisation of the same shape (`init = "scratch"`). The output row keeps the parent's
//! method and its λ / ratio so reports group fine-tuned points with their method.

use crate::common::{NETWORK_KINDS, input_of_kind, model_row, with_threads};
use crate::recipe::Recipe;
use crate::train::{diverged_metrics, fit, parse_with_recipe};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use whittle_engine::{InputArtifact, MemoryNeed, ParamError, RunContext, StageKind};
use whittle_nn::Model;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    #[default]
    Inherit,
    Scratch,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    #[serde(default)]
    init: Init,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default = "two")]
    threads: usize,
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

pub struct Finetune;

impl StageKind for Finetune {
    fn name(&self) -> &'static str {
        "finetune"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let (mut own, recipe): (Own, Recipe) =
            parse_with_recipe(params, &["init", "seed", "threads"])?;
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

    fn memory(&self, resolved: &Value, inputs: &[InputArtifact]) -> Option<MemoryNeed> {
        let p: Params = serde_json::from_value(resolved.clone()).ok()?;
        let g = crate::memory::first_input_graph(inputs)?;
        Some(crate::memory::training_need(&g, &p.recipe, inputs))
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: Params = serde_json::from_value(ctx.params.clone())?;
        with_threads(ctx.threads, || {
            let parent = input_of_kind(ctx, &NETWORK_KINDS)?;
            let loaded = Model::load(&parent.dir)
                .with_context(|| format!("loading the network of `{}`", parent.node))?;
            let seed = p.own.seed.unwrap_or(ctx.seed);
            let model = match p.own.init {
                Init::Inherit => loaded,
                Init::Scratch => Model::new(loaded.config().clone(), seed)?,
            };
            let (data, ds) = crate::task::load_data(ctx, model.config())?;
            crate::task::check_loss(&ds, p.recipe.loss, ctx.stage)?;
            let result = fit(ctx, &model, &data, &p.recipe, seed)?;
            model.save(ctx.out_dir)?;
            let acc = result.test.and_then(|m| m.accuracy);
            let fields = crate::task::metric_fields(&model, &data, &ds, acc)?;
            let prow = parent
                .metrics
                .get("models")
                .and_then(|m| m.get(0))
                .cloned()
                .unwrap_or(json!({}));
            let method = prow
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or("finetune")
                .to_string();
            let mut row = model_row(&model, &method, Some(&parent.node), acc);
            crate::task::merge(&mut row, fields);
            for k in ["lambda", "ratio", "cost", "scope"] {
                if let Some(v) = prow.get(k) {
                    row[k] = v.clone();
                }
            }
            row["init"] = json!(p.own.init);
            row["stage"] = json!("finetune");
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
