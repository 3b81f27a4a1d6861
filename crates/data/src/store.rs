//! Saving and loading a [`Dataset`]: `data.safetensors` holds `train_x`, `train_y`, `val_x`,
//! `val_y`, `test_x`, `test_y` (x: F32 (N, ...), y: U32 (N)); `dataset.json` holds the class
//! names, item shape and layout, per-split shapes and counts per class, the normalisation
//! statistics and the description. Both files are written to temporary names and renamed, so
//! a failed save leaves no half-written file under the final names.
//!
//! Anomaly-detection sets add, per split with clip indices, `{split}_clip` and `{split}_group`
//! (U32 (N)) to the tensors, and `task`, `groups` and per split `clips` (and clips per class)
//! to `dataset.json`. None of these appear for a classification set, so its files are the same
//! bytes as before they existed.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::json;

use crate::dataset::{Dataset, NormStats, Split, Task};

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
    let ad = ds.task == Task::AnomalyDetection;
    for (name, s) in SPLITS.iter().zip(splits) {
        s.check_clips()
            .with_context(|| format!("internal: {name} split"))?;
        if let Some(&g) = s.group.iter().find(|&&g| g as usize >= ds.groups.len()) {
            bail!(
                "internal: {name} split: machine-ID index {g} outside the {} groups",
                ds.groups.len()
            );
        }
        if s.has_clips() && !ad {
            bail!("internal: {name} split has clip indices but the task is classification");
        }
        if ad && !s.is_empty() && !s.has_clips() {
            bail!("internal: anomaly-detection {name} split has no clip indices");
        }
    }
    // (x, y, clip, group) bytes per split.
    type Bytes = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);
    let bytes: Vec<Bytes> = splits
        .iter()
        .map(|s| {
            (
                f32_bytes(&s.x),
                u32_bytes(&s.y),
                u32_bytes(&s.clip),
                u32_bytes(&s.group),
            )
        })
        .collect();
    let mut views = Vec::new();
    for ((name, s), (xb, yb, cb, gb)) in SPLITS.iter().zip(splits).zip(&bytes) {
        views.push((
            format!("{name}_x"),
            TensorView::new(Dtype::F32, s.shape.clone(), xb)?,
        ));
        views.push((
            format!("{name}_y"),
            TensorView::new(Dtype::U32, vec![s.len()], yb)?,
        ));
        if s.has_clips() {
            views.push((
                format!("{name}_clip"),
                TensorView::new(Dtype::U32, vec![s.len()], cb)?,
            ));
            views.push((
                format!("{name}_group"),
                TensorView::new(Dtype::U32, vec![s.len()], gb)?,
            ));
        }
    }
    let st = safetensors::serialize(views, None::<HashMap<String, String>>)?;
    let mut per_split = serde_json::Map::new();
    for (name, s) in SPLITS.iter().zip(splits) {
        let counts = s.counts(ds.classes.len());
        let mut entry = json!({
            "shape": s.shape,
            "count": s.len(),
            "per_class": ds.classes.iter().zip(&counts).map(|(c, n)| (c.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
        });
        if ad {
            let clips = s.clips();
            let mut per = vec![0usize; ds.classes.len()];
            for c in &clips {
                if let Some(slot) = per.get_mut(c.label as usize) {
                    *slot += 1;
                }
            }
            entry["clips"] = json!(clips.len());
            entry["clips_per_class"] = ds
                .classes
                .iter()
                .zip(&per)
                .map(|(c, n)| (c.clone(), json!(n)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        per_split.insert(name.to_string(), entry);
    }
    let mut meta = json!({
        "format": "whittle-data/1",
        "classes": ds.classes,
        "input_shape": ds.input_shape,
        "layout": ds.layout,
        "splits": per_split,
        "normalization": ds.normalization,
        "description": ds.description,
    });
    if ad {
        meta["task"] = json!(ds.task);
        meta["groups"] = json!(ds.groups);
    }
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
    let task: Task = match meta.get("task") {
        Some(t) => serde_json::from_value(t.clone())
            .with_context(|| format!("{}: bad `task`", jpath.display()))?,
        None => Task::Classification,
    };
    let groups: Vec<String> = match meta.get("groups") {
        Some(g) => serde_json::from_value(g.clone())
            .with_context(|| format!("{}: bad `groups`", jpath.display()))?,
        None => Vec::new(),
    };
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
        let index = |suffix: &str| -> Result<Vec<u32>> {
            let key = format!("{name}_{suffix}");
            let Ok(t) = st.tensor(&key) else {
                return Ok(Vec::new());
            };
            if t.dtype() != Dtype::U32 || t.shape() != [ys.len()] {
                bail!(
                    "{}: {key} has an unexpected dtype or length",
                    spath.display()
                );
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                .collect())
        };
        let (clip, group) = (index("clip")?, index("group")?);
        let split = Split {
            x: xs,
            shape: x.shape().to_vec(),
            y: ys,
            clip,
            group,
        };
        split
            .check_clips()
            .with_context(|| format!("{}: {name}_clip / {name}_group", spath.display()))?;
        if task == Task::AnomalyDetection && !split.is_empty() && !split.has_clips() {
            bail!(
                "{}: anomaly-detection data set without {name}_clip / {name}_group",
                spath.display()
            );
        }
        if let Some(bad) = split.group.iter().find(|&&g| g as usize >= groups.len()) {
            bail!(
                "{}: machine-ID index {bad} in {name}_group outside the {} groups of {}",
                spath.display(),
                groups.len(),
                jpath.display()
            );
        }
        splits.push(split);
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
        task,
        groups,
    })
}
