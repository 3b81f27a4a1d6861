//! The one int8 network of a (network, calibration) pair (issue 22): the calibration set — a
//! seeded, stratified choice of training items, not the first N — the int8 parameters the
//! `quantize` stage evaluates and the `export` stage writes into the ONNX QDQ and C files, and
//! the `int8.json` file a network directory carries when its quantizers were trained (QAT).
//!
//! Both stages call [`int8_model`] with the same data, count, observer and experiment seed, so
//! they compute the same quantizers bit for bit; [`export_params`] names them as the exported
//! tensors are named (`whittle_export::Int8Params`).

use anyhow::{Context, Result, ensure};
use candle_core::Tensor;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use whittle_export::{ActQuant as ExportQuant, Int8Params};
use whittle_nn::Model;
use whittle_nn::data::{Split, Targets};
use whittle_nn::graph::{Graph, Op};
use whittle_nn::quant::eval::ActQuant;
use whittle_nn::quant::int::Affine;
use whittle_nn::quant::{Format, ObserverKind, QuantModel, QuantOptions};

/// Defaults of the calibration parameters shared by `quantize`, `qat` and `export` (serde
/// `default = "crate::int8::…"`), so the three stages calibrate alike unless told otherwise.
pub fn default_samples() -> usize {
    500
}
pub fn default_observer() -> String {
    "minmax".into()
}
pub fn default_percentile() -> f64 {
    99.99
}

/// Validates the calibration parameters shared by `quantize`, `qat` and `export`.
pub fn check_calibration(
    samples: usize,
    observer: &str,
    percentile: f64,
) -> Result<(), whittle_engine::ParamError> {
    use whittle_engine::ParamError;
    if !matches!(observer, "minmax" | "percentile") {
        return Err(ParamError::new(
            ["observer"],
            format!("unknown observer `{observer}`: expected \"minmax\" or \"percentile\""),
        ));
    }
    if !(50.0..=100.0).contains(&percentile) {
        return Err(ParamError::new(
            ["percentile"],
            format!("{percentile} is not a tail percentile in [50, 100]"),
        ));
    }
    if samples == 0 {
        return Err(ParamError::new(["calibration_samples"], "must be ≥ 1"));
    }
    Ok(())
}

/// The observer named by `observer` (`minmax`, or `percentile` with its tail percentile).
pub fn observer_kind(observer: &str, percentile: f64) -> ObserverKind {
    if observer == "percentile" {
        ObserverKind::Percentile(percentile)
    } else {
        ObserverKind::MinMax
    }
}

/// File of a network directory holding its int8 activation quantizers (trained by QAT).
pub const INT8_FILE: &str = "int8.json";

/// Indices of `count` calibration items among `n` (all of them when `count ≥ n`), ascending:
/// with class labels, an equal share of each class (classes in label order take turns, each
/// drawing from its own seeded shuffle, until `count` are drawn or the classes run out);
/// without labels, a seeded shuffle's first `count`.
pub fn calibration_indices(
    labels: Option<&[u32]>,
    n: usize,
    count: usize,
    seed: u64,
) -> Vec<usize> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xca11_b8a7_e000_0022);
    if count >= n {
        return (0..n).collect();
    }
    let mut out = match labels {
        Some(y) => {
            let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
            for (i, &c) in y.iter().enumerate().take(n) {
                by_class.entry(c).or_default().push(i);
            }
            let mut queues: Vec<Vec<usize>> = by_class
                .into_values()
                .map(|mut v| {
                    v.shuffle(&mut rng);
                    v.reverse(); // pop() takes from the front of the shuffle
                    v
                })
                .collect();
            let mut out = Vec::with_capacity(count);
            while out.len() < count && queues.iter().any(|q| !q.is_empty()) {
                for q in &mut queues {
                    if out.len() == count {
                        break;
                    }
                    if let Some(i) = q.pop() {
                        out.push(i);
                    }
                }
            }
            out
        }
        None => {
            let mut all: Vec<usize> = (0..n).collect();
            all.shuffle(&mut rng);
            all.truncate(count);
            all
        }
    };
    out.sort_unstable();
    out
}

/// The calibration inputs of `train`: [`calibration_indices`] over its labels (classification)
/// or over its items (regression / anomaly detection).
pub fn calibration_inputs(train: &Split, count: usize, seed: u64) -> Result<Tensor> {
    let n = train.len();
    ensure!(
        n > 0,
        "the training split is empty: nothing to calibrate int8 on"
    );
    let labels: Option<Vec<u32>> = match &train.y {
        Targets::Classes(y) => Some(y.to_vec1()?),
        Targets::Distill { labels, .. } => Some(labels.to_vec1()?),
        Targets::Values(_) => None,
    };
    let idx = calibration_indices(labels.as_deref(), n, count, seed);
    let idx: Vec<u32> = idx.into_iter().map(|i| i as u32).collect();
    let ids = Tensor::new(idx.as_slice(), train.x.device())?;
    Ok(train.x.index_select(&ids, 0)?)
}

/// The int8 network of `model`: activation quantizers from `int8.json` in `dir` when the
/// network carries them (QAT), otherwise calibrated on `calib`.
pub fn int8_model(
    model: &Model,
    dir: Option<&Path>,
    calib: &Tensor,
    opts: &QuantOptions,
) -> Result<QuantModel> {
    if let Some(acts) = dir.map(|d| load(d, model.graph())).transpose()?.flatten() {
        return QuantModel::prepare_with_activations(model, Format::Int8, acts, opts);
    }
    QuantModel::prepare(model, Format::Int8, Some(calib), opts)
}

