//! End-to-end runs of the `whittle` binary with `command` stages: run all, run none, edit one
//! parameter, failures, corrupted entries, status/why/gc, the core budget and the lock.

mod common;

use common::*;

const EXP: &str = r#"
[experiment]
name = "e2e"
seed = 3

[stages.data]
kind = "command"
cmd = "echo $WHITTLE_NODE >> ran.log; echo rows > $WHITTLE_OUT/data.txt; echo to-stdout; echo to-stderr >&2"

[stages.train]
kind = "command"
inputs = ["data"]
env = { LR = 0.1 }
cmd = "echo $WHITTLE_NODE >> ran.log; cat $WHITTLE_IN_DATA/data.txt > $WHITTLE_OUT/model.txt; echo lr=$LR >> $WHITTLE_OUT/model.txt"

[stages.search]
kind = "command"
inputs = ["train"]
sweep = { "env.LAMBDA" = [1e-6, 1e-5] }
cmd = "echo $WHITTLE_NODE >> ran.log; cat $WHITTLE_IN_TRAIN/model.txt > $WHITTLE_OUT/s.txt; echo $LAMBDA >> $WHITTLE_OUT/s.txt"

[stages.summary]
kind = "command"
inputs = ["search"]
gather = ["search"]
cmd = "echo $WHITTLE_NODE >> ran.log; for d in $(echo $WHITTLE_IN_SEARCH | tr ':' ' '); do cat $d/s.txt; done > $WHITTLE_OUT/all.txt; echo '{\"lines\": 6}' > $WHITTLE_OUT/metrics.json"

[stages.side]
kind = "command"
inputs = ["data"]
cmd = "echo $WHITTLE_NODE >> ran.log; echo side > $WHITTLE_OUT/side.txt"
"#;

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("exp.toml"), EXP).unwrap();
    let cache = d.path().join("cache");
    let log = d.path().join("ran.log");
    (d, cache, log)
}

