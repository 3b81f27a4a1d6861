//! The scheduler: runs a plan's nodes in topological order, independent nodes in parallel
//! within a core budget and a memory budget (the kinds' estimates, see [`crate::memory`]),
//! using cached entries where valid, resuming from saved state, and stopping only the
//! descendants of a failed node. A node whose estimate alone exceeds the memory budget fails
//! before it starts.
//!
//! Packing: a node asks for `threads` (its kind's [`StageKind::threads`]) and can make do with
//! [`StageKind::min_threads`]. While other nodes wait for cores, a ready node leaves one core
//! to each of them and takes no more than earlier nodes of its stage kept busy (CPU time /
//! wall time, recorded in each manifest); alone, it gets all it asks for. So on 2 cores a
//! sweep of training nodes runs two at a time on one thread each, and the last node of a
//! chain runs on both. Kinds whose results depend on the thread count keep a fixed count.
//!
//! [`StageKind::threads`]: crate::StageKind::threads
//! [`StageKind::min_threads`]: crate::StageKind::min_threads

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc;

use anyhow::{Context, Result};

use crate::cache::{Cache, InputRecord, Manifest, now_unix};
use crate::cpu::{Meter, set_meter, thread_cpu_secs};
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

    /// Add the counts of a later round of the same run.
    pub fn absorb(&mut self, o: RunSummary) {
        self.ran += o.ran;
        self.cached += o.cached;
        self.resumed += o.resumed;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.interrupted += o.interrupted;
        self.cancelled |= o.cancelled;
        self.failures.extend(o.failures);
    }
}

