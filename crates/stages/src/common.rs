//! Helpers shared by stage kinds: where downloads live, thread pools sized to the node's
//! budget, finding inputs, loading data for a network, the engine → nn checkpoint bridge, and
//! the `models` metrics row every network-producing node reports.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use whittle_engine::{Checkpoints, InputArtifact, RunContext};
use whittle_nn::{DataSet, Model, ModelConfig, Split};

/// Folder for downloaded archives, shared by all nodes of a cache (so a data set is never
/// downloaded twice): `<cache>/downloads`, derived from the node's pending output folder
/// `<cache>/pending/<key>/out`.
pub fn downloads_dir(ctx: &RunContext) -> PathBuf {
    ctx.out_dir
        .ancestors()
        .nth(3)
        .map(|c| c.join("downloads"))
        .unwrap_or_else(|| ctx.experiment_dir.join("downloads"))
}

/// Runs `f` inside a rayon pool with exactly `threads` threads, so a node never uses more
/// cores than the scheduler granted it; the pool's CPU time counts as the node's.
pub fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    whittle_engine::cpu::in_pool(threads, f)
}

/// The input produced by a stage of kind `kind` (the first one in `inputs` order).
pub fn input_of_kind<'a>(ctx: &'a RunContext, kinds: &[&str]) -> Result<&'a InputArtifact> {
    ctx.inputs
        .iter()
        .find(|i| kinds.contains(&i.kind.as_str()))
        .with_context(|| {
            format!(
                "stage `{}` needs an input of kind {}; its inputs are: {}",
                ctx.stage,
                kinds.join(" or "),
                ctx.inputs
                    .iter()
                    .map(|i| format!("{} ({})", i.node, i.kind))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Kinds whose output folder holds a network saved by `Model::save`.
pub const NETWORK_KINDS: [&str; 7] = [
    "train", "import", "search", "prune", "finetune", "distill", "qat",
];

/// Converts one data split to the layout a network expects: same values, items reshaped (and
/// for a TCN or a graph network on (steps, features) items, transposed to features × steps).
fn split_for(s: &whittle_data::Split, cfg: &ModelConfig) -> Result<Split> {
    let want = cfg.input_shape();
    let item: Vec<usize> = s.shape[1..].to_vec();
    let n = s.len();
    let per: usize = item.iter().product();
    if per != want.iter().product::<usize>() {
        bail!("the network expects items of shape {want:?}, the data set has {item:?}");
    }
    let x = match (cfg, item.as_slice()) {
        (ModelConfig::Tcn(_) | ModelConfig::Graph(_), [steps, feats])
            if want == vec![*feats, *steps] && steps != feats =>
        {
            let mut t = vec![0f32; s.x.len()];
            for i in 0..n {
                let src = &s.x[i * per..(i + 1) * per];
                let dst = &mut t[i * per..(i + 1) * per];
                for a in 0..*steps {
                    for b in 0..*feats {
                        dst[b * steps + a] = src[a * feats + b];
                    }
                }
            }
            t
        }
        _ => s.x.clone(),
    };
    Split::classes(x, &want, s.y.clone())
}

/// Loads the data set of the input `fetch` node in the layout of `cfg`.
pub fn load_data(ctx: &RunContext, cfg: &ModelConfig) -> Result<(DataSet, whittle_data::Dataset)> {
    let input = input_of_kind(ctx, &["fetch"])?;
    let ds = whittle_data::load(&input.dir)
        .with_context(|| format!("loading data set of `{}`", input.node))?;
    let data = DataSet {
        train: split_for(&ds.train, cfg).context("training split")?,
        val: if ds.val.is_empty() {
            None
        } else {
            Some(split_for(&ds.val, cfg).context("validation split")?)
        },
        test: if ds.test.is_empty() {
            None
        } else {
            Some(split_for(&ds.test, cfg).context("test split")?)
        },
    };
    Ok((data, ds))
}

/// Bridges the engine's checkpoint store to the training loop's sink (same shape).
pub struct Sink<'a>(pub &'a dyn Checkpoints);

impl whittle_nn::CheckpointSink for Sink<'_> {
    fn save(&self, step: u64, write: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
        self.0.save(step, write)
    }
    fn latest(&self) -> Option<(u64, PathBuf)> {
        self.0.latest()
    }
}

/// Largest number of activation values alive at once during a batch-1 forward pass: at
/// each node, its inputs and output plus every earlier value still needed later.
pub fn peak_activation_elems(model: &Model) -> u64 {
    let g = model.graph();
    let n = g.nodes.len();
    let size = |v: usize| -> u64 {
        if v == 0 {
            g.input_shape.iter().product::<usize>() as u64
        } else {
            g.nodes[v - 1].out_shape.iter().product::<usize>() as u64
        }
    };
    // last use of each value (value v = output of node v−1; value 0 = input)
    let mut last = vec![0usize; n + 1];
    for (i, node) in g.nodes.iter().enumerate() {
        for &v in &node.inputs {
            last[v] = last[v].max(i);
        }
    }
    last[n] = n; // the output stays
    (0..n)
        .map(|i| {
            // values alive while node i runs: produced before or by it, used at or after it
            (0..=i + 1)
                .filter(|&v| v == i + 1 || last[v] >= i)
                .map(size)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

/// Per-layer shape summary for reports (conv and linear layers).
pub fn layer_rows(model: &Model) -> Value {
    Value::Array(
        model
            .layers()
            .into_iter()
            .filter(|l| !matches!(l.kind, whittle_nn::LayerKind::BatchNorm))
            .map(|l| json!({ "name": l.name, "kind": l.kind, "c_in": l.c_in, "c_out": l.c_out, "kernel": l.kernel, "dilation": l.dilation, "params": l.params, "macs": l.macs }))
            .collect(),
    )
}

/// The `models` row of an fp32 network: sizes, accuracy, lineage, per-layer shapes.
pub fn model_row(
    model: &Model,
    method: &str,
    parent: Option<&str>,
    test_accuracy: Option<f64>,
) -> Value {
    let params = model.num_params();
    json!({
        "method": method,
        "arch": crate::model_spec::arch_of(model.config()),
        "format": "fp32",
        "params": params,
        "macs": model.macs(),
        "weight_bytes": 4 * params,
        "peak_activation_bytes": 4 * peak_activation_elems(model),
        "test_accuracy": test_accuracy,
        "parent": parent,
        "layers": layer_rows(model),
    })
}
