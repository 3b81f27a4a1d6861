//! Read-only questions about an experiment against a cache, used by the CLI and the report:
//! load + plan, node states (`status`), why a node would run (`why`), what `gc` may remove
//! (entries and saved state of keys no kept experiment has, and shared files — downloads,
//! artifacts — that none of its nodes' kinds name).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

use crate::cache::{Cache, Manifest, NodeState};
use crate::experiment::Experiment;
use crate::plan::Plan;
use crate::registry::Registry;

/// Load an experiment file (with `--set` overrides) and expand it into a plan; `for_each`
/// stages stay deferred (see [`load_plan_cached`]).
pub fn load_plan(file: &Path, sets: &[String], registry: &Registry) -> Result<Plan> {
    let exp = Experiment::load(file, sets, registry)?;
    Ok(Plan::build(exp, registry)?)
}

/// [`load_plan`], fanning out over the children that source nodes committed in `cache`.
pub fn load_plan_cached(
    file: &Path,
    sets: &[String],
    registry: &Registry,
    cache: &Cache,
) -> Result<Plan> {
    let exp = Experiment::load(file, sets, registry)?;
    Ok(Plan::build_cached(exp, registry, cache)?)
}

/// One line of `status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusRow {
    pub node: String,
    pub stage: String,
    pub key: String,
    pub state: NodeState,
    /// The newest Slurm job of the node (`123` or `123_4`), if it was ever submitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// That job's Slurm state, when asked (`whittle status` asks squeue once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_state: Option<String>,
    /// A stage whose nodes are not known yet: the fan-out source it waits for (`node` is the
    /// stage name, `key` empty, `state` pending).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waits_for: Option<String>,
}

impl StatusRow {
    /// `(fan-out: waits for select)` or `(fan-out: waits for select, via train)`.
    pub fn waiting(&self, plan: &Plan) -> Option<String> {
        let src = self.waits_for.as_ref()?;
        Some(
            match plan.deferred(&self.stage).and_then(|d| d.via.as_ref()) {
                Some(via) => format!("(fan-out: waits for {src}, via {via})"),
                None => format!("(fan-out: waits for {src})"),
            },
        )
    }
}

/// State of every node of `plan`, in topological order; a deferred stage is one row.
pub fn status(plan: &Plan, cache: &Cache) -> Vec<StatusRow> {
    let mut rows = Vec::new();
    for stage in plan.experiment.stages.keys() {
        if let Some(d) = plan.deferred(stage) {
            rows.push(StatusRow {
                node: stage.clone(),
                stage: stage.clone(),
                key: String::new(),
                state: NodeState::Pending,
                job: None,
                job_state: None,
                waits_for: Some(d.source.clone()),
            });
            continue;
        }
        rows.extend(
            plan.nodes
                .iter()
                .filter(|n| n.stage == *stage)
                .map(|n| StatusRow {
                    node: n.name.clone(),
                    stage: n.stage.clone(),
                    key: n.key.clone(),
                    state: cache.state(&n.key),
                    job: crate::slurm::JobRecord::load(cache, &n.key).map(|r| r.job),
                    job_state: None,
                    waits_for: None,
                }),
        );
    }
    rows
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
        let stage = name.split('[').next().unwrap_or(name);
        if let Some(d) = plan.deferred(stage) {
            let through = match &d.via {
                Some(v) => format!(" through `{v}`"),
                None => String::new(),
            };
            return Ok(format!(
                "{stage} fans out{through} over the children that `{}` lists; its nodes are known once every node of `{}` has completed (run the experiment), so it will run after them",
                d.source, d.source
            ));
        }
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

/// What the experiments `gc` keeps refer to: node keys, and the shared files (relative to
/// the cache root) that their nodes' kinds name ([`crate::StageKind::shared_files`]).
#[derive(Debug, Clone, Default)]
pub struct References {
    pub keys: HashSet<String>,
    pub shared: HashSet<String>,
}

impl References {
    /// Add every node of `plan`.
    pub fn add(&mut self, plan: &Plan, registry: &Registry) {
        for n in &plan.nodes {
            self.keys.insert(n.key.clone());
            let Some(kind) = registry.get(&n.kind) else {
                continue;
            };
            let inputs: Vec<(&str, &str)> = n
                .inputs
                .iter()
                .map(|&i| (plan.nodes[i].kind.as_str(), plan.nodes[i].key.as_str()))
                .collect();
            self.shared.extend(kind.shared_files(&n.params, &inputs));
        }
    }
}

/// Why `gc` removes an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcReason {
    /// A completed entry no experiment references.
    Entry,
    /// Work in progress (saved state, a failed attempt) of a key no experiment references.
    Pending,
    /// Corrupted entries moved aside.
    Corrupt,
    /// A shared file (download, artifact) no referenced node names.
    Shared,
    /// A temporary in a shared folder older than [`STALE_TEMPORARY`], left by a killed run.
    Temporary,
}

