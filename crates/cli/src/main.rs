//! `whittle`: the command-line front end (run, resume, status, why, report, diff, gc).
//!
//! Exit codes: 0 success, 1 a node failed (or was skipped because an input failed),
//! 2 invalid experiment file or arguments, 130 interrupted.
//! A closed standard output (`whittle status FILE | head -1`) ends a query command quietly,
//! killed by SIGPIPE like `git log`; `run` and `resume` ignore it and finish (see `out`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

mod alloc;
mod out;
mod report;

use out::{errln, out, outln};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use whittle_engine::slurm::{self, ExecutorKind};
use whittle_engine::{
    Cache, CancelToken, Checkpoints, NodeState, Plan, Registry, Reporter, RunOptions, RunSummary,
    query,
};

#[derive(Parser)]
#[command(
    name = "whittle",
    version,
    about = "Runs whole tiny-ML compression studies from one TOML file, with every stage content-hashed, cached and resumable."
)]
struct Cli {
    /// Debug logs (more with RUST_LOG).
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Cache folder (a relative path is taken from the current working directory).
    #[arg(
        long,
        global = true,
        env = "WHITTLE_CACHE",
        value_name = "DIR",
        default_value = "cache"
    )]
    cache: PathBuf,
    /// Folder for rendered reports (`<DIR>/<experiment>.md` and `<DIR>/<experiment>/`).
    #[arg(
        long,
        global = true,
        env = "WHITTLE_REPORTS",
        value_name = "DIR",
        default_value = "reports"
    )]
    reports: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct ExpArgs {
    /// Experiment file (TOML).
    file: PathBuf,
    /// Override a value as if edited in the file, e.g. `--set stages.train.epochs=2`
    /// (VALUE is parsed as TOML, else taken as a string). Repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    sets: Vec<String>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    exp: ExpArgs,
    /// Core budget: nodes run in parallel while the sum of their threads fits; a node that
    /// can make do with fewer threads gets fewer while others are ready to run beside it
    /// [default: number of cores].
    #[arg(short, long, value_name = "N")]
    jobs: Option<usize>,
    /// Where nodes run: `local` (threads of this process) or `slurm` (one job per node,
    /// submitted with sbatch; see README "On a Slurm cluster") [default: the file's
    /// `[executor] kind`, else local].
    #[arg(long, env = "WHITTLE_EXECUTOR", value_name = "KIND")]
    executor: Option<ExecutorKind>,
    /// With `--executor slurm`: on Ctrl-C leave submitted jobs running (a rerun adopts them)
    /// instead of cancelling them.
    #[arg(long)]
    keep_jobs: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every node that is not cached.
    ///
    /// Ends with `summary: ran=N cached=M resumed=K failed=F` (disjoint counts). A node
    /// another run is writing is waited for, with a message. Ctrl-C stops cleanly after
    /// running nodes save their state; a second Ctrl-C exits at once. Exit code 0 when every
    /// node completed, 1 when one failed, 2 for an invalid file, 130 when interrupted.
    Run(RunArgs),
    /// Like `run`, after listing the interrupted or failed nodes it will resume.
    Resume(RunArgs),
    /// Show each node with its key and state (done, pending, partial = has saved state, failed).
    Status {
        #[command(flatten)]
        exp: ExpArgs,
        /// Print a JSON array of {"node", "stage", "key", "state"} objects.
        #[arg(long)]
        json: bool,
    },
    /// Explain why a node would run: what differs from the closest cached entry of its stage.
    Why {
        #[command(flatten)]
        exp: ExpArgs,
        /// Node name, e.g. `pit[lambda=1e-5]` (see `whittle status`).
        node: String,
    },
    /// Render the report of an experiment from the cache (also done at the end of `run`).
    Report {
        #[command(flatten)]
        exp: ExpArgs,
    },
    /// Compare two experiments: parameters that differ, metrics with deltas, Pareto-front moves.
    ///
    /// A and B are experiment files (results read from the cache), report folders
    /// (`reports/<experiment>/`) or `metrics.json` files.
    Diff {
        a: PathBuf,
        b: PathBuf,
        /// Print JSON instead of Markdown.
        #[arg(long)]
        json: bool,
    },
    /// Remove cache entries, downloads and artifacts that no experiment references.
    ///
    /// Keeps the nodes of the files given, or of every `experiments/*.toml` under the current
    /// directory, and the shared files they use (downloaded archives, teacher logits); says how
    /// much it frees before removing.
    /// Run one node of a submitted batch (what a Slurm job script calls; not for direct use).
    #[command(hide = true)]
    ExecNode {
        /// `<cache>/slurm/batches/<id>.json`; an array task picks its node by
        /// SLURM_ARRAY_TASK_ID.
        batch: PathBuf,
    },
    Gc {
        /// Experiment files whose nodes are kept.
        files: Vec<PathBuf>,
        /// Only list what would be removed, each item with its size.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    alloc::keep_freed_memory();
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        if cli.verbose {
            "debug".into()
        } else {
            "info".into()
        }
    });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        // On a write error it would report with `eprintln!`, which panics when stderr is a
        // closed pipe; log lines that cannot be written are dropped instead (see `out`).
        .log_internal_errors(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(ee) = e.downcast_ref::<whittle_engine::ExperimentError>() {
                errln!("error: {ee}");
            } else {
                errln!("error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    let registry = whittle_stages::registry();
    let cache = Cache::new(&cli.cache);
    match cli.cmd {
        Cmd::Run(a) => run(&a, &cache, &registry, false, &cli.reports),
        Cmd::Resume(a) => run(&a, &cache, &registry, true, &cli.reports),
        Cmd::Report { exp } => {
            let plan = query::load_plan_cached(&exp.file, &exp.sets, &registry, &cache)?;
            let md = report::write(&report::document(&plan, &cache, None)?, &cli.reports)?;
            outln!("report: {}", md.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Diff { a, b, json } => {
            let da = report::load_any(&a, &cache, &registry)?;
            let db = report::load_any(&b, &cache, &registry)?;
            let d =
                whittle_report::diff(&a.display().to_string(), &da, &b.display().to_string(), &db);
            if json {
                outln!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                out!("{}", d.to_markdown());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { exp, json } => {
            let plan = query::load_plan_cached(&exp.file, &exp.sets, &registry, &cache)?;
            let mut rows = query::status(&plan, &cache);
            if rows.iter().any(|r| r.job.is_some()) {
                // one squeue call; jobs it no longer knows keep only their id
                if let Ok(jobs) = slurm::sys::squeue() {
                    for r in &mut rows {
                        r.job_state = r
                            .job
                            .as_ref()
                            .and_then(|j| jobs.get(j))
                            .map(|s| s.state.clone());
                    }
                }
            }
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let w = rows.iter().map(|r| r.node.len()).max().unwrap_or(4);
                for r in &rows {
                    if let Some(wait) = r.waiting(&plan) {
                        outln!("{:<w$}  {wait}", r.node);
                        continue;
                    }
                    let job = match (&r.job, &r.job_state) {
                        (Some(j), Some(s)) => format!("  slurm {j} {s}"),
                        (Some(j), None) => format!("  slurm {j}"),
                        _ => String::new(),
                    };
                    let state = if job.is_empty() {
                        r.state.to_string()
                    } else {
                        format!("{:<7}", r.state.to_string())
                    };
                    outln!("{:<w$}  {}  {state}{job}", r.node, &r.key[..16]);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Why { exp, node } => {
            let plan = query::load_plan_cached(&exp.file, &exp.sets, &registry, &cache)?;
            outln!("{}", query::why(&plan, &cache, &node)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Gc { files, dry_run } => gc(&files, dry_run, &cache, &registry),
        Cmd::ExecNode { batch } => exec_node(&batch, &cache, &registry),
    }
}

fn run(
    a: &RunArgs,
    cache: &Cache,
    registry: &Registry,
    resume: bool,
    reports: &Path,
) -> Result<ExitCode> {
    // A run finishes its nodes even when nobody reads its output any more (see `out`).
    out::keep_going();
    let clock = whittle_engine::cpu::Clock::start();
    let experiment = whittle_engine::Experiment::load(&a.exp.file, &a.exp.sets, registry)?;
    // validated at once (exit 2), before anything runs; `run_rounds` builds it again
    let plan: Plan = Plan::build_cached(experiment.clone(), registry, cache)?;
    let started = whittle_engine::cache::now_unix();
    if resume {
        let rows = query::status(&plan, cache);
        let todo: Vec<_> = rows
            .iter()
            .filter(|r| matches!(r.state, NodeState::Partial | NodeState::Failed))
            .collect();
        if todo.is_empty() {
            outln!("nothing to resume: no node has saved state or a failed attempt");
        }
        for r in todo {
            let how = match (r.state, cache.checkpoints(&r.key).latest()) {
                (NodeState::Failed, _) => "failed last time; will retry".to_string(),
                (_, Some((step, _))) => format!("will resume from checkpoint {step}"),
                _ => "will resume from its saved state".to_string(),
            };
            outln!("resume: {} ({}) {how}", r.node, &r.key[..12]);
        }
    }
    let jobs = a.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let cancel = CancelToken::default();
    install_ctrlc(cancel.clone());
    let opts = RunOptions {
        jobs,
        cancel,
        reporter: Reporter::auto(),
    };
    let kind = a.executor.unwrap_or(plan.experiment.executor.kind);
    let so = match kind {
        ExecutorKind::Local => None,
        ExecutorKind::Slurm => {
            let config = plan.experiment.executor.clone();
            let whittle = match &config.whittle {
                Some(p) => plan.experiment.dir.join(p),
                None => std::env::current_exe().context(
                    "cannot find this executable for the Slurm jobs; set `whittle` in [executor]",
                )?,
            };
            Some(slurm::SlurmOptions {
                config,
                whittle,
                keep_jobs: a.keep_jobs,
            })
        }
    };
    drop(plan);
    // one round per fan-out level: a `for_each` stage expands once its source completed
    let (plan, summary) =
        whittle_engine::run_rounds(experiment, cache, registry, |plan| match &so {
            None => whittle_engine::run(plan, cache, registry, &opts),
            Some(so) => slurm::run(plan, cache, registry, &opts, so),
        })?;
    // CPU time / wall time of this process on its core budget; under Slurm the nodes ran in
    // jobs elsewhere and this process only waited for them
    let cpu = (kind == ExecutorKind::Local).then(|| clock.stop(jobs));
    if summary.skipped > 0 {
        errln!(
            "skipped {} node(s) downstream of a failure",
            summary.skipped
        );
    }
    for (node, err) in &summary.failures {
        errln!("failed: {node}: {}", err.lines().next().unwrap_or(""));
    }
    if summary.cancelled {
        errln!(
            "interrupted: {} node(s) not finished; their saved state is kept — run `whittle resume {}` to continue",
            summary.interrupted,
            a.exp.file.display()
        );
    }
    if !summary.cancelled {
        // The report shows whatever completed, also when some node failed.
        // A run that computed nodes records its CPU use for the reports of this plan; a fully
        // cached rerun keeps the record of the run that did the work (same report bytes).
        if let Some(u) = cpu.as_ref().filter(|_| summary.ran + summary.resumed > 0) {
            let rec = whittle_report::model::RunCpu {
                cpu_secs: u.cpu_secs,
                wall_secs: u.wall_secs,
                cores: u.cores,
            };
            if let Err(e) = report::save_run_cpu(&plan, cache, &rec) {
                errln!("report: CPU use not recorded: {e:#}");
            }
        }
        let doc = report::document(&plan, cache, Some(started));
        match doc.and_then(|d| report::write(&d, reports)) {
            Ok(md) => outln!("report: {}", md.display()),
            Err(e) => errln!("report: not written: {e:#}"),
        }
    }
    match cpu {
        Some(u) => outln!("{}", u.line()),
        None => outln!("CPU n/a (slurm: the nodes ran in batch jobs)"),
    }
    outln!("{}", summary.line());
    Ok(if summary.cancelled {
        ExitCode::from(130)
    } else if summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The job side of the Slurm executor: load the batch's experiment (same file, same `--set`),
/// run the node its array task names, commit it. Exit 0 committed (or already cached),
/// 1 failed, 130 interrupted (scancel / time limit: its checkpoint is kept).
fn exec_node(batch: &Path, cache: &Cache, registry: &Registry) -> Result<ExitCode> {
    out::keep_going();
    let b = slurm::Batch::load(batch)?;
    let task = match std::env::var("SLURM_ARRAY_TASK_ID") {
        Ok(t) => Some(
            t.parse::<usize>()
                .with_context(|| format!("SLURM_ARRAY_TASK_ID is `{t}`, not a number"))?,
        ),
        Err(_) => None,
    };
    let key = b.key_for(task)?.to_string();
    // a fan-out child exists only in the plan expanded from the cache
    let plan = query::load_plan_cached(&b.file, &b.sets, registry, cache)?;
    let var = |k: &str| std::env::var(k).ok();
    let job = match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
        (Some(a), Some(t)) => format!("{a}_{t}"),
        _ => var("SLURM_JOB_ID").unwrap_or_else(|| "?".into()),
    };
    let record = serde_json::json!({
        "kind": "slurm",
        "job": job,
        "host": var("SLURMD_NODENAME").unwrap_or_default(),
    });
    let cancel = CancelToken::default();
    install_ctrlc(cancel.clone());
    let opts = RunOptions {
        jobs: 1,
        cancel,
        reporter: Reporter::Log,
    };
    let node = plan
        .nodes
        .iter()
        .find(|n| n.key == key)
        .map(|n| n.name.clone())
        .unwrap_or_default();
    tracing::info!(
        "slurm job {job}: node {node} ({})",
        &key[..12.min(key.len())]
    );
    let summary: RunSummary =
        whittle_engine::run_node(&plan, &key, cache, registry, &opts, Some(record))?;
    for (node, err) in &summary.failures {
        errln!("failed: {node}: {err}");
    }
    outln!("{}", summary.line());
    Ok(if summary.cancelled {
        ExitCode::from(130)
    } else if summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn install_ctrlc(cancel: CancelToken) {
    static HITS: AtomicUsize = AtomicUsize::new(0);
    let r = ctrlc::set_handler(move || {
        if HITS.fetch_add(1, Ordering::SeqCst) == 0 {
            errln!(
                "\ninterrupt: letting running nodes save and stop (Ctrl-C again to exit at once)"
            );
            cancel.cancel();
        } else {
            errln!("\ninterrupt: exiting now");
            std::process::exit(130);
        }
    });
    if let Err(e) = r {
        tracing::debug!("cannot install the Ctrl-C handler: {e}");
    }
}

fn gc(files: &[PathBuf], dry_run: bool, cache: &Cache, registry: &Registry) -> Result<ExitCode> {
    let files: Vec<PathBuf> = if files.is_empty() {
        let dir = Path::new("experiments");
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| {
                format!(
                    "cannot list {}; give experiment files explicitly",
                    dir.display()
                )
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        v.sort();
        v
    } else {
        files.to_vec()
    };
    let mut keep = query::References::default();
    for f in &files {
        // expanded from the cache, so that fan-out children are kept
        let plan = query::load_plan_cached(f, &[], registry, cache).with_context(|| {
            format!(
                "gc keeps nothing it cannot account for; fix {} first",
                f.display()
            )
        })?;
        keep.add(&plan, registry);
    }
    let plan = query::gc_plan(cache, &keep);
    outln!(
        "gc: {} experiment file(s) reference {} node(s); {} cached entr(y/ies) and {} shared file(s) kept; {} item(s) to remove, freeing {}",
        files.len(),
        keep.keys.len(),
        plan.kept,
        plan.kept_shared,
        plan.remove.len(),
        query::human_bytes(plan.bytes())
    );
    if dry_run {
        for it in &plan.remove {
            outln!(
                "would remove {} ({}, {})",
                it.path.display(),
                query::human_bytes(it.bytes),
                it.reason
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let freed = query::gc_apply(cache, &plan)?;
    outln!("gc: freed {}", query::human_bytes(freed));
    Ok(ExitCode::SUCCESS)
}
