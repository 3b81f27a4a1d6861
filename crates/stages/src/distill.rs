//! The `distill` stage kind: trains a student network (a model configuration) from a teacher
//! network (any trained, searched, pruned or distilled node) with the knowledge-distillation
//! loss of spec §5. A chain of teacher assistants is a chain of distill stages (teacher → ta →
//! student), written out or declared with `assistants = [...]` / `"auto"` (see
//! `assistants.rs`), each cached on its own, so adding an assistant or changing the student
//! reuses the unchanged prefix. The teacher's logits on the training
//! inputs are computed once per (teacher, data) pair and kept in the cache's `artifacts/`.

use crate::common::{NETWORK_KINDS, input_of_kind, load_data, model_row, with_threads};
use crate::model_spec::ModelSpec;
use crate::recipe::Recipe;
use crate::train::{diverged_metrics, fit, parse_with_recipe};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use whittle_engine::{InputArtifact, MemoryNeed, ParamError, RunContext, StageKind};
use whittle_nn::Model;
use whittle_nn::data::Targets;
use whittle_nn::distill::KdConfig;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    student: ModelSpec,
    #[serde(default = "t2")]
    temperature: f64,
    /// λ: weight of the hard-label cross-entropy (002 chose 0.2 with T = 2).
    #[serde(default = "a02")]
    alpha: f64,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default = "two")]
    threads: usize,
}

