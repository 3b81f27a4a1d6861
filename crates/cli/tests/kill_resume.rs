//! Interruption: `kill -9` at several pseudo-random moments of a multi-stage run with a
//! checkpointing stage, and Ctrl-C (SIGINT). Each time: nothing incomplete looks complete,
//! completed nodes are not re-run, the checkpointing stage resumes rather than restarts, and
//! the final outputs are byte-identical to an uninterrupted run.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;

const STEPS: u32 = 40;

/// The checkpointing stage: its result depends on every step and on its input.
fn count_script() -> String {
    count_sh(
        0.02,
        r#"cat "$WHITTLE_IN_PREP/prep.txt" > "$WHITTLE_OUT/result.txt"
echo "$acc" >> "$WHITTLE_OUT/result.txt""#,
    )
}

fn experiment() -> String {
    format!(
        r#"
[experiment]
name = "killme"
seed = 11

[stages.prep]
kind = "command"
cmd = "sleep 0.1; echo prepared > $WHITTLE_OUT/prep.txt"

[stages.slow]
kind = "command"
inputs = ["prep"]
env = {{ STEPS = {STEPS} }}
cmd = "sh ./count.sh"

[stages.side]
kind = "command"
cmd = "sleep 0.2; echo side > $WHITTLE_OUT/side.txt"

[stages.post]
kind = "command"
inputs = ["slow", "side"]
cmd = "sleep 0.1; cat $WHITTLE_IN_SLOW/result.txt $WHITTLE_IN_SIDE/side.txt > $WHITTLE_OUT/final.txt"
"#
    )
}

fn setup() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("exp.toml"), experiment()).unwrap();
    std::fs::write(d.path().join("count.sh"), count_script()).unwrap();
    d
}

/// Every completed entry has a manifest whose output hashes match (what `run` would use).
fn entries_are_complete(cache: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut manifests = BTreeMap::new();
    for key in entries(cache) {
        let dir = cache.join("entries").join(&key);
        let m = std::fs::read(dir.join("manifest.json"))
            .unwrap_or_else(|_| panic!("entry {key} has no manifest"));
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        for (rel, rec) in v["outputs"].as_object().unwrap() {
            let bytes = std::fs::read(dir.join("out").join(rel)).unwrap();
            assert_eq!(
                blake3::hash(&bytes).to_hex().as_str(),
                rec["blake3"].as_str().unwrap(),
                "entry {key} file {rel}"
            );
        }
        manifests.insert(key, m);
    }
    manifests
}

fn outputs(cache: &Path) -> BTreeMap<String, Vec<(String, Vec<u8>)>> {
    entries(cache)
        .into_iter()
        .map(|k| (k.clone(), tree(&cache.join("entries").join(&k).join("out"))))
        .collect()
}

fn counter(d: &Path, name: &str) -> usize {
    std::fs::read_to_string(d.join(name))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn kill_9_at_random_moments_then_resume() {
    let d = setup();
    // reference: an uninterrupted run in its own cache
    let ref_cache = d.path().join("cache-ref");
    let o = cmd(d.path(), &ref_cache, &["run", "exp.toml"])
        .env("COUNTER_FILE", "ref-steps.log")
        .output()
        .unwrap();
    assert_eq!(
        summary(&o),
        "summary: ran=4 cached=0 resumed=0 failed=0",
        "{:?}",
        text(&o)
    );
    assert_eq!(counter(d.path(), "ref-steps.log"), STEPS as usize);

    let cache = d.path().join("cache");
    let mut rng = 0x2545f4914f6cdd1du64;
    let mut kills = 0;
    let mut saw_resume = false;
    let mut done_before: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for round in 0..4 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = 120 + rng % 450; // ms
        let mut child = cmd(d.path(), &cache, &["run", "exp.toml"])
            .env("COUNTER_FILE", "steps.log")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let killed = child.try_wait().unwrap().is_none();
        if killed {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let o = child.wait_with_output().unwrap();
        let (_, err) = text(&o);
        saw_resume |= err.contains("resume slow");
        // nothing that looks complete is incomplete; earlier entries were not rewritten
        let now = entries_are_complete(&cache);
        for (k, m) in &done_before {
            assert_eq!(
                now.get(k),
                Some(m),
                "round {round}: completed entry {k} was re-run or removed"
            );
        }
        done_before = now;
    }
    assert!(
        kills >= 3,
        "only {kills} of 4 runs were killed before finishing; the test lost its point"
    );
    let o = cmd(d.path(), &cache, &["run", "exp.toml"])
        .env("COUNTER_FILE", "steps.log")
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    saw_resume |= err.contains("resume slow");
    for (k, m) in &done_before {
        assert_eq!(
            entries_are_complete(&cache).get(k),
            Some(m),
            "completed entry {k} was re-run"
        );
    }
    assert!(saw_resume, "the checkpointing stage never resumed");
    // resumed, not restarted: at most one lost step per kill was executed twice
    let executed = counter(d.path(), "steps.log");
    assert!(
        executed >= STEPS as usize && executed <= STEPS as usize + kills,
        "executed {executed} steps for {STEPS}, {kills} kills"
    );
    assert_eq!(
        outputs(&cache),
        outputs(&ref_cache),
        "outputs differ from the uninterrupted run"
    );
    assert!(
        std::fs::read_dir(cache.join("pending"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "pending work left behind"
    );
}

#[test]
fn ctrl_c_stops_cleanly_and_resume_continues() {
    let d = setup();
    let cache = d.path().join("cache");
    let child = cmd(d.path(), &cache, &["run", "exp.toml"])
        .env("COUNTER_FILE", "steps.log")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // wait until the slow stage has made progress
    let t0 = std::time::Instant::now();
    while counter(d.path(), "steps.log") < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "slow stage never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(130), "{out}{err}");
    assert!(
        err.contains("interrupt: letting running nodes save and stop"),
        "{err}"
    );
    assert!(err.contains("whittle resume exp.toml"), "{err}");
    assert!(out.contains("summary: ran="), "{out}");
    let steps_at_stop = counter(d.path(), "steps.log");
    assert!(steps_at_stop < STEPS as usize);

    let status = text(
        &cmd(d.path(), &cache, &["status", "exp.toml"])
            .output()
            .unwrap(),
    )
    .0;
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("slow") && l.ends_with("partial")),
        "{status}"
    );

    let o = cmd(d.path(), &cache, &["resume", "exp.toml"])
        .env("COUNTER_FILE", "steps.log")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("resume: slow"), "{out}");
    assert!(
        out.lines().last().unwrap().contains("resumed=1 failed=0"),
        "{out}"
    );
    let executed = counter(d.path(), "steps.log");
    assert!(
        executed <= STEPS as usize + 1,
        "restarted instead of resuming: {executed} steps ({steps_at_stop} at stop)\n{out}{err}"
    );
    // the kept stderr of the slow entry shows where it resumed
    let slow = entries(&cache)
        .into_iter()
        .find(|k| {
            let m: serde_json::Value = serde_json::from_slice(
                &std::fs::read(cache.join("entries").join(k).join("manifest.json")).unwrap(),
            )
            .unwrap();
            m["node"] == "slow"
        })
        .unwrap();
    let log =
        std::fs::read_to_string(cache.join("entries").join(slow).join("logs/stderr.txt")).unwrap();
    let from: usize = log
        .trim()
        .strip_prefix("resuming from step ")
        .unwrap_or_else(|| panic!("{log}"))
        .parse()
        .unwrap();
    assert!(
        from > 0 && from <= steps_at_stop,
        "resumed from {from}, stopped after {steps_at_stop}"
    );
}
