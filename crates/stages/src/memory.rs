//! Peak-memory estimates of the stage kinds that build, train or evaluate networks
//! ([`whittle_engine::StageKind::memory`]), made when a node's inputs are complete: the network
//! comes from the stage's model spec and the data set's shape (the `fetch` input's metrics) or
//! from an input's saved `model.json`; the counts are `whittle_nn::memory`'s; the data set
//! counts twice (the loaded splits and their copy in the network's layout, see
//! `common::load_data`). The sum gets [`HEADROOM`] on top for what the counts leave out
//! (allocator slack, kernel scratch, evaluation passes).

/// Factor on the counted bytes. Measured (peak RSS above a cached run's 19 MiB, DS-CNN 256
/// channels, 240 rows): 332 MiB at batch 100 and 555 MiB at batch 200 against 267 and 523
/// MiB counted, so the counts alone under-estimate by up to a quarter.
pub const HEADROOM: f64 = 1.25;

use serde_json::Value;
use whittle_engine::memory::human;
use whittle_engine::{InputArtifact, MemoryNeed};
use whittle_nn::memory::{MemoryEstimate, inference, optimizer_slots, training};
use whittle_nn::{Graph, ModelConfig};

use crate::common::NETWORK_KINDS;
use crate::recipe::Recipe;

/// Item shape and class count of the `fetch` input.
pub fn data_shape(inputs: &[InputArtifact]) -> Option<(Vec<usize>, usize)> {
    let m = &inputs.iter().find(|i| i.kind == "fetch")?.metrics;
    let shape: Vec<usize> = serde_json::from_value(m.get("input_shape")?.clone()).ok()?;
    let classes = m.get("classes")?.as_array()?.len();
    Some((shape, classes))
}

/// Bytes of the `fetch` input's splits held while a node trains: two copies of the inputs
/// (f32) plus the labels (u32).
pub fn data_bytes(inputs: &[InputArtifact]) -> u64 {
    let Some(f) = inputs.iter().find(|i| i.kind == "fetch") else {
        return 0;
    };
    let Some((shape, _)) = data_shape(inputs) else {
        return 0;
    };
    let n: u64 = ["train", "val", "test"]
        .iter()
        .filter_map(|k| f.metrics.get(*k).and_then(Value::as_u64))
        .sum();
    let item = shape.iter().product::<usize>() as u64;
    n.saturating_mul(item.saturating_mul(2 * 4).saturating_add(4))
}

/// Training rows in the `fetch` input.
pub fn train_rows(inputs: &[InputArtifact]) -> u64 {
    inputs
        .iter()
        .find(|i| i.kind == "fetch")
        .and_then(|f| f.metrics.get("train").and_then(Value::as_u64))
        .unwrap_or(0)
}

/// The configuration saved in a network input's `model.json` (read without the weights).
pub fn saved_config(input: &InputArtifact) -> Option<ModelConfig> {
    let text = std::fs::read_to_string(input.dir.join(whittle_nn::model::CONFIG_FILE)).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    serde_json::from_value(v.get("config")?.clone()).ok()
}

/// Graphs of the network inputs, in input order.
pub fn input_graphs(inputs: &[InputArtifact]) -> Vec<Graph> {
    inputs
        .iter()
        .filter(|i| NETWORK_KINDS.contains(&i.kind.as_str()))
        .filter_map(|i| saved_config(i)?.build().ok())
        .collect()
}

/// The graph of the first network input.
pub fn first_input_graph(inputs: &[InputArtifact]) -> Option<Graph> {
    input_graphs(inputs).into_iter().next()
}

/// Training estimate of `graph` under `recipe`.
pub fn train_estimate(graph: &Graph, recipe: &Recipe) -> MemoryEstimate {
    training(
        graph,
        recipe.batch_size,
        optimizer_slots(&recipe.optimizer),
        recipe.keep_best,
    )
}

/// One line per part: `weights 1.2 GiB, gradients …, activations at batch 100 …, data …`.
fn describe(what: &str, e: &MemoryEstimate, batch: usize) -> String {
    let mut parts = vec![format!("weights {}", human(e.weights))];
    if e.gradients > 0 {
        parts.push(format!("gradients {}", human(e.gradients)));
    }
    if e.optimizer > 0 {
        parts.push(format!("optimizer state {}", human(e.optimizer)));
    }
    if e.copies > 0 {
        parts.push(format!("epoch-end copies {}", human(e.copies)));
    }
    parts.push(format!(
        "activations at batch {batch} {}",
        human(e.activations)
    ));
    if what.is_empty() {
        parts.join(", ")
    } else {
        format!("{what}: {}", parts.join(", "))
    }
}

