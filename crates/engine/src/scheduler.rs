//! The scheduler: runs a plan's nodes in topological order, independent nodes in parallel
//! within a core budget and a memory budget (the kinds' estimates, see [`crate::memory`]),
//! using cached entries where valid, resuming from saved state, and stopping only the
//! descendants of a failed node. A node whose estimate alone exceeds the memory budget fails
//! before it starts.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc;

use anyhow::{Context, Result};

use crate::cache::{Cache, InputRecord, Manifest, now_unix};
use crate::memory::{Budget, LIMIT_VAR, budget, human};
use crate::plan::Plan;
use crate::progress::Reporter;
use crate::registry::Registry;
use crate::stage::{CancelToken, Checkpoints, InputArtifact, RunContext};

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// Core budget: sum of `threads` of running nodes never exceeds it.
    pub jobs: usize,
    pub cancel: CancelToken,
    pub reporter: Reporter,
}

/// What happened in a run. `ran`, `cached` and `resumed` are disjoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    pub ran: usize,
    pub cached: usize,
    pub resumed: usize,
    pub failed: usize,
    /// Not run because an input failed.
    pub skipped: usize,
    /// Not run (or stopped) because the run was interrupted.
    pub interrupted: usize,
    pub cancelled: bool,
    /// (node, error) of each failure.
    pub failures: Vec<(String, String)>,
}

impl RunSummary {
    /// `summary: ran=N cached=M resumed=K failed=F`.
    pub fn line(&self) -> String {
        format!(
            "summary: ran={} cached={} resumed={} failed={}",
            self.ran, self.cached, self.resumed, self.failed
        )
    }

    /// True if every node completed.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.skipped == 0 && self.interrupted == 0 && !self.cancelled
    }
}

/// How one node ended, as an [`Executor`] reports it.
pub(crate) enum Outcome {
    Cached(Manifest),
    /// Ran to completion (`true`: continued from saved state).
    Ran(Manifest, bool),
    Failed(String),
    Cancelled,
}

/// Where nodes run. The scheduler decides what is ready; the executor runs one ready node
/// (its inputs complete) and blocks until it ended.
pub(crate) trait Executor: Sync {
    /// Whether nodes count their threads against `--jobs` (local cores). `false`: the
    /// executor's resources are elsewhere and only `opts.jobs` nodes may be out at once.
    fn counts_cores(&self) -> bool;
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &self,
        plan: &Plan,
        i: usize,
        threads: usize,
        inputs: Vec<InputArtifact>,
        cache: &Cache,
        registry: &Registry,
        opts: &RunOptions,
    ) -> Outcome;
}

/// Runs each node in a thread of this process.
pub(crate) struct Local;

