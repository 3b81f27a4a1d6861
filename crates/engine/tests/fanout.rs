//! Dynamic fan-out (`for_each`) with `command` stages only: a source node lists children in
//! `children.json`; the `for_each` stage is deferred until the source is committed, then
//! expands into one node per child keyed by the child's content. A second run is a no-op, a
//! changed child re-runs only what it changes, the summary counts each node once, and
//! malformed sources and files fail with located messages.

use std::collections::BTreeMap;
use std::path::Path;

use whittle_engine::{
    Cache, CancelToken, Experiment, Plan, Registry, Reporter, RunOptions, RunSummary, query,
};

/// `select` writes `$LIST` as its children; `train` (one node per child, the child as its
/// `env`) logs its run in `runs.log`; `q` follows each train node; `all` gathers them.
fn experiment(list: &str) -> String {
    format!(
        r#"
[experiment]
name = "fan"
seed = 1

[stages.data]
kind = "command"
cmd = "echo base > $WHITTLE_OUT/base"

[stages.select]
kind = "command"
cmd = "printf '%s' \"$LIST\" > $WHITTLE_OUT/children.json"
env = {{ LIST = '{list}' }}

[stages.train]
kind = "command"
inputs = ["data"]
for_each = "select"
for_each_key = "env"
cmd = "echo \"w=$W $(cat $WHITTLE_IN_DATA/base)\" > $WHITTLE_OUT/r; echo \"$WHITTLE_NODE w=$W\" >> runs.log"

[stages.q]
kind = "command"
inputs = ["train"]
cmd = "sed s/w=/q=/ $WHITTLE_IN_TRAIN/r > $WHITTLE_OUT/r"

[stages.all]
kind = "command"
inputs = ["q"]
gather = ["q"]
cmd = "for d in $(echo $WHITTLE_IN_Q | tr : ' '); do cat $d/r; done > $WHITTLE_OUT/all"
"#
    )
}

const THREE: &str = r#"[{"W": 1}, {"W": 2}, {"W": 3}]"#;

fn exp(dir: &Path, text: &str, reg: &Registry) -> Experiment {
    Experiment::parse(&dir.join("e.toml"), text.to_string(), &[], reg).unwrap()
}

fn opts() -> RunOptions {
    RunOptions {
        jobs: 2,
        cancel: CancelToken::default(),
        reporter: Reporter::Log,
    }
}

fn run(dir: &Path, text: &str, cache: &Cache) -> (Plan, RunSummary) {
    let reg = Registry::with_builtins();
    whittle_engine::run_rounds(exp(dir, text, &reg), cache, &reg, |p| {
        whittle_engine::run_with_budget(p, cache, &reg, &opts(), None)
    })
    .unwrap()
}

fn keys(plan: &Plan) -> BTreeMap<String, String> {
    plan.nodes
        .iter()
        .map(|n| (n.name.clone(), n.key.clone()))
        .collect()
}

fn out(cache: &Cache, plan: &Plan, node: &str, file: &str) -> String {
    std::fs::read_to_string(cache.out_dir(&plan.node(node).unwrap().key).join(file)).unwrap()
}