/// The name of each value as the export names it (value 0 `input`, node outputs by node name;
/// a dropout, dropped by the export, passes its input's name on).
fn value_names(g: &Graph) -> Vec<String> {
    let mut names = vec!["input".to_string()];
    for node in &g.nodes {
        let own = match node.op {
            Op::Dropout { .. } => names[node.inputs[0]].clone(),
            _ => node.name.clone(),
        };
        names.push(own);
    }
    names
}

/// The activation parameters of `q` (an int8 [`QuantModel`]) by exported tensor name.
pub fn export_params(q: &QuantModel) -> Result<Int8Params> {
    let g = q.graph();
    let names = value_names(g);
    let mut activations = BTreeMap::new();
    for (v, a) in q.activation_quantizers().iter().enumerate() {
        let ActQuant::Affine(a) = a else {
            anyhow::bail!("value {v} (`{}`) has no int8 quantizer", names[v]);
        };
        let is_dropout = v > 0 && matches!(g.nodes[v - 1].op, Op::Dropout { .. });
        if is_dropout {
            continue;
        }
        ensure!(
            (-128..=127).contains(&a.zero_point) && a.qmin == -128 && a.qmax == 127,
            "value `{}`: not an 8-bit affine quantizer",
            names[v]
        );
        let e = ExportQuant {
            scale: a.scale,
            zero_point: a.zero_point as i8,
        };
        if v > 0 && matches!(g.nodes[v - 1].op, Op::GlobalAvgPool) {
            // exported as GlobalAvgPool → `<name>_gap` → Flatten → `<name>`: same values
            activations.insert(format!("{}_gap", names[v]), e);
        }
        activations.insert(names[v].clone(), e);
    }
    Ok(Int8Params { activations })
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Int8File {
    format: String,
    /// One per value: the input, then each node's output, in graph order.
    activations: Vec<SavedAffine>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedAffine {
    value: String,
    scale: f32,
    zero_point: i32,
}

/// Writes the int8 activation quantizers `acts` (one per value of `g`) to `dir/int8.json`.
pub fn save(dir: &Path, g: &Graph, acts: &[ActQuant]) -> Result<()> {
    let names = value_names(g);
    ensure!(
        acts.len() == names.len(),
        "{} quantizers for {} values",
        acts.len(),
        names.len()
    );
    let activations = acts
        .iter()
        .zip(&names)
        .map(|(a, name)| match a {
            ActQuant::Affine(a) if a.qmin == -128 && a.qmax == 127 => Ok(SavedAffine {
                value: name.clone(),
                scale: a.scale,
                zero_point: a.zero_point,
            }),
            _ => anyhow::bail!("value `{name}` has no 8-bit affine quantizer"),
        })
        .collect::<Result<Vec<_>>>()?;
    let f = Int8File {
        format: "int8".into(),
        activations,
    };
    let path = dir.join(INT8_FILE);
    std::fs::write(&path, serde_json::to_vec_pretty(&f)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// The quantizers saved in `dir/int8.json` for graph `g`, or `None` without the file; a file
/// that does not fit the graph is an error naming it.
pub fn load(dir: &Path, g: &Graph) -> Result<Option<Vec<ActQuant>>> {
    let path = dir.join(INT8_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let f: Int8File =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let names = value_names(g);
    ensure!(
        f.format == "int8" && f.activations.len() == names.len(),
        "{}: {} quantizers of format `{}` for a network of {} values (int8 expected)",
        path.display(),
        f.activations.len(),
        f.format,
        names.len()
    );
    f.activations
        .iter()
        .zip(&names)
        .map(|(a, name)| {
            ensure!(
                &a.value == name && a.scale.is_finite() && a.scale > 0.0,
                "{}: entry `{}` (scale {}) where value `{name}` was expected",
                path.display(),
                a.value,
                a.scale
            );
            Ok(ActQuant::Affine(Affine {
                scale: a.scale,
                zero_point: a.zero_point.clamp(-128, 127),
                qmin: -128,
                qmax: 127,
            }))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_indices_by_hand() {
        // 3 classes of 4 items; 6 drawn: two per class, ascending, seeded.
        let y = [0u32, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2];
        let a = calibration_indices(Some(&y), 12, 6, 7);
        assert_eq!(a.len(), 6);
        for c in 0..3u32 {
            assert_eq!(a.iter().filter(|&&i| y[i] == c).count(), 2, "{a:?}");
        }
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            a,
            calibration_indices(Some(&y), 12, 6, 7),
            "same seed, same set"
        );
        assert_ne!(a, calibration_indices(Some(&y), 12, 6, 8), "another seed");
        // 7 of 12: the first class in label order gets the extra item.
        let b = calibration_indices(Some(&y), 12, 7, 7);
        assert_eq!(b.iter().filter(|&&i| y[i] == 0).count(), 3);
        // A rare class is used up and the rest fill the count.
        let skew = [0u32, 0, 0, 0, 0, 1];
        let c = calibration_indices(Some(&skew), 6, 4, 1);
        assert!(c.contains(&5) && c.len() == 4);
        // Everything when the count covers the split; unlabelled: a seeded choice.
        assert_eq!(
            calibration_indices(Some(&y), 12, 50, 7),
            (0..12).collect::<Vec<_>>()
        );
        let u = calibration_indices(None, 10, 3, 5);
        assert_eq!(u.len(), 3);
        assert_eq!(u, calibration_indices(None, 10, 3, 5));
    }
}
