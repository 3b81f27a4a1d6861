//! The report and diff end to end, without any ML: command stages write a `metrics.json`
//! with `models` rows (as the ML stages do); `run` renders `reports/<experiment>.md`, two
//! renders from the same cache are byte-identical, and `diff` shows the changed parameter,
//! the changed accuracy and the front that moved.

mod common;
use common::*;
use std::path::Path;

fn experiment(acc_small: &str) -> String {
    format!(
        r#"
[experiment]
name = "toy"
seed = 1

[stages.big]
kind = "command"
cmd = "echo '{{\"models\": [{{\"method\": \"train\", \"arch\": \"tcn\", \"params\": 40000, \"macs\": 900000, \"weight_bytes\": 160000, \"test_accuracy\": 0.9}}]}}' > $WHITTLE_OUT/metrics.json"

[stages.small]
kind = "command"
inputs = ["big"]
env = {{ ACC = "{acc_small}" }}
cmd = "echo '{{\"models\": [{{\"method\": \"pit\", \"arch\": \"tcn\", \"params\": 20000, \"macs\": 500000, \"weight_bytes\": 80000, \"test_accuracy\": '$ACC', \"parent\": \"big\"}}]}}' > $WHITTLE_OUT/metrics.json"

[report]
max_params = 25000
"#
    )
}

/// Writes `a.toml` into `dir` and runs it (cache `dir/cache`), asserting success.
fn run_a(dir: &Path, toml: &str) -> std::process::Output {
    std::fs::write(dir.join("a.toml"), toml).unwrap();
    let o = whittle(dir, &dir.join("cache"), &["run", "a.toml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    o
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn run_renders_a_deterministic_report_and_diff_compares() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, cache) = (tmp.path(), tmp.path().join("cache"));
    run_a(dir, &experiment("0.91"));
    let md = read(&dir.join("reports/toy.md"));
    assert!(
        md.contains("**Best with ≤ 25,000 parameters**: `small` — 91.00 %"),
        "{md}"
    );
    assert!(md.contains("| `small` | pit | fp32 |"), "{md}");
    assert!(md.contains("| +1.00 |"), "Δ vs parent: {md}");
    assert!(dir.join("reports/toy/acc_vs_params.svg").exists());
    let metrics: serde_json::Value =
        serde_json::from_str(&read(&dir.join("reports/toy/metrics.json"))).unwrap();
    let models = metrics["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    for k in [
        "node",
        "stage_kind",
        "method",
        "arch",
        "format",
        "params",
        "macs",
        "weight_bytes",
        "peak_activation_bytes",
        "test_accuracy",
        "latency_ms",
        "teacher",
        "parent",
    ] {
        assert!(
            models[1].get(k).is_some(),
            "metrics.json model rows carry `{k}`"
        );
    }
    assert_eq!(models[1]["parent"], "big");

    // Two more runs from the same cache: byte-identical report files.
    let o = whittle(dir, &cache, &["run", "a.toml"]);
    assert!(summary(&o).contains("cached=2"));
    let first = read(&dir.join("reports/toy.md"));
    let first_json = read(&dir.join("reports/toy/metrics.json"));
    let o = whittle(dir, &cache, &["report", "a.toml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(read(&dir.join("reports/toy.md")), first);
    assert_eq!(read(&dir.join("reports/toy/metrics.json")), first_json);

    // B differs in one parameter: the small network's accuracy drops below the big one's.
    std::fs::write(
        dir.join("b.toml"),
        experiment("0.85").replace("name = \"toy\"", "name = \"toy_b\""),
    )
    .unwrap();
    let o = whittle(dir, &cache, &["run", "b.toml", "--jobs", "1"]);
    assert!(summary(&o).contains("ran=1 cached=1"), "{:?}", text(&o));
    let o = whittle(dir, &cache, &["diff", "a.toml", "b.toml"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("| `small` | env.ACC | 0.91 | 0.85 |"), "{out}");
    assert!(
        out.contains("| `small` | test_accuracy | 0.9100 | 0.8500 | -0.0600 |"),
        "{out}"
    );
    assert!(out.contains("accuracy vs params: added `big`"), "{out}");
    // JSON form, and a report folder works as an argument too.
    let o = whittle(dir, &cache, &["diff", "reports/toy", "b.toml", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["params"][0]["path"], "env.ACC");
}

#[test]
fn diff_of_a_missing_file_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let o = whittle(
        tmp.path(),
        &tmp.path().join("cache"),
        &["diff", "nope.toml", "nope2.toml"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("nope.toml"), "{:?}", text(&o));
}

#[test]
fn a_renamed_stage_is_named_by_its_new_name_in_cached_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run_a(dir, &experiment("0.91"));
    // `big` becomes `seed`: keys do not depend on names, so both nodes come from the cache,
    // and the row that recorded `parent = "big"` must now name `seed`.
    let renamed = experiment("0.91")
        .replace("[stages.big]", "[stages.seed]")
        .replace("inputs = [\"big\"]", "inputs = [\"seed\"]");
    let o = run_a(dir, &renamed);
    assert!(summary(&o).contains("ran=0"), "{}", summary(&o));
    let metrics: serde_json::Value =
        serde_json::from_str(&read(&dir.join("reports/toy/metrics.json"))).unwrap();
    let small = metrics["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node"] == "small")
        .unwrap()
        .clone();
    assert_eq!(small["parent"], "seed", "{small}");
}
