//! Building the report of an experiment from the engine's plan and the cache's manifests,
//! writing `reports/<experiment>.md` + `reports/<experiment>/` (SVG plots, `metrics.json`),
//! and loading either an experiment file or a report folder as a document for `diff`.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use whittle_engine::cache::write_atomic;
use whittle_engine::{Cache, Plan, Registry, query};
use whittle_report::model::RunCpu;
use whittle_report::{Constraints, Document, NodeRecord, Provenance, ReportOptions};

/// The experiment's `[report]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportSection {
    #[serde(default)]
    max_params: Option<u64>,
    #[serde(default)]
    max_macs: Option<u64>,
    #[serde(default)]
    max_weight_bytes: Option<u64>,
    #[serde(default)]
    max_peak_activation_bytes: Option<u64>,
    #[serde(default)]
    max_latency_ms: Option<f64>,
    /// Also plot the search / prune outputs that a `finetune` stage refines.
    #[serde(default)]
    show_intermediate: bool,
    /// Axes to compare (informational; every axis with data is shown).
    #[serde(default)]
    #[allow(dead_code)]
    compare: Option<Vec<String>>,
}

/// CPU model and core count, e.g. "AMD EPYC 7B13, 2 cores".
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{model}, {cores} cores, {}", std::env::consts::OS)
}

/// A node's metrics with the input node names it recorded when it ran replaced by the names
/// those inputs have in this plan: keys do not depend on names, so an entry computed under
/// another experiment (or before a stage was renamed, e.g. `ta` → `student-ta1`) is reused,
/// and its `parent` / `teacher` fields must name today's nodes.
fn current_names(plan: &Plan, m: &whittle_engine::Manifest) -> serde_json::Value {
    let now: std::collections::HashMap<&str, &str> = plan
        .nodes
        .iter()
        .map(|n| (n.key.as_str(), n.name.as_str()))
        .collect();
    let renames: std::collections::HashMap<String, String> = m
        .inputs
        .iter()
        .filter_map(|i| {
            let new = now.get(i.key.as_str())?;
            (*new != i.node).then(|| (i.node.clone(), new.to_string()))
        })
        .collect();
    let mut v = m.metrics.clone();
    if !renames.is_empty() {
        rename(&mut v, &renames);
    }
    v
}

fn rename(v: &mut serde_json::Value, renames: &std::collections::HashMap<String, String>) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match x {
                    serde_json::Value::String(s) if k == "parent" || k == "teacher" => {
                        if let Some(n) = renames.get(s.as_str()) {
                            *s = n.clone();
                        }
                    }
                    _ => rename(x, renames),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| rename(x, renames)),
        _ => {}
    }
}

