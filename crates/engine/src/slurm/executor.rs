//! The Slurm executor: node threads of the scheduler hand their node to one poller, which
//! submits (grouping a stage's nodes into arrays), adopts jobs of an earlier controller,
//! polls `squeue` and the cache, reports queued / running / done counts, and answers each
//! node with its outcome.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::config::ExecutorConfig;
use super::jobs::{Batch, JobRecord, job_prefix, tail};
use super::sys::{self, JobState};
use crate::cache::Cache;
use crate::plan::Plan;
use crate::registry::Registry;
use crate::scheduler::{Executor, Outcome, RunOptions, RunSummary, schedule};
use crate::stage::InputArtifact;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    pub config: ExecutorConfig,
    /// The binary jobs run (`config.whittle`, else this process's executable).
    pub whittle: PathBuf,
    /// On Ctrl-C leave submitted jobs running (a rerun adopts them) instead of `scancel`.
    pub keep_jobs: bool,
}

/// Run `plan` through Slurm. Everything else as [`crate::run`]; `opts.jobs` is ignored in
/// favour of `max_jobs`.
pub fn run(
    plan: &Plan,
    cache: &Cache,
    registry: &Registry,
    opts: &RunOptions,
    slurm: &SlurmOptions,
) -> Result<RunSummary> {
    let jobs = sys::squeue().context(
        "the Slurm executor needs a reachable Slurm controller (squeue failed); \
         use `--executor local` to run here",
    )?;
    let ex = SlurmExecutor {
        slurm: slurm.clone(),
        state: Mutex::new(State {
            adoptable: adoptable(plan, cache, &jobs),
            ..Default::default()
        }),
        wake: Condvar::new(),
    };
    let mut opts = opts.clone();
    opts.jobs = slurm.config.max_jobs;
    std::thread::scope(|s| {
        let poller = s.spawn(|| ex.poll_loop(plan, cache, &opts));
        let r = schedule(plan, cache, registry, &opts, None, &ex);
        ex.state.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        ex.wake.notify_all();
        let _ = poller.join();
        r
    })
}

struct Request {
    node: usize,
    reply: Sender<Outcome>,
}

struct Tracked {
    node: usize,
    job: String,
    log: PathBuf,
    reply: Sender<Outcome>,
    /// last state seen in squeue
    state: Option<JobState>,
    /// polls in a row the job was missing from squeue (it may not be listed yet right after
    /// sbatch)
    missing: u32,
    /// when squeue first said COMPLETED while the entry was not visible yet
    completed_at: Option<Instant>,
}

/// How long a COMPLETED job's entry may take to become visible to the controller.
const NFS_GRACE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    tracked: Vec<Tracked>,
    /// key → (job id, log) of live jobs submitted by an earlier controller
    adoptable: HashMap<String, (String, PathBuf)>,
    stop: bool,
    done: usize,
    cached: usize,
}

struct SlurmExecutor {
    slurm: SlurmOptions,
    state: Mutex<State>,
    wake: Condvar,
}

impl Executor for SlurmExecutor {
    fn counts_cores(&self) -> bool {
        false
    }

    fn execute(
        &self,
        plan: &Plan,
        i: usize,
        _threads: usize,
        _inputs: Vec<InputArtifact>,
        cache: &Cache,
        _registry: &Registry,
        _opts: &RunOptions,
    ) -> Outcome {
        let node = &plan.nodes[i];
        match cache.verify(&node.key) {
            Ok(Some(m)) => {
                self.state.lock().unwrap_or_else(|e| e.into_inner()).cached += 1;
                return Outcome::Cached(m);
            }
            Ok(None) => {}
            // the job quarantines and recomputes it, like a local run
            Err(e) => tracing::warn!("cache entry of {} is corrupted: {e:#}", node.name),
        }
        let (tx, rx) = channel();
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.requests.push(Request { node: i, reply: tx });
        }
        self.wake.notify_all();
        rx.recv().unwrap_or(Outcome::Cancelled)
    }
}

