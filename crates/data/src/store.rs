//! Saving and loading a [`Dataset`]: `data.safetensors` holds `train_x`, `train_y`, `val_x`,
//! `val_y`, `test_x`, `test_y` (x: F32 (N, ...), y: U32 (N)); `dataset.json` holds the class
//! names, item shape and layout, per-split shapes and counts per class, the normalisation
//! statistics and the description. Both files are written to temporary names and renamed, so
//! a failed save leaves no half-written file under the final names.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::json;

use crate::dataset::{Dataset, NormStats, Split};

const SPLITS: [&str; 3] = ["train", "val", "test"];

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// All or nothing: a unique temporary beside `path`, renamed over it.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    std::fs::write(tmp.path(), bytes).with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes `data.safetensors` and `dataset.json` into `dir` (created if missing).
pub fn save(ds: &Dataset, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let splits = [&ds.train, &ds.val, &ds.test];
    let bytes: Vec<(Vec<u8>, Vec<u8>)> = splits
        .iter()
        .map(|s| (f32_bytes(&s.x), u32_bytes(&s.y)))
        .collect();
    let mut views = Vec::new();
    for ((name, s), (xb, yb)) in SPLITS.iter().zip(splits).zip(&bytes) {
        views.push((
            format!("{name}_x"),
            TensorView::new(Dtype::F32, s.shape.clone(), xb)?,
        ));
        views.push((
            format!("{name}_y"),
            TensorView::new(Dtype::U32, vec![s.len()], yb)?,
        ));
    }
    let st = safetensors::serialize(views, None::<HashMap<String, String>>)?;
    let mut per_split = serde_json::Map::new();
    for (name, s) in SPLITS.iter().zip(splits) {
        let counts = s.counts(ds.classes.len());
        per_split.insert(
            name.to_string(),
            json!({
                "shape": s.shape,
                "count": s.len(),
                "per_class": ds.classes.iter().zip(&counts).map(|(c, n)| (c.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
            }),
        );
    }
    let meta = json!({
        "format": "whittle-data/1",
        "classes": ds.classes,
        "input_shape": ds.input_shape,
        "layout": ds.layout,
        "splits": per_split,
        "normalization": ds.normalization,
        "description": ds.description,
    });
    write_atomic(&dir.join("data.safetensors"), &st)?;
    write_atomic(
        &dir.join("dataset.json"),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )
}

/// Reads a data set written by [`save`].
pub fn load(dir: &Path) -> Result<Dataset> {
    let jpath = dir.join("dataset.json");
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&jpath).with_context(|| format!("reading {}", jpath.display()))?,
    )
    .with_context(|| format!("parsing {}", jpath.display()))?;
    let spath = dir.join("data.safetensors");
    let bytes = std::fs::read(&spath).with_context(|| format!("reading {}", spath.display()))?;
    let st =
        SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", spath.display()))?;
    let get = |k: &str| {
        meta.get(k)
            .with_context(|| format!("{}: missing `{k}`", jpath.display()))
    };
    let classes: Vec<String> = serde_json::from_value(get("classes")?.clone())?;
    let input_shape: Vec<usize> = serde_json::from_value(get("input_shape")?.clone())?;
    let layout: String = serde_json::from_value(get("layout")?.clone())?;
    let normalization: Option<NormStats> = serde_json::from_value(get("normalization")?.clone())?;
    let mut splits = Vec::new();
    for name in SPLITS {
        let x = st
            .tensor(&format!("{name}_x"))
            .with_context(|| format!("{}: {name}_x", spath.display()))?;
        let y = st
            .tensor(&format!("{name}_y"))
            .with_context(|| format!("{}: {name}_y", spath.display()))?;
        if x.dtype() != Dtype::F32
            || y.dtype() != Dtype::U32
            || x.shape().first() != y.shape().first()
        {
            bail!(
                "{}: {name}_x/{name}_y have unexpected dtypes or lengths",
                spath.display()
            );
        }
        if x.shape()[1..] != input_shape[..] {
            bail!(
                "{}: {name}_x shape {:?} does not match input_shape {:?}",
                spath.display(),
                x.shape(),
                input_shape
            );
        }
        let xs = x
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let ys: Vec<u32> = y
            .data()
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        if let Some(bad) = ys.iter().find(|&&c| c as usize >= classes.len()) {
            bail!(
                "{}: label {bad} in {name}_y outside the {} classes",
                spath.display(),
                classes.len()
            );
        }
        splits.push(Split {
            x: xs,
            shape: x.shape().to_vec(),
            y: ys,
        });
    }
    let [train, val, test]: [Split; 3] = splits.try_into().expect("three splits");
    Ok(Dataset {
        train,
        val,
        test,
        classes,
        input_shape,
        layout,
        normalization,
        description: meta
            .get("description")
            .cloned()
            .unwrap_or(serde_json::Value::Null),
    })
}
