//! The scheduler packs nodes by thread use: on a 2-core budget two nodes that can run on one
//! thread run together on one thread each, a node of a fixed 2 threads runs alone, and a
//! flexible node that is alone gets both cores. Each manifest records the threads granted
//! and the CPU time the node's pool used.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use whittle_engine::cpu::in_pool;
use whittle_engine::{
    Cache, CancelToken, Experiment, ParamError, Plan, Registry, Reporter, RunContext, RunOptions,
    StageKind, from_params,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct P {
    /// Threads it asks for.
    threads: usize,
    /// Can it make do with one?
    flexible: bool,
    #[serde(default)]
    inputs: Vec<String>,
    id: String,
}

/// (node, threads granted, start, end)
type Log = Arc<Mutex<Vec<(String, usize, Instant, Instant)>>>;

/// Spins 200 ms of CPU time on every thread of the pool it is given.
struct Busy(Log);

impl StageKind for Busy {
    fn name(&self) -> &'static str {
        "busy"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn resolve(&self, params: &toml::Table) -> Result<serde_json::Value, ParamError> {
        let p: P = from_params(params)?;
        let _ = p.inputs;
        Ok(serde_json::json!({ "threads": p.threads, "flexible": p.flexible, "id": p.id }))
    }
    fn threads(&self, resolved: &serde_json::Value) -> usize {
        resolved["threads"].as_u64().unwrap() as usize
    }
    fn min_threads(&self, resolved: &serde_json::Value) -> usize {
        if resolved["flexible"].as_bool().unwrap() {
            1
        } else {
            self.threads(resolved)
        }
    }
    fn run(&self, ctx: &RunContext) -> anyhow::Result<serde_json::Value> {
        let start = Instant::now();
        in_pool(ctx.threads, || {
            rayon::broadcast(|_| {
                // 200 ms of this thread's CPU time, however busy the machine is
                let t = whittle_engine::cpu::thread_cpu_secs();
                let mut x = 1u64;
                while whittle_engine::cpu::thread_cpu_secs() - t < 0.2 {
                    x = std::hint::black_box(x.wrapping_mul(3).wrapping_add(1));
                }
            })
        });
        self.0
            .lock()
            .unwrap()
            .push((ctx.node.to_string(), ctx.threads, start, Instant::now()));
        Ok(serde_json::json!({}))
    }
}

/// Runs the stages (name, threads, flexible, inputs) on a 2-core budget; returns the log and
/// the cache.
fn run(
    stages: &[(&str, usize, bool, &[&str])],
) -> (
    Vec<(String, usize, Instant, Instant)>,
    Cache,
    tempfile::TempDir,
) {
    let log: Log = Default::default();
    let mut reg = Registry::with_builtins();
    reg.register(Busy(log.clone()));
    let mut exp = "[experiment]\nname = \"pack\"\nseed = 1\n".to_string();
    for (name, threads, flexible, inputs) in stages {
        let inputs: Vec<String> = inputs.iter().map(|i| format!("\"{i}\"")).collect();
        exp += &format!(
            "[stages.{name}]\nkind = \"busy\"\nthreads = {threads}\nflexible = {flexible}\nid = \"{name}\"\ninputs = [{}]\n",
            inputs.join(", ")
        );
    }
    let d = tempfile::tempdir().unwrap();
    let plan = Plan::build(
        Experiment::parse(&d.path().join("e.toml"), exp, &[], &reg).unwrap(),
        &reg,
    )
    .unwrap();
    let cache = Cache::new(d.path().join("cache"));
    let opts = RunOptions {
        jobs: 2,
        cancel: CancelToken::default(),
        reporter: Reporter::Log,
    };
    let s = whittle_engine::run_with_budget(&plan, &cache, &reg, &opts, None).unwrap();
    assert!(s.ok(), "{s:?}");
    let log = log.lock().unwrap().clone();
    (log, cache, d)
}

fn overlap(a: &(String, usize, Instant, Instant), b: &(String, usize, Instant, Instant)) -> bool {
    a.2 < b.3 && b.2 < a.3
}

#[test]
fn two_flexible_nodes_share_two_cores_and_a_fixed_two_thread_node_runs_alone() {
    let (log, cache, _d) = run(&[
        ("a", 2, true, &[]),
        ("b", 2, true, &[]),
        ("wide", 2, false, &[]),
    ]);
    let get = |n: &str| log.iter().find(|r| r.0 == n).unwrap().clone();
    let (a, b, w) = (get("a"), get("b"), get("wide"));
    assert_eq!((a.1, b.1, w.1), (1, 1, 2), "threads granted: {log:?}");
    assert!(overlap(&a, &b), "a and b should run together: {log:?}");
    assert!(
        !overlap(&a, &w) && !overlap(&b, &w),
        "wide runs alone: {log:?}"
    );
    // the manifests record the grant and the pool's CPU time (threads × 0.2 s and a little)
    for m in cache.all_manifests() {
        let t = m.threads.unwrap();
        let cpu = m.cpu_secs.unwrap();
        assert_eq!(t, if m.node == "wide" { 2 } else { 1 });
        assert!(
            cpu >= 0.2 * t as f64 && cpu < 0.2 * t as f64 + 0.2,
            "{}: {cpu} s on {t}",
            m.node
        );
    }
}

#[test]
fn a_flexible_node_alone_gets_both_cores() {
    // `after` becomes ready only when `first` is done, and then nothing else is left
    let (log, _cache, _d) = run(&[("first", 2, true, &[]), ("after", 2, true, &["first"])]);
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|r| r.1 == 2), "{log:?}");
}