/// Run an experiment whose plan may grow (dynamic fan-out, see [`crate::plan`]): build the
/// plan from what `cache` holds, run it with `run_once`, and while a deferred stage's source
/// has completed, rebuild and run again. Nodes settled in an earlier round are neither rerun
/// nor counted again, so the summary counts each node once. Returns the last plan (every
/// stage expanded unless a source failed or the run was interrupted) and the summed summary.
pub fn run_rounds(
    experiment: crate::Experiment,
    cache: &Cache,
    registry: &Registry,
    mut run_once: impl FnMut(&Plan) -> Result<RunSummary>,
) -> Result<(Plan, RunSummary)> {
    let mut plan = Plan::build_cached(experiment, registry, cache)?;
    let mut total = RunSummary::default();
    loop {
        let s = run_once(&plan)?;
        let stop = s.cancelled || plan.deferred.is_empty();
        total.absorb(s);
        if stop {
            break;
        }
        let mut next = Plan::build_cached(plan.experiment.clone(), registry, cache)?;
        if next.deferred.len() == plan.deferred.len() {
            // no source completed: what waits stays waiting (its source failed)
            break;
        }
        let mut settled = std::mem::take(&mut plan.settled);
        for n in &plan.nodes {
            settled.insert(n.key.clone(), cache.is_done(&n.key));
        }
        tracing::debug!(
            "fan-out: {} more node(s), {} stage(s) still deferred",
            next.nodes.len().saturating_sub(plan.nodes.len()),
            next.deferred.len()
        );
        next.settled = settled;
        plan = next;
    }
    Ok((plan, total))
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
    // (fewest, most) threads of each node, and what earlier nodes of each stage kept busy
    let range: Vec<(usize, usize)> = plan
        .nodes
        .iter()
        .map(|x| {
            let want = x.threads.clamp(1, jobs);
            let min = registry
                .get(&x.kind)
                .map_or(want, |k| k.min_threads(&x.params))
                .clamp(1, want);
            (min, want)
        })
        .collect();
    let mut profiles = if executor.counts_cores() {
        Profiles::from_cache(plan, cache)
    } else {
        Profiles::default()
    };
    // nodes an earlier round of this run settled: done (not counted again) or failed
    for i in 0..n {
        let node = &plan.nodes[i];
        match plan.settled.get(&node.key) {
            Some(true) => match cache.manifest(&node.key) {
                Some(m) => {
                    st[i] = St::Done;
                    manifests[i] = Some(Arc::new(m));
                }
                None => continue,
            },
            Some(false) => st[i] = St::Failed,
            None => {
                if node
                    .inputs
                    .iter()
                    .any(|&j| matches!(st[j], St::Failed | St::Skipped))
                {
                    st[i] = St::Skipped;
                    summary.skipped += 1;
                }
                continue;
            }
        }
    }
    for i in 0..n {
        if st[i] == St::Done {
            for &c in &children[i] {
                missing[c] -= 1;
            }
        }
    }
    // keys being computed: a second node of the same key waits, then finds it cached
    let mut busy_keys: std::collections::HashSet<&str> = Default::default();

    std::thread::scope(|s| {
        loop {
            // dispatch ready nodes in topological order while the budget allows
            if !opts.cancel.is_cancelled() {
                let ready: Vec<usize> = (0..n)
                    .filter(|&i| st[i] == St::Waiting && missing[i] == 0)
                    .collect();
                // ready nodes that will run (not merely be found in the cache)
                let work: Vec<bool> = ready
                    .iter()
                    .map(|&i| !executor.counts_cores() || !cache.is_done(&plan.nodes[i].key))
                    .collect();
                for (pos, &i) in ready.iter().enumerate() {
                    if busy_keys.contains(plan.nodes[i].key.as_str()) {
                        continue;
                    }
                    let (threads, t) = if executor.counts_cores() {
                        let (min, want) = range[i];
                        let others = work[pos + 1..].iter().filter(|w| **w).count();
                        let useful = profiles.useful(&plan.nodes[i].stage);
                        let g = if work[pos] {
                            grant(min, want, useful, free, others)
                        } else {
                            // found in the cache at once: its fewest threads
                            grant(min, min, None, free, 0)
                        };
                        match g {
                            Some(g) => (g, g),
                            None => continue,
                        }
                    } else {
                        // what the node holds of the `--jobs` budget: one job slot
                        if free == 0 {
                            continue;
                        }
                        (plan.nodes[i].threads.min(jobs), 1)
                    };
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
                    busy_keys.insert(plan.nodes[i].key.as_str());
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
            busy_keys.remove(node.key.as_str());
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
                    profiles.learn(&m);
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
    // CPU time of the node: its thread pools' (crate::cpu::in_pool) and this thread's own
    let meter = Arc::new(Meter::default());
    let before = set_meter(Some(meter.clone()));
    let own = thread_cpu_secs();
    let result = kind.run(&ctx);
    let own = thread_cpu_secs() - own;
    set_meter(before);
    let pools = meter.secs();
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
    // a fan-out source must list its children before it is committed
    let fans = plan.fans_out(&node.stage);
    if !fans.is_empty()
        && let Err(e) = crate::plan::read_children(&out_dir.join(crate::plan::CHILDREN_FILE))
    {
        let msg = format!(
            "stage `{}` fans out over `{}` (`for_each`), but {e}",
            fans.join("`, `"),
            node.stage
        );
        cache.mark_failed(&node.key, &msg);
        return Outcome::Failed(msg);
    }
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
        threads: Some(threads),
        // a kind that runs no pool (e.g. an external command) is not measured
        cpu_secs: (pools > 0.0).then_some(pools + own),
    };
    match cache.commit(&node.key, manifest) {
        Ok(m) => {
            let busy = match m.cpu_secs {
                Some(c) if m.duration_secs > 0.0 => {
                    format!(", {:.2} cores busy", c / m.duration_secs)
                }
                _ => String::new(),
            };
            opts.reporter.line(&format!(
                "done {} in {:.2}s ({threads} thread{}{busy})",
                node.name,
                m.duration_secs,
                if threads == 1 { "" } else { "s" }
            ));
            Outcome::Ran(m, resumed)
        }
        Err(e) => {
            let msg = format!("cannot commit the result: {e:#}");
            cache.mark_failed(&node.key, &msg);
            Outcome::Failed(msg)
        }
    }
}

/// Threads for a ready node that will run: between `min` and `want`, `free` cores free and
/// `others` more ready nodes behind it in line. A node of a fixed count (`min == want`) gets it
/// or waits (`None`). Otherwise it leaves a core to each node behind it that it can, and while
/// any wait it takes no more than its stage was measured to keep busy (`useful`).
pub(crate) fn grant(
    min: usize,
    want: usize,
    useful: Option<usize>,
    free: usize,
    others: usize,
) -> Option<usize> {
    let min = min.clamp(1, want.max(1));
    if min > free {
        return None;
    }
    let reserve = others.min(free - min);
    let mut g = want.min(free - reserve);
    if others > 0
        && let Some(u) = useful
    {
        g = g.min(u);
    }
    Some(g.max(min))
}

/// What finished nodes of each stage measured: CPU seconds / wall seconds on the threads they
/// had (latest node of the stage wins), from earlier runs in the cache and from this run.
#[derive(Default)]
pub(crate) struct Profiles(std::collections::HashMap<String, (f64, usize)>);

impl Profiles {
    /// The stages of `plan` as their entries in `cache` measured them.
    fn from_cache(plan: &Plan, cache: &Cache) -> Self {
        let stages: std::collections::HashSet<&str> =
            plan.nodes.iter().map(|n| n.stage.as_str()).collect();
        let mut ms: Vec<Manifest> = cache
            .all_manifests()
            .into_iter()
            .filter(|m| stages.contains(m.stage.as_str()))
            .collect();
        ms.sort_by(|a, b| a.finished.total_cmp(&b.finished));
        let mut p = Profiles::default();
        for m in &ms {
            p.learn(m);
        }
        p
    }

    /// Remembers what node `m` kept busy (too short a node says nothing).
    pub(crate) fn learn(&mut self, m: &Manifest) {
        if let (Some(cpu), Some(t)) = (m.cpu_secs, m.threads)
            && m.duration_secs >= 0.5
        {
            self.0
                .insert(m.stage.clone(), (cpu / m.duration_secs, t.max(1)));
        }
    }

    /// Threads worth giving a node of `stage`: the cores its last node kept busy, rounded;
    /// `None` (no limit) when unknown or when that node was using all the threads it had.
    pub(crate) fn useful(&self, stage: &str) -> Option<usize> {
        let &(busy, had) = self.0.get(stage)?;
        if busy >= had as f64 - 0.5 {
            return None;
        }
        Some((busy.round() as usize).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_share_the_cores_among_ready_nodes() {
        // 2 free cores, nodes asking for 2 but able to run on 1
        assert_eq!(grant(1, 2, None, 2, 0), Some(2), "alone: all it asks");
        assert_eq!(
            grant(1, 2, None, 2, 1),
            Some(1),
            "one behind: leaves it a core"
        );
        assert_eq!(grant(1, 2, None, 1, 0), Some(1));
        assert_eq!(grant(1, 2, None, 0, 0), None, "no core free");
        // a fixed 2-thread node waits for both cores, whoever is behind it
        assert_eq!(grant(2, 2, None, 1, 0), None);
        assert_eq!(grant(2, 2, None, 2, 3), Some(2));
        // 8 cores, 2 nodes behind: 6 for the first; a measured 3 caps it while others wait
        assert_eq!(grant(1, 8, None, 8, 2), Some(6));
        assert_eq!(grant(1, 8, Some(3), 8, 2), Some(3));
        assert_eq!(
            grant(1, 8, Some(3), 8, 0),
            Some(8),
            "alone: the cap does not apply"
        );
        assert_eq!(
            grant(2, 4, Some(1), 4, 1),
            Some(2),
            "never below its minimum"
        );
    }

    fn manifest(stage: &str, threads: usize, cpu: f64, wall: f64) -> Manifest {
        Manifest {
            format: 1,
            key: "k".into(),
            node: stage.into(),
            stage: stage.into(),
            kind: "x".into(),
            version: "1".into(),
            params: serde_json::json!({}),
            inputs: vec![],
            seed: 1,
            extra: String::new(),
            outputs: Default::default(),
            metrics: serde_json::json!({}),
            started: 0.0,
            finished: wall,
            duration_secs: wall,
            resumed: false,
            experiment: "e".into(),
            executor: None,
            threads: Some(threads),
            cpu_secs: Some(cpu),
        }
    }

    #[test]
    fn profiles_learn_the_cores_a_stage_kept_busy() {
        let mut p = Profiles::default();
        assert_eq!(p.useful("train"), None);
        // 4 threads, 1.2 cores busy → 1 is worth giving
        p.learn(&manifest("train", 4, 12.0, 10.0));
        assert_eq!(p.useful("train"), Some(1));
        // 4 threads, 2.6 busy → 3
        p.learn(&manifest("train", 4, 26.0, 10.0));
        assert_eq!(p.useful("train"), Some(3));
        // saturated its 2 threads: it might use more, no limit
        p.learn(&manifest("train", 2, 19.0, 10.0));
        assert_eq!(p.useful("train"), None);
        // too short to say anything: the last useful measurement stays
        p.learn(&manifest("prune", 4, 0.1, 0.1));
        assert_eq!(p.useful("prune"), None);
    }
}