fn runs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(dir.join("runs.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

fn counts(s: &RunSummary) -> (usize, usize, usize, usize, usize) {
    (s.ran, s.cached, s.resumed, s.failed, s.skipped)
}

#[test]
fn fan_out_expands_runs_each_child_once_and_a_rerun_is_a_no_op() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::new(d.path().join("cache"));
    let reg = Registry::with_builtins();
    let text = experiment(THREE);

    // before the source ran: train and what follows it are deferred, shown as such
    let before = Plan::build_cached(exp(d.path(), &text, &reg), &reg, &cache).unwrap();
    let names: Vec<&str> = before.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["data", "select"]);
    let waits: Vec<(&str, &str, Option<&str>)> = before
        .deferred
        .iter()
        .map(|x| (x.stage.as_str(), x.source.as_str(), x.via.as_deref()))
        .collect();
    assert_eq!(
        waits,
        [
            ("train", "select", None),
            ("q", "select", Some("train")),
            ("all", "select", Some("q"))
        ]
    );
    let rows = query::status(&before, &cache);
    let shown: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|r| (r.node.clone(), r.waiting(&before)))
        .collect();
    assert_eq!(
        shown,
        [
            ("data".into(), None),
            ("select".into(), None),
            (
                "train".into(),
                Some("(fan-out: waits for select)".to_string())
            ),
            (
                "q".into(),
                Some("(fan-out: waits for select, via train)".to_string())
            ),
            (
                "all".into(),
                Some("(fan-out: waits for select, via q)".to_string())
            ),
        ]
    );
    let w = query::why(&before, &cache, "train[child=1]").unwrap();
    assert!(
        w.contains("fans out over the children that `select` lists"),
        "{w}"
    );

    // one run: 2 + 3 train + 3 q + 1 gather, each counted once over the rounds
    let (plan, s) = run(d.path(), &text, &cache);
    assert!(s.ok(), "{s:?}");
    assert_eq!(counts(&s), (9, 0, 0, 0, 0), "{s:?}");
    assert!(plan.deferred.is_empty());
    let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "data",
            "select",
            "train[child=0]",
            "train[child=1]",
            "train[child=2]",
            "q[child=0]",
            "q[child=1]",
            "q[child=2]",
            "all"
        ]
    );
    // each child node saw its own child
    for i in 0..3 {
        assert_eq!(
            out(&cache, &plan, &format!("train[child={i}]"), "r"),
            format!("w={} base\n", i + 1)
        );
    }
    assert_eq!(
        out(&cache, &plan, "all", "all"),
        "q=1 base\nq=2 base\nq=3 base\n"
    );
    assert_eq!(
        runs(d.path()),
        [
            "train[child=0] w=1",
            "train[child=1] w=2",
            "train[child=2] w=3"
        ]
    );
    // the child is a parameter like any other: params = stage params with env = child
    let t1 = plan.node("train[child=1]").unwrap();
    assert_eq!(t1.params["env"], serde_json::json!({ "W": 2 }));
    // after the run, status and why show the expanded nodes
    let after = Plan::build_cached(exp(d.path(), &text, &reg), &reg, &cache).unwrap();
    assert_eq!(keys(&after), keys(&plan));
    let rows = query::status(&after, &cache);
    assert_eq!(rows.len(), 9);
    assert!(
        rows.iter()
            .all(|r| r.state == whittle_engine::NodeState::Done)
    );
    let w = query::why(&after, &cache, "train[child=2]").unwrap();
    assert!(w.contains("is cached"), "{w}");

    // second run: nothing runs, every node is counted once as cached
    let (again, s) = run(d.path(), &text, &cache);
    assert_eq!(counts(&s), (0, 9, 0, 0, 0), "{s:?}");
    assert_eq!(keys(&again), keys(&plan));
    assert_eq!(runs(d.path()).len(), 3);
}

