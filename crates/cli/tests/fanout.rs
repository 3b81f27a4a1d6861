//! Dynamic fan-out through the CLI: `status` shows the deferred stage before its source ran
//! and the expanded nodes after; `run` expands and counts every node once in its one summary
//! line; `kill -9` during the fan-out, then `run`, finishes with outputs identical to an
//! uninterrupted run and re-runs no committed node.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const EXP: &str = r#"
[experiment]
name = "fanout"
seed = 3

[stages.select]
kind = "command"
cmd = "sleep 0.2; echo '[{\"W\": 1}, {\"W\": 2}, {\"W\": 3}, {\"W\": 4}]' > $WHITTLE_OUT/children.json"

[stages.train]
kind = "command"
for_each = "select"
for_each_key = "env"
cmd = "echo \"$WHITTLE_NODE\" >> started.log; sleep 0.4; echo \"w=$W\" > $WHITTLE_OUT/r; echo \"$WHITTLE_NODE\" >> finished.log"

[stages.all]
kind = "command"
inputs = ["train"]
gather = ["train"]
cmd = "for d in $(echo $WHITTLE_IN_TRAIN | tr : ' '); do cat $d/r; done > $WHITTLE_OUT/all"
"#;

fn outputs(cache: &Path) -> Vec<(String, Vec<(String, Vec<u8>)>)> {
    entries(cache)
        .into_iter()
        .map(|k| (k.clone(), tree(&cache.join("entries").join(&k).join("out"))))
        .collect()
}

#[test]
fn status_shows_the_fan_out_and_kill_9_during_it_resumes_to_identical_outputs() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("exp.toml"), EXP).unwrap();
    let cache = d.path().join("cache");

    // before anything ran: the fan-out waits for its source
    let o = whittle(d.path(), &cache, &["status", "exp.toml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (out, _) = text(&o);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[0].starts_with("select  ") && rows[0].ends_with("  pending"),
        "{out}"
    );
    assert_eq!(rows[1], "train   (fan-out: waits for select)");
    assert_eq!(rows[2], "all     (fan-out: waits for select, via train)");
    let o = whittle(d.path(), &cache, &["status", "--json", "exp.toml"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[1]["waits_for"], "select");
    assert_eq!(v[1]["key"], "");
    let o = whittle(d.path(), &cache, &["why", "exp.toml", "train[child=2]"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("fans out over the children that `select` lists"),
        "{out}"
    );

    // reference: an uninterrupted run in its own cache, one summary over both rounds
    let ref_cache = d.path().join("cache-ref");
    let o = whittle(d.path(), &ref_cache, &["run", "--jobs", "1", "exp.toml"]);
    assert_eq!(
        summary(&o),
        "summary: ran=6 cached=0 resumed=0 failed=0",
        "{:?}",
        text(&o)
    );
    assert_eq!(text(&o).0.matches("summary:").count(), 1);
    let o = whittle(d.path(), &ref_cache, &["run", "exp.toml"]);
    assert_eq!(
        summary(&o),
        "summary: ran=0 cached=6 resumed=0 failed=0",
        "{:?}",
        text(&o)
    );
    let _ = std::fs::remove_file(d.path().join("started.log"));
    let _ = std::fs::remove_file(d.path().join("finished.log"));

    // kill -9 once two child nodes are committed (one at a time: --jobs 1)
    let mut child = cmd(d.path(), &cache, &["run", "--jobs", "1", "exp.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while entries(&cache).len() < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the fan-out never progressed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done_before = entries(&cache);

    // status after the kill: the expanded nodes, some done, the rest pending
    let o = whittle(d.path(), &cache, &["status", "exp.toml"]);
    let (out, _) = text(&o);
    let names: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "select",
            "train[child=0]",
            "train[child=1]",
            "train[child=2]",
            "train[child=3]",
            "all"
        ],
        "{out}"
    );
    let done: Vec<&str> = out
        .lines()
        .filter(|l| l.ends_with("  done"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert!(
        (3..=4).contains(&done.len()),
        "select and 2-3 children done:\n{out}"
    );
    assert_eq!(done.len(), done_before.len());

    // the rerun finishes: what was committed is cached, the rest runs
    let o = whittle(d.path(), &cache, &["run", "exp.toml"]);
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let cached = done_before.len();
    assert_eq!(
        summary(&o),
        format!(
            "summary: ran={} cached={cached} resumed=0 failed=0",
            6 - cached
        ),
        "{err}"
    );
    // no committed child ran again (the one killed mid-way may have finished twice)
    let fin = std::fs::read_to_string(d.path().join("finished.log")).unwrap();
    for c in [
        "train[child=0]",
        "train[child=1]",
        "train[child=2]",
        "train[child=3]",
    ] {
        let n = fin.lines().filter(|l| *l == c).count();
        if done.contains(&c) {
            assert_eq!(
                n, 1,
                "{c} was committed before the kill, then ran again:\n{fin}"
            );
        } else {
            assert!(n >= 1, "{c} never finished:\n{fin}");
        }
    }
    assert_eq!(
        outputs(&cache),
        outputs(&ref_cache),
        "outputs differ from the uninterrupted run"
    );
    let all = cache
        .join("entries")
        .join(
            entries(&cache)
                .iter()
                .find(|k| cache.join("entries").join(k).join("out/all").is_file())
                .unwrap(),
        )
        .join("out/all");
    assert_eq!(
        std::fs::read_to_string(all).unwrap(),
        "w=1\nw=2\nw=3\nw=4\n"
    );

    // gc keeps the children (the plan it keeps is expanded from the cache)
    let o = whittle(d.path(), &cache, &["gc", "--dry-run", "exp.toml"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("reference 6 node(s)"), "{out}");
    assert!(!out.contains("would remove"), "{out}");
}
