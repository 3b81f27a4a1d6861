//! The `import` stage kind: a network node from an ONNX file (a network trained elsewhere,
//! exported with `torch.onnx.export`, tf2onnx, …). `path` is relative to the experiment file
//! and its content hash joins the node key; the file is mapped by
//! [`whittle_export::onnx_import`] and then to a graph network ([`from_network`]), evaluated
//! on the data input's test and validation splits and saved like `train` saves, so `search`,
//! `prune`, `finetune`, `distill`, `quantize`, `export` and `calibrate` take it as they take a
//! trained network.
//!
//! Options: `input` (the data input's name when the graph has several inputs), `layout`
//! (`"nchw"`: items are fed in the network's channels-first layout; `"steps_features"`:
//! (steps, features) items are transposed for a network that reads (features, steps)), and
//! `bn_recalibrate` (re-estimate the batch-norm running statistics on the training split,
//! for a network whose statistics do not fit the data; weights stay as imported).
//!
//! A file ending in Softmax / LogSoftmax (Keras models, tf2onnx) imports without it (the
//! network gives logits, the argmax is the same); `source.final_softmax` in the metrics says
//! so. The memory need ([`StageKind::memory`]) is [`FILE_COPIES`] × the file's size plus the
//! data, so a file too big for the budget fails with the estimate before it is read; once
//! the file is parsed, the graph's evaluation at the stage's batch (weights, activations) is
//! added and checked against the budget too ([`parsed_need`]).

pub mod from_network;

use crate::common::{input_of_kind, load_data, model_row, with_threads};
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use whittle_engine::memory::human;
use whittle_engine::{InputArtifact, MemoryNeed, ParamError, RunContext, StageKind, from_params};
use whittle_export::{ImportOptions, import_onnx};
use whittle_nn::graph::Op;
use whittle_nn::loss::LossKind;
use whittle_nn::{DataSet, Model};

/// How data items relate to the imported network's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Items are in the network's (channels-first) layout, reshaped when only unit axes
    /// differ (a (49, 10) item for a (1, 49, 10) input).
    #[default]
    Nchw,
    /// Items are (steps, features); the network reads (features, steps).
    StepsFeatures,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    /// The ONNX file, relative to the experiment file.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(default)]
    pub layout: Layout,
    #[serde(default)]
    pub bn_recalibrate: bool,
    /// Batches of the evaluation and of the batch-norm re-estimation.
    #[serde(default = "hundred")]
    pub batch_size: usize,
    #[serde(default = "two")]
    pub threads: usize,
}

fn hundred() -> usize {
    100
}
fn two() -> usize {
    2
}

pub struct Import;

/// Copies of the file's size at the stage's peak (the file's bytes, decoded and folded
/// tensors, the mapped layers, the graph network's tensors, the model's parameters with their
/// random initialisation, the state written by `save`). Measured with `/usr/bin/time -v`
/// on `whittle run`: a 71.8 MiB file (an MLP of 18.8 M parameters) peaks at 519 MiB RSS, 482
/// MiB above the same run with a 49 kB file, i.e. 6.7 copies.
pub const FILE_COPIES: u64 = 7;

/// Where each `path` was found when its key was computed (`extra_key` knows the experiment
/// folder, `memory` does not): resolved parameters (JSON text) → the file.
fn located() -> &'static Mutex<HashMap<String, PathBuf>> {
    static MAP: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    MAP.get_or_init(Default::default)
}

/// The need of importing a file of `file_bytes` bytes with `data` bytes of data, before the
/// file is read (the evaluation's activations are checked once it is parsed:
/// [`parsed_need`]).
pub fn import_need(file: &str, file_bytes: u64, data: u64) -> MemoryNeed {
    let held = file_bytes.saturating_mul(FILE_COPIES);
    let bytes = (held.saturating_add(data) as f64 * crate::memory::HEADROOM).min(u64::MAX as f64);
    MemoryNeed {
        bytes: bytes as u64,
        detail: format!(
            "ONNX file `{file}` of {} held {FILE_COPIES}× while importing (bytes, decoded tensors, network, model, saved state) {}; data {}; activations of the evaluation checked once the file is parsed; × {} headroom",
            human(file_bytes),
            human(held),
            human(data),
            crate::memory::HEADROOM
        ),
    }
}

