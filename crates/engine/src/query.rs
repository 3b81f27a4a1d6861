//! Read-only questions about an experiment against a cache, used by the CLI and the report:
//! load + plan, node states (`status`), why a node would run (`why`), what `gc` may remove.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::Value;

use crate::cache::{Cache, Manifest, NodeState};
use crate::experiment::Experiment;
use crate::plan::Plan;
use crate::registry::Registry;

/// Load an experiment file (with `--set` overrides) and expand it into a plan.
pub fn load_plan(file: &Path, sets: &[String], registry: &Registry) -> Result<Plan> {
    let exp = Experiment::load(file, sets, registry)?;
    Ok(Plan::build(exp, registry)?)
}

/// One line of `status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusRow {
    pub node: String,
    pub stage: String,
    pub key: String,
    pub state: NodeState,
}

/// State of every node of `plan`, in topological order.
pub fn status(plan: &Plan, cache: &Cache) -> Vec<StatusRow> {
    plan.nodes
        .iter()
        .map(|n| StatusRow {
            node: n.name.clone(),
            stage: n.stage.clone(),
            key: n.key.clone(),
            state: cache.state(&n.key),
        })
        .collect()
}

/// Manifests of the completed nodes of `plan` (node name → manifest), in topological order.
pub fn manifests(plan: &Plan, cache: &Cache) -> Vec<(String, Option<Manifest>)> {
    plan.nodes
        .iter()
        .map(|n| (n.name.clone(), cache.manifest(&n.key)))
        .collect()
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

/// Why node `name` would run, naming what differs from the closest cached entry of its stage.
pub fn why(plan: &Plan, cache: &Cache, name: &str) -> Result<String> {
    let Some(idx) = plan.nodes.iter().position(|n| n.name == name) else {
        let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
        bail!(
            "no node `{name}` in {}; nodes are: {}",
            plan.experiment.file.display(),
            names.join(", ")
        );
    };
    let node = &plan.nodes[idx];
    let short = &node.key[..12];
    if cache.is_done(&node.key) {
        return Ok(format!("{name} is cached (key {short}); it will not run"));
    }
    let mut head = match cache.state(&node.key) {
        NodeState::Partial => {
            format!("{name} (key {short}) has no cached result; it has saved state and will resume")
        }
        NodeState::Failed => {
            format!("{name} (key {short}) has no cached result; its last attempt failed")
        }
        _ => format!("{name} (key {short}) has no cached result, so it will run"),
    };
    let all = cache.all_manifests();
    let mut candidates: Vec<&Manifest> = all
        .iter()
        .filter(|m| m.stage == node.stage && m.kind == node.kind)
        .collect();
    if candidates.is_empty() {
        candidates = all.iter().filter(|m| m.kind == node.kind).collect();
    }
    if candidates.is_empty() {
        head.push_str(&format!(
            ".\nNo cached entry of stage `{}` (kind `{}`) exists in this cache.",
            node.stage, node.kind
        ));
        return Ok(head);
    }
    let input_keys: Vec<(&str, &str)> = node
        .inputs
        .iter()
        .map(|&j| (plan.nodes[j].name.as_str(), plan.nodes[j].key.as_str()))
        .collect();
    let mut best: Option<(usize, f64, &Manifest, Vec<String>)> = None;
    for m in candidates {
        let d = differences(plan, cache, node, &input_keys, m);
        let better = match &best {
            None => true,
            Some((n, t, _, _)) => d.len() < *n || (d.len() == *n && m.finished > *t),
        };
        if better {
            best = Some((d.len(), m.finished, m, d));
        }
    }
    let (_, _, m, diffs) = best.expect("at least one candidate");
    head.push_str(&format!(
        ".\nClosest cached entry: {} (key {}, from experiment `{}`). What differs:",
        m.node,
        &m.key[..12.min(m.key.len())],
        m.experiment
    ));
    if diffs.is_empty() {
        head.push_str("\n  - nothing recorded differs (the key derivation changed)");
    }
    for d in diffs {
        head.push_str("\n  - ");
        head.push_str(&d);
    }
    Ok(head)
}

fn differences(
    plan: &Plan,
    cache: &Cache,
    node: &crate::plan::Node,
    input_keys: &[(&str, &str)],
    m: &Manifest,
) -> Vec<String> {
    let mut d = Vec::new();
    if m.version != node.version {
        d.push(format!(
            "kind `{}` version changed from {} to {}",
            node.kind, m.version, node.version
        ));
    }
    if m.seed != plan.experiment.seed {
        d.push(format!(
            "seed changed from {} to {}",
            m.seed, plan.experiment.seed
        ));
    }
    let (mut old, mut new) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &m.params, &mut old);
    flatten("", &node.params, &mut new);
    for (k, v) in &new {
        match old.get(k) {
            None => d.push(format!("parameter `{k}` added: {v}")),
            Some(o) if o != v => d.push(format!("parameter `{k}` changed from {o} to {v}")),
            _ => {}
        }
    }
    for (k, o) in &old {
        if !new.contains_key(k) {
            d.push(format!("parameter `{k}` removed (was {o})"));
        }
    }
    if m.extra != node.extra {
        d.push("content of the dependency files (`deps`) changed".to_string());
    }
    if m.inputs.len() != input_keys.len() {
        d.push(format!(
            "number of inputs changed from {} to {}",
            m.inputs.len(),
            input_keys.len()
        ));
    } else {
        for (rec, (name, key)) in m.inputs.iter().zip(input_keys) {
            if rec.key != *key {
                let again = if cache.is_done(key) {
                    ""
                } else {
                    "; it will run too"
                };
                d.push(format!(
                    "input `{name}` changed (key {} -> {}{again})",
                    &rec.key[..12.min(rec.key.len())],
                    &key[..12]
                ));
            }
        }
    }
    d
}