fn t2() -> f64 {
    2.0
}
fn a02() -> f64 {
    0.2
}
fn two() -> usize {
    2
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct DistillParams {
    student: ModelSpec,
    temperature: f64,
    alpha: f64,
    seed: Option<u64>,
    threads: usize,
    recipe: Recipe,
}

pub struct Distill;

/// Logits of `model` (eval mode) for every row of `x`, in batches.
fn logits(model: &Model, x: &Tensor) -> Result<Tensor> {
    let n = x.dims()[0];
    let mut parts = Vec::new();
    let mut i = 0;
    while i < n {
        let len = 500.min(n - i);
        parts.push(model.forward(&x.narrow(0, i, len)?, false)?.detach());
        i += len;
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// The file of the teacher's training-set logits, relative to the cache root (keyed by the
/// teacher's and the data's node keys): what [`Distill::shared_files`] names for `gc`.
pub fn teacher_logits_file(teacher_key: &str, data_key: &str) -> String {
    format!(
        "artifacts/teacher_logits-{}-{}.safetensors",
        &teacher_key[..16.min(teacher_key.len())],
        &data_key[..16.min(data_key.len())]
    )
}

/// The teacher's training-set logits, from `<cache>/artifacts/` when already computed.
fn teacher_logits(
    ctx: &RunContext,
    teacher_key: &str,
    data_key: &str,
    compute: impl FnOnce() -> Result<Tensor>,
) -> Result<Tensor> {
    let downloads = crate::common::downloads_dir(ctx);
    let root = downloads.parent().unwrap_or(&downloads);
    let path = root.join(teacher_logits_file(teacher_key, data_key));
    let dir = path.parent().unwrap_or(root).to_path_buf();
    if let Ok(m) = candle_core::safetensors::load(&path, &Device::Cpu) {
        if let Some(t) = m.get("logits") {
            tracing::debug!("teacher logits from {}", path.display());
            return Ok(t.clone());
        }
    }
    let t = compute()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    candle_core::safetensors::save(&HashMap::from([("logits".to_string(), t.clone())]), &tmp)?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(t)
}

impl StageKind for Distill {
    fn name(&self) -> &'static str {
        "distill"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let (own, recipe): (Own, Recipe) = parse_with_recipe(
            params,
            &["student", "temperature", "alpha", "seed", "threads"],
        )?;
        own.student.validate_at("student")?;
        if !recipe.augment.is_off() {
            // the teacher's logits are computed once per data set, on the stored items
            return Err(ParamError::new(
                ["augment"],
                "distillation with augmentation is not supported yet: the teacher's logits are cached for the un-augmented training items; train the student without `augment`",
            ));
        }
        KdConfig {
            alpha: own.alpha,
            temperature: own.temperature,
        }
        .validate()
        .map_err(|e| ParamError::new(Vec::<String>::new(), format!("{e:#}")))?;
        let p = DistillParams {
            student: own.student,
            temperature: own.temperature,
            alpha: own.alpha,
            seed: own.seed,
            threads: own.threads.max(1),
            recipe,
        };
        serde_json::to_value(p).map_err(|e| ParamError::new(Vec::<String>::new(), e.to_string()))
    }

    fn expand(
        &self,
        params: &toml::Table,
        ctx: &whittle_engine::ExpandContext,
    ) -> Result<Option<whittle_engine::Expansion>, ParamError> {
        crate::assistants::expand(params, ctx)
    }

    fn threads(&self, resolved: &Value) -> usize {
        resolved.get("threads").and_then(Value::as_u64).unwrap_or(2) as usize
    }

    /// Results do not depend on the thread count (the kernels split work in fixed chunks), so
    /// the scheduler may give it as few as one thread to run beside another node.
    fn min_threads(&self, _resolved: &Value) -> usize {
        1
    }

    /// The teacher's logits: the first network input and the first `fetch` input, as `run`
    /// picks them.
    fn shared_files(&self, _resolved: &Value, inputs: &[(&str, &str)]) -> Vec<String> {
        let first = |kinds: &[&str]| inputs.iter().find(|(k, _)| kinds.contains(k)).map(|i| i.1);
        match (first(&NETWORK_KINDS), first(&["fetch"])) {
            (Some(teacher), Some(data)) => vec![teacher_logits_file(teacher, data)],
            _ => Vec::new(),
        }
    }

    /// The student's training, next to the teacher evaluated in batches of 500, its logits on
    /// the training rows, and the data a second time in the teacher's layout.
    fn memory(&self, resolved: &Value, inputs: &[InputArtifact]) -> Option<MemoryNeed> {
        let p: DistillParams = serde_json::from_value(resolved.clone()).ok()?;
        let (shape, classes) = crate::memory::data_shape(inputs)?;
        let student = p.student.config(&shape, classes).ok()?.build().ok()?;
        let teacher = crate::memory::first_input_graph(inputs)?;
        let logits = 4 * classes as u64 * crate::memory::train_rows(inputs);
        Some(crate::memory::need(
            &[
                (
                    "student",
                    crate::memory::train_estimate(&student, &p.recipe),
                    p.recipe.batch_size,
                ),
                ("teacher", whittle_nn::memory::inference(&teacher, 500), 500),
            ],
            2 * crate::memory::data_bytes(inputs) + logits,
        ))
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: DistillParams = serde_json::from_value(ctx.params.clone())?;
        with_threads(ctx.threads, || {
            let teacher_in = input_of_kind(ctx, &NETWORK_KINDS)?;
            let fetch = input_of_kind(ctx, &["fetch"])?;
            let teacher = Model::load(&teacher_in.dir)
                .with_context(|| format!("loading teacher `{}`", teacher_in.node))?;
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
            let cfg = p.student.config(&shape, classes)?;
            let (mut data, _) = load_data(ctx, &cfg)?;
            let zt = teacher_logits(ctx, &teacher_in.key, &fetch.key, || {
                let (tdata, _) = load_data(ctx, teacher.config())?;
                logits(&teacher, &tdata.train.x)
            })?;
            let kd = KdConfig {
                alpha: p.alpha,
                temperature: p.temperature,
            };
            let labels = match &data.train.y {
                Targets::Classes(t) => t.clone(),
                _ => anyhow::bail!("distillation needs class labels"),
            };
            data.train.y = Targets::Distill {
                labels,
                teacher: zt,
                kd,
            };
            let seed = p.seed.unwrap_or(ctx.seed);
            let student = Model::new(cfg, seed)?;
            let result = fit(ctx, &student, &data, &p.recipe, seed)?;
            student.save(ctx.out_dir)?;
            let acc = result.test.and_then(|m| m.accuracy);
            let mut row = model_row(&student, "kd", None, acc);
            row["teacher"] = json!(teacher_in.node);
            row["temperature"] = json!(p.temperature);
            row["alpha"] = json!(p.alpha);
            row["seed"] = json!(seed);
            let mut m = json!({
                "models": [row],
                "teacher_params": teacher.num_params(),
                "test": result.test,
                "val": result.val,
                "best_epoch": result.best_epoch,
                "history": result.history,
            });
            diverged_metrics(&mut m, &result);
            Ok(m)
        })
    }
}