#[test]
fn a_changed_child_reruns_only_itself_and_identical_children_are_cache_hits() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::new(d.path().join("cache"));
    let (first, s) = run(d.path(), &experiment(THREE), &cache);
    assert_eq!(counts(&s), (9, 0, 0, 0, 0));
    let k1 = keys(&first);

    // a changed law: child 1 differs, 0 and 2 are the same content
    let (second, s) = run(
        d.path(),
        &experiment(r#"[{"W": 1}, {"W": 20}, {"W": 3}]"#),
        &cache,
    );
    // select, train[child=1], q[child=1], all ran; data, two trains and two q's cached
    assert_eq!(counts(&s), (4, 5, 0, 0, 0), "{s:?}");
    let k2 = keys(&second);
    for n in [
        "data",
        "train[child=0]",
        "train[child=2]",
        "q[child=0]",
        "q[child=2]",
    ] {
        assert_eq!(k1[n], k2[n], "{n}: key changed");
    }
    for n in ["select", "train[child=1]", "q[child=1]", "all"] {
        assert_ne!(k1[n], k2[n], "{n}: key kept");
    }
    assert_eq!(
        runs(d.path()),
        [
            "train[child=0] w=1",
            "train[child=1] w=2",
            "train[child=1] w=20",
            "train[child=2] w=3"
        ]
    );

    // another order of known children (another law listing the same candidates): no train
    // or q runs; only the source and the gather (its inputs' order changed)
    let (third, s) = run(
        d.path(),
        &experiment(r#"[{"W": 3}, {"W": 20}, {"W": 1}, {"W": 2}]"#),
        &cache,
    );
    assert_eq!(counts(&s), (2, 9, 0, 0, 0), "{s:?}");
    assert_eq!(keys(&third)["train[child=0]"], k1["train[child=2]"]);
    assert_eq!(runs(d.path()).len(), 4, "no train node ran again");
}

#[test]
fn children_of_a_swept_source_join_its_coordinates_and_equal_keys_run_once() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::new(d.path().join("cache"));
    let text = experiment(THREE).replace(
        "env = { LIST = '[{\"W\": 1}, {\"W\": 2}, {\"W\": 3}]' }",
        "sweep = { \"env.N\" = [2, 3] }",
    );
    let text = text.replace(
        "cmd = \"printf '%s' \\\"$LIST\\\" > $WHITTLE_OUT/children.json\"",
        r#"cmd = "if [ $N = 2 ]; then echo '[{\"W\": 1}, {\"W\": 2}]'; else echo '[{\"W\": 1}, {\"W\": 2}, {\"W\": 3}]'; fi > $WHITTLE_OUT/children.json""#,
    );
    assert!(text.contains("sweep = { \"env.N\""), "{text}");
    let (plan, s) = run(d.path(), &text, &cache);
    assert!(s.ok(), "{s:?}");
    let trains: Vec<&str> = plan
        .nodes
        .iter()
        .filter(|n| n.stage == "train")
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(
        trains,
        [
            "train[N=2,child=0]",
            "train[N=2,child=1]",
            "train[N=3,child=0]",
            "train[N=3,child=1]",
            "train[N=3,child=2]"
        ]
    );
    let k = keys(&plan);
    assert_eq!(k["train[N=2,child=0]"], k["train[N=3,child=0]"]);
    // three distinct children ran once each; the duplicates were found in the cache
    assert_eq!(runs(d.path()).len(), 3, "{:?}", runs(d.path()));
    // data + 2 select + 5 train + 5 q + 1 all = 14 nodes: 1 + 2 + 3 + 3 + 1 ran
    assert_eq!(counts(&s), (10, 4, 0, 0, 0), "{s:?}");
    assert_eq!(
        out(&cache, &plan, "all", "all"),
        "q=1 base\nq=2 base\nq=1 base\nq=2 base\nq=3 base\n"
    );
}

#[test]
fn a_source_without_valid_children_fails_and_its_fan_out_stays_deferred() {
    for (list, what) in [
        (
            r#"{"W": 1}"#,
            "must be a JSON array of objects, found an object",
        ),
        ("[1, 2]", "child 0 must be a JSON object, found a number"),
        ("[{", "is not valid JSON"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(d.path().join("cache"));
        let (plan, s) = run(d.path(), &experiment(list), &cache);
        assert_eq!(counts(&s), (1, 0, 0, 1, 0), "{list}: {s:?}");
        let (node, err) = &s.failures[0];
        assert_eq!(node, "select");
        assert!(
            err.contains("stage `train` fans out over `select` (`for_each`)") && err.contains(what),
            "{list}: {err}"
        );
        assert_eq!(plan.deferred.len(), 3);
        assert!(!cache.is_done(&plan.node("select").unwrap().key));
    }
    // no children.json at all
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::new(d.path().join("cache"));
    let text = experiment(THREE).replace("> $WHITTLE_OUT/children.json", "> /dev/null");
    let (_, s) = run(d.path(), &text, &cache);
    assert_eq!(s.failed, 1);
    assert!(
        s.failures[0].1.contains("it wrote no children.json"),
        "{:?}",
        s.failures
    );
    // an empty list: no child nodes, the gather runs on nothing
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::new(d.path().join("cache"));
    let (plan, s) = run(d.path(), &experiment("[]"), &cache);
    assert!(s.ok(), "{s:?}");
    assert_eq!(counts(&s), (3, 0, 0, 0, 0));
    assert!(plan.deferred.is_empty());
    assert_eq!(out(&cache, &plan, "all", "all"), "");
}

#[test]
fn a_failure_elsewhere_does_not_stop_the_fan_out_nor_run_twice() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::new(d.path().join("cache"));
    let text = experiment(THREE)
        + r#"
[stages.broken]
kind = "command"
cmd = "echo broken >> broken.log; exit 3"

[stages.after]
kind = "command"
inputs = ["broken"]
cmd = "true"
"#;
    let (plan, s) = run(d.path(), &text, &cache);
    // 9 fan-out nodes ran; broken failed once (not retried in the second round), after skipped once
    assert_eq!(counts(&s), (9, 0, 0, 1, 1), "{s:?}");
    assert!(plan.deferred.is_empty());
    assert_eq!(
        std::fs::read_to_string(d.path().join("broken.log")).unwrap(),
        "broken\n"
    );
}