/// Live jobs (queued or running) of this experiment's nodes, found by job name.
fn adoptable(
    plan: &Plan,
    cache: &Cache,
    jobs: &HashMap<String, JobState>,
) -> HashMap<String, (String, PathBuf)> {
    let prefix = job_prefix(&plan.experiment.name);
    let by_id16: HashMap<&str, &str> = plan
        .nodes
        .iter()
        .map(|n| (&n.key[..16], n.key.as_str()))
        .collect();
    let mut out = HashMap::new();
    for (job, st) in jobs {
        let Some(id) = st.name.strip_prefix(&prefix) else {
            continue;
        };
        if !st.alive() {
            continue;
        }
        if let Some(key) = by_id16.get(id) {
            if let Ok(b) = Batch::load(&Batch::path(cache, id)) {
                out.insert(key.to_string(), (job.clone(), b.log(cache, job, 0)));
            }
            continue;
        }
        // an array task `ARRAY_TASK` of batch `id`
        let Some((array, task)) = job.split_once('_') else {
            continue;
        };
        let Ok(task) = task.parse::<usize>() else {
            continue;
        };
        if let Ok(b) = Batch::load(&Batch::path(cache, id)) {
            if let Some(key) = b.keys.get(task) {
                out.insert(key.clone(), (job.clone(), b.log(cache, array, task)));
            }
        }
    }
    out
}

impl SlurmExecutor {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn poll_loop(&self, plan: &Plan, cache: &Cache, opts: &RunOptions) {
        // squeue every `poll`; the cache (a stat per tracked node) every `tick`
        let poll = Duration::from_secs_f64(self.slurm.config.poll_secs);
        let tick = poll.min(Duration::from_millis(250));
        let mut last_line = String::new();
        let mut last_poll = Instant::now() - poll;
        let mut last_tick = Instant::now() - tick;
        loop {
            // wait for work, a poll tick or the end
            let (requests, cancelled) = {
                let mut st = self.lock();
                loop {
                    if st.stop {
                        return;
                    }
                    if opts.cancel.is_cancelled() {
                        break;
                    }
                    if !st.requests.is_empty() {
                        break;
                    }
                    if !st.tracked.is_empty() && last_tick.elapsed() >= tick {
                        break;
                    }
                    let wait = if st.tracked.is_empty() {
                        Duration::from_millis(200)
                    } else {
                        tick.saturating_sub(last_tick.elapsed())
                    };
                    st = self
                        .wake
                        .wait_timeout(st, wait.max(Duration::from_millis(10)))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                (std::mem::take(&mut st.requests), opts.cancel.is_cancelled())
            };
            if cancelled {
                self.cancel_all(requests, opts);
                return;
            }
            if !requests.is_empty() {
                // let siblings dispatched in the same pass join this submission
                std::thread::sleep(Duration::from_millis(50));
                let mut requests = requests;
                requests.append(&mut self.lock().requests);
                self.submit(plan, cache, opts, requests);
            }
            if last_tick.elapsed() >= tick {
                last_tick = Instant::now();
                let ask = last_poll.elapsed() >= poll;
                if ask {
                    last_poll = Instant::now();
                }
                self.check(plan, cache, ask);
            }
            let line = self.counts_line();
            if line != last_line {
                opts.reporter.line(&line);
                last_line = line;
            }
        }
    }

    fn counts_line(&self) -> String {
        let st = self.lock();
        let queued = st
            .tracked
            .iter()
            .filter(|t| t.state.as_ref().is_none_or(|s| s.queued()))
            .count();
        let running = st.tracked.len() - queued;
        format!(
            "slurm: {queued} queued, {running} running, {} done{}",
            st.done,
            if st.cached > 0 {
                format!(" ({} cached)", st.cached)
            } else {
                String::new()
            }
        )
    }

    fn cancel_all(&self, requests: Vec<Request>, opts: &RunOptions) {
        for r in requests {
            let _ = r.reply.send(Outcome::Cancelled);
        }
        let tracked = std::mem::take(&mut self.lock().tracked);
        let ids: Vec<String> = tracked.iter().map(|t| t.job.clone()).collect();
        if !ids.is_empty() {
            if self.slurm.keep_jobs {
                opts.reporter.line(&format!(
                    "slurm: left {} job(s) running ({}); run again to adopt them",
                    ids.len(),
                    ids.join(" ")
                ));
            } else {
                match sys::scancel(&ids) {
                    Ok(()) => opts.reporter.line(&format!(
                        "slurm: cancelled {} job(s) ({}); their nodes keep their checkpoints",
                        ids.len(),
                        ids.join(" ")
                    )),
                    Err(e) => opts
                        .reporter
                        .line(&format!("slurm: could not cancel {}: {e:#}", ids.join(" "))),
                }
            }
        }
        for t in tracked {
            let _ = t.reply.send(Outcome::Cancelled);
        }
    }

