//! Packing nodes onto the cores does not change results: a small train → PIT sweep →
//! fine-tune → quantize experiment run sequentially (`--jobs 1`, every node on one thread)
//! and packed (`--jobs 2`: the lone seed training on two threads, the sweep's nodes two at a
//! time on one thread each) gives the same keys, bit-identical output files and identical
//! metrics. The run prints its CPU utilisation and the report's provenance shows it.

mod common;
use common::*;

const EXP: &str = r#"
[experiment]
name = "packed"
seed = 5

[stages.data]
kind = "fetch"
dataset = { kind = "synthetic_kws", train_per_class = 60, val_per_class = 4, test_per_class = 4 }

[stages.tcn]
kind = "train"
inputs = ["data"]
model = { arch = "tcn", channels = 16, dilations = [1, 2], padding = "causal" }
epochs = 2
lr = 2e-3
allow_divergence = true

[stages.pit]
kind = "search"
method = "pit"
inputs = ["tcn", "data"]
sweep = { lambda = [1e-6, 1e-4] }
cost = "size"
epochs = 3
lr = 1e-3
allow_divergence = true

[stages.pit_ft]
kind = "finetune"
inputs = ["pit", "data"]
init = "inherit"
epochs = 1
lr = 5e-4
allow_divergence = true

[stages.quant]
kind = "quantize"
inputs = ["pit_ft", "data"]
gather = ["pit_ft"]
formats = ["fp32", "int8"]
"#;

fn manifests(cache: &std::path::Path) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = entries(cache)
        .iter()
        .map(|k| {
            serde_json::from_slice(
                &std::fs::read(cache.join("entries").join(k).join("manifest.json")).unwrap(),
            )
            .unwrap()
        })
        .collect();
    v.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    v
}

#[test]
fn packed_and_sequential_runs_give_bit_identical_results() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("e.toml"), EXP).unwrap();
    let (c1, c2) = (d.path().join("c1"), d.path().join("c2"));
    let o1 = whittle(d.path(), &c1, &["run", "e.toml", "--jobs", "1"]);
    assert_eq!(
        summary(&o1),
        "summary: ran=7 cached=0 resumed=0 failed=0",
        "{:?}",
        text(&o1)
    );
    let o2 = whittle(d.path(), &c2, &["run", "e.toml", "--jobs", "2"]);
    assert_eq!(
        summary(&o2),
        "summary: ran=7 cached=0 resumed=0 failed=0",
        "{:?}",
        text(&o2)
    );

    let (m1, m2) = (manifests(&c1), manifests(&c2));
    assert_eq!(m1.len(), 7);
    for (a, b) in m1.iter().zip(&m2) {
        assert_eq!(a["key"], b["key"]);
        let node = a["node"].as_str().unwrap();
        assert_eq!(a["outputs"], b["outputs"], "{node}: output files differ");
        assert_eq!(a["metrics"], b["metrics"], "{node}: metrics differ");
        assert_eq!(a["threads"], 1, "{node} on --jobs 1");
        assert!(
            a["cpu_secs"].as_f64().unwrap() > 0.0,
            "{node}: no CPU time recorded"
        );
    }
    // the packed run really used both grants: the lone training on 2 threads, the two
    // searches at the same time on 1 each
    let get = |n: &str| m2.iter().find(|m| m["node"] == n).unwrap();
    assert_eq!(get("tcn")["threads"], 2);
    let (a, b) = (get("pit[lambda=1e-6]"), get("pit[lambda=1e-4]"));
    assert_eq!((&a["threads"], &b["threads"]), (&1.into(), &1.into()));
    let span = |m: &serde_json::Value| {
        (
            m["started"].as_f64().unwrap(),
            m["finished"].as_f64().unwrap(),
        )
    };
    let ((s1, e1), (s2, e2)) = (span(a), span(b));
    assert!(
        s1 < e2 && s2 < e1,
        "the searches should overlap: {s1}..{e1} {s2}..{e2}"
    );

    // utilisation: printed before the summary line and shown in the report's provenance
    let (out, _) = text(&o2);
    let line = out
        .lines()
        .find(|l| l.starts_with("CPU "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains(" of 2 cores (") && line.ends_with(" s wall)"),
        "{line}"
    );
    let md = std::fs::read_to_string(d.path().join("reports/packed.md")).unwrap();
    assert!(
        md.contains("- Run: CPU ") && md.contains(" of 2 cores ("),
        "{md}"
    );
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("reports/packed/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metrics["provenance"]["cpu"]["cores"], 2);
    assert!(metrics["provenance"]["cpu"]["cpu_secs"].as_f64().unwrap() > 0.0);
}
