//! The Rust checkpoint API through the scheduler: a kind that saves a checkpoint per step is
//! cancelled mid-way, then resumes from its latest checkpoint (not from zero) and produces
//! the same output as an uninterrupted run; a panicking kind fails only its descendants.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use whittle_engine::{
    Cache, CancelToken, Experiment, ParamError, Plan, Registry, Reporter, RunContext, RunOptions,
    StageKind, from_params,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct P {
    steps: u64,
}

/// Sums `step * seed` over steps; checkpoint = the running sum after each step.
struct Count {
    executed: Arc<AtomicU64>,
}

impl StageKind for Count {
    fn name(&self) -> &'static str {
        "count"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn resolve(&self, params: &toml::Table) -> Result<serde_json::Value, ParamError> {
        let p: P = from_params(params)?;
        Ok(serde_json::json!({ "steps": p.steps }))
    }
    fn run(&self, ctx: &RunContext) -> anyhow::Result<serde_json::Value> {
        let steps = ctx.params["steps"].as_u64().unwrap();
        let cancel_at = CANCEL_AT.load(Ordering::SeqCst);
        let (mut start, mut sum) = (0u64, 0u64);
        if let Some((step, dir)) = ctx.checkpoints.latest() {
            start = step;
            sum = std::fs::read_to_string(dir.join("sum"))?.parse()?;
        }
        ctx.progress.set_length(steps);
        for s in start..steps {
            if ctx.cancel.is_cancelled() {
                anyhow::bail!("cancelled at step {s}");
            }
            self.executed.fetch_add(1, Ordering::SeqCst);
            sum = sum.wrapping_mul(31).wrapping_add(s * ctx.seed);
            ctx.checkpoints.save(s + 1, &mut |d: &Path| {
                Ok(std::fs::write(d.join("sum"), sum.to_string())?)
            })?;
            ctx.progress.set_position(s + 1);
            if s + 1 == cancel_at {
                ctx.cancel.cancel(); // what Ctrl-C does
            }
        }
        std::fs::write(ctx.out_dir.join("sum.txt"), sum.to_string())?;
        Ok(serde_json::json!({ "sum": sum }))
    }
}

static CANCEL_AT: AtomicU64 = AtomicU64::new(u64::MAX);

struct Boom;
impl StageKind for Boom {
    fn name(&self) -> &'static str {
        "boom"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn resolve(&self, _: &toml::Table) -> Result<serde_json::Value, ParamError> {
        Ok(serde_json::json!({}))
    }
    fn run(&self, _: &RunContext) -> anyhow::Result<serde_json::Value> {
        panic!("kaboom")
    }
}

const EXP: &str = r#"
[experiment]
name = "ck"
seed = 3
[stages.count]
kind = "count"
steps = 20
[stages.after]
kind = "command"
inputs = ["count"]
cmd = "cp $WHITTLE_IN_COUNT/sum.txt $WHITTLE_OUT/"
[stages.boom]
kind = "boom"
[stages.below]
kind = "command"
inputs = ["boom"]
cmd = "true"
"#;

fn opts() -> RunOptions {
    RunOptions {
        jobs: 2,
        cancel: CancelToken::default(),
        reporter: Reporter::Log,
    }
}

#[test]
fn cancelled_stage_resumes_from_its_checkpoint_with_identical_output() {
    let executed = Arc::new(AtomicU64::new(0));
    let mut reg = Registry::with_builtins();
    reg.register(Count {
        executed: executed.clone(),
    })
    .register(Boom);
    let d = tempfile::tempdir().unwrap();
    let plan = Plan::build(
        Experiment::parse(&d.path().join("e.toml"), EXP.into(), &[], &reg).unwrap(),
        &reg,
    )
    .unwrap();
    let key = plan.node("count").unwrap().key.clone();

    // uninterrupted reference
    let reference = Cache::new(d.path().join("ref"));
    let s = whittle_engine::run(&plan, &reference, &reg, &opts()).unwrap();
    assert_eq!((s.ran, s.failed, s.skipped), (2, 1, 1), "{s:?}");
    assert!(s.failures[0].1.contains("kaboom"));
    assert_eq!(executed.swap(0, Ordering::SeqCst), 20);

    // interrupted after 7 steps, then resumed
    let cache = Cache::new(d.path().join("cache"));
    CANCEL_AT.store(7, Ordering::SeqCst);
    let s = whittle_engine::run(&plan, &cache, &reg, &opts()).unwrap();
    assert!(s.cancelled && s.ran == 0 && s.resumed == 0, "{s:?}");
    assert_eq!(executed.swap(0, Ordering::SeqCst), 7);
    assert_eq!(cache.state(&key), whittle_engine::NodeState::Partial);
    assert_eq!(
        whittle_engine::Checkpoints::latest(&cache.checkpoints(&key))
            .unwrap()
            .0,
        7
    );
    CANCEL_AT.store(u64::MAX, Ordering::SeqCst);
    let s = whittle_engine::run(&plan, &cache, &reg, &opts()).unwrap();
    assert_eq!((s.resumed, s.ran, s.failed), (1, 1, 1), "{s:?}");
    assert_eq!(
        executed.load(Ordering::SeqCst),
        13,
        "resumed at step 7 of 20"
    );
    let m = cache.manifest(&key).unwrap();
    assert!(m.resumed);
    // same output and metrics as the uninterrupted run; saved state is gone
    let a = std::fs::read(reference.out_dir(&key).join("sum.txt")).unwrap();
    let b = std::fs::read(cache.out_dir(&key).join("sum.txt")).unwrap();
    assert_eq!(a, b);
    // hand-computed: sum_{s<20} folded with *31 + 3s
    let mut expect = 0u64;
    for s in 0..20u64 {
        expect = expect.wrapping_mul(31).wrapping_add(3 * s);
    }
    assert_eq!(String::from_utf8(b).unwrap(), expect.to_string());
    assert_eq!(m.metrics["sum"], serde_json::json!(expect));
    assert!(!cache.pending_dir(&key).exists());
}
