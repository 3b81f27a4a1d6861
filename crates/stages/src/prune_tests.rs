//! Tests of the `prune` stage kind's fisher method: parameter validation with the key in the
//! error, defaults that leave other methods' keys alone, and a run on a tiny trained TCN whose
//! metrics report the exact number of removed channels.

use super::Prune;
use crate::stage_tests::{run, split};
use serde_json::{Value, json};
use whittle_engine::{InputArtifact, StageKind};
use whittle_nn::Model;
use whittle_nn::config::{ModelConfig, TcnConfig};

fn table(s: &str) -> toml::Table {
    s.parse().unwrap()
}

fn resolve_err(s: &str) -> String {
    Prune.resolve(&table(s)).unwrap_err().to_string()
}

#[test]
fn fisher_parameters_are_validated() {
    let e = resolve_err("method = 'fisher'\nratio = 0.5\nchannels_per_step = 0");
    assert!(e.starts_with("channels_per_step:"), "{e}");
    let e = resolve_err("method = 'fisher'\nratio = 0.5\nfisher_batches = 0");
    assert!(e.starts_with("fisher_batches:"), "{e}");
    let e = resolve_err("method = 'fisher'\nratio = 0.5\nfinetune_steps = -1");
    assert!(e.starts_with("finetune_steps:"), "{e}");
    let e = resolve_err("method = 'fisher'\nratio = 1.0");
    assert!(e.starts_with("ratio:"), "{e}");
    let e = resolve_err("method = 'fishr'\nratio = 0.5");
    assert!(e.contains("fisher"), "{e}");
}

#[test]
fn fisher_defaults_and_other_methods_unchanged() {
    let f = Prune
        .resolve(&table(
            "method = 'fisher'\nratio = 0.5\nlr = 1e-3\nepochs = 3",
        ))
        .unwrap();
    assert_eq!(f["scope"], json!("global"));
    assert_eq!(f["fisher"]["channels_per_step"], json!(8));
    assert_eq!(f["fisher"]["fisher_batches"], json!(2));
    assert_eq!(f["fisher"]["finetune_steps"], json!(4));
    assert_eq!(f["fisher"]["lr"], json!(1e-3));
    assert_eq!(f["recipe"], Value::Null);
    // Recipe keys fisher does not use do not change its resolved parameters.
    let g = Prune
        .resolve(&table("method = 'fisher'\nratio = 0.5\nlr = 1e-3"))
        .unwrap();
    assert_eq!(f, g);
    // Fisher keys are ignored by the other methods (one stage can sweep over `method`).
    let a = Prune
        .resolve(&table("method = 'l1'\nratio = 0.5\nchannels_per_step = 2"))
        .unwrap();
    let b = Prune.resolve(&table("method = 'l1'\nratio = 0.5")).unwrap();
    assert_eq!(a, b);
    assert_eq!(a["scope"], json!("layer"));
    assert_eq!(a["fisher"], Value::Null);
}

#[test]
fn fisher_stage_prunes_and_reports() {
    let root = std::env::temp_dir().join(format!("whittle-prune-fisher-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ds = whittle_data::dataset::Dataset {
        train: split(48, 1),
        val: split(0, 2),
        test: split(30, 3),
        classes: vec!["a".into(), "b".into(), "c".into()],
        input_shape: vec![10, 49],
        layout: "channels,steps".into(),
        normalization: None,
        description: json!({}),
        ..Default::default()
    };
    whittle_data::save(&ds, &root.join("data")).unwrap();
    let mut c = TcnConfig::seed(6);
    c.layers.truncate(4);
    c.classes = 3;
    let seed_net = Model::new(ModelConfig::Tcn(c), 1).unwrap();
    seed_net.save(&root.join("net")).unwrap();
    let input = |kind: &str, node: &str, dir: &str| InputArtifact {
        stage: node.into(),
        node: node.into(),
        kind: kind.into(),
        key: "0".into(),
        dir: root.join(dir),
        params: json!({}),
        metrics: json!({}),
    };
    let inputs = vec![
        input("train", "seed", "net"),
        input("fetch", "data", "data"),
    ];
    let m = run(
        &Prune,
        table(
            "method = 'fisher'\nratio = 0.5\nbatch_size = 16\nchannels_per_step = 2\nfinetune_steps = 1",
        ),
        &root,
        &inputs,
    );
    // Groups: convs.0 (6), convs.1 + proj.1 + convs.3 (6), convs.2 (6): 18 prunable, 9 go.
    assert_eq!(m["extra"]["fisher"]["removed"], json!(9));
    assert_eq!(m["extra"]["fisher"]["steps"].as_array().unwrap().len(), 5);
    let row = &m["models"][0];
    assert_eq!(row["method"], json!("fisher"));
    assert_eq!(row["scope"], json!("global"));
    assert!(row["params"].as_u64().unwrap() < seed_net.num_params());
    let small = Model::load(&root.join("out-prune")).unwrap();
    assert_eq!(small.num_params(), row["params"].as_u64().unwrap());
    let _ = std::fs::remove_dir_all(&root);
}