/// The need once the file is parsed: [`import_need`]'s copies of the file, the imported
/// graph evaluated at `batch` (weights and activations, [`whittle_nn::memory::inference`])
/// and the data.
pub fn parsed_need(
    file: &str,
    file_bytes: u64,
    graph: &whittle_nn::Graph,
    batch: usize,
    data: u64,
) -> MemoryNeed {
    let held = file_bytes.saturating_mul(FILE_COPIES);
    let eval = whittle_nn::memory::inference(graph, batch);
    let n = crate::memory::need(&[("evaluation", eval, batch)], data);
    let extra = (held as f64 * crate::memory::HEADROOM).min(u64::MAX as f64) as u64;
    MemoryNeed {
        bytes: n.bytes.saturating_add(extra),
        detail: format!(
            "ONNX file `{file}` of {} held {FILE_COPIES}× while importing {}; {}",
            human(file_bytes),
            human(held),
            n.detail
        ),
    }
}

/// The batch of the stage's passes: `batch_size`, at most the rows of the largest split it
/// evaluates (or re-estimates batch norm on).
fn pass_batch(p: &ImportParams, inputs: &[InputArtifact]) -> usize {
    let rows = |k: &str| {
        inputs
            .iter()
            .find(|i| i.kind == "fetch")
            .and_then(|f| f.metrics.get(k).and_then(Value::as_u64))
            .unwrap_or(0)
    };
    let mut most = rows("test").max(rows("val"));
    if p.bn_recalibrate {
        most = most.max(rows("train"));
    }
    match most {
        0 => p.batch_size,
        n => p.batch_size.min(n as usize),
    }
}

/// Fails when [`parsed_need`] exceeds the run's memory budget. Under `WHITTLE_MEMORY_LIMIT`
/// the whole need is compared with it; against what the system has available now (which
/// already excludes what this node holds) only what is still to be allocated, the
/// evaluation's activations.
fn check_parsed(need: &MemoryNeed, activations: u64) -> Result<()> {
    let Some(b) = whittle_engine::memory::budget()? else {
        return Ok(());
    };
    let whole = b.source.starts_with(whittle_engine::memory::LIMIT_VAR);
    let want = if whole {
        need.bytes
    } else {
        (activations as f64 * crate::memory::HEADROOM).min(u64::MAX as f64) as u64
    };
    ensure!(
        want <= b.bytes,
        "the imported network needs an estimated {} of memory {}({}), but only {} is available ({}); lower `batch_size`, or set {} if the estimate is wrong",
        human(want),
        if whole {
            ""
        } else {
            "more for the evaluation's activations "
        },
        need.detail,
        human(b.bytes),
        b.source,
        whittle_engine::memory::LIMIT_VAR
    );
    Ok(())
}

fn read(dir: &Path, path: &str) -> Result<Vec<u8>> {
    let abs = dir.join(path);
    std::fs::read(&abs)
        .with_context(|| format!("reading the ONNX file `{path}` ({})", abs.display()))
}