impl Executor for Local {
    fn counts_cores(&self) -> bool {
        true
    }
    fn execute(
        &self,
        plan: &Plan,
        i: usize,
        threads: usize,
        inputs: Vec<InputArtifact>,
        cache: &Cache,
        registry: &Registry,
        opts: &RunOptions,
    ) -> Outcome {
        execute(plan, i, threads, inputs, cache, registry, opts, None)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum St {
    Waiting,
    Running,
    Done,
    Failed,
    Skipped,
}

/// Run `plan`: each node is cached, resumed, run, failed or skipped; the memory budget is
/// read now ([`crate::memory::budget`]).
pub fn run(
    plan: &Plan,
    cache: &Cache,
    registry: &Registry,
    opts: &RunOptions,
) -> Result<RunSummary> {
    let budget = budget()?;
    if let Some(b) = &budget {
        tracing::debug!("memory budget {} ({})", human(b.bytes), b.source);
    }
    run_with_budget(plan, cache, registry, opts, budget)
}

/// [`run`] with a given memory budget (`None`: no memory guard).
pub fn run_with_budget(
    plan: &Plan,
    cache: &Cache,
    registry: &Registry,
    opts: &RunOptions,
    budget: Option<Budget>,
) -> Result<RunSummary> {
    schedule(plan, cache, registry, opts, budget, &Local)
}

/// The refusal of a node whose estimate alone exceeds the memory budget.
fn too_big(
    node: &crate::plan::Node,
    estimate: Option<&crate::stage::MemoryNeed>,
    budget: Option<&Budget>,
) -> Option<String> {
    let (e, b) = (estimate?, budget?);
    (e.bytes > b.bytes).then(|| {
        format!(
            "stage `{}` (kind `{}`) needs an estimated {} of memory ({}), but only {} is available ({}); make the network or the batch size smaller, or set {LIMIT_VAR} if the estimate is wrong",
            node.stage,
            node.kind,
            human(e.bytes),
            e.detail,
            human(b.bytes),
            b.source
        )
    })
}

/// Run exactly the node of `plan` whose key is `key`, in this process: the job of a batch
/// executor (`whittle exec-node`). Its inputs must be committed in `cache`; the memory
/// guard applies as in [`run`]; `record` (where it ran) goes into the manifest.
pub fn run_node(
    plan: &Plan,
    key: &str,
    cache: &Cache,
    registry: &Registry,
    opts: &RunOptions,
    record: Option<serde_json::Value>,
) -> Result<RunSummary> {
    let Some(i) = plan.nodes.iter().position(|n| n.key == key) else {
        anyhow::bail!(
            "no node of experiment `{}` has key {key}: the experiment file changed since the job was submitted",
            plan.experiment.name
        );
    };
    let node = &plan.nodes[i];
    let mut ups = Vec::new();
    for &j in &node.inputs {
        let up = &plan.nodes[j];
        let m = cache.manifest(&up.key).with_context(|| {
            format!(
                "input {} of {} ({}) is not in the cache at {}: is the cache folder shared with this host?",
                up.name,
                node.name,
                &up.key[..12],
                cache.root().display()
            )
        })?;
        ups.push((j, Arc::new(m)));
    }
    let inputs = inputs_of(plan, i, cache, |j| {
        ups.iter()
            .find(|(k, _)| *k == j)
            .map(|(_, m)| m.clone())
            .expect("collected")
    });
    let mut summary = RunSummary::default();
    let estimate = if cache.is_done(key) {
        None
    } else {
        registry
            .get(&node.kind)
            .and_then(|k| k.memory(&node.params, &inputs))
    };
    let out = match too_big(node, estimate.as_ref(), budget()?.as_ref()) {
        Some(msg) => {
            cache.mark_failed(key, &msg);
            Outcome::Failed(msg)
        }
        None => execute(
            plan,
            i,
            node.threads,
            inputs,
            cache,
            registry,
            opts,
            record.as_ref(),
        ),
    };
    match out {
        Outcome::Cached(_) => summary.cached = 1,
        Outcome::Ran(_, true) => summary.resumed = 1,
        Outcome::Ran(_, false) => summary.ran = 1,
        Outcome::Failed(e) => {
            summary.failed = 1;
            summary.failures.push((node.name.clone(), e));
        }
        Outcome::Cancelled => {
            summary.interrupted = 1;
            summary.cancelled = true;
        }
    }
    Ok(summary)
}

/// The inputs of node `i` as the stage sees them (every input complete, with `manifests`).
pub(crate) fn inputs_of(
    plan: &Plan,
    i: usize,
    cache: &Cache,
    manifest: impl Fn(usize) -> Arc<Manifest>,
) -> Vec<InputArtifact> {
    plan.nodes[i]
        .inputs
        .iter()
        .map(|&j| {
            let m = manifest(j);
            let up = &plan.nodes[j];
            InputArtifact {
                stage: up.stage.clone(),
                node: up.name.clone(),
                kind: up.kind.clone(),
                key: up.key.clone(),
                dir: cache.out_dir(&up.key),
                params: m.params.clone(),
                metrics: m.metrics.clone(),
            }
        })
        .collect()
}

/// The scheduling loop shared by every executor.
pub(crate) fn schedule(
    plan: &Plan,
    cache: &Cache,
    registry: &Registry,
    opts: &RunOptions,
    budget: Option<Budget>,
    executor: &dyn Executor,
) -> Result<RunSummary> {
    let n = plan.nodes.len();
    let jobs = opts.jobs.max(1);
    let children = plan.children();
    let mut missing: Vec<usize> = plan
        .nodes
        .iter()
        .map(|x| {
            x.inputs
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
        })
        .collect();
    let mut st = vec![St::Waiting; n];
    let mut manifests: Vec<Option<Arc<Manifest>>> = vec![None; n];
    let mut summary = RunSummary::default();
    let mut free = jobs;
    // bytes reserved by each node once it is ready (0: unknown, cached or no guard)
    let mut need: Vec<Option<u64>> = vec![None; n];
    let mut mem_free = budget.as_ref().map(|b| b.bytes);
    let mut told_waiting = vec![false; n];
    let mut running = 0usize;
    let (tx, rx) = mpsc::channel::<(usize, usize, Outcome)>();

    std::thread::scope(|s| {
        loop {
            // dispatch ready nodes in topological order while the budget allows
            if !opts.cancel.is_cancelled() {
                for i in 0..n {
                    if st[i] != St::Waiting || missing[i] != 0 {
                        continue;
                    }
                    let threads = plan.nodes[i].threads.min(jobs);
                    // what the node holds of the `--jobs` budget
                    let t = if executor.counts_cores() { threads } else { 1 };
                    if t > free && (running > 0 || !executor.counts_cores()) {
                        continue;
                    }
                    let inputs = inputs_of(plan, i, cache, |j| {
                        manifests[j].clone().expect("inputs complete")
                    });
                    if need[i].is_none() {
                        let node = &plan.nodes[i];
                        let estimate = match &budget {
                            Some(_) if !cache.is_done(&node.key) => registry
                                .get(&node.kind)
                                .and_then(|k| k.memory(&node.params, &inputs)),
                            _ => None,
                        };
                        if let Some(msg) = too_big(node, estimate.as_ref(), budget.as_ref()) {
                            need[i] = Some(0);
                            st[i] = St::Running;
                            running += 1;
                            let _ = tx.send((i, 0, Outcome::Failed(msg)));
                            continue;
                        }
                        need[i] = Some(estimate.map_or(0, |e| e.bytes));
                    }
                    let m = need[i].unwrap_or(0);
                    if let Some(f) = mem_free {
                        if m > f && running > 0 {
                            if !told_waiting[i] {
                                told_waiting[i] = true;
                                opts.reporter.line(&format!(
                                    "{} waits for memory: needs about {}, {} free",
                                    plan.nodes[i].name,
                                    human(m),
                                    human(f)
                                ));
                            }
                            continue;
                        }
                        mem_free = Some(f - m.min(f));
                    }
                    st[i] = St::Running;
                    free = free.saturating_sub(t);
                    running += 1;
                    let tx = tx.clone();
                    s.spawn(move || {
                        let out = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            executor.execute(plan, i, threads, inputs, cache, registry, opts)
                        }))
                        .unwrap_or_else(|p| {
                            let msg = p
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Outcome::Failed(format!("panicked: {msg}"))
                        });
                        let _ = tx.send((i, t, out));
                    });
                }
            }
            if running == 0 {
                break;
            }
            let Ok((i, t, out)) = rx.recv() else { break };
            running -= 1;
            free += t;
            if let Some(f) = &mut mem_free {
                *f += need[i].unwrap_or(0);
            }
            let node = &plan.nodes[i];
            let cancelled_node = matches!(out, Outcome::Cancelled);
            let ok = match out {
                Outcome::Cached(m) => {
                    summary.cached += 1;
                    manifests[i] = Some(Arc::new(m));
                    true
                }
                Outcome::Ran(m, resumed) => {
                    if resumed {
                        summary.resumed += 1;
                    } else {
                        summary.ran += 1;
                    }
                    manifests[i] = Some(Arc::new(m));
                    true
                }
                Outcome::Failed(e) => {
                    summary.failed += 1;
                    opts.reporter.line(&format!("FAILED {}: {e}", node.name));
                    summary.failures.push((node.name.clone(), e));
                    false
                }
                Outcome::Cancelled => {
                    summary.interrupted += 1;
                    false
                }
            };
            if cancelled_node {
                // children stay waiting: counted as interrupted, not skipped
                st[i] = St::Failed;
            } else if ok {
                st[i] = St::Done;
                for &c in &children[i] {
                    missing[c] -= 1;
                }
            } else {
                st[i] = St::Failed;
                let mut stack = children[i].clone();
                while let Some(c) = stack.pop() {
                    if st[c] == St::Waiting {
                        st[c] = St::Skipped;
                        summary.skipped += 1;
                        stack.extend(children[c].iter().copied());
                    }
                }
            }
        }
    });
    if opts.cancel.is_cancelled() {
        summary.cancelled = true;
        summary.interrupted += st.iter().filter(|s| **s == St::Waiting).count();
    }
    Ok(summary)
}