/// The need of a node: estimates (label, estimate, batch) summed, plus `extra` bytes of data.
pub fn need(parts: &[(&str, MemoryEstimate, usize)], data: u64) -> MemoryNeed {
    let mut bytes = data;
    let mut detail: Vec<String> = Vec::new();
    for (what, e, batch) in parts {
        bytes = bytes.saturating_add(e.total());
        detail.push(describe(what, e, *batch));
    }
    if data > 0 {
        detail.push(format!("data {}", human(data)));
    }
    detail.push(format!("× {HEADROOM} headroom"));
    MemoryNeed {
        bytes: (bytes as f64 * HEADROOM).min(u64::MAX as f64) as u64,
        detail: detail.join("; "),
    }
}

/// The batch a training really uses: `batch_size`, at most the training rows (when known).
pub fn effective_batch(batch_size: usize, inputs: &[InputArtifact]) -> usize {
    match train_rows(inputs) {
        0 => batch_size,
        n => batch_size.min(n as usize),
    }
}

/// The need of a node that trains `graph` with `recipe` on the `fetch` input.
pub fn training_need(graph: &Graph, recipe: &Recipe, inputs: &[InputArtifact]) -> MemoryNeed {
    let batch = effective_batch(recipe.batch_size, inputs);
    let r = Recipe {
        batch_size: batch,
        ..recipe.clone()
    };
    need(
        &[("", train_estimate(graph, &r), batch)],
        data_bytes(inputs),
    )
}

/// The need of a node that evaluates each input network in turn at `batch` (the largest one).
pub fn evaluation_need(inputs: &[InputArtifact], batch: usize) -> Option<MemoryNeed> {
    let e = input_graphs(inputs)
        .iter()
        .map(|g| inference(g, batch))
        .max_by_key(MemoryEstimate::total)?;
    Some(need(&[("largest network", e, batch)], data_bytes(inputs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_spec::ModelSpec;

    fn fetch(train: u64, val: u64, test: u64) -> InputArtifact {
        InputArtifact {
            stage: "data".into(),
            node: "data".into(),
            kind: "fetch".into(),
            key: "k".into(),
            dir: "/nonexistent".into(),
            params: Value::Null,
            metrics: serde_json::json!({
                "input_shape": [49, 10],
                "classes": ["a", "b", "c"],
                "train": train, "val": val, "test": test,
            }),
        }
    }

    #[test]
    fn a_small_ds_cnn_training_need_matches_a_hand_count() {
        // DS-CNN, 4 channels, 1 block, on 1×49×10 items, 3 classes:
        // conv0 1→4 k10×4 s2 p(5,1): 4·40 + 4 = 164 params, out 4×25×5 = 500;
        // bn0 8 params + 8 buffers, out 500; relu0 in place;
        // dw 4·9 + 4 = 40 params, out 500; bn 8 (+8), out 500; relu in place;
        // pw 4·4 + 4 = 20 params, out 500; bn 8 (+8), out 500; relu in place;
        // pool out 4; fc 4·3 + 3 = 15 params, out 3.
        // params 164 + 8 + 40 + 8 + 20 + 8 + 15 = 263, buffers 24;
        // values 490 + 6·500 + 4 + 3 = 3,497; largest 500;
        // im2col: conv0 40·125 = 5,000 (dw 9·125, pw 4·125 smaller).
        let spec = ModelSpec::DsCnn {
            channels: 4,
            blocks: 1,
            pointwise_extra: false,
            dropout: None,
        };
        let g = spec.config(&[49, 10], 3).unwrap().build().unwrap();
        let recipe = Recipe {
            batch_size: 10,
            ..Recipe::default()
        };
        let inputs = [fetch(30, 6, 6)];
        let n = training_need(&g, &recipe, &inputs);
        let state = 263 + 24;
        let counted = 4 * state // weights
            + 4 * 263 // gradients
            + 4 * 2 * 263 // Adam
            + 4 * (state + 2 * 263 + state) // checkpoint snapshot + best copy
            + 4 * 10 * (3_497 + 2 * 500 + 5_000) // activations at batch 10
            + 42 * (490 * 8 + 4); // data: 42 rows, two f32 copies + u32 label
        assert_eq!(n.bytes, (counted as f64 * HEADROOM) as u64, "{}", n.detail);
        assert!(
            n.detail
                .starts_with("weights 1.1 KiB, gradients 1.0 KiB, optimizer state 2.1 KiB"),
            "{}",
            n.detail
        );
        assert!(
            n.detail.contains("activations at batch 10 "),
            "{}",
            n.detail
        );
    }
}
