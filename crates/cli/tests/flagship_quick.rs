//! The flagship experiment end to end at a tiny size (4 training clips per class): every stage
//! kind of `experiments/kws_pit.toml` runs, the report has each comparison table and the
//! latency model, metrics.json lists every pruning method and format, and a second run is a
//! no-op. (The full-size run is `just run experiments/kws_pit.toml`.)

mod common;
use common::*;

/// Tiny data; the QAT fine-tuning of a seed network that stays at chance on 4 clips per class
/// is kept (its loss barely moves in 3 epochs at lr 1e-4) instead of failing as diverged.
const QUICK: [&str; 8] = [
    "--set",
    "stages.data.dataset.train_per_class=4",
    "--set",
    "stages.data.dataset.val_per_class=2",
    "--set",
    "stages.data.dataset.test_per_class=2",
    "--set",
    "stages.qat.allow_divergence=true",
];

#[test]
fn the_flagship_runs_end_to_end_at_a_tiny_size() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let file = root.join("experiments/kws_pit.toml").display().to_string();
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let mut args = vec!["run", file.as_str()];
    args.extend(QUICK);
    let o = whittle(d.path(), &cache, &args);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(summary(&o).ends_with("failed=0"), "{}", summary(&o));
    let md = std::fs::read_to_string(d.path().join("reports/kws_pit.md")).unwrap();
    // Top-down: summary and fronts first, the full tables collapsed further down.
    let mut at = 0;
    for section in [
        "## Summary",
        "## Pareto fronts",
        "### Accuracy vs parameters",
        "## Precision formats",
        "## Distillation",
        "## Latency model and devices",
        "## Shipped files",
        "## All networks",
        "<summary>Architectures",
        "<summary>Pruning and search methods",
        "<summary>Precision formats",
        "<summary>Repeated over seeds",
        "## Provenance",
    ] {
        let Some(i) = md[at..].find(section) else {
            panic!("report lacks {section} (after byte {at})");
        };
        at += i + section.len();
    }
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("reports/kws_pit/metrics.json")).unwrap(),
    )
    .unwrap();
    let models = metrics["models"].as_array().unwrap();
    let has = |k: &str, v: &str| models.iter().any(|m| m[k] == v);
    for method in ["pit", "l1", "bn_gamma", "uniform", "random", "kd"] {
        assert!(has("method", method), "no `{method}` row in metrics.json");
    }
    for format in ["fp32", "fp16", "bf16", "float(4,3)", "int8"] {
        assert!(has("format", format), "no `{format}` row in metrics.json");
    }
    assert!(
        has("teacher", "student_via_ta-ta1"),
        "the student distilled through the assistant names it"
    );
    let again = whittle(d.path(), &cache, &args);
    assert!(
        summary(&again).starts_with("summary: ran=0 "),
        "{}",
        summary(&again)
    );
}