    /// Adopt or submit: one job per node, or one array per stage when `array` is on.
    fn submit(&self, plan: &Plan, cache: &Cache, opts: &RunOptions, requests: Vec<Request>) {
        let mut groups: BTreeMap<(String, usize), Vec<Request>> = BTreeMap::new();
        for r in requests {
            let node = &plan.nodes[r.node];
            let adopted = self.lock().adoptable.remove(&node.key);
            if let Some((job, log)) = adopted {
                opts.reporter
                    .line(&format!("slurm: adopted job {job} running {}", node.name));
                self.lock().tracked.push(Tracked {
                    node: r.node,
                    job,
                    log,
                    reply: r.reply,
                    state: None,
                    missing: 0,
                    completed_at: None,
                });
                continue;
            }
            let group = if self.slurm.config.array {
                (node.stage.clone(), node.threads)
            } else {
                (node.key.clone(), 0)
            };
            groups.entry(group).or_default().push(r);
        }
        for (_, mut group) in groups {
            // plan order, whatever order the node threads asked in: the same array every time
            group.sort_by_key(|r| r.node);
            if let Err(e) = self.submit_batch(plan, cache, opts, &group) {
                let msg = format!("{e:#}");
                for r in group {
                    let _ = r
                        .reply
                        .send(Outcome::Failed(format!("could not submit to Slurm: {msg}")));
                }
            }
        }
    }

    fn submit_batch(
        &self,
        plan: &Plan,
        cache: &Cache,
        opts: &RunOptions,
        group: &[Request],
    ) -> Result<()> {
        let exp = &plan.experiment;
        let nodes: Vec<&crate::plan::Node> = group.iter().map(|r| &plan.nodes[r.node]).collect();
        let file = std::path::absolute(&exp.file).unwrap_or(exp.file.clone());
        let mut batch = Batch::new(
            &exp.name,
            file,
            exp.overrides(),
            nodes.iter().map(|n| n.name.clone()).collect(),
            nodes.iter().map(|n| n.key.clone()).collect(),
        );
        let res = self.slurm.config.resources(&nodes[0].stage);
        let c = &self.slurm.config;
        let script = batch.script(
            cache,
            &self.slurm.whittle,
            &exp.dir,
            nodes[0].threads,
            &res,
            c.partition.as_deref(),
            c.account.as_deref(),
            c.qos.as_deref(),
        );
        batch.save(cache)?;
        let path = batch.write_script(cache, &script)?;
        let job = sys::sbatch(&path)?;
        batch.job = Some(job.clone());
        batch.save(cache)?;
        let what = if batch.array {
            format!(
                "slurm: submitted job array {job} ({} nodes of {})",
                nodes.len(),
                nodes[0].stage
            )
        } else {
            format!("slurm: submitted job {job} for {}", nodes[0].name)
        };
        opts.reporter.line(&what);
        let mut st = self.lock();
        // moved out of `group` by index: replies are cloned senders
        for (i, (r, n)) in group.iter().zip(&nodes).enumerate() {
            let id = if batch.array {
                format!("{job}_{i}")
            } else {
                job.clone()
            };
            let log = batch.log(cache, &job, i);
            let rec = JobRecord {
                job: id.clone(),
                batch: batch.id.clone(),
                node: n.name.clone(),
                log: log.clone(),
            };
            if let Err(e) = rec.save(cache, &n.key) {
                tracing::warn!("cannot record job {id} of {}: {e:#}", n.name);
            }
            st.tracked.push(Tracked {
                node: r.node,
                job: id,
                log,
                reply: r.reply.clone(),
                state: None,
                missing: 0,
                completed_at: None,
            });
        }
        Ok(())
    }