impl StageKind for Import {
    fn name(&self) -> &'static str {
        "import"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn resolve(&self, params: &toml::Table) -> Result<Value, ParamError> {
        let mut p: ImportParams = from_params(params)?;
        if p.path.trim().is_empty() {
            return Err(ParamError::new(["path"], "`path` must name an ONNX file"));
        }
        if p.batch_size == 0 {
            return Err(ParamError::new(["batch_size"], "`batch_size` must be ≥ 1"));
        }
        p.threads = p.threads.max(1);
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

    fn extra_key(&self, resolved: &Value, dir: &Path) -> Result<Vec<u8>> {
        let p: ImportParams = serde_json::from_value(resolved.clone())?;
        let hash = blake3::hash(&read(dir, &p.path)?);
        if let Ok(mut m) = located().lock() {
            m.insert(resolved.to_string(), dir.join(&p.path));
        }
        Ok(hash.as_bytes().to_vec())
    }

    /// [`import_need`] of the file found by `extra_key` (or `path` itself when absolute).
    fn memory(&self, resolved: &Value, inputs: &[InputArtifact]) -> Option<MemoryNeed> {
        let p: ImportParams = serde_json::from_value(resolved.clone()).ok()?;
        let file = match located().lock().ok()?.get(&resolved.to_string()) {
            Some(f) => f.clone(),
            None if Path::new(&p.path).is_absolute() => PathBuf::from(&p.path),
            None => return None,
        };
        let size = std::fs::metadata(&file).ok()?.len();
        Some(import_need(
            &p.path,
            size,
            crate::memory::data_bytes(inputs),
        ))
    }

    fn run(&self, ctx: &RunContext) -> Result<Value> {
        let p: ImportParams = serde_json::from_value(ctx.params.clone())?;
        with_threads(ctx.threads, || {
            let bytes = read(ctx.experiment_dir, &p.path)?;
            let file_bytes = bytes.len() as u64;
            let blake3 = blake3::hash(&bytes).to_hex().to_string();
            let opts = ImportOptions {
                input: p.input.clone(),
            };
            let mut imported = import_onnx(&bytes, &p.path, &opts)?;
            drop(bytes);
            let fetch = input_of_kind(ctx, &["fetch"])?;
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
            let transposed = imported.input_perm.as_deref() == Some(&[1, 0]);
            check_layout(
                &p.path,
                imported.network.input.1[1..].to_vec(),
                &shape,
                p.layout,
                transposed,
            )?;
            let (cfg, state) = from_network::to_config(&imported.network, classes)
                .with_context(|| format!("{}: mapping to the graph IR", p.path))?;
            imported.network.layers.clear();
            let model = from_network::model(cfg, &state)?;
            drop(state);
            let batch = pass_batch(&p, ctx.inputs);
            let need = parsed_need(
                &p.path,
                file_bytes,
                model.graph(),
                batch,
                crate::memory::data_bytes(ctx.inputs),
            );
            tracing::debug!("{}: memory need once parsed: {}", p.path, need.detail);
            let acts = whittle_nn::memory::inference(model.graph(), batch).activations;
            check_parsed(&need, acts).with_context(|| format!("{}: memory", p.path))?;
            if let Some(op) = &imported.final_softmax {
                tracing::info!(
                    "{}: the final {op} is dropped; the imported network gives its logits (same argmax)",
                    p.path
                );
            }
            let (data, _) = load_data(ctx, model.config())?;
            let recalibrated = if p.bn_recalibrate {
                Some(recalibrate_bn(&model, &data, p.batch_size)?)
            } else {
                None
            };
            let eval =
                |s: &Option<whittle_nn::Split>| -> Result<Option<whittle_nn::train::Metrics>> {
                    s.as_ref()
                        .map(|s| {
                            whittle_nn::train::evaluate(
                                &model,
                                s,
                                LossKind::CrossEntropy,
                                p.batch_size,
                            )
                        })
                        .transpose()
                };
            let (test, val) = (eval(&data.test)?, eval(&data.val)?);
            model.save(ctx.out_dir)?;
            let acc = test.as_ref().and_then(|m| m.accuracy);
            let mut row = model_row(&model, "import", None, acc);
            row["source"] = json!(p.path);
            tracing::info!(
                "imported {} ({} layers, {} parameters, opset {}): test accuracy {:?}",
                p.path,
                model.graph().nodes.len(),
                model.num_params(),
                imported.opset,
                acc
            );
            Ok(json!({
                "models": [row],
                "test": test,
                "val": val,
                "history": [],
                "source": {
                    "path": p.path,
                    "blake3": blake3,
                    "opset": imported.opset,
                    "final_softmax": imported.final_softmax,
                    "producer": imported.producer,
                    "input_transposed": imported.input_perm,
                },
                "bn_recalibrated_batches": recalibrated,
            }))
        })
    }
}

/// Checks that the data's items fit the network input (see [`Layout`]); `transposed`: the
/// file itself transposes its (steps, features) input.
pub fn check_layout(
    file: &str,
    want: Vec<usize>,
    item: &[usize],
    layout: Layout,
    transposed: bool,
) -> Result<()> {
    let swapped =
        matches!((want.as_slice(), item), ([f, s], [s2, f2]) if f == f2 && s == s2 && f != s);
    match layout {
        Layout::StepsFeatures => ensure!(
            swapped,
            "{file}: layout = \"steps_features\" needs a network reading (features, steps) items and data of (steps, features) items; the network reads {want:?}, the data has {item:?}"
        ),
        Layout::Nchw if swapped && !transposed => bail!(
            "{file}: the network reads {want:?} items, the data has {item:?}; set layout = \"steps_features\" to transpose (steps, features) items"
        ),
        Layout::Nchw => {
            let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
            ensure!(
                swapped || squeeze(&want) == squeeze(item),
                "{file}: the network reads items of shape {want:?}, the data set has items of shape {item:?}"
            );
        }
    }
    Ok(())
}

/// Re-estimates every batch norm's running statistics: train-mode passes over the training
/// split (in order; the graph has no dropout) until each statistic has seen every batch at
/// least once with momentum 0.1 weighting, i.e. at least 30 batches. Returns the batch count.
pub fn recalibrate_bn(model: &Model, data: &DataSet, batch_size: usize) -> Result<usize> {
    if !model
        .graph()
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::BatchNorm { .. }))
    {
        return Ok(0);
    }
    let n = data.train.len();
    ensure!(n > 0, "bn_recalibrate needs training data");
    let idx: Vec<u32> = (0..n as u32).collect();
    let per_pass = n.div_ceil(batch_size);
    let passes = 30usize.div_ceil(per_pass).max(1);
    let mut batches = 0;
    for _ in 0..passes {
        for chunk in idx.chunks(batch_size) {
            let (x, _) = data.train.batch(chunk)?;
            model.forward(&x, true)?;
            batches += 1;
        }
    }
    Ok(batches)
}

#[cfg(test)]
mod tests;