/// The document of an experiment as the cache knows it now. `since` (unix seconds) marks
/// nodes finished after it as `ran`, others as `cached`.
pub fn document(plan: &Plan, cache: &Cache, since: Option<f64>) -> Result<Document> {
    let exp = &plan.experiment;
    let section: ReportSection = match &exp.report {
        Some(t) => toml::Value::Table(t.clone())
            .try_into()
            .map_err(|e| anyhow::anyhow!("{}: [report]: {e}", exp.file.display()))?,
        None => ReportSection::default(),
    };
    let manifests = query::manifests(plan, cache);
    let mut nodes = Vec::new();
    for (node, (_, m)) in plan.nodes.iter().zip(manifests) {
        let state = match &m {
            None => query::status(plan, cache)
                .into_iter()
                .find(|r| r.node == node.name)
                .map(|r| r.state.to_string())
                .unwrap_or_else(|| "pending".into()),
            Some(m) if since.is_some_and(|s| m.finished >= s) => {
                if m.resumed {
                    "resumed".into()
                } else {
                    "ran".into()
                }
            }
            Some(_) => "cached".into(),
        };
        nodes.push(NodeRecord {
            node: node.name.clone(),
            stage: node.stage.clone(),
            kind: node.kind.clone(),
            key: node.key.clone(),
            state,
            params: node.params.clone(),
            metrics: m
                .as_ref()
                .map(|m| current_names(plan, m))
                .unwrap_or(serde_json::Value::Null),
            duration_s: m.as_ref().map(|m| m.duration_secs),
            inputs: node
                .inputs
                .iter()
                .map(|&i| plan.nodes[i].name.clone())
                .collect(),
        });
    }
    // where the completed nodes ran (manifests of Slurm jobs name them)
    let mut jobs = std::collections::BTreeMap::new();
    let mut executor = String::new();
    for (node, m) in query::manifests(plan, cache) {
        let Some(e) = m.and_then(|m| m.executor) else {
            continue;
        };
        if let (Some(kind), Some(job)) = (e["kind"].as_str(), e["job"].as_str()) {
            executor = kind.to_string();
            jobs.insert(node, job.to_string());
        }
    }
    let text =
        std::fs::read(&exp.file).with_context(|| format!("reading {}", exp.file.display()))?;
    let mut doc = Document::new(
        Provenance {
            experiment: exp.name.clone(),
            description: exp.description.clone(),
            file: exp
                .file
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default(),
            file_hash: blake3::hash(&text).to_hex().to_string(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            seed: exp.seed,
            machine: machine(),
            executor,
            jobs,
            // the last local run of this plan that computed nodes (see `save_run_cpu`)
            cpu: load_run_cpu(plan, cache),
        },
        Constraints {
            max_params: section.max_params,
            max_macs: section.max_macs,
            max_weight_bytes: section.max_weight_bytes,
            max_peak_activation_bytes: section.max_peak_activation_bytes,
            max_latency_ms: section.max_latency_ms,
        },
        nodes,
    );
    doc.options = ReportOptions {
        show_intermediate: section.show_intermediate,
    };
    Ok(doc)
}

/// Where the CPU use of the last run of `plan` that computed nodes is kept: one small file
/// per plan (named by the hash of its node keys) under the cache's `runs/`, so that a fully
/// cached rerun and `whittle report` render the same bytes as the run that did the work.
fn run_cpu_path(plan: &Plan, cache: &Cache) -> PathBuf {
    let mut h = blake3::Hasher::new();
    for n in &plan.nodes {
        h.update(n.key.as_bytes());
        h.update(b"\n");
    }
    cache
        .root()
        .join("runs")
        .join(format!("{}.cpu.json", &h.finalize().to_hex()[..32]))
}

/// Records a run's CPU use for its plan's reports (called when the run computed nodes).
pub fn save_run_cpu(plan: &Plan, cache: &Cache, cpu: &RunCpu) -> Result<()> {
    let path = run_cpu_path(plan, cache);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_atomic(&path, serde_json::to_string(cpu)?.as_bytes())
}

/// The recorded CPU use of the last run of `plan` that computed nodes; `None` when there is
/// none (or it cannot be read: the report then leaves the line out).
fn load_run_cpu(plan: &Plan, cache: &Cache) -> Option<RunCpu> {
    let text = std::fs::read_to_string(run_cpu_path(plan, cache)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes `<dir>/<name>.md` and `<dir>/<name>/{*.svg, metrics.json}`; returns the Markdown path.
pub fn write(doc: &Document, dir: &Path) -> Result<PathBuf> {
    let name = whittle_report::render::sanitize(&doc.provenance.experiment);
    let folder = dir.join(&name);
    std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
    let rendered = whittle_report::render(doc, &name);
    // Plots of an earlier render that this one no longer draws would linger beside it.
    for entry in
        std::fs::read_dir(&folder).with_context(|| format!("reading {}", folder.display()))?
    {
        let path = entry?.path();
        let stale = path.extension().is_some_and(|e| e == "svg")
            && !rendered
                .files
                .iter()
                .any(|(f, _)| path.file_name().is_some_and(|n| n == f.as_str()));
        if stale {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    for (file, text) in &rendered.files {
        write_atomic(&folder.join(file), text.as_bytes())?;
    }
    write_atomic(
        &folder.join("metrics.json"),
        serde_json::to_string_pretty(doc)?.as_bytes(),
    )?;
    let md = dir.join(format!("{name}.md"));
    write_atomic(&md, rendered.markdown.as_bytes())?;
    Ok(md)
}

/// A document from an experiment file (with the cache's results), a report folder, or a
/// `metrics.json` file.
pub fn load_any(path: &Path, cache: &Cache, registry: &Registry) -> Result<Document> {
    let metrics = if path.is_dir() {
        path.join("metrics.json")
    } else {
        path.to_path_buf()
    };
    if metrics.extension().is_some_and(|e| e == "json") {
        let text = std::fs::read_to_string(&metrics)
            .with_context(|| format!("reading {}", metrics.display()))?;
        return serde_json::from_str(&text)
            .with_context(|| format!("{}: not a whittle metrics.json", metrics.display()));
    }
    let plan = query::load_plan(path, &[], registry)?;
    document(&plan, cache, None)
}