    /// One poll: committed entries end their node; with `ask_slurm`, also ended jobs without
    /// an entry fail theirs.
    fn check(&self, plan: &Plan, cache: &Cache, ask_slurm: bool) {
        let jobs = match ask_slurm.then(sys::squeue) {
            None => None,
            Some(Ok(j)) => Some(j),
            Some(Err(e)) => {
                tracing::warn!("squeue failed (will retry): {e:#}");
                None
            }
        };
        let mut tracked = std::mem::take(&mut self.lock().tracked);
        let mut gone: Vec<String> = Vec::new();
        for t in tracked.iter_mut().filter(|_| jobs.is_some()) {
            let jobs = jobs.as_ref().expect("filtered");
            t.state = jobs.get(&t.job).cloned();
            match &t.state {
                None => {
                    t.missing += 1;
                    gone.push(t.job.clone());
                }
                Some(_) => t.missing = 0,
            }
        }
        let acct = if gone.is_empty() {
            None
        } else {
            sys::sacct(&gone)
        };
        let mut keep = Vec::new();
        let mut finished = 0;
        for mut t in tracked {
            let node = &plan.nodes[t.node];
            if cache.is_done(&node.key) {
                let out = match cache.verify(&node.key) {
                    Ok(Some(m)) => {
                        let resumed = m.resumed;
                        Outcome::Ran(m, resumed)
                    }
                    Ok(None) => Outcome::Failed("the entry vanished after its commit".into()),
                    Err(e) => {
                        Outcome::Failed(format!("job {} committed a corrupt entry: {e:#}", t.job))
                    }
                };
                finished += 1;
                let _ = t.reply.send(out);
                continue;
            }
            if t.state.is_none() {
                t.state = acct.as_ref().and_then(|a| a.get(&t.job).cloned());
            }
            let ended = jobs.is_some()
                && match &t.state {
                    // a job that exited 0 has committed; on NFS the controller may see the
                    // entry a little later (attribute caching): give it a grace period
                    Some(s) if s.state == "COMPLETED" => {
                        t.completed_at.get_or_insert_with(Instant::now).elapsed() > NFS_GRACE
                    }
                    Some(s) => !s.alive(),
                    // not listed right after sbatch happens; give it a few polls
                    None => t.missing >= 3,
                };
            if !ended {
                keep.push(t);
                continue;
            }
            let _ = t.reply.send(Outcome::Failed(failure(cache, &node.key, &t)));
        }
        let mut st = self.lock();
        st.done += finished;
        keep.append(&mut st.tracked);
        st.tracked = keep;
    }
}

/// Why a job ended without committing: Slurm state, the error the job recorded, log tail.
fn failure(cache: &Cache, key: &str, t: &Tracked) -> String {
    let mut log = tail(&t.log, 15);
    if log.is_empty() {
        // slurmstepd may still be flushing the job's last lines
        std::thread::sleep(Duration::from_secs(1));
        log = tail(&t.log, 15);
    }
    let lower = log.to_lowercase();
    let over_memory = (lower.contains("exceeded") && lower.contains("memory limit"))
        || lower.contains("oom-kill")
        || lower.contains("out of memory");
    let mut state = match &t.state {
        Some(s) if s.reason.is_empty() || s.reason == "None" => s.state.clone(),
        Some(s) => format!("{} ({})", s.state, s.reason),
        None => "unknown (no longer in squeue, and sacct is unavailable)".into(),
    };
    // jobacct_gather's OverMemoryKill ends the job FAILED; say what happened
    if !state.starts_with("OUT_OF_MEMORY") && over_memory {
        state = format!("OUT_OF_MEMORY (the job exceeded its --mem; Slurm says {state})");
    } else if state.starts_with("OUT_OF_MEMORY") {
        state.push_str(" (the job exceeded its --mem; raise `mem` in [executor])");
    } else if state.starts_with("TIMEOUT") {
        state.push_str(" (raise `time` in [executor]; a rerun resumes from its checkpoint)");
    }
    let recorded = std::fs::read_to_string(cache.pending_dir(key).join(crate::cache::FAILED))
        .ok()
        .map(|e| format!("; the node reported: {}", e.trim()))
        .unwrap_or_default();
    format!(
        "Slurm job {} ended {state} without committing its entry{recorded}; log {}{}",
        t.job,
        t.log.display(),
        if log.is_empty() {
            String::new()
        } else {
            format!(":\n{log}")
        }
    )
}