/// Run node `i` in this process: lock its entry, use it if cached, else run the kind and
/// commit. `executor` is recorded in the manifest (e.g. the Slurm job that ran it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn execute(
    plan: &Plan,
    i: usize,
    threads: usize,
    inputs: Vec<InputArtifact>,
    cache: &Cache,
    registry: &Registry,
    opts: &RunOptions,
    executor: Option<&serde_json::Value>,
) -> Outcome {
    let node = &plan.nodes[i];
    let lock = cache.lock(
        &node.key,
        || {
            opts.reporter.line(&format!(
                "waiting for {} (key {}): another whittle run is writing it",
                node.name,
                &node.key[..12]
            ))
        },
        || opts.cancel.is_cancelled(),
    );
    let _lock = match lock {
        Ok(Some(l)) => l,
        Ok(None) => return Outcome::Cancelled,
        Err(e) => return Outcome::Failed(format!("cannot lock the cache entry: {e:#}")),
    };
    match cache.verify(&node.key) {
        Ok(Some(m)) => {
            tracing::debug!("cached {} ({})", node.name, &node.key[..12]);
            return Outcome::Cached(m);
        }
        Ok(None) => {}
        Err(e) => {
            let moved = cache.quarantine(&node.key);
            tracing::warn!(
                "cache entry of {} ({}) is corrupted: {e:#}; moved it to {} and recomputing",
                node.name,
                &node.key[..12],
                moved
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|e| format!("(could not move: {e})"))
            );
        }
    }
    let pending = match cache.begin(&node.key) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(format!("cannot prepare the pending folder: {e:#}")),
    };
    let checkpoints = cache.checkpoints(&node.key);
    let resumed = checkpoints.has_state();
    let kind = registry.get(&node.kind).expect("kind validated").clone();
    let progress = opts.reporter.node(&node.name);
    let what = match checkpoints.latest() {
        Some((s, _)) => format!("resume {} from checkpoint {s}", node.name),
        None if resumed => format!("resume {}", node.name),
        None => format!("run {}", node.name),
    };
    opts.reporter.line(&what);
    let started = now_unix();
    let out_dir = pending.join("out");
    let ctx = RunContext {
        node: &node.name,
        stage: &node.stage,
        key: &node.key,
        params: &node.params,
        seed: plan.experiment.seed,
        inputs: &inputs,
        out_dir: &out_dir,
        experiment_dir: &plan.experiment.dir,
        threads,
        checkpoints: &checkpoints as &dyn Checkpoints,
        cancel: &opts.cancel,
        progress: &progress,
    };
    let result = kind.run(&ctx);
    progress.finish();
    let metrics = match result {
        Ok(m) => m,
        Err(_) if opts.cancel.is_cancelled() => {
            opts.reporter
                .line(&format!("stopped {} (state kept for resume)", node.name));
            return Outcome::Cancelled;
        }
        Err(e) => {
            let msg = format!("{e:#}");
            cache.mark_failed(&node.key, &msg);
            return Outcome::Failed(msg);
        }
    };
    let finished = now_unix();
    let manifest = Manifest {
        format: 1,
        key: node.key.clone(),
        node: node.name.clone(),
        stage: node.stage.clone(),
        kind: node.kind.clone(),
        version: node.version.clone(),
        params: node.params.clone(),
        inputs: inputs
            .iter()
            .map(|a| InputRecord {
                stage: a.stage.clone(),
                node: a.node.clone(),
                key: a.key.clone(),
            })
            .collect(),
        seed: plan.experiment.seed,
        extra: node.extra.clone(),
        outputs: Default::default(),
        metrics: if metrics.is_null() {
            serde_json::json!({})
        } else {
            metrics
        },
        started,
        finished,
        duration_secs: finished - started,
        resumed,
        experiment: plan.experiment.name.clone(),
        executor: executor.cloned(),
    };
    match cache.commit(&node.key, manifest) {
        Ok(m) => {
            opts.reporter
                .line(&format!("done {} in {:.2}s", node.name, m.duration_secs));
            Outcome::Ran(m, resumed)
        }
        Err(e) => {
            let msg = format!("cannot commit the result: {e:#}");
            cache.mark_failed(&node.key, &msg);
            Outcome::Failed(msg)
        }
    }
}