/// What `gc` would remove.
#[derive(Debug, Clone, Default)]
pub struct GcPlan {
    /// (path, bytes) of unreferenced entries, pending folders and quarantined entries.
    pub remove: Vec<(PathBuf, u64)>,
    /// Referenced entries kept.
    pub kept: usize,
}

impl GcPlan {
    pub fn bytes(&self) -> u64 {
        self.remove.iter().map(|r| r.1).sum()
    }
}

/// Everything in the cache not referenced by `keep` (node keys).
pub fn gc_plan(cache: &Cache, keep: &HashSet<String>) -> GcPlan {
    let mut plan = GcPlan::default();
    for k in cache.entry_keys() {
        if keep.contains(&k) {
            plan.kept += 1;
        } else {
            let p = cache.entry_dir(&k);
            plan.remove.push((p.clone(), Cache::size_of(&p)));
        }
    }
    for k in cache.pending_keys() {
        if !keep.contains(&k) {
            let p = cache.pending_dir(&k);
            plan.remove.push((p.clone(), Cache::size_of(&p)));
        }
    }
    let corrupt = cache.root().join("corrupt");
    if corrupt.exists() {
        plan.remove
            .push((corrupt.clone(), Cache::size_of(&corrupt)));
    }
    plan
}

/// Remove what `plan` lists, skipping keys another run holds locked. Returns bytes freed.
pub fn gc_apply(cache: &Cache, plan: &GcPlan) -> Result<u64> {
    let mut freed = 0;
    for (p, bytes) in &plan.remove {
        let key = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _lock = if key.len() == 64 {
            match cache.try_lock(&key)? {
                Some(l) => Some(l),
                None => {
                    tracing::warn!("skipping {}: in use by another run", p.display());
                    continue;
                }
            }
        } else {
            None
        };
        std::fs::remove_dir_all(p)?;
        if key.len() == 64 {
            let _ = std::fs::remove_file(cache.root().join("locks").join(format!("{key}.lock")));
        }
        freed += bytes;
    }
    Ok(freed)
}

/// Human-readable byte count.
pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}