/// A located error for an experiment text.
fn error(text: &str) -> String {
    let reg = Registry::with_builtins();
    Experiment::parse(Path::new("e.toml"), text.to_string(), &[], &reg)
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn malformed_fan_outs_are_located() {
    let base = experiment(THREE);
    let cases: [(&str, &str, &str); 7] = [
        (
            "for_each = \"select\"",
            "for_each = \"selekt\"",
            "e.toml:18:1: unknown stage `selekt` in `for_each`; expected one of: all, data, q, select, train",
        ),
        (
            "for_each = \"select\"",
            "for_each = \"train\"",
            "e.toml:18:1: stage `train` fans out over itself; expected another stage",
        ),
        (
            "inputs = [\"data\"]\nfor_each",
            "inputs = [\"data\", \"select\"]\nfor_each",
            "e.toml:17:19: `select` is both an input and the `for_each` source of stage `train`",
        ),
        (
            "for_each_key = \"env\"",
            "for_each_key = \"env\"\nenv = { A = 1 }",
            "e.toml:20:1: `env` is set in stage `train`, but `for_each` fills it with each child of `select`; remove it",
        ),
        (
            "for_each_key = \"env\"",
            "for_each_key = \"env\"\nsweep = { \"env.W\" = [1, 2] }",
            "e.toml:20:11: cannot sweep `env.W`: `for_each` fills `env` with each child of `select`",
        ),
        (
            "for_each = \"select\"\nfor_each_key = \"env\"",
            "for_each_key = \"env\"",
            "e.toml:18:1: `for_each_key` without `for_each`",
        ),
        (
            "[stages.select]\nkind = \"command\"",
            "[stages.select]\nkind = \"command\"\ninputs = [\"q\"]",
            "e.toml:25:11: cycle between stages: q -> select -> train -> q",
        ),
    ];
    for (from, to, want) in cases {
        assert!(base.contains(from), "{from}");
        let e = error(&base.replacen(from, to, 1));
        assert!(e.starts_with(want), "want {want}\n got {e}");
    }
    let e = error(&base.replace("for_each = \"select\"", "for_each = 3"));
    assert!(e.contains("`for_each` must be the name of a stage"), "{e}");
}

#[test]
fn a_child_the_kind_rejects_is_reported_at_for_each_naming_the_child() {
    let reg = Registry::with_builtins();
    let d = tempfile::tempdir().unwrap();
    let text = experiment(THREE).replace("for_each_key = \"env\"", "for_each_key = \"threads\"");
    // children found (as if committed) that are not a thread count
    let err = Plan::build_with(exp(d.path(), &text, &reg), &reg, &|n| {
        (n.stage == "select").then(|| Ok(vec![serde_json::json!({ "W": 1 })]))
    })
    .unwrap_err();
    let s = err.to_string();
    assert!(
        s.starts_with(&format!("{}:18:1: ", d.path().join("e.toml").display())),
        "{s}"
    );
    assert!(s.contains("child 0 of node `select`: `threads`"), "{s}");
    // a child with a null cannot be a TOML parameter
    let text = experiment(THREE);
    let err = Plan::build_with(exp(d.path(), &text, &reg), &reg, &|n| {
        (n.stage == "select").then(|| Ok(vec![serde_json::json!({ "W": null })]))
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("child 0 of node `select`: cannot be a parameter table"),
        "{err}"
    );
    // a committed source whose file is unreadable is located too
    let err = Plan::build_with(exp(d.path(), &text, &reg), &reg, &|n| {
        (n.stage == "select").then(|| Err("children.json is not valid JSON".to_string()))
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("stage `train` fans out over node `select` (key "),
        "{err}"
    );
}
