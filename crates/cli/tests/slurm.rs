//! The Slurm executor against a real (one-node) Slurm: `scripts/slurm-local.sh` starts one.
//! Without a reachable controller each test prints one line and passes, unless
//! `WHITTLE_REQUIRE_SLURM=1` (CI sets it once the cluster is up), where that is a failure.
//!
//! - a command pipeline with a sweep: same keys and byte-identical outputs as a local run, a
//!   job array for the sweep, job ids in `status`, and a second run that submits nothing;
//! - `scancel` of a job mid-way: its node fails with the Slurm state, the independent node
//!   completes, a rerun resumes the node from its checkpoint and reruns nothing else;
//! - the controller killed with `kill -9`: a rerun adopts the running job (no second job for
//!   the node ever appears in squeue) and ends with the same outputs;
//! - Ctrl-C on the controller: its job is cancelled (a rerun resumes the node), or with
//!   `--keep-jobs` left running (a rerun adopts it);
//! - a job over its `mem`: the node fails as OUT_OF_MEMORY;
//! - (ignored by default; CI runs it) the reduced flagship: metrics equal to a local run.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Whether a Slurm controller answers; prints the skip line once per test otherwise.
fn slurm_up() -> bool {
    let ok = Command::new("sinfo")
        .args(["--noheader", "--format=%T"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !ok {
        assert!(
            std::env::var("WHITTLE_REQUIRE_SLURM").as_deref() != Ok("1"),
            "WHITTLE_REQUIRE_SLURM=1 but no Slurm controller answers sinfo"
        );
        eprintln!(
            "slurm tests skipped: no Slurm controller answers `sinfo` (start one as root with scripts/slurm-local.sh)"
        );
    }
    ok
}

/// Node outputs by key: `entries/<key>/out` as (relative path, bytes).
fn outputs(cache: &Path) -> Vec<(String, Vec<(String, Vec<u8>)>)> {
    entries(cache)
        .into_iter()
        .map(|k| {
            let t = tree(&cache.join("entries").join(&k).join("out"));
            (k, t)
        })
        .collect()
}

fn batches(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("slurm/batches"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Slurm jobs (any state squeue still lists) whose name is `name`.
fn jobs_named(name: &str) -> Vec<String> {
    let o = Command::new("squeue")
        .args([
            "--me",
            "--noheader",
            "--array",
            "--states=all",
            "--format=%i|%j|%T",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.split('|').nth(1) == Some(name))
        .map(String::from)
        .collect()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const SWEEP: &str = r#"
[experiment]
name = "slurm_sweep"
seed = 5

[executor]
poll_secs = 0.3

[stages.prep]
kind = "command"
cmd = "echo prepared > $WHITTLE_OUT/prep.txt"

[stages.sq]
kind = "command"
inputs = ["prep"]
sweep = { "env.N" = [1, 2, 3, 4, 5] }
cmd = "cat $WHITTLE_IN_PREP/prep.txt > $WHITTLE_OUT/r.txt; echo $(( N * N )) $WHITTLE_NODE >> $WHITTLE_OUT/r.txt"

[stages.sum]
kind = "command"
inputs = ["sq"]
gather = ["sq"]
cmd = "for d in $(echo $WHITTLE_IN_SQ | tr ':' ' '); do cat $d/r.txt; done > $WHITTLE_OUT/all.txt"
"#;

#[test]
fn a_sweep_through_slurm_gives_the_local_keys_and_bytes_and_reruns_as_a_no_op() {
    if !slurm_up() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("exp.toml"), SWEEP).unwrap();
    let local = d.path().join("local");
    let o = whittle(d.path(), &local, &["run", "exp.toml"]);
    assert!(o.status.success(), "{:?}", text(&o));

    let sc = d.path().join("slurm");
    let o = whittle(d.path(), &sc, &["run", "exp.toml", "--executor", "slurm"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert_eq!(summary(&o), "summary: ran=7 cached=0 resumed=0 failed=0");
    assert!(
        err.contains("submitted job array") && err.contains("(5 nodes of sq)"),
        "the sweep goes as one job array:\n{err}"
    );
    assert_eq!(batches(&sc), 3, "prep, the sq array, sum");
    assert_eq!(outputs(&local), outputs(&sc), "same keys, same bytes");
    // every manifest says which job ran it
    for k in entries(&sc) {
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(sc.join("entries").join(&k).join("manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(m["executor"]["kind"], "slurm", "{k}");
        assert!(
            m["executor"]["job"]
                .as_str()
                .unwrap()
                .parse::<f64>()
                .is_ok()
                || m["executor"]["job"].as_str().unwrap().contains('_')
        );
    }
    // status names the jobs
    let st = whittle(d.path(), &sc, &["status", "exp.toml"]);
    let (st_out, _) = text(&st);
    assert_eq!(
        st_out.lines().filter(|l| l.contains(" slurm ")).count(),
        7,
        "{st_out}"
    );
    // the report's provenance names the executor and the jobs
    let md = std::fs::read_to_string(d.path().join("reports/slurm_sweep.md")).unwrap();
    assert!(md.contains("slurm"), "provenance names the executor:\n{md}");

    let again = whittle(d.path(), &sc, &["run", "exp.toml", "--executor", "slurm"]);
    let (_, err) = text(&again);
    assert_eq!(
        summary(&again),
        "summary: ran=0 cached=7 resumed=0 failed=0"
    );
    assert!(!err.contains("submitted"), "{err}");
    assert_eq!(batches(&sc), 3, "nothing submitted");
}

fn slow_experiment(name: &str, counter: &Path) -> String {
    format!(
        r#"
[experiment]
name = "{name}"
seed = 1

[executor]
poll_secs = 0.3

[stages.slow]
kind = "command"
env = {{ STEPS = 80, COUNTER_FILE = "{}" }}
cmd = "sh ./count.sh"
deps = ["count.sh"]

[stages.side]
kind = "command"
cmd = "sleep 1; echo side > $WHITTLE_OUT/side.txt"

[stages.post]
kind = "command"
inputs = ["slow", "side"]
cmd = "cat $WHITTLE_IN_SLOW/result.txt $WHITTLE_IN_SIDE/side.txt > $WHITTLE_OUT/final.txt"
"#,
        counter.display()
    )
}

fn steps(counter: &Path) -> Vec<u32> {
    std::fs::read_to_string(counter)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A folder with the slow experiment `name` and its script: (folder, step counter, cache).
fn slow_setup(name: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let counter = d.path().join("steps.log");
    std::fs::write(
        d.path().join("count.sh"),
        count_sh(0.05, r#"echo "$acc" > "$WHITTLE_OUT/result.txt""#),
    )
    .unwrap();
    std::fs::write(d.path().join("exp.toml"), slow_experiment(name, &counter)).unwrap();
    let cache = d.path().join("cache");
    (d, counter, cache)
}

/// The outputs in `cache` equal those of an uninterrupted local run of the same file.
fn same_as_local(d: &Path, cache: &Path, counter: &Path) {
    let local = d.join("local");
    let _ = std::fs::remove_file(counter);
    let o = whittle(d, &local, &["run", "exp.toml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(outputs(&local), outputs(cache));
}

/// Starts `whittle run exp.toml --executor slurm EXTRA…` (output piped) and returns once the
/// slow node has done `n` steps.
fn start_controller(
    d: &Path,
    cache: &Path,
    counter: &Path,
    extra: &[&str],
    n: usize,
) -> std::process::Child {
    let mut args = vec!["run", "exp.toml", "--executor", "slurm"];
    args.extend(extra);
    let child = cmd(d, cache, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&format!("{n} steps of the slow node"), 120, || {
        steps(counter).len() >= n
    });
    child
}

/// The job id of `stage`'s node from its job record.
fn job_of(cache: &Path, dir: &Path, file: &str, node: &str) -> String {
    status_field(dir, cache, file, node, "job")
}

#[test]
fn a_job_cancelled_mid_way_fails_its_node_and_a_rerun_resumes_it() {
    if !slurm_up() {
        return;
    }
    let (d, counter, cache) = slow_setup("slurm_scancel");
    let child = start_controller(d.path(), &cache, &counter, &[], 10);
    let job = job_of(&cache, d.path(), "exp.toml", "slow");
    assert!(!job.is_empty());
    let st = Command::new("scancel").arg(&job).status().unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains(&format!("FAILED slow: Slurm job {job} ended CANCELLED")),
        "the node fails with the Slurm state:\n{err}"
    );
    assert!(summary(&o).contains("failed=1"), "{out}");
    let before = steps(&counter).len();
    assert!(before < 80, "cancelled mid-way");
    let side_key = entries(&cache);
    assert_eq!(side_key.len(), 1, "side completed; post was skipped");

    let _ = std::fs::remove_file(&counter);
    let o = whittle(
        d.path(),
        &cache,
        &["run", "exp.toml", "--executor", "slurm"],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert_eq!(
        summary(&o),
        "summary: ran=1 cached=1 resumed=1 failed=0",
        "slow resumed, side cached, post ran:\n{err}"
    );
    let resumed = steps(&counter);
    assert!(
        resumed[0] > 1,
        "resumed from its checkpoint, not step 1: {:?}",
        &resumed[..3]
    );
    assert_eq!(*resumed.last().unwrap(), 80);

    same_as_local(d.path(), &cache, &counter);
}

#[test]
fn a_killed_controller_is_replaced_by_one_that_adopts_the_running_job() {
    if !slurm_up() {
        return;
    }
    let (d, counter, cache) = slow_setup("slurm_adopt");
    let mut child = start_controller(d.path(), &cache, &counter, &[], 5);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let job = job_of(&cache, d.path(), "exp.toml", "slow");
    let key16 = status_field(d.path(), &cache, "exp.toml", "slow", "key")[..16].to_string();
    let name = format!("whittle-slurm_adopt-{key16}");
    assert_eq!(
        jobs_named(&name).len(),
        1,
        "the job survives its controller"
    );

    let o = whittle(
        d.path(),
        &cache,
        &["run", "exp.toml", "--executor", "slurm"],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        err.contains(&format!("adopted job {job} running slow")),
        "the rerun adopts the job:\n{err}"
    );
    let named = jobs_named(&name);
    assert_eq!(named.len(), 1, "never a second job for the node: {named:?}");
    let s = steps(&counter);
    assert_eq!(
        s,
        (1..=80).collect::<Vec<_>>(),
        "one uninterrupted execution"
    );

    same_as_local(d.path(), &cache, &counter);
}

/// Start the slow experiment's controller, wait for the slow node to be under way, SIGINT it.
fn interrupt_controller(
    d: &Path,
    cache: &Path,
    counter: &Path,
    extra: &[&str],
) -> (String, String) {
    let child = start_controller(d, cache, counter, extra, 5);
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{:?}", text(&o));
    text(&o)
}

#[test]
fn ctrl_c_cancels_the_jobs_or_with_keep_jobs_leaves_them_to_be_adopted() {
    if !slurm_up() {
        return;
    }
    let (d, counter, cache) = slow_setup("slurm_ctrlc");

    // cancelled: the job ends CANCELLED, the node keeps its checkpoint
    let (_, err) = interrupt_controller(d.path(), &cache, &counter, &[]);
    let job = job_of(&cache, d.path(), "exp.toml", "slow");
    assert!(
        err.contains(&format!("cancelled")) && err.contains(&job),
        "{err}"
    );
    wait_for("the job to end", 60, || {
        let o = Command::new("squeue")
            .args([
                "--me",
                "--noheader",
                "--states=all",
                "--format=%i|%T",
                &format!("--jobs={job}"),
            ])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        s.contains("CANCELLED")
    });
    let done_before = steps(&counter).len();
    assert!(done_before < 80);

    // kept: the next controller is interrupted with --keep-jobs; its jobs run on (`side` too when
    // the first interrupt came before its one second was up)
    let _ = std::fs::remove_file(&counter);
    let (_, err) = interrupt_controller(d.path(), &cache, &counter, &["--keep-jobs"]);
    let kept = job_of(&cache, d.path(), "exp.toml", "slow");
    assert_ne!(kept, job, "a new job for the resumed node");
    assert!(
        err.contains(" job(s) running") && err.contains(&kept),
        "{err}"
    );
    let resumed_from = steps(&counter)[0];
    assert!(resumed_from > 1, "the new job resumed from the checkpoint");

    // a third controller adopts the kept job and finishes
    let o = whittle(
        d.path(),
        &cache,
        &["run", "exp.toml", "--executor", "slurm"],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        err.contains(&format!("adopted job {kept} running slow")),
        "{err}"
    );
    assert_eq!(*steps(&counter).last().unwrap(), 80);
}

#[test]
fn a_job_over_its_memory_fails_its_node_as_out_of_memory() {
    if !slurm_up() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("exp.toml"),
        r#"
[experiment]
name = "slurm_oom"
seed = 1

[executor]
poll_secs = 0.3
[executor.stages.hog]
mem = "60M"

[stages.hog]
kind = "command"
# `tail` holds its whole (newline-free) input until EOF: ~400 MB for 4 s
cmd = "(head -c 400M /dev/zero; sleep 4) | tail > /dev/null; echo ok > $WHITTLE_OUT/ok.txt"

[stages.fine]
kind = "command"
cmd = "echo fine > $WHITTLE_OUT/fine.txt"
"#,
    )
    .unwrap();
    let cache = d.path().join("cache");
    let o = whittle(
        d.path(),
        &cache,
        &["run", "exp.toml", "--executor", "slurm"],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("failed: hog:"))
        .unwrap_or_else(|| panic!("no failure line for hog:\n{err}"));
    assert!(line.contains("OUT_OF_MEMORY"), "{line}");
    assert!(line.contains("--mem"), "{line}");
    assert_eq!(summary(&o), "summary: ran=1 cached=0 resumed=0 failed=1");
}

#[test]
#[ignore = "runs the reduced flagship twice (local and Slurm): minutes; CI runs it"]
fn the_reduced_flagship_through_slurm_has_the_local_metrics() {
    if !slurm_up() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let file = root.join("experiments/kws_pit.toml").display().to_string();
    let d = tempfile::tempdir().unwrap();
    let quick = [
        "--set",
        "stages.data.dataset.train_per_class=4",
        "--set",
        "stages.data.dataset.val_per_class=2",
        "--set",
        "stages.data.dataset.test_per_class=2",
        "--set",
        "stages.qat.allow_divergence=true",
    ];
    let run = |cache: &Path, extra: &[&str]| {
        let mut args = vec!["run", file.as_str()];
        args.extend(quick);
        args.extend(extra);
        let t = Instant::now();
        let o = whittle(d.path(), cache, &args);
        assert!(o.status.success(), "{:?}", text(&o));
        eprintln!(
            "{:?}: {:.1}s, {}",
            extra,
            t.elapsed().as_secs_f64(),
            summary(&o)
        );
    };
    let local = d.path().join("local");
    let sc = d.path().join("slurm");
    run(&local, &[]);
    run(&sc, &["--executor", "slurm"]);
    assert_eq!(entries(&local), entries(&sc), "same keys");
    for k in entries(&local) {
        let m = |c: &Path| -> serde_json::Value {
            serde_json::from_slice(
                &std::fs::read(c.join("entries").join(&k).join("manifest.json")).unwrap(),
            )
            .unwrap()
        };
        let (a, b) = (m(&local), m(&sc));
        if a["kind"] == "calibrate" {
            continue; // host timings: measured, not computed
        }
        assert_eq!(a["metrics"], b["metrics"], "{}", a["node"]);
    }
}
