//! Anomaly detection end to end at a small size: `experiments/anomaly_ae.toml` (synthetic
//! machine sounds → MLPerf Tiny's FC auto-encoder → PIT λ sweep → fine-tune → int8). Every row
//! is scored by AUC (not accuracy), the trained auto-encoder detects anomalies well above
//! chance, and the report speaks of AUC.

mod common;
use common::*;

#[test]
fn the_anomaly_detection_study_scores_by_auc() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let file = root
        .join("experiments/anomaly_ae.toml")
        .display()
        .to_string();
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let args = [
        "run",
        file.as_str(),
        "--set",
        "stages.data.dataset.train_clips=16",
        "--set",
        "stages.pit.sweep.lambda=[1e-8, 1e-6]",
        "--set",
        "stages.pit.epochs=2",
        "--set",
        "stages.pit_ft.epochs=1",
    ];
    let o = whittle(d.path(), &cache, &args);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(summary(&o).ends_with("failed=0"), "{}", summary(&o));
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("reports/anomaly_ae/metrics.json")).unwrap(),
    )
    .unwrap();
    let models = metrics["models"].as_array().unwrap();
    assert!(models.len() >= 1 + 2 + 2 + 6, "{}", models.len());
    for m in models {
        assert_eq!(m["metric"], "auc", "{m}");
        let auc = m["test_auc"]
            .as_f64()
            .unwrap_or_else(|| panic!("no AUC: {m}"));
        assert!((0.0..=1.0).contains(&auc), "{m}");
        assert!(m["test_accuracy"].is_null(), "{m}");
    }
    let seed = models.iter().find(|m| m["node"] == "ae").unwrap();
    assert!(
        seed["test_auc"].as_f64().unwrap() > 0.7,
        "the trained auto-encoder detects anomalies: {seed}"
    );
    let pauc = seed["test_pauc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&pauc));
    assert!(models.iter().any(|m| m["format"] == "int8"));
    let md = std::fs::read_to_string(d.path().join("reports/anomaly_ae.md")).unwrap();
    assert!(md.contains("test AUC"), "{md}");
    assert!(!md.contains("test accuracy"), "{md}");
}