impl std::fmt::Display for GcReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GcReason::Entry => "unreferenced entry",
            GcReason::Pending => "unreferenced saved state",
            GcReason::Corrupt => "corrupted entries",
            GcReason::Shared => "unreferenced shared file",
            GcReason::Temporary => "stale temporary",
        })
    }
}

/// A temporary in a shared folder (`.download-…`, `.unpack-…`, `….tmp<pid>`) younger than
/// this may belong to a run in progress and is left alone.
pub const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// One item `gc` removes.
#[derive(Debug, Clone, PartialEq)]
pub struct GcItem {
    pub path: PathBuf,
    pub bytes: u64,
    pub reason: GcReason,
    /// The node key whose lock must be free (entries and pending folders).
    pub key: Option<String>,
}

/// What `gc` would remove.
#[derive(Debug, Clone, Default)]
pub struct GcPlan {
    /// Unreferenced entries, pending folders, quarantined entries, shared files, stale
    /// temporaries.
    pub remove: Vec<GcItem>,
    /// Referenced entries kept.
    pub kept: usize,
    /// Referenced shared files kept.
    pub kept_shared: usize,
}

impl GcPlan {
    pub fn bytes(&self) -> u64 {
        self.remove.iter().map(|r| r.bytes).sum()
    }
}

/// A temporary name in a shared folder: hidden (`.download-…`, `.unpack-…`) or `*.tmp<…>`.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.')
        || name
            .rsplit_once('.')
            .is_some_and(|(_, ext)| ext.starts_with("tmp"))
}

/// Everything in the cache that `keep` does not reference.
pub fn gc_plan(cache: &Cache, keep: &References) -> GcPlan {
    let mut plan = GcPlan::default();
    let item = |path: PathBuf, reason, key: Option<String>| GcItem {
        bytes: Cache::size_of(&path),
        path,
        reason,
        key,
    };
    for k in cache.entry_keys() {
        if keep.keys.contains(&k) {
            plan.kept += 1;
        } else {
            plan.remove
                .push(item(cache.entry_dir(&k), GcReason::Entry, Some(k)));
        }
    }
    for k in cache.pending_keys() {
        if !keep.keys.contains(&k) {
            plan.remove
                .push(item(cache.pending_dir(&k), GcReason::Pending, Some(k)));
        }
    }
    let corrupt = cache.root().join("corrupt");
    if corrupt.exists() {
        plan.remove.push(item(corrupt, GcReason::Corrupt, None));
    }
    let now = std::time::SystemTime::now();
    for rel in cache.shared_items() {
        let path = cache.root().join(&rel);
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        if is_temporary(name) {
            let age = std::fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok());
            if age.is_some_and(|a| a >= STALE_TEMPORARY) {
                plan.remove.push(item(path, GcReason::Temporary, None));
            }
        } else if keep.shared.contains(&rel) {
            plan.kept_shared += 1;
        } else {
            plan.remove.push(item(path, GcReason::Shared, None));
        }
    }
    plan
}

/// Remove what `plan` lists, skipping keys another run holds locked. Returns bytes freed.
pub fn gc_apply(cache: &Cache, plan: &GcPlan) -> Result<u64> {
    let mut freed = 0;
    for it in &plan.remove {
        let _lock = match &it.key {
            Some(key) => match cache.try_lock(key)? {
                Some(l) => Some(l),
                None => {
                    tracing::warn!("skipping {}: in use by another run", it.path.display());
                    continue;
                }
            },
            None => None,
        };
        let is_dir = std::fs::symlink_metadata(&it.path).is_ok_and(|m| m.is_dir());
        let removed = if is_dir {
            std::fs::remove_dir_all(&it.path)
        } else {
            std::fs::remove_file(&it.path)
        };
        match removed {
            Ok(()) => {}
            // gone meanwhile (another gc, a run's own clean-up)
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove {}", it.path.display()));
            }
        }
        if let Some(key) = &it.key {
            let _ = std::fs::remove_file(cache.root().join("locks").join(format!("{key}.lock")));
        }
        freed += it.bytes;
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

#[cfg(test)]
mod tests {
    use super::is_temporary;

    #[test]
    fn temporaries_are_hidden_names_or_tmp_extensions() {
        assert!(is_temporary(".download-x7Yq"));
        assert!(is_temporary(".unpack-Ab3"));
        // distill's `with_extension(format!("tmp{pid}"))`
        assert!(is_temporary("teacher_logits-0123-4567.tmp4242"));
        assert!(!is_temporary("teacher_logits-0123-4567.safetensors"));
        assert!(!is_temporary("ab12-speech_commands.tmp.tar.gz"));
    }
}
