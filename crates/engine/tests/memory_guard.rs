//! The scheduler's memory budget: nodes whose estimates together exceed it never run at the
//! same time (although the core budget would allow it), nodes that fit together do, and a
//! node that can never fit fails before it starts while its siblings complete.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use whittle_engine::memory::Budget;
use whittle_engine::{
    Cache, CancelToken, Experiment, InputArtifact, MemoryNeed, ParamError, Plan, Registry,
    Reporter, RunContext, RunOptions, StageKind, from_params,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct P {
    bytes: u64,
    /// Makes each stage's key its own.
    id: String,
}

/// Sleeps 150 ms, recording how many of its nodes run at once; its estimate is `bytes`.
struct Hog {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl StageKind for Hog {
    fn name(&self) -> &'static str {
        "hog"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn resolve(&self, params: &toml::Table) -> Result<serde_json::Value, ParamError> {
        let p: P = from_params(params)?;
        Ok(serde_json::json!({ "bytes": p.bytes, "id": p.id }))
    }
    fn memory(&self, resolved: &serde_json::Value, _: &[InputArtifact]) -> Option<MemoryNeed> {
        Some(MemoryNeed {
            bytes: resolved["bytes"].as_u64()?,
            detail: "test hog".into(),
        })
    }
    fn run(&self, _: &RunContext) -> anyhow::Result<serde_json::Value> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(150));
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(serde_json::json!({}))
    }
}

/// Runs stages `a`, `b` (and `c` if given) of kind hog with these estimates, 4 cores, a
/// 1000-byte budget; returns (summary, most hogs running at once).
fn run(bytes: &[u64]) -> (whittle_engine::RunSummary, usize) {
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut reg = Registry::with_builtins();
    reg.register(Hog {
        now: now.clone(),
        peak: peak.clone(),
    });
    let mut exp = "[experiment]\nname = \"mem\"\nseed = 1\n".to_string();
    for (name, b) in ["a", "b", "c"].iter().zip(bytes) {
        exp += &format!("[stages.{name}]\nkind = \"hog\"\nbytes = {b}\nid = \"{name}\"\n");
    }
    let d = tempfile::tempdir().unwrap();
    let plan = Plan::build(
        Experiment::parse(&d.path().join("e.toml"), exp, &[], &reg).unwrap(),
        &reg,
    )
    .unwrap();
    let opts = RunOptions {
        jobs: 4,
        cancel: CancelToken::default(),
        reporter: Reporter::Log,
    };
    let budget = Some(Budget {
        bytes: 1000,
        source: "test".into(),
    });
    let cache = Cache::new(d.path().join("cache"));
    let s = whittle_engine::run_with_budget(&plan, &cache, &reg, &opts, budget).unwrap();
    (s, peak.load(Ordering::SeqCst))
}

#[test]
fn nodes_over_the_budget_together_run_one_after_the_other() {
    let (s, peak) = run(&[600, 600]);
    assert_eq!((s.ran, s.failed), (2, 0), "{s:?}");
    assert_eq!(peak, 1, "600 + 600 > 1000 bytes: never both at once");
}

#[test]
fn nodes_within_the_budget_together_run_in_parallel() {
    let (s, peak) = run(&[400, 600]);
    assert_eq!((s.ran, s.failed), (2, 0), "{s:?}");
    assert_eq!(peak, 2, "400 + 600 ≤ 1000 bytes and 4 cores: both at once");
}

#[test]
fn a_node_that_can_never_fit_fails_before_it_starts() {
    let (s, peak) = run(&[300, 5000, 300]);
    assert_eq!((s.ran, s.failed, s.skipped), (2, 1, 0), "{s:?}");
    assert_eq!(peak, 2);
    let (node, err) = &s.failures[0];
    assert_eq!(node, "b");
    assert!(
        err.contains("stage `b` (kind `hog`) needs an estimated 4.9 KiB of memory (test hog)")
            && err.contains("only 1000 B is available (test)")
            && err.contains("WHITTLE_MEMORY_LIMIT"),
        "{err}"
    );
}