#[test]
fn run_all_then_none_then_exactly_the_edited_branch() {
    let (d, cache, log) = setup();
    let o = whittle(d.path(), &cache, &["run", "exp.toml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(summary(&o), "summary: ran=6 cached=0 resumed=0 failed=0");
    assert_eq!(
        take_log(&log),
        [
            "data",
            "search[LAMBDA=1e-5]",
            "search[LAMBDA=1e-6]",
            "side",
            "summary",
            "train"
        ]
    );
    // outputs flowed through inputs, gathered in order
    let status = whittle(d.path(), &cache, &["status", "exp.toml", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let key = |node: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["node"] == node)
            .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "done"),
        "{rows}"
    );
    let all = std::fs::read_to_string(
        cache
            .join("entries")
            .join(key("summary"))
            .join("out/all.txt"),
    )
    .unwrap();
    assert_eq!(all, "rows\nlr=0.1\n1e-6\nrows\nlr=0.1\n1e-5\n");
    // stdout, stderr and metrics are kept in the entry
    let entry = cache.join("entries").join(key("data"));
    assert_eq!(
        std::fs::read_to_string(entry.join("logs/stdout.txt")).unwrap(),
        "to-stdout\n"
    );
    assert_eq!(
        std::fs::read_to_string(entry.join("logs/stderr.txt")).unwrap(),
        "to-stderr\n"
    );
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            cache
                .join("entries")
                .join(key("summary"))
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(m["metrics"]["lines"], 6);
    assert_eq!(m["inputs"].as_array().unwrap().len(), 2);
    assert_eq!(m["node"], "summary");

    // second run: nothing runs
    let o = whittle(d.path(), &cache, &["run", "exp.toml"]);
    assert_eq!(summary(&o), "summary: ran=0 cached=6 resumed=0 failed=0");
    assert!(take_log(&log).is_empty());

    // edit one parameter: exactly that node and its descendants run
    std::fs::write(
        d.path().join("exp.toml"),
        EXP.replace("LR = 0.1", "LR = 0.2"),
    )
    .unwrap();
    let why = whittle(d.path(), &cache, &["why", "exp.toml", "train"]);
    let (w, _) = text(&why);
    assert!(
        w.contains("parameter `env.LR` changed from 0.1 to 0.2"),
        "{w}"
    );
    let why = whittle(
        d.path(),
        &cache,
        &["why", "exp.toml", "search[LAMBDA=1e-5]"],
    );
    assert!(
        text(&why).0.contains("input `train` changed"),
        "{:?}",
        text(&why)
    );
    assert!(
        text(&whittle(d.path(), &cache, &["why", "exp.toml", "side"]))
            .0
            .contains("side is cached")
    );
    let o = whittle(d.path(), &cache, &["run", "exp.toml"]);
    assert_eq!(summary(&o), "summary: ran=4 cached=2 resumed=0 failed=0");
    assert_eq!(
        take_log(&log),
        [
            "search[LAMBDA=1e-5]",
            "search[LAMBDA=1e-6]",
            "summary",
            "train"
        ]
    );

    // --set acts like an edit of the file: back to LR = 0.1 is fully cached
    let o = whittle(
        d.path(),
        &cache,
        &["run", "exp.toml", "--set", "stages.train.env.LR=0.1"],
    );
    assert_eq!(summary(&o), "summary: ran=0 cached=6 resumed=0 failed=0");

    // gc keeps what exp.toml (LR = 0.2) references, removes the 4 entries of LR = 0.1
    assert_eq!(entries(&cache).len(), 10);
    let o = whittle(d.path(), &cache, &["gc", "exp.toml"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("4 item(s) to remove, freeing"), "{out}");
    assert_eq!(entries(&cache).len(), 6);
    assert_eq!(
        summary(&whittle(d.path(), &cache, &["run", "exp.toml"])),
        "summary: ran=0 cached=6 resumed=0 failed=0"
    );
}

#[test]
fn a_failure_stops_only_descendants_and_is_retried() {
    let (d, cache, log) = setup();
    let bad = EXP.replace("echo $WHITTLE_NODE >> ran.log; cat $WHITTLE_IN_DATA", "echo $WHITTLE_NODE >> ran.log; test -f go || { echo no go file >&2; exit 3; }; cat $WHITTLE_IN_DATA");
    std::fs::write(d.path().join("exp.toml"), &bad).unwrap();
    let o = whittle(d.path(), &cache, &["run", "exp.toml"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(summary(&o), "summary: ran=2 cached=0 resumed=0 failed=1");
    assert!(err.contains("no go file"), "{err}");
    assert!(err.contains("skipped 3 node(s)"), "{err}");
    assert_eq!(take_log(&log), ["data", "side", "train"]);
    let st = text(&whittle(d.path(), &cache, &["status", "exp.toml"])).0;
    assert!(
        st.lines()
            .any(|l| l.starts_with("train") && l.ends_with("failed")),
        "{st}"
    );
    assert!(
        st.lines()
            .any(|l| l.starts_with("summary") && l.ends_with("pending")),
        "{st}"
    );
    std::fs::write(d.path().join("go"), "").unwrap();
    let o = whittle(d.path(), &cache, &["run", "exp.toml"]);
    assert!(o.status.success());
    assert_eq!(summary(&o), "summary: ran=4 cached=2 resumed=0 failed=0");
}

#[test]
fn a_corrupted_entry_is_detected_and_recomputed() {
    let (d, cache, log) = setup();
    assert!(
        whittle(d.path(), &cache, &["run", "exp.toml"])
            .status
            .success()
    );
    take_log(&log);
    let rows: serde_json::Value = serde_json::from_slice(
        &whittle(d.path(), &cache, &["status", "exp.toml", "--json"]).stdout,
    )
    .unwrap();
    let train = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == "train")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let f = cache.join("entries").join(&train).join("out/model.txt");
    let good = std::fs::read(&f).unwrap();
    std::fs::write(&f, b"rows\nlr=9.9\n").unwrap();
    let o = whittle(d.path(), &cache, &["run", "exp.toml"]);
    let (_, err) = text(&o);
    assert!(
        err.contains("corrupted") && err.contains("model.txt"),
        "{err}"
    );
    assert_eq!(summary(&o), "summary: ran=1 cached=5 resumed=0 failed=0");
    assert_eq!(take_log(&log), ["train"]);
    assert_eq!(std::fs::read(&f).unwrap(), good);
    assert_eq!(std::fs::read_dir(cache.join("corrupt")).unwrap().count(), 1);
    // an entry missing a file is corrupted too
    std::fs::remove_file(&f).unwrap();
    let o = whittle(d.path(), &cache, &["run", "exp.toml"]);
    assert_eq!(summary(&o), "summary: ran=1 cached=5 resumed=0 failed=0");
}

#[test]
fn invalid_file_exits_2_with_location_and_touches_no_cache() {
    let (d, cache, _) = setup();
    std::fs::write(
        d.path().join("exp.toml"),
        EXP.replace("inputs = [\"train\"]", "inputs = [\"trian\"]"),
    )
    .unwrap();
    let o = whittle(d.path(), &cache, &["run", "exp.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(
        err.contains("exp.toml:18:11: unknown input stage `trian`"),
        "{err}"
    );
    assert!(!cache.exists());
}

#[test]
fn threads_never_oversubscribe_the_core_budget() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let exp = r#"
[experiment]
name = "budget"
seed = 1
[stages.wide]
kind = "command"
threads = 2
cmd = "sleep 0.3"
[stages.a]
kind = "command"
cmd = "sleep 0.3; echo a"
[stages.b]
kind = "command"
cmd = "sleep 0.3; echo b"
"#;
    std::fs::write(d.path().join("e.toml"), exp).unwrap();
    let o = whittle(d.path(), &cache, &["run", "e.toml", "--jobs", "2"]);
    assert_eq!(summary(&o), "summary: ran=3 cached=0 resumed=0 failed=0");
    let spans: Vec<(String, f64, f64)> = entries(&cache)
        .iter()
        .map(|k| {
            let m: serde_json::Value = serde_json::from_slice(
                &std::fs::read(cache.join("entries").join(k).join("manifest.json")).unwrap(),
            )
            .unwrap();
            (
                m["node"].as_str().unwrap().to_string(),
                m["started"].as_f64().unwrap(),
                m["finished"].as_f64().unwrap(),
            )
        })
        .collect();
    let get = |n: &str| spans.iter().find(|s| s.0 == n).unwrap().clone();
    let (w, a, b) = (get("wide"), get("a"), get("b"));
    for other in [&a, &b] {
        assert!(other.2 <= w.1 || other.1 >= w.2, "{other:?} overlaps {w:?}");
    }
    // a and b fit together in the budget of 2
    assert!(
        a.1 < b.2 && b.1 < a.2,
        "a and b should overlap: {a:?} {b:?}"
    );
}

#[test]
fn a_second_run_waits_for_a_node_the_first_is_writing() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let exp = "[experiment]\nname = \"lock\"\nseed = 1\n[stages.slow]\nkind = \"command\"\ncmd = \"sleep 0.8; echo once >> count.log; echo ok > $WHITTLE_OUT/x\"\n";
    std::fs::write(d.path().join("e.toml"), exp).unwrap();
    let first = cmd(d.path(), &cache, &["run", "e.toml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = whittle(d.path(), &cache, &["run", "e.toml"]);
    let first = first.wait_with_output().unwrap();
    assert_eq!(
        summary(&first),
        "summary: ran=1 cached=0 resumed=0 failed=0"
    );
    let (_, err) = text(&second);
    assert!(err.contains("waiting for slow"), "{err}");
    assert_eq!(
        summary(&second),
        "summary: ran=0 cached=1 resumed=0 failed=0"
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("count.log")).unwrap(),
        "once\n"
    );
}

#[test]
fn the_experiment_files_of_the_repository_run() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let mut n = 0;
    for e in std::fs::read_dir(root.join("experiments"))
        .unwrap()
        .flatten()
    {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        n += 1;
        let f = p.display().to_string();
        // every file validates; files made only of `command` stages also run (ML ones are
        // too slow for the default test run)
        let st = whittle(d.path(), &cache, &["status", &f]);
        assert!(st.status.success(), "{f}: {:?}", text(&st));
        let plan = whittle_engine::load_plan(&p, &[], &whittle_stages::registry()).unwrap();
        if plan.nodes.iter().any(|n| n.kind != "command") {
            continue;
        }
        let o = whittle(d.path(), &cache, &["run", &f]);
        assert!(o.status.success(), "{f}: {:?}", text(&o));
        assert!(summary(&o).ends_with("failed=0"));
        let again = whittle(d.path(), &cache, &["run", &f]);
        assert!(
            summary(&again).starts_with("summary: ran=0 "),
            "{f}: second run ran something"
        );
    }
    assert!(n >= 1);
}
